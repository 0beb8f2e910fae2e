"""Known model files: names to URLs, a local cache, downloads with a progress bar; and the bundled models.

Model code never downloads; it is handed local paths that this module resolves. The cache lives in
``$ARTGEN_HOME`` (default: the user cache folder, e.g. ``~/.cache/artgen``), one folder per model name, so a
user without network can place the files there by hand, or pass local paths instead. Bundled models
(the tiny ``shapes-*`` models trained on synthetic scenes) ship inside the package and never download.
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import platformdirs
from tqdm import tqdm

from ..errors import UsageError, UserError
from ..files import sha256_of
from . import integrity


@dataclass(frozen=True)
class KnownFile:
    """One file of a known model: its name in the cache, where to get it, and its sha256 when recorded."""

    filename: str
    url: str = ""
    sha256: str | None = None


@dataclass(frozen=True)
class KnownModel:
    name: str
    kind: str                     # "vqgan", "diffusion" or "clip"
    files: dict[str, KnownFile]   # role ("config", "checkpoint") -> file
    description: str = ""
    bundled: bool = False         # shipped in artgen/zoo rather than downloaded


def _bundled(name: str, kind: str, config: str, checkpoint: str, description: str) -> KnownModel:
    files = {"config": KnownFile(f"{name}.{config}"), "checkpoint": KnownFile(f"{name}.{checkpoint}")}
    return KnownModel(name, kind, files, description, bundled=True)


def _heibox(share: str, config: str, checkpoint: str) -> dict[str, KnownFile]:
    base = f"https://heibox.uni-heidelberg.de/d/{share}/files/?dl=1&p="
    return {"config": KnownFile("model.yaml", base + config), "checkpoint": KnownFile("last.ckpt", base + checkpoint)}


_MIRROR = "https://github.com/Eleiber/VQGAN-Mirrors/releases/download/0.0.1/"

KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in [
    KnownModel("vqgan_imagenet_f16_16384", "vqgan",
               _heibox("a7530b09fed84f80a887", "%2Fconfigs%2Fmodel.yaml", "%2Fckpts%2Flast.ckpt"),
               "ImageNet, f16, 16384 codes: the usual default"),
    KnownModel("vqgan_imagenet_f16_1024", "vqgan",
               _heibox("8088892a516d4e3baf92", "%2Fconfigs%2Fmodel.yaml", "%2Fckpts%2Flast.ckpt"),
               "ImageNet, f16, 1024 codes"),
    KnownModel("wikiart_16384", "vqgan",
               {"config": KnownFile("model.yaml", _MIRROR + "wikiart_16384.yaml"),
                "checkpoint": KnownFile("last.ckpt", _MIRROR + "wikiart_16384.ckpt")},
               "WikiArt paintings, f16, 16384 codes"),
    KnownModel("sflckr", "vqgan",
               _heibox("73487ab6e5314cb5adba", "%2Fconfigs%2F2020-11-09T13-31-51-project.yaml",
                       "%2Fcheckpoints%2Flast.ckpt"),
               "S-FLCKR landscapes, f16"),
    KnownModel("vqgan_gumbel_f8_8192", "vqgan",
               _heibox("2e5662443a6b4307b470", "%2Fconfigs%2Fmodel.yaml", "%2Fckpts%2Flast.ckpt"),
               "OpenImages, Gumbel quantizer, f8, 8192 codes"),
    KnownModel("256x256_diffusion_uncond", "diffusion",
               {"checkpoint": KnownFile("256x256_diffusion_uncond.pt",
                                        "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
                                        "256x256_diffusion_uncond.pt",
                                        "983e3de6f95c88c81b2ca7ebb2c217933be1973b1ff058776b970f901584613a")},
               "OpenAI guided-diffusion, ImageNet 256, unconditional"),
    KnownModel("512x512_diffusion_uncond_finetune_008100", "diffusion",
               {"checkpoint": KnownFile("512x512_diffusion_uncond_finetune_008100.pt",
                                        "https://huggingface.co/lowlevelware/512x512_diffusion_unconditional_ImageNet/"
                                        "resolve/main/512x512_diffusion_uncond_finetune_008100.pt",
                                        "9c111ab89e214862b76e1fa6a1b3f1d329b1a88281885943d2cdbe357ad57648")},
               "guided-diffusion 512 fine-tuned to be unconditional (as Disco Diffusion uses)"),
    _bundled("shapes-vqgan", "vqgan", "yaml", "ckpt", "bundled: tiny VQGAN trained on synthetic shape scenes"),
    _bundled("shapes-diffusion", "diffusion", "yaml", "pt", "bundled: tiny UNet trained on synthetic shape scenes"),
    _bundled("shapes-clip", "clip", "json", "safetensors", "bundled: tiny CLIP trained on synthetic shape scenes"),
]}


def home() -> Path:
    """The cache root: $ARTGEN_HOME, else the user cache folder; refused when it or a folder above is a file.

    Checked here, where every command that uses the cache asks for it, so a misdirected ARTGEN_HOME is one line
    rather than a NotADirectoryError on the first download or "not cached" for every model."""
    configured = os.environ.get("ARTGEN_HOME")
    root = Path(configured).expanduser() if configured else Path(platformdirs.user_cache_dir("artgen"))
    blocker = next((part for part in (root, *root.parents) if part.exists() and not part.is_dir()), None)
    if blocker is not None:
        source = f"ARTGEN_HOME={configured}" if configured else f"the models cache {root}"
        raise UserError(f"{source}: {blocker} is a file, not a folder; point ARTGEN_HOME at a folder for the "
                        "models cache (or unset it to use the default)")
    return root


def known_model(name: str, kind: str | None = None) -> KnownModel:
    model = KNOWN_MODELS.get(name)
    if model is None or (kind is not None and model.kind != kind):
        names = ", ".join(n for n, m in KNOWN_MODELS.items() if kind is None or m.kind == kind)
        raise UsageError(f"unknown {kind or 'model'} name {name!r}: choose one of {names} (see `artgen models list`)")
    return model


def model_path(name: str, role: str) -> Path:
    """Where a known model's file lives: in the package when bundled, else in the cache (there or not yet)."""
    model = known_model(name)
    if model.bundled:
        return Path(str(resources.files("artgen.zoo") / model.files[role].filename))
    return home() / name / model.files[role].filename


