"""Frame sequences: each frame starts from the previous one moved by a 2D camera, or from a video's frame.

Every frame is its own short run of the one loop, seeded with ``seed + frame index`` and started from the
previous frame as saved (8-bit), so a run stopped at any point and resumed from its frames folder gives the
same frames as an uninterrupted one. Frames are written atomically; the video is assembled at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from . import video
from .auto import is_auto
from .errors import RunInterrupted, UsageError, UserError
from .images import cover_resize, fit_image, load_image, pil_to_tensor
from .objective import Objective
from .output import ensure_writable, fill_template, read_metadata, save_png, save_text
from .prompts import parse_prompts
from .recipe import upgrade_recipe
from .run import svg_of, with_seed
from .runlog import RunLog
from .schedules import Schedule, parse_prompt_keyframes, parse_schedule
from .session import Session
from .settings import Settings, build_settings
from .upscale import upscale_saved

log = logging.getLogger("artgen")
DEFAULT_FPS = 12.0
MAX_ZOOM = 10.0  # per frame: beyond it a frame keeps under 1% of the last one's pixels
MAX_STEPS_PER_FRAME = 100_000  # a hundred times the longest preset run; 1e30 would never finish
# Settings that may change between a run and its --resume: they do not alter the frames already made (checkpointing
# gives the same numbers, and when not given it follows the memory free at the time)
RESUMABLE = ("overwrite", "resume", "frames", "fps", "crf", "gif", "device", "checkpointing")


@dataclass
class AnimationResult:
    folder: Path
    frames: list[Path]
    video: Path
    gif: Path | None
    settings: Settings


def warp(image: Tensor, zoom: float = 1.0, angle: float = 0.0, translate_x: float = 0.0,
         translate_y: float = 0.0, border: str = "reflect") -> Tensor:
    """Move the picture [N,3,H,W]: zoom about the centre, rotate counter-clockwise (degrees), shift (pixels).

    Each output pixel samples the input where the inverse move takes it (bilinear); beyond the edge the
    picture is mirrored (``reflect``) or repeated (``wrap``).
    """
    if zoom == 1 and angle == 0 and translate_x == 0 and translate_y == 0:
        return image
    if not zoom > 0:
        raise UsageError(f"--zoom must stay positive, got {zoom}")
    height, width = image.shape[-2:]
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # inverse of "rotate counter-clockwise on screen (y down), then scale", in pixel units about the centre
    inverse = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64) / zoom
    to_pixels = torch.diag(torch.tensor([width / 2, height / 2], dtype=torch.float64))
    matrix = torch.linalg.inv(to_pixels) @ inverse @ to_pixels
    shift = -torch.linalg.inv(to_pixels) @ inverse @ torch.tensor([translate_x, translate_y], dtype=torch.float64)
    theta = torch.cat([matrix, shift[:, None]], dim=1).to(image)[None].expand(image.shape[0], -1, -1)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    if border == "wrap":
        grid = torch.remainder(grid + 1, 2) - 1
    padding = "reflection" if border == "reflect" else "border"
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding, align_corners=False)


@dataclass(frozen=True)
class FramePlan:
    """Every animated parameter's schedule, read once; ``at(frame)`` gives that frame's values."""

    zoom: Schedule
    angle: Schedule
    translation_x: Schedule
    translation_y: Schedule
    strength: Schedule
    steps: Schedule | None
    interpolation: str

    @classmethod
    def from_settings(cls, settings: Settings, frames: int) -> "FramePlan":
        names = ("zoom", "angle", "translation_x", "translation_y", "init_strength")
        schedules = {name: parse_schedule(getattr(settings, name), name.replace("_", "-")) for name in names}
        steps = parse_schedule(settings.steps_per_frame, "steps-per-frame") if settings.steps_per_frame else None
        for name, schedule in [*schedules.items(), ("steps_per_frame", steps)]:
            if schedule is not None:
                schedule.check_frames(frames, name.replace("_", "-"))
        plan = cls(schedules["zoom"], schedules["angle"], schedules["translation_x"], schedules["translation_y"],
                   schedules["init_strength"], steps, settings.interpolation)
        limits = plan.limits(settings.width, settings.height)
        for frame in range(frames):  # find a bad value now, not after hours of frames
            plan.steps_at(frame, settings.steps)
            plan.strength_at(frame)
            for name, (schedule, low, high, low_open) in limits.items():
                value = plan.value(schedule, frame)
                if not (low < value if low_open else low <= value) or value > high:
                    span = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
                    raise UsageError(f"--{name} gives {value:g} at frame {frame}: keep it in {span}")
        return plan

    def limits(self, width: int, height: int) -> dict[str, tuple[Schedule, float, float, bool]]:
        """The sane range of each camera move per frame (schedule, low, high, low end open): a zoom beyond 10x,
        a turn past a full circle or a shift past the whole picture in one frame leaves nothing of the last
        frame to continue from (and 1e30 makes NaN frames)."""
        return {"zoom": (self.zoom, 0.0, MAX_ZOOM, True), "angle": (self.angle, -360.0, 360.0, False),
                "translation-x": (self.translation_x, -width, width, False),
                "translation-y": (self.translation_y, -height, height, False)}

    def value(self, schedule: Schedule, frame: int) -> float:
        return schedule.at(frame, self.interpolation)

    def move(self, image: Tensor, frame: int, border: str) -> Tensor:
        return warp(image, self.value(self.zoom, frame), self.value(self.angle, frame),
                    self.value(self.translation_x, frame), self.value(self.translation_y, frame), border)

    def steps_at(self, frame: int, default: int) -> int:
        if self.steps is None:
            return default
        steps = round(self.value(self.steps, frame))
        if not 1 <= steps <= MAX_STEPS_PER_FRAME:
            raise UsageError(f"--steps-per-frame gives {steps} steps at frame {frame}: keep it at 1 or more and "
                             f"at most {MAX_STEPS_PER_FRAME}")
        return steps

    def strength_at(self, frame: int) -> float:
        strength = self.value(self.strength, frame)
        if not 0 <= strength <= 1:
            raise UsageError(f"--init-strength gives {strength} at frame {frame}: keep it between 0 and 1")
        return strength


class PromptPlan:
    """The run's text prompts (fixed ones, then keyed ones) and their weights at each frame."""

    def __init__(self, settings: Settings) -> None:
        self.fixed = parse_prompts(settings.prompts)
        self.keyed = (parse_prompt_keyframes(settings.prompt_keyframes, settings.prompt_transition)
                      if settings.prompt_keyframes else None)
        self.image_weights = [p.weight for p in parse_prompts(settings.image_prompts)]

    @property
    def texts(self) -> list:
        return self.fixed + ([prompt for _, prompt in self.keyed.keys] if self.keyed else [])

    def weights(self, frame: int) -> list[float]:
        keyed = self.keyed.weights(frame) if self.keyed else []
        return [p.weight for p in self.fixed] + keyed + self.image_weights


