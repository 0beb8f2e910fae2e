"""Kill an animation with SIGKILL at random moments, resume it each time, and check what it leaves behind.

    .venv/bin/python tests/fault_injection.py --kills 10

Runs ``artgen animate`` on tiny models in the real formats (written to a temporary folder) as a separate
process, kills it after a random delay, checks that every file under a final name is a complete PNG with
its settings (and that no video exists before the last frame), then resumes with ``--resume``. At the end
the frames must equal those of an uninterrupted run with the same seed. tests/test_faults.py runs a short
version of this in the suite.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_clip import write_tiny_clip  # noqa: E402
from tiny_taming import write_tiny_taming  # noqa: E402

FRAMES = 6


@dataclass
class Report:
    kills: int = 0            # processes killed before they finished
    finished_early: int = 0   # runs that completed before their kill came
    resumes: int = 0
    problems: list[str] | None = None


def animate_command(models: Path, frames_dir: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "artgen", "animate", "a red circle", "--frames", str(FRAMES), "--steps", "3",
            "--steps-per-frame", "2", "--zoom", "1.05", "--angle", "3", "--seed", "5", "--width", "32",
            "--height", "32", "--cutn", "4", "--vqgan-config", str(models / "tiny-vqgan.yaml"),
            "--vqgan-checkpoint", str(models / "tiny-vqgan.ckpt"), "--clip", "artgen-tiny-clip",
            "--clip-checkpoint", str(models / "artgen-tiny-clip.pt"), "--clip-config",
            str(models / "artgen-tiny-clip.json"), "--frames-dir", str(frames_dir), "--quiet",
            *(["--resume"] if resume else [])]


def check_integrity(frames_dir: Path) -> list[str]:
    """Every frame under its final name opens and carries settings; no video before all frames exist."""
    problems = []
    frames = sorted(frames_dir.glob("frame_*.png")) if frames_dir.is_dir() else []
    for path in frames:
        try:
            with Image.open(path) as picture:
                picture.load()
                if "artgen" not in picture.info:
                    problems.append(f"{path.name} has no settings")
        except OSError as error:
            problems.append(f"{path.name} is damaged ({error})")
    if frames_dir.with_suffix(".mp4").exists() and len(frames) < FRAMES:
        problems.append("a video exists before the last frame")
    return problems


def run_with_kills(models: Path, frames_dir: Path, kills: int, rng: random.Random, report: Report) -> None:
    """Start (or resume) the animation and kill it, ``kills`` times, then let it finish."""
    for attempt in range(kills + 1):
        process = subprocess.Popen(animate_command(models, frames_dir, resume=attempt > 0),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        report.resumes += attempt > 0
        if attempt == kills:
            _, err = process.communicate()
            if process.returncode != 0:
                report.problems.append(f"the final resume failed: {err.decode().strip()[-300:]}")
            return
        time.sleep(rng.uniform(1.5, 6.0))  # start-up takes about 2 s, a whole run about 5 s
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            report.kills += 1
        else:
            report.finished_early += 1
        process.wait()
        report.problems.extend(check_integrity(frames_dir))


def frames_of(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted(folder.glob("frame_*.png"))]


def main(kills: int, seed: int) -> Report:
    report = Report(problems=[])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = work / "models"
        write_tiny_taming(models)
        write_tiny_clip(models)
        subprocess.run(animate_command(models, work / "reference", resume=False), check=True, stdout=subprocess.DEVNULL)
        run_with_kills(models, work / "killed", kills, random.Random(seed), report)
        reference, resumed = frames_of(work / "reference"), frames_of(work / "killed")
        if len(resumed) != FRAMES or not all(np.array_equal(a, b) for a, b in zip(reference, resumed)):
            report.problems.append("the resumed frames differ from the uninterrupted run")
        if not (work / "killed.mp4").exists():
            report.problems.append("the resumed run wrote no video")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = main(args.kills, args.seed)
    print(f"killed {result.kills} times ({result.finished_early} runs finished before their kill), "
          f"resumed {result.resumes} times; problems: {result.problems or 'none'}")
    sys.exit(1 if result.problems else 0)
