"""The fast paths give the fp32-eager result within stated tolerances, and --compile falls back cleanly."""

from __future__ import annotations

import logging
import math

import pytest
import torch

import artgen
from artgen.generators.vqgan import VQGANGenerator
from artgen.models.unet import create_unet
from artgen.models.vqgan import load_vqgan
from artgen.objective import build_objective
from artgen.perceptor import load_perceptors, parse_clip_spec, register_model_config
from artgen.settings import build_settings
from artgen.speed import maybe_compile, precision_context, to_channels_last
from tiny_unet import randomize_, tiny_unet_config

CPU = torch.device("cpu")


def fixed_loss(objective, image, context) -> float:
    torch.manual_seed(0)
    with torch.no_grad(), context():
        return objective(image, 0.0).item()


def test_bf16_autocast_moves_the_loss_by_less_than_two_percent(tiny_models):
    settings = build_settings(None, None, tiny_models.settings(cutn=8, clip_guidance_scale=1.0, tv_scale=0.1))
    register_model_config(settings.clip_config[0])
    perceptors = load_perceptors([parse_clip_spec(settings.clip[0], settings.clip_checkpoint[0])], CPU)
    objective = build_objective(settings, perceptors, CPU)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    full = fixed_loss(objective, image, precision_context("fp32", CPU))
    half = fixed_loss(objective, image, precision_context("bf16", CPU))
    assert half == pytest.approx(full, rel=0.02)


@pytest.fixture(scope="module")
def fp32_loss(tmp_path_factory, tiny_models) -> float:
    folder = tmp_path_factory.mktemp("fp32")
    return artgen.generate(progress=False, **tiny_models.settings(precision="fp32", output=str(folder / "p.png"))).loss


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_run_at_reduced_precision_finishes_near_the_fp32_loss(tmp_path, tiny_models, precision, fp32_loss):
    """The same seeded run at reduced precision ends with a finite loss within 2% of the fp32 run's (measured:
    0.5970 fp32, 0.5972 bf16, 0.5969 fp16)."""
    result = artgen.generate(progress=False, **tiny_models.settings(precision=precision, output=str(tmp_path / "p.png")))
    assert math.isfinite(result.loss) and result.loss == pytest.approx(fp32_loss, rel=0.02)
    assert result.images.isfinite().all()


def test_channels_last_gives_the_same_numbers(tiny_models):
    model = load_vqgan(tiny_models.vqgan_config, tiny_models.vqgan_checkpoint)
    z = model.codebook[torch.randint(64, (1, 2, 2), generator=torch.Generator().manual_seed(2))].permute(0, 3, 1, 2)
    plain = model.decode(z)
    torch.testing.assert_close(to_channels_last(model, True).decode(z), plain, atol=1e-5, rtol=1e-5)
    unet = randomize_(create_unet(tiny_unet_config())).eval()
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
    with torch.no_grad():
        expected = unet(x, t)
        torch.testing.assert_close(to_channels_last(unet, True)(x.contiguous(memory_format=torch.channels_last), t),
                                   expected, atol=1e-5, rtol=1e-5)


def test_checkpointing_gives_the_same_gradients(tiny_models):
    model = load_vqgan(tiny_models.vqgan_config, tiny_models.vqgan_checkpoint)
    z = torch.randn(1, 8, 2, 2, requires_grad=True)
    grads = []
    for checkpointing in (False, True):
        model.decoder.checkpointing = checkpointing
        z.grad = None
        model.decode(z).square().mean().backward()
        grads.append(z.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-6)

    unet = randomize_(create_unet(tiny_unet_config())).eval()
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    grads = []
    for checkpointing in (False, True):
        unet.checkpointing = checkpointing
        x.grad = None
        unet(x, torch.tensor([300])).square().mean().backward()
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-6)


def test_checkpointing_run_equals_the_plain_run(tmp_path, tiny_models):
    plain = artgen.generate(progress=False, **tiny_models.settings(output=str(tmp_path / "a.png")))
    saved = artgen.generate(progress=False, **tiny_models.settings(checkpointing=True, output=str(tmp_path / "b.png")))
    torch.testing.assert_close(saved.images, plain.images, atol=1e-5, rtol=0)


def test_compile_falls_back_when_compiling_fails_on_first_call(monkeypatch, caplog):
    def broken_compile(function):
        def compiled(*args):
            raise RuntimeError("no C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    square = maybe_compile(lambda x: x * x, True, "the test function")
    with caplog.at_level(logging.WARNING, logger="artgen"):
        assert square(torch.tensor(3.0)).item() == 9.0
        assert square(torch.tensor(4.0)).item() == 16.0
    assert [r.getMessage() for r in caplog.records].count(
        "--compile: compiling the test function failed (no C++ compiler found); running it uncompiled") == 1


def test_compile_falls_back_when_torch_compile_refuses(monkeypatch, tmp_path, tiny_models, caplog):
    def refuses(function):
        raise RuntimeError("torch.compile is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuses)
    with caplog.at_level(logging.WARNING, logger="artgen"):
        result = artgen.generate(progress=False, **tiny_models.settings(compile=True, output=str(tmp_path / "c.png")))
    assert result.path.exists()
    assert any("cannot compile" in r.getMessage() for r in caplog.records)


def test_compile_off_returns_the_function_itself():
    function = VQGANGenerator.render
    assert maybe_compile(function, False, "x") is function


def test_batch_first_attention_computes_what_multihead_attention_does():
    """Same outputs and input gradients as nn.MultiheadAttention (fp32, up to rounding), with open_clip's causal
    float mask and without; cross-attention and asked-for weights run the original code."""
    from artgen.models.attention import BatchFirstSelfAttention, use_batch_first_attention

    torch.manual_seed(0)
    original = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
    fast = torch.nn.Sequential(torch.nn.MultiheadAttention(64, 4, batch_first=True)).eval()
    fast[0].load_state_dict(original.state_dict())
    assert use_batch_first_attention(fast) == 1 and isinstance(fast[0], BatchFirstSelfAttention)
    assert fast[0].state_dict().keys() == original.state_dict().keys()
    causal = torch.full((7, 7), float("-inf")).triu(1)
    for mask in (None, causal):
        x = torch.randn(3, 7, 64, requires_grad=True)
        y = torch.randn(3, 7, 64)
        expected = original(x, x, x, need_weights=False, attn_mask=mask)[0]
        (grad,) = torch.autograd.grad((expected * y).sum(), x)
        got = fast[0](x, x, x, need_weights=False, attn_mask=mask)[0]
        (fast_grad,) = torch.autograd.grad((got * y).sum(), x)
        assert torch.allclose(got, expected, atol=1e-5) and torch.allclose(fast_grad, grad, atol=1e-5)
    other = torch.randn(3, 5, 64)
    assert torch.equal(fast[0](x, other, other)[0], original(x, other, other)[0])  # the original code, exactly


def test_only_runs_under_autocast_get_the_batch_first_attention(tiny_models):
    """fp32 pictures stay bit for bit what they were; bf16 runs take the faster attention."""
    from artgen.models.attention import BatchFirstSelfAttention

    settings = build_settings(None, None, tiny_models.settings())
    register_model_config(settings.clip_config[0])
    spec = parse_clip_spec(settings.clip[0], settings.clip_checkpoint[0])
    for fast, kind in ((False, torch.nn.MultiheadAttention), (True, BatchFirstSelfAttention)):
        perceptor = load_perceptors([spec], CPU, fast_attention=fast)[0]
        kinds = {type(m) for m in perceptor.modules() if isinstance(m, torch.nn.MultiheadAttention)}
        assert kinds == {kind}