def animate(settings: Settings | None = None, preset: str | None = None, progress: bool = True,
            **overrides: Any) -> AnimationResult:
    """Render a frame sequence (or stylize ``video_input``'s frames), then encode it as mp4 (and gif)."""
    if settings is None or settings.animation is None or preset or overrides:
        base = settings.to_dict() if settings is not None else None
        settings = build_settings(preset, base, overrides, animation=True)  # validated there
    else:
        settings.validate()  # built by the caller, perhaps by hand
    if settings.run.batch != 1 or settings.run.candidates:
        raise UsageError("animations draw one image per frame: use them without --batch and --candidates")
    if not settings.video_input and settings.frames < 1:
        raise UsageError("how many frames? give --frames N (1 or more)")
    if settings.video_input:
        video.check_video(settings.video_input)  # once, before its frames are counted and read
    session = Session(_continued(_settle_seed(settings)), progress)
    settings = session.settings
    count = (video.count_frames(settings.video_input, settings.every_nth, settings.frames)
             if settings.video_input else settings.frames)
    plan = FramePlan.from_settings(settings, count)
    prompts = PromptPlan(settings)
    if prompts.keyed:
        prompts.keyed.check_frames(count)
    folder = Path(fill_template(settings.frames_dir, settings))
    outputs = [folder.with_suffix(".mp4")] + ([folder.with_suffix(".gif")] if settings.gif else [])
    start, previous = _claim_folder(folder, outputs, settings)
    fps = settings.fps or (video.video_fps(settings.video_input) / settings.every_nth if settings.video_input
                           else DEFAULT_FPS)
    settings = session.settings = settings.replace(fps=fps)  # recorded in every frame, for `artgen encode`
    run_log = RunLog(settings, session.device)
    with session.explain_out_of_memory():
        objective = session.objective(prompts.texts)
        run_log.mark("load")
        frames = _render(session, objective, plan, prompts, folder, start, count, previous)
    run_log.mark("frames")
    mp4 = video.write_mp4(frames, outputs[0], fps, settings.crf)
    gif = video.write_gif(frames, outputs[1], fps) if settings.gif else None
    run_log.mark("encode")
    run_log.write(folder.with_suffix(".log"), {
        "frames": len(frames), "resumed_after": start, "video": str(mp4), "gif": str(gif) if gif else None,
        "losses": [read_metadata(path).get("loss") for path in frames]})
    return AnimationResult(folder, frames, mp4, gif, settings)


