"""Without network, a missing model fails at once and names every file to fetch, its URL and where it goes."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import huggingface_hub
import open_clip
import pytest
import torch

from artgen.errors import UserError
from artgen.models import hub
from artgen.perceptor import ClipSpec, load_perceptor, pretrained_file

CPU = torch.device("cpu")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No name resolves (as without network), an empty artgen cache, and nothing in the Hugging Face cache."""
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def one_error(result) -> str:
    lines = result.err.strip().splitlines()
    assert result.code == 1 and len(lines) == 1 and lines[0].startswith("artgen: error:"), result.err
    return lines[0]


def test_a_missing_openai_clip_fails_at_once_and_names_the_file(artgen, tiny_models, offline):
    start = time.monotonic()
    result = artgen("generate", "a red circle", "--vqgan-config", tiny_models.vqgan_config, "--vqgan-checkpoint",
                    tiny_models.vqgan_checkpoint, "--width", "32", "--height", "32", "--cutn", "4",
                    "--clip", "ViT-B-32:openai", "--steps", "1", "--quiet")
    assert time.monotonic() - start < 5
    line = one_error(result)
    url = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["url"]
    target = offline / "clip" / "ViT-B-32-openai" / "ViT-B-32.pt"
    assert f"{url} to {target}" in line and "--clip-checkpoint PATH" in line and "no network" in line, line


def test_clip_weights_placed_where_the_message_says_load_without_network(tiny_models, offline, monkeypatch):
    tags, configs = open_clip.list_pretrained_tags_by_model, open_clip.get_pretrained_cfg
    fake = {"url": "https://weights.example/artgen-tiny-clip.pt"}
    monkeypatch.setattr(open_clip, "list_pretrained_tags_by_model",
                        lambda name: ["test"] if name == "artgen-tiny-clip" else tags(name))
    monkeypatch.setattr(open_clip, "get_pretrained_cfg",
                        lambda name, tag: fake if (name, tag) == ("artgen-tiny-clip", "test") else configs(name, tag))
    spec = ClipSpec("artgen-tiny-clip", "test")
    with pytest.raises(UserError, match="weights.example/artgen-tiny-clip.pt to "):
        load_perceptor(spec, CPU)
    _, target = pretrained_file(spec, fake)
    target.parent.mkdir(parents=True)
    target.write_bytes(tiny_models.clip_checkpoint.read_bytes())
    loaded = load_perceptor(spec, CPU).model.state_dict()
    expected = torch.load(tiny_models.clip_checkpoint, weights_only=True)
    assert all(torch.equal(loaded[key], value) for key, value in expected.items())
    target.write_bytes(target.read_bytes() + b"\0")  # changed on disk since its first use
    with pytest.raises(UserError, match="has changed since it was first used"):
        load_perceptor(spec, CPU)


def test_a_missing_vqgan_names_its_config_and_checkpoint_at_once(artgen, tiny_models, offline):
    start = time.monotonic()
    result = artgen("generate", "a red circle", "--vqgan-model", "wikiart_16384", "--width", "32", "--height", "32",
                    "--cutn", "4", *tiny_models.clip_flags, "--steps", "1", "--quiet")
    assert time.monotonic() - start < 5
    line = one_error(result)
    files = hub.KNOWN_MODELS["wikiart_16384"].files
    for role in ("config", "checkpoint"):
        assert f"{files[role].url} to {offline / 'wikiart_16384' / files[role].filename}" in line, line
    assert "--vqgan-checkpoint PATH" in line


def test_a_failed_download_lists_the_files_still_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path))
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=3.0: True)

    def refused(*args, **kwargs):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    files = hub.KNOWN_MODELS["sflckr"].files
    with pytest.raises(UserError) as error:
        hub.resolve_all("sflckr", kind="vqgan")
    assert all(f"{files[r].url} to {tmp_path / 'sflckr' / files[r].filename}" in str(error.value) for r in files)
    config = tmp_path / "sflckr" / files["config"].filename
    config.write_text("model: {}")
    with pytest.raises(UserError) as error:
        hub.resolve_all("sflckr", kind="vqgan")
    assert files["checkpoint"].url in str(error.value) and files["config"].url not in str(error.value)
