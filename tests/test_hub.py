import pytest

from artgen.errors import UsageError, UserError
from artgen.models import hub


def test_home_follows_artgen_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path))
    assert hub.home() == tmp_path
    assert hub.model_path("vqgan_imagenet_f16_16384", "checkpoint") == tmp_path / "vqgan_imagenet_f16_16384" / "last.ckpt"


def test_cached_files_resolve_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path))
    for role in ("config", "checkpoint"):
        path = hub.model_path("wikiart_16384", role)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    assert hub.is_cached("wikiart_16384") and hub.cached_size("wikiart_16384") == 20
    assert hub.resolve("wikiart_16384", "config").read_bytes() == b"x" * 10


def test_unknown_name(monkeypatch):
    with pytest.raises(UsageError, match="unknown vqgan name 'vqgan_nope'.*vqgan_imagenet_f16_16384"):
        hub.resolve("vqgan_nope", "config", kind="vqgan")


def test_download_failure_says_where_to_place_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path))
    known = hub.KnownFile("model.yaml", "http://127.0.0.1:9/model.yaml")
    target = tmp_path / "sflckr" / "model.yaml"
    with pytest.raises(UserError, match=f"place it at {target}"):
        hub.download(known, target, "sflckr config")
    assert not target.exists() and not target.with_name("model.yaml.part").exists()


def test_download_checks_sha256(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"hello")
    good = hub.KnownFile("f.bin", source.as_uri(), hub.sha256_of(source))
    hub.download(good, tmp_path / "ok" / "f.bin", "f")
    assert (tmp_path / "ok" / "f.bin").read_bytes() == b"hello"
    bad = hub.KnownFile("f.bin", source.as_uri(), "0" * 64)
    with pytest.raises(UserError, match="sha256 mismatch"):
        hub.download(bad, tmp_path / "bad" / "f.bin", "f")
    assert not (tmp_path / "bad" / "f.bin").exists()