def _settle_seed(settings: Settings) -> Settings:
    """A resumed run needs the seed it started with; a new one gets a recorded random seed."""
    if settings.resume and settings.seed is None:
        if "{seed" in settings.frames_dir:
            raise UsageError("--resume needs the --seed of the run to continue (its frames folder is named by it; "
                             "`artgen show-settings FRAME.png` shows it)")
        frames = video.frame_files(Path(fill_template(settings.frames_dir, settings)))
        if frames:
            return settings.replace(seed=read_metadata(frames[-1])["settings"]["seed"])
    return with_seed(settings)


def _continued(settings: Settings) -> Settings:
    """A resumed run keeps the arithmetic its frames were drawn with: a precision or channels-last left automatic
    takes the last frame's recorded value, even where auto would now choose otherwise (frames of older versions
    were drawn in fp32). Checkpointing, which gives the same numbers, follows the memory free now."""
    folder = Path(fill_template(settings.frames_dir, settings))
    frames = video.frame_files(folder) if settings.resume and folder.is_dir() else []
    if not frames:
        return settings
    recorded = read_metadata(frames[-1]).get("settings", {})
    kept = {name: recorded[name] for name in ("precision", "channels_last")
            if is_auto(getattr(settings, name)) and name in recorded}
    return settings.replace(**kept).validate()


def _claim_folder(folder: Path, outputs: list[Path], settings: Settings) -> tuple[int, Tensor | None]:
    """Check the frames folder; returns the first frame to render and the frame before it (when resuming)."""
    existing = video.frame_files(folder) if folder.is_dir() else []
    for stale in [*folder.glob(".frame_*.tmp"), *folder.parent.glob(f".{folder.name}.*.part.*")]:
        stale.unlink()  # the temporary files of a run that was killed while writing
    if existing and settings.overwrite:
        for path in existing:
            path.unlink()
            path.with_suffix(".svg").unlink(missing_ok=True)  # a vector generator's copy of the frame
            for upscaled in folder.glob(f"{path.stem}.up*.png"):
                upscaled.unlink()
        existing = []
    elif existing and not settings.resume:
        raise UserError(f"{folder} already holds {len(existing)} frames: pass --resume to continue that run, "
                        "--overwrite to replace it, or choose another --frames-dir")
    for path in outputs:
        if path.exists() and not (settings.overwrite or settings.resume):
            raise UserError(f"{path} already exists: pass --overwrite to replace it, or choose another --frames-dir")
    ensure_writable(folder)
    if not existing:
        return 0, None
    done = _complete_prefix(existing)
    last = done[-1] if done else None
    if last is not None:
        _check_same_recipe(read_metadata(last)["settings"], settings, folder)
    log.info("resuming %s after frame %d", folder, len(done))
    return len(done), (pil_to_tensor(load_image(last, "previous frame")) if last is not None else None)


def _complete_prefix(existing: list[Path]) -> list[Path]:
    """frame_00001.png, frame_00002.png, ... up to the first one missing."""
    done = []
    for index, path in enumerate(sorted(existing)):
        if path.name != frame_name(index):
            break
        done.append(path)
    return done


def _check_same_recipe(recorded: dict[str, Any], settings: Settings, folder: Path) -> None:
    recorded = upgrade_recipe(recorded)
    current = settings.to_dict()
    for key in current:
        if key not in RESUMABLE and recorded.get(key) != current[key]:
            raise UserError(f"{folder} holds frames of another run ({key}: {recorded.get(key)!r} there, "
                            f"{current[key]!r} now): resume with the same settings, or pass --overwrite")


def frame_name(index: int) -> str:
    return f"frame_{index + 1:05d}.png"