def is_cached(name: str) -> bool:
    return all(model_path(name, role).is_file() for role in known_model(name).files)


def cached_size(name: str) -> int:
    return sum(p.stat().st_size for p in (model_path(name, r) for r in known_model(name).files) if p.is_file())


LOCAL_FLAGS = {"vqgan": "--vqgan-config PATH and --vqgan-checkpoint PATH", "diffusion": "--diffusion-checkpoint PATH",
               "clip": "--clip-checkpoint PATH"}


class DownloadFailed(UserError):
    """A download that did not complete, with the reason alone for messages that list several files."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def resolve(name: str, role: str, kind: str | None = None, local_flags: str | None = None) -> Path:
    """The local path of a known model's file, downloading it into the cache first when it is missing."""
    return resolve_all(name, kind, (role,), local_flags)[role]


def resolve_all(name: str, kind: str | None = None, roles: tuple[str, ...] | None = None,
                local_flags: str | None = None) -> dict[str, Path]:
    """Local paths of a known model's files (all, or ``roles``), downloading the missing ones; ``local_flags``
    names the flags that give local files instead (default: the kind's usual ones).

    Without network this fails at once (a short reachability probe, no retries) and names every missing
    file with its URL and the path to place it at, so that one trip to a connected machine is enough.
    """
    model = known_model(name, kind)
    paths = {role: model_path(name, role) for role in roles or tuple(model.files)}
    missing = [role for role, path in paths.items() if not path.is_file()]
    if missing and model.bundled:
        raise UserError(f"the bundled model file {paths[missing[0]]} is missing: reinstall artgen (pip install .)")
    for role in missing:
        reason = _fetch(model.files[role], paths[role], f"{name} {role}")
        if reason is not None:
            left = [(model.files[r].url, paths[r]) for r in missing if not paths[r].is_file()]
            raise UserError(fetch_by_hand(name, reason, left, local_flags or LOCAL_FLAGS.get(model.kind)))
    if not model.bundled:
        for role, path in paths.items():
            integrity.check(path, model.files[role].sha256, f"{name} {role}")
    return paths


def _fetch(known: KnownFile, path: Path, label: str) -> str | None:
    """Download a missing file under its lock (a process that waited finds it there); the reason when it could not."""
    with integrity.download_lock(path):
        if path.is_file():
            return None
        reason = None if reachable(known.url) else unreachable(known.url)
        if reason is None:
            try:
                download(known, path, label)
            except DownloadFailed as error:
                reason = error.reason
        return reason


def fetch_by_hand(what: str, reason: str, files: list[tuple[str, Path]], flags: str | None) -> str:
    """One line: why the download failed, then each file's URL and where to place it."""
    listing = "; ".join(f"{url} to {path}" for url, path in files)
    alternative = f", or pass local files with {flags}" if flags else ""
    return f"cannot download {what} ({reason}): on a machine with internet fetch {listing}{alternative}"


def unreachable(url: str) -> str:
    return f"no network: {urllib.parse.urlsplit(url).hostname} is unreachable"


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the URL's host (or the proxy for its scheme) accepts a connection within ``timeout`` seconds."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and parts.hostname and not urllib.request.proxy_bypass(parts.hostname):
        parts = urllib.parse.urlsplit(proxy)
    if not parts.hostname:
        return True  # a local (file:) URL
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


def download(known: KnownFile, destination: Path, label: str) -> None:
    """Fetch a file with a progress bar into ``<destination>.part``, check it, then rename it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
        with urllib.request.urlopen(known.url, timeout=30) as response, open(partial, "wb") as stream:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {label}") as bar:
                while chunk := response.read(1 << 20):
                    stream.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or error
        raise DownloadFailed(f"cannot download {label} ({reason}): fetch {known.url} on a machine with internet "
                             f"and place it at {destination}", str(reason)) from None
    if known.sha256 and sha256_of(partial) != known.sha256:
        partial.unlink(missing_ok=True)
        raise UserError(f"{label}: the download from {known.url} is damaged (sha256 mismatch): run again")
    shutil.move(partial, destination)
