"""Video in and out through imageio: read an input's frames and fps, write frames as an H.264 mp4 or a gif.

Videos are written to a temporary name and renamed into place, so a killed run never leaves a half file
under the final name.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
from PIL import Image

from .errors import UsageError, UserError
from .files import readable_file

FRAME_NAME = re.compile(r"frame_\d+\.png")


def check_video(path: str | Path) -> Path:
    """The input video as a Path once it is a readable, non-empty file with a video stream; else one line on what it is.

    ffmpeg's own failures for these ("Error opening output files" for an audio-only file) name the wrong thing."""
    path = readable_file(path, "input video")
    if path.stat().st_size == 0:
        raise UserError(f"input video {path} is empty (0 bytes): give a video file with frames")
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                           capture_output=True, text=True, errors="replace", timeout=60).stderr
    if not re.search(r"^Input #0", probe, flags=re.M):
        reason = probe.strip().splitlines()[-1][:120] if probe.strip() else "no output from ffmpeg"
        raise UserError(f"cannot read video {path} ({reason}): give a video file ffmpeg can decode")
    streams = set(re.findall(r"^\s*Stream #\S+.*?: (\w+):", probe, flags=re.M))  # Video, Audio, Subtitle, ...
    if "Video" not in streams:
        holds = f"only {' and '.join(sorted(streams)).lower()}" if streams else "no streams"
        raise UserError(f"input video {path} has no video stream ({holds}): give a file with video frames")
    return path


def video_fps(path: str | Path) -> float:
    """Frames per second of a video file."""
    try:
        fps = float(iio.immeta(path, plugin="FFMPEG").get("fps") or 0)
    except (OSError, RuntimeError, ValueError, StopIteration) as error:
        raise UserError(f"cannot read video {path} ({_reason(error)}): give a video file ffmpeg can decode") from None
    if not fps > 0:
        raise UserError(f"video {path} does not say its frame rate: give --fps")
    return fps


def read_frames(path: str | Path, every_nth: int = 1, limit: int = 0) -> Iterator[Image.Image]:
    """Every ``every_nth`` frame of a video as RGB images, at most ``limit`` of them (0: all)."""
    taken = 0
    try:
        for index, frame in enumerate(iio.imiter(path, plugin="FFMPEG")):
            if index % every_nth == 0:
                yield Image.fromarray(np.asarray(frame)[..., :3])
                taken += 1
                if taken == limit:
                    return
    except (OSError, RuntimeError, ValueError) as error:
        if taken == 0:
            raise UserError(f"cannot read video {path} ({_reason(error)}): give a video file ffmpeg can decode") from None
        raise UserError(f"video {path} is damaged after {taken} frames ({_reason(error)})") from None
    if taken == 0:
        raise UserError(f"video {path} has no frames: give a video with at least one frame")


def count_frames(path: str | Path, every_nth: int = 1, limit: int = 0) -> int:
    """How many frames ``read_frames`` will give (decodes the video once)."""
    return sum(1 for _ in read_frames(path, every_nth, limit))


def frame_files(folder: Path) -> list[Path]:
    """The numbered frames of a frames folder, in order (not their upscales, frame_00001.up2.png)."""
    return sorted(path for path in folder.glob("frame_*.png") if FRAME_NAME.fullmatch(path.name))


def write_mp4(frames: list[Path], destination: Path, fps: float, crf: int) -> Path:
    """Encode PNG frames as H.264 (yuv420p, playable everywhere) at a constant quality ``crf``."""
    check_fps(fps)
    partial = destination.with_name(f".{destination.name}.part.mp4")
    try:
        with imageio_v2.get_writer(partial, format="FFMPEG", fps=fps, codec="libx264", quality=None,
                                   pixelformat="yuv420p", macro_block_size=2,
                                   ffmpeg_params=["-crf", str(crf)], ffmpeg_log_level="error") as writer:
            for frame in frames:
                writer.append_data(_even(np.asarray(Image.open(frame).convert("RGB"))))
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UserError(f"cannot write video {destination} ({_reason(error)}): check the disk and folder") from None
    os.replace(partial, destination)
    return destination


def write_gif(frames: list[Path], destination: Path, fps: float) -> Path:
    check_fps(fps)
    partial = destination.with_name(f".{destination.name}.part.gif")
    pictures = [Image.open(frame).convert("RGB") for frame in frames]
    try:
        pictures[0].save(partial, format="GIF", save_all=True, append_images=pictures[1:],
                         duration=round(1000 / fps), loop=0)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UserError(f"cannot write gif {destination} ({_reason(error)}): check the disk and folder") from None
    os.replace(partial, destination)
    return destination


def check_fps(fps: float) -> None:
    if not fps > 0:
        raise UsageError(f"--fps {fps}: the frame rate must be positive")


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: drop a last odd row or column."""
    height, width = frame.shape[:2]
    return frame[: height - height % 2, : width - width % 2]


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1][:120] if text else type(error).__name__
