"""Building models from names and paths: known architectures from their data files, local files, clear errors."""

import dataclasses

import pytest
import torch
import yaml
from tiny_taming import write_tiny_taming
from tiny_unet import tiny_unet_config, write_tiny_unet_checkpoint

from artgen.errors import UsageError, UserError
from artgen.models import factory, hub
from artgen.models.unet import UNetConfig
from artgen.models.vqgan import VQGAN

CPU = torch.device("cpu")
GUIDED_DIFFUSION = sorted(n for n, m in hub.KNOWN_MODELS.items() if m.kind == "diffusion" and not m.bundled)


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(dataclasses.asdict(tiny_unet_config())))
    return config, write_tiny_unet_checkpoint(folder / "tiny.pt")


# --- UNet architectures -------------------------------------------------------------------------------------

def test_the_known_guided_diffusion_architectures_are_the_released_ones():
    """The values the released checkpoints were trained with (as the UNetConfig dataclass held them before)."""
    assert GUIDED_DIFFUSION == ["256x256_diffusion_uncond", "512x512_diffusion_uncond_finetune_008100"]
    assert factory.unet_config("256x256_diffusion_uncond", None) == UNetConfig(image_size=256)
    assert factory.unet_config("512x512_diffusion_uncond_finetune_008100", None) == UNetConfig(image_size=512)
    assert UNetConfig(image_size=512) == UNetConfig(
        image_size=512, num_channels=256, num_res_blocks=2, num_heads=4, num_head_channels=64, num_heads_upsample=-1,
        attention_resolutions="32,16,8", channel_mult="", dropout=0.0, learn_sigma=True, class_cond=False,
        use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=True, use_fp16=False,
        use_new_attention_order=False)


@pytest.mark.parametrize("name", GUIDED_DIFFUSION)
def test_each_known_architecture_is_a_complete_data_file_in_the_package(name):
    path = factory.architecture_file(name)
    assert path.is_file() and path.parent.name == "configs" and path.parent.parent.name == "models"
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(values) == {f.name for f in dataclasses.fields(UNetConfig)}  # no field left to a default
    assert values["use_fp16"] is False  # half precision is the runtime's choice, not the file's


def test_a_known_architecture_is_read_from_its_data_file(tmp_path, monkeypatch):
    edited = tmp_path / "256x256_diffusion_uncond.yaml"
    edited.write_text(yaml.safe_dump({**dataclasses.asdict(UNetConfig()), "num_channels": 128}))
    monkeypatch.setattr(factory, "architecture_file", lambda name: tmp_path / f"{name}.yaml")
    assert factory.unet_config("256x256_diffusion_uncond", None).num_channels == 128


def test_a_model_that_carries_its_config_uses_it():
    """The bundled model ships its own YAML, which wins over any architecture file."""
    expected = yaml.safe_load(hub.model_path("shapes-diffusion", "config").read_text(encoding="utf-8"))
    assert factory.unet_config("shapes-diffusion", None) == UNetConfig(**expected)


def test_a_local_config_wins_over_the_name(tiny_unet):
    config, _ = tiny_unet
    assert factory.unet_config("256x256_diffusion_uncond", str(config)) == tiny_unet_config()


@pytest.mark.parametrize("text, message", [
    ("num_chanels: 3\n", r"expected UNet settings .*got \['num_chanels'\]"),
    ("- a list\n", "expected UNet settings .*got not a mapping"),
    ("image_size: [1\n", "is not readable YAML"),
])
def test_a_bad_config_file_names_the_flag(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(UsageError, match="^--diffusion-config .*" + message):
        factory.unet_config("256x256_diffusion_uncond", bad)
    with pytest.raises(UsageError, match="^--prior-config .*" + message):
        factory.unet_config("256x256_diffusion_uncond", bad, config_flag="--prior-config")


def test_a_missing_config_and_an_unknown_name(tmp_path):
    with pytest.raises(UsageError, match="^--diffusion-config .*none.yaml does not exist"):
        factory.unet_config("256x256_diffusion_uncond", tmp_path / "none.yaml")
    with pytest.raises(UsageError, match="unknown diffusion name 'nope'"):
        factory.unet_config("nope", None)
    with pytest.raises(UsageError, match="unknown diffusion name 'shapes-vqgan'"):
        factory.unet_config("shapes-vqgan", None)


# --- loading ------------------------------------------------------------------------------------------------

def test_load_unet_model_from_local_files(tiny_unet):
    config, checkpoint = tiny_unet
    model = factory.load_unet_model("256x256_diffusion_uncond", checkpoint, config, CPU, fp16=True)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # fp16 applies on CUDA only
    assert torch.equal(model.state_dict()["out.2.weight"], torch.load(checkpoint)["out.2.weight"])


def test_a_checkpoint_of_another_architecture_names_the_first_bad_key(tiny_unet, tmp_path):
    _, checkpoint = tiny_unet
    wider = tmp_path / "wider.yaml"
    wider.write_text(yaml.safe_dump({**dataclasses.asdict(tiny_unet_config()), "num_channels": 64}))
    with pytest.raises(UserError, match=r"does not match the config .*time_embed\.0\.weight"):
        factory.load_unet_model("256x256_diffusion_uncond", checkpoint, wider, CPU, fp16=False)


def test_vqgan_files_prefer_the_local_pair():
    config, checkpoint = factory.vqgan_files("vqgan_imagenet_f16_16384", "a.yaml", "b.ckpt")
    assert (str(config), str(checkpoint)) == ("a.yaml", "b.ckpt")
    bundled = (hub.model_path("shapes-vqgan", "config"), hub.model_path("shapes-vqgan", "checkpoint"))
    assert factory.vqgan_files("shapes-vqgan", None, None) == bundled
    assert factory.vqgan_files("shapes-vqgan", "a.yaml", None) == bundled  # half a pair is not a local model


def test_load_vqgan_model_from_local_files(tmp_path):
    config, checkpoint = write_tiny_taming(tmp_path)
    model = factory.load_vqgan_model("vqgan_imagenet_f16_16384", str(config), str(checkpoint), CPU)
    assert isinstance(model, VQGAN) and not model.training
    with pytest.raises(UsageError, match="unknown vqgan name 'nope'"):
        factory.load_vqgan_model("nope", None, None, CPU)


def test_a_missing_prior_checkpoint_names_the_prior_flag(tmp_path, monkeypatch):
    """Offline, the VQGAN's prior model is named with the prior's own flag for a local file, not the diffusion one."""
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path))
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=3.0: False)
    with pytest.raises(UserError, match=r"--prior-checkpoint PATH") as raised:
        factory.load_unet_model("256x256_diffusion_uncond", None, None, torch.device("cpu"), False, "--prior-config")
    assert "--diffusion-checkpoint" not in str(raised.value)
