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


DOWNLOAD_IN_A_PROCESS = """
import sys
from artgen.models import hub
hub.KNOWN_MODELS["served"] = hub.KnownModel("served", "clip", {"checkpoint": hub.KnownFile("served.bin", sys.argv[1])})
print(hub.resolve("served", "checkpoint"))
"""


@pytest.fixture
def served(tmp_path):
    """A local HTTP server on 127.0.0.1 with one file, answering slowly; yields (url, the GETs it answered)."""
    import http.server
    import threading
    import time

    payload = bytes(range(256)) * 4096
    gets = []

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            gets.append(self.path)
            time.sleep(1.0)  # long enough that a second process asks while the first downloads
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/served.bin", gets, payload
    server.shutdown()


def test_two_processes_download_a_file_once_and_record_its_hash(tmp_path, served):
    import os
    import subprocess
    import sys

    url, gets, payload = served
    env = os.environ | {"ARTGEN_HOME": str(tmp_path), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    runs = [subprocess.Popen([sys.executable, "-c", DOWNLOAD_IN_A_PROCESS, url], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    path = tmp_path / "served" / "served.bin"
    assert [out.strip() for out, _ in outputs] == [str(path)] * 2
    assert len(gets) == 1 and path.read_bytes() == payload
    assert (tmp_path / "served" / "served.bin.sha256").read_text().strip() == hub.sha256_of(path)


def test_a_changed_cached_file_is_refused_until_accepted(tmp_path, monkeypatch, artgen):
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path))
    for role in ("config", "checkpoint"):
        path = hub.model_path("wikiart_16384", role)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    hub.resolve_all("wikiart_16384")  # the first use records the hashes of files placed by hand
    checkpoint = hub.model_path("wikiart_16384", "checkpoint")
    checkpoint.write_bytes(b"y" * 10)
    with pytest.raises(UserError, match="has changed since it was first used.*models verify --accept"):
        hub.resolve("wikiart_16384", "checkpoint")
    verified = artgen("models", "verify")
    assert verified.code == 1 and "wikiart_16384 checkpoint: changed" in verified.out
    assert "wikiart_16384 config: ok" in verified.out and verified.err.count("\n") == 1
    accepted = artgen("models", "verify", "--accept")
    assert accepted.code == 0 and "checkpoint: accepted" in accepted.out
    assert hub.resolve("wikiart_16384", "checkpoint") == checkpoint