def _render(session: Session, objective: Objective, plan: FramePlan, prompts: PromptPlan, folder: Path,
            start: int, count: int, previous: Tensor | None) -> list[Path]:
    settings = session.settings
    frames_bar = tqdm(total=count, initial=start, disable=not session.progress, desc="frames", unit="frame",
                      position=0)
    sources = _sources(settings, count)
    index = start
    try:
        for index, source in enumerate(sources):
            if index < start:
                continue
            torch.manual_seed(settings.seed + index)
            one, init = _frame_start(settings, plan, index, source, previous)
            generator = session.generator(one, init if init is not None else session.init_image())
            frame_objective = objective.with_prompt_weights(prompts.weights(index))
            loss = session.drive(generator, frame_objective, f"frame {index + 1}/{count}", nested=True)
            metadata = {"settings": settings.to_dict(), "frame": index, "frames": count, "step": generator.num_steps,
                        "loss": loss}
            path = save_png(generator.snapshot().cpu(), folder / frame_name(index), metadata)
            svg = svg_of(generator)(0)
            if svg is not None:  # a vector generator's frame as drawn, beside its PNG (frame_00001.svg)
                save_text(svg, path.with_suffix(".svg"))
            previous = pil_to_tensor(load_image(path, "frame"))  # what a resumed run will start from
            if settings.upscale > 1:  # frame_00001.up2.png beside the frame; the video keeps the frames' size
                upscale_saved(session, settings, [path], frame_objective)
            frames_bar.update(1)
    except KeyboardInterrupt:
        frames_bar.close()
        raise RunInterrupted(f"interrupted at frame {index + 1} of {count}: the {index} complete frames are in "
                             f"{folder}; continue with --resume") from None
    frames_bar.close()
    return video.frame_files(folder)[:count]


def _sources(settings: Settings, count: int) -> Iterator[Tensor | None]:
    """Each frame's input picture: the video's frames, or nothing (animate)."""
    if not settings.video_input:
        yield from [None] * count
        return
    for picture in video.read_frames(settings.video_input, settings.every_nth, settings.frames):
        yield pil_to_tensor(cover_resize(picture, settings.width, settings.height))


def _frame_start(settings: Settings, plan: FramePlan, index: int, source: Tensor | None,
                 previous: Tensor | None) -> tuple[Settings, Tensor | None]:
    """The settings and start image of one frame (None: the run's init image or the generator's own start)."""
    border = "wrap" if settings.tile else settings.border  # a seamless tile moves as the endless plane it tiles
    moved = plan.move(previous, index, border) if previous is not None else None
    if source is not None:
        init = source
        if moved is not None and settings.blend:
            init = (1 - settings.blend) * source + settings.blend * fit_image(moved, *source.shape[-2:][::-1])
    elif moved is not None:
        init = moved
    else:
        return settings, None  # the first frame of an animation
    steps = plan.steps_at(index, settings.steps)
    options = settings.options.for_frame(steps, settings.steps, plan.strength_at(index))
    return Settings(dataclasses.replace(settings.run, steps=steps), options, settings.animation), init


def encode(folder: str | Path, output: str | Path | None = None, fps: float | None = None, crf: int = 18,
           gif: bool = False, overwrite: bool = False) -> list[Path]:
    """Assemble a frames folder into ``FOLDER.mp4`` (and ``.gif``); fps defaults to the one recorded in the frames."""
    folder = Path(folder)
    frames = video.frame_files(folder) if folder.is_dir() else []
    if not frames:
        raise UserError(f"{folder} holds no frame_*.png files: give a frames folder written by artgen animate")
    if fps is None:
        recorded = _recorded_settings(frames[0])
        fps = recorded.get("fps") or DEFAULT_FPS
    mp4 = Path(output) if output else folder.with_suffix(".mp4")
    targets = [mp4] + ([mp4.with_suffix(".gif")] if gif else [])
    for path in targets:
        if path.exists() and not overwrite:
            raise UserError(f"{path} already exists: pass --overwrite to replace it, or give --output")
    written = [video.write_mp4(frames, mp4, fps, crf)]
    if gif:
        written.append(video.write_gif(frames, targets[1], fps))
    return written


def _recorded_settings(frame: Path) -> dict[str, Any]:
    try:
        return read_metadata(frame).get("settings", {})
    except UserError:
        return {}
