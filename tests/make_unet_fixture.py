"""Regenerate tests/assets/unet_reference/ with the installed reference package (guided-diffusion-sdk).

Run from the repository root:  python tests/make_unet_fixture.py
The reference builds the model, receives random weights, and computes outputs; the weights are stored
in float16 (and used by the reference as those same rounded values) to keep the fixture under 1 MB.
test_models_unet.py then checks that artgen's UNet reproduces the outputs without the reference installed.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import torch
from guided_diffusion.script_util import create_model

FIXTURE_DIR = Path(__file__).parent / "assets" / "unet_reference"
SEED = 1234
# Small enough for a sub-megabyte file, while still covering every block type: ResBlocks with 1x1 skip
# convs (decoder), resblock up/down sampling, scale-shift norm, legacy-order attention (16x16 and middle).
FIXTURE_CONFIG = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,1", learn_sigma=True,
                      class_cond=False, attention_resolutions="16", num_heads=4, num_head_channels=16,
                      num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True,
                      use_fp16=False, use_new_attention_order=False)


def random_half_state(model: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random float16 values for every parameter (fan-in scaled weights, norm scales near 1)."""
    state = {}
    for name, param in model.state_dict().items():
        noise = torch.randn(param.shape, generator=generator)
        if param.dim() > 1:
            value = noise / param[0].numel() ** 0.5
        elif name.endswith(".weight"):
            value = 1 + 0.1 * noise
        else:
            value = 0.1 * noise
        state[name] = value.half()
    return state


def main() -> None:
    generator = torch.Generator().manual_seed(SEED)
    model = create_model(**FIXTURE_CONFIG).eval()
    state = random_half_state(model, generator)
    model.load_state_dict({name: value.float() for name, value in state.items()})
    x = torch.randn(2, 3, 32, 32, generator=generator)
    timesteps = torch.tensor([3, 871])
    with torch.no_grad():
        output = model(x, timesteps)
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(state, FIXTURE_DIR / "state_dict.pt")
    torch.save({"x": x, "timesteps": timesteps, "output": output, "config": FIXTURE_CONFIG,
                "reference": f"guided-diffusion-sdk {version('guided-diffusion-sdk')}",
                "torch": str(torch.__version__)}, FIXTURE_DIR / "io.pt")


if __name__ == "__main__":
    main()
