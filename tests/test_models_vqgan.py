"""Our VQGAN against taming-transformers itself, and the loader on real-format checkpoints.

The reference is the registry's ``taming-transformers-rom1504`` package (a test-only dependency); its
modules are built with the same random weights as ours and must give the same numbers.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch
import yaml

from artgen.errors import UserError
from artgen.models.vqgan import VQGAN, load_vqgan, vector_quantize
from conftest import require_reference
from tiny_taming import random_vqgan, taming_config, write_tiny_taming

taming_model = require_reference("taming.modules.diffusionmodules.model")
taming_quantize = require_reference("taming.modules.vqvae.quantize")


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def reference_modules(config: dict, ours: VQGAN) -> dict[str, torch.nn.Module]:
    """taming's encoder, decoder, quantizer and 1x1 convs, loaded with our model's weights."""
    params = config["model"]["params"]
    ddconfig, n_embed, embed_dim = params["ddconfig"], params["n_embed"], params["embed_dim"]
    if ours.is_gumbel:
        quantize = taming_quantize.GumbelQuantize(ddconfig["z_channels"], embed_dim, n_embed=n_embed)
    else:
        quantize = taming_quantize.VectorQuantizer2(n_embed, embed_dim, beta=0.25)
    modules = {"encoder": taming_model.Encoder(**ddconfig), "decoder": taming_model.Decoder(**ddconfig),
               "quantize": quantize,
               "quant_conv": torch.nn.Conv2d(ddconfig["z_channels"], embed_dim, 1),
               "post_quant_conv": torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)}
    state = ours.state_dict()
    for name, module in modules.items():
        module.load_state_dict(part(state, name + "."), strict=True)
        module.eval()
    return modules


@torch.no_grad()
def test_f16_encode_and_decode_equal_taming():
    config = taming_config()
    ours = random_vqgan(config, seed=1)
    ref = reference_modules(config, ours)
    image = torch.rand(2, 3, 48, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1

    h_ref = ref["quant_conv"](ref["encoder"](image))
    z_ref = ref["quantize"](h_ref)[0]
    z_ours = ours.encode(image)
    assert z_ours.shape == (2, 8, 3, 2)
    torch.testing.assert_close(ours.quant_conv(ours.encoder(image)), h_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z_ours, z_ref, rtol=1e-5, atol=1e-5)

    decoded_ref = ref["decoder"](ref["post_quant_conv"](z_ref))
    torch.testing.assert_close(ours.decode(z_ref), decoded_ref, rtol=1e-5, atol=1e-5)
    assert decoded_ref.shape == image.shape


@torch.no_grad()
def test_gumbel_f8_encode_and_decode_equal_taming():
    config = taming_config(gumbel=True)
    ours = random_vqgan(config, seed=3)
    ref = reference_modules(config, ours)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    torch.manual_seed(5)  # the Gumbel sample is random in both, drawn from the same global generator
    z_ref = ref["quantize"](ref["quant_conv"](ref["encoder"](image)))[0]
    torch.manual_seed(5)
    z_ours = ours.encode(image)
    assert z_ours.shape == (1, 8, 4, 4)
    torch.testing.assert_close(z_ours, z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.decode(z_ours), ref["decoder"](ref["post_quant_conv"](z_ref)),
                               rtol=1e-5, atol=1e-5)


def test_vector_quantize_snaps_to_nearest_row_with_straight_through_gradient():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 3.0]])
    z = torch.tensor([[[[0.9]], [[1.2]]], [[[-1.5]], [[2.0]]]], requires_grad=True)  # [2, 2, 1, 1]
    snapped = vector_quantize(z, codebook)
    assert snapped[:, :, 0, 0].tolist() == [[1.0, 1.0], [-2.0, 3.0]]
    (snapped * torch.tensor([1.0, 2.0])[None, :, None, None]).sum().backward()
    assert z.grad[:, :, 0, 0].tolist() == [[1.0, 2.0], [1.0, 2.0]]


@pytest.mark.parametrize("gumbel", [False, True])
def test_loader_reads_lightning_checkpoint_and_ignores_loss_weights(tmp_path, gumbel):
    config, checkpoint = write_tiny_taming(tmp_path, gumbel=gumbel, seed=7)
    model = load_vqgan(config, checkpoint)
    expected = random_vqgan(taming_config(gumbel), seed=7).state_dict()
    assert model.is_gumbel == gumbel
    assert model.state_dict().keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not any(p.requires_grad for p in model.parameters())
    assert model.codebook.shape == (64, 8)


def test_loader_takes_first_stage_of_a_net2net_transformer(tmp_path):
    config, checkpoint = write_tiny_taming(tmp_path, seed=8, as_transformer=True)
    model = load_vqgan(config, checkpoint)
    expected = random_vqgan(taming_config(), seed=8).state_dict()
    assert all(torch.equal(model.state_dict()[key], value) for key, value in expected.items())


def test_checkpoint_with_pickled_code_is_refused_and_nothing_runs(tmp_path):
    config, _ = write_tiny_taming(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, evil)
    with pytest.raises(UserError, match="pickled code"):
        load_vqgan(config, evil)
    assert not marker.exists()


def break_file(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(random.Random(how).randbytes(2000))
    elif how == "plain pickle":
        path.write_bytes(pickle.dumps({"state_dict": 1}))


@pytest.mark.parametrize("how", ["truncated", "garbage", "plain pickle"])
def test_damaged_checkpoint_gives_one_clear_error(tmp_path, how):
    config, checkpoint = write_tiny_taming(tmp_path)
    break_file(checkpoint, how)
    with pytest.raises(UserError) as error:
        load_vqgan(config, checkpoint)
    assert str(checkpoint) in str(error.value) and "\n" not in str(error.value)


def test_checkpoint_and_config_that_do_not_match_name_the_bad_key(tmp_path):
    _, checkpoint = write_tiny_taming(tmp_path)
    other = taming_config(n_embed=128)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(other))
    with pytest.raises(UserError, match=r"quantize.embedding.weight has shape \(64, 8\).*\(128, 8\)"):
        load_vqgan(wrong, checkpoint)


def test_missing_files_and_bad_configs(tmp_path):
    config, checkpoint = write_tiny_taming(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_vqgan(tmp_path / "none.yaml", checkpoint)
    with pytest.raises(UserError, match="does not exist"):
        load_vqgan(config, tmp_path / "none.ckpt")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_vqgan(bad, checkpoint)
    bad.write_text(yaml.safe_dump({"model": {"target": "taming.models.vqgan.EMAVQ", "params": {}}}))
    with pytest.raises(UserError, match="unsupported VQGAN model"):
        load_vqgan(bad, checkpoint)
    no_state = tmp_path / "no_state.ckpt"
    torch.save({"epoch": 1}, no_state)
    with pytest.raises(UserError, match="no 'state_dict'"):
        load_vqgan(config, no_state)
