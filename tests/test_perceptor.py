
import shutil

import open_clip
import pytest
import torch
from tiny_clip import write_tiny_clip

from artgen.errors import UsageError, UserError
from artgen.models import hub
from artgen.perceptor import ClipSpec, check_spec, load_perceptor, parse_clip_spec, with_bundled_weights

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.mark.parametrize("text, expected", [
    ("ViT-B-32:openai", ClipSpec("ViT-B-32", "openai", 1.0)),
    ("RN50:openai:0.5", ClipSpec("RN50", "openai", 0.5)),
    ("ViT-B-32", ClipSpec("ViT-B-32", None, 1.0)),
    ("ViT-B-32::2", ClipSpec("ViT-B-32", None, 2.0)),
])
def test_parse_clip_spec(text, expected):
    assert parse_clip_spec(text) == expected


@pytest.mark.parametrize("text", ["", ":openai", "a:b:c:d", "RN50:openai:heavy", "RN50:openai:inf"])
def test_bad_clip_specs(text):
    with pytest.raises(UsageError, match="--clip"):
        parse_clip_spec(text)


@pytest.mark.parametrize("which", [1, 2])
def test_local_checkpoint_loads_without_network(tiny, which):
    config, *files = tiny
    perceptor = load_perceptor(ClipSpec("artgen-tiny-clip", None, checkpoint=str(files[which - 1])), CPU)
    assert perceptor.input_size == 32
    images = torch.rand(4, 3, 32, 32, requires_grad=True)
    embeds = perceptor.encode_image(images)
    assert embeds.shape == (4, 32) and torch.allclose(embeds.norm(dim=-1), torch.ones(4), atol=1e-5)
    embeds.sum().backward()
    assert images.grad.abs().sum() > 0
    text = perceptor.encode_text(["a red circle", "a blue square"])
    assert text.shape == (2, 32) and not torch.allclose(text[0], text[1])
    # the weights are the file's, not a fresh random init
    state = torch.load(files[0], weights_only=True)
    assert torch.equal(perceptor.model.state_dict()["visual.conv1.weight"], state["visual.conv1.weight"])


def test_bundled_clip_name_with_a_local_checkpoint(tmp_path, monkeypatch):
    """--clip shapes-clip --clip-checkpoint FILE (a retrained copy) knows the architecture and keeps FILE."""
    monkeypatch.delitem(open_clip.factory._MODEL_CONFIGS, "shapes-clip", raising=False)  # as in a fresh process
    retrained = tmp_path / "retrained.safetensors"
    shutil.copy(hub.resolve("shapes-clip", "checkpoint"), retrained)
    spec = with_bundled_weights(parse_clip_spec("shapes-clip", str(retrained)))
    check_spec(spec)
    assert spec.checkpoint == str(retrained)
    assert load_perceptor(spec, CPU).model.visual.image_size == 64


def test_normalization_follows_the_pretrained_tag():
    openai = load_perceptor(ClipSpec("RN50", None), CPU)
    assert openai.input_size == 224
    assert openai.mean.flatten().tolist() == pytest.approx([0.48145466, 0.4578275, 0.40821073])


def test_unknown_model_and_tag():
    with pytest.raises(UsageError, match="unknown CLIP model 'ViT-B-33'.*ViT-B-32"):
        load_perceptor(ClipSpec("ViT-B-33", "openai"), CPU)
    with pytest.raises(UsageError, match="unknown pretrained tag 'nope'.*laion2b_s34b_b79k"):
        load_perceptor(ClipSpec("ViT-B-32", "nope"), CPU)


def test_offline_download_names_the_fix(monkeypatch):
    import open_clip

    class LocalEntryNotFoundError(Exception):
        pass

    def offline(*args, **kwargs):
        raise RuntimeError("failed") from LocalEntryNotFoundError("no network")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(UserError, match="cannot download CLIP ViT-B-32:openai.*--clip-checkpoint PATH"):
        load_perceptor(ClipSpec("ViT-B-32", "openai"), CPU)


def test_bad_checkpoints(tiny, tmp_path):
    _, checkpoint, _ = tiny
    spec = lambda path: ClipSpec("artgen-tiny-clip", None, checkpoint=str(path))  # noqa: E731
    with pytest.raises(UserError, match="does not exist"):
        load_perceptor(spec(tmp_path / "none.pt"), CPU)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(UserError, match="unreadable or truncated"):
        load_perceptor(spec(truncated), CPU)
    state = torch.load(checkpoint, weights_only=True)
    state["visual.conv1.weight"] = torch.zeros(5, 3, 8, 8)
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    with pytest.raises(UserError, match=r"visual.conv1.weight has shape \(5, 3, 8, 8\)"):
        load_perceptor(spec(wrong), CPU)


def test_pickled_code_is_refused(tiny, tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"x": Boom()}, evil)
    with pytest.raises(UserError, match="pickled code"):
        load_perceptor(ClipSpec("artgen-tiny-clip", None, checkpoint=str(evil)), CPU)
