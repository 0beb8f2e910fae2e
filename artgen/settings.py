"""Settings: what every generator shares (RunSettings), what animations add (AnimationSettings), and the
chosen generator's own Options, read from defaults, a PNG's recipe, a preset and flags, in that order.

Design: each field is a dataclass field with its help text, so the CLI flags, presets, the recipes in PNGs
and the Python API speak one flat vocabulary (``cutn`` is ``--cutn`` and ``cutn:`` in a preset). The flat
names are split once, in :func:`build_settings`, into the three parts and validated; a generator receives
only its own Options. A flag of another generator is refused rather than silently dropped.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import UsageError
from .files import readable_file
from .losses import parse_symmetry
from .masks import EDIT, FILLS, parse_box, parse_extension
from .palettes import parse_palette
from .prompts import parse_prompts
from .schedules import parse_prompt_keyframes, parse_schedule

log = logging.getLogger("artgen")
DEFAULT_OUTPUT = "outputs/{prompt}-{seed}-{n}.png"
DEFAULT_FRAMES_DIR = "outputs/{prompt}-{seed}"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INTERPOLATIONS = ("linear", "step")
BORDERS = ("reflect", "wrap")
CONTROLS = "Controls (every generator)"  # the --help heading of symmetry, tile and palette
MAX_SAVE_SCALE = 16  # a 256x256 image enlarged 16 times is 4096x4096: enough to view, small enough to write
UPSCALES = (2, 4)  # twice a side per pass; an 8x image is a 4x image upscaled twice


def setting(default: Any, help: str, **extra: Any) -> Any:
    """A settings field with its CLI help text (and extra click hints such as ``choices``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


def flag(name: str) -> str:
    """The CLI flag for a field name."""
    return name.replace("_", "-")


def require(values: Any, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
            finite: tuple[str, ...] = ()) -> None:
    """Check groups of numeric fields of a settings dataclass; raise UsageError naming the flag."""
    for name in finite:
        value = getattr(values, name)
        if value is not None and not math.isfinite(value):
            raise UsageError(f"--{flag(name)} must be a finite number")
    for name in positive:
        value = getattr(values, name)
        if not (math.isfinite(value) and value > 0):
            kind = "integer" if isinstance(value, int) else "number"
            raise UsageError(f"--{flag(name)} must be a positive {kind}, got {value}")
    for name in non_negative:
        if getattr(values, name) < 0:
            raise UsageError(f"--{flag(name)} must not be negative, got {getattr(values, name)}")


def require_choice(values: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(values, name)
    if value not in choices:
        raise UsageError(f"unknown {name.replace('_', ' ')} {value!r}: choose one of {', '.join(choices)}")


@dataclass
class RunSettings:
    """What every generator shares: prompts, size, steps, seed, device, cutouts, losses, precision, output."""

    # what to draw
    prompts: list[str] = setting([], 'Text prompts "text:weight:stop", several joined with "|".')
    image_prompts: list[str] = setting([], 'Image prompts "path:weight:stop".')
    init_image: str | None = setting(None, "Start from this image instead of the generator's own start.")
    generator: str = setting("vqgan", "Which generator draws the image (each has its own options below).")
    clip: list[str] = setting(["ViT-B-32:openai"], 'CLIP model(s) "name:pretrained:weight"; repeat for an ensemble.')
    clip_checkpoint: list[str] = setting([], "Local open_clip checkpoint for the n-th --clip (no download).")
    clip_config: list[str] = setting([], "open_clip model-config JSON of a custom architecture; its file name "
                                         "becomes a --clip name.")
    # size and steps
    width: int = setting(256, "Image width in pixels.")
    height: int = setting(256, "Image height in pixels.")
    steps: int = setting(250, "Steps: optimizer steps, or sampling steps for diffusion.")
    seed: int | None = setting(None, "Random seed (chosen and recorded when not given).")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    batch: int = setting(1, "Images drawn at once.")
    candidates: int = setting(0, "Draw this many candidates one after another (seeds seed, seed+1, ...) and keep "
                                 "the best by CLIP score (0: off).")
    keep: int = setting(1, "How many of the --candidates to keep.")
    # cutouts
    cutn: int = setting(32, "Cutouts per step.")
    cut_pow: float = setting(1.0, "Cutout size exponent: above 1 favours small cutouts.")
    cut_overview: str = setting("", 'Whole-image cutouts per step over 1000 parts of the run, e.g. '
                                    '"[12]*400+[4]*600" (with --cut-innercut it replaces --cutn).')
    cut_innercut: str = setting("", 'Random-crop cutouts per step, e.g. "[4]*400+[12]*600".')
    aug_flip: bool = setting(True, "Random horizontal flips of the cutouts.")
    aug_affine: bool = setting(True, "Random affine transforms of the cutouts.")
    aug_perspective: bool = setting(True, "Random perspective transforms of the cutouts.")
    aug_jitter: bool = setting(True, "Random colour jitter of the cutouts.")
    aug_noise: float = setting(0.1, "Std of gaussian noise added to the cutouts (0 disables).")
    # loss weights
    clip_guidance_scale: float | None = setting(None, "Weight of the CLIP prompt loss (default: the generator's "
                                                      "own, 1 for VQGAN, 5000 for diffusion).")
    tv_scale: float = setting(0.0, "Total-variation weight (smoothness).")
    range_scale: float = setting(0.0, "Weight pulling pixel values back into [0,1].")
    sat_scale: float = setting(0.0, "Saturation weight (positive mutes colours, negative boosts them).")
    # controls: symmetry, seamless tiles and a palette, for every generator
    symmetry: str = setting("none", "Mirror or rotational symmetry the image is pulled toward: none, horizontal "
                                    "(left mirrors right), vertical (top mirrors bottom), both, or radial:N (N-fold "
                                    "about the centre).", heading=CONTROLS)
    symmetry_scale: float = setting(3.0, "Weight of the symmetry loss, relative to --clip-guidance-scale so one "
                                         "value suits every generator; 3 makes the offline VQGAN's image a clear "
                                         "mirror in 100 steps with the prompt still drawn (1 is half as "
                                         "symmetric).", heading=CONTROLS)
    symmetry_end: float = setting(1.0, "Share of the run (0-1) after which the symmetry loss is off, as Disco's "
                                       "symmetry switch-off step: a little freedom at the end hides the mirror line.",
                                  heading=CONTROLS)
    tile: bool = setting(False, "Draw a seamless tile: the picture continues across its borders, so copies side by "
                                "side show no seam.", heading=CONTROLS)
    palette: str | None = setting(None, 'The colours: a name (pico-8, gameboy, cga) or hex colours "#1a1c2c,'
                                        '#5d275d,..."; pixel-art draws exactly these (without it it learns a '
                                        "palette), other generators are pulled toward them (--palette-scale).",
                                  heading=CONTROLS)
    palette_scale: float = setting(1.0, "Weight of the pull toward the --palette colours, relative to "
                                        "--clip-guidance-scale; 1 brings the offline VQGAN's colours three times "
                                        "nearer the palette in 100 steps.", heading=CONTROLS)
    # edits: repaint part of the init image, or grow it (artgen edit)
    mask: str | None = setting(None, "Repaint only part of --init-image: a PNG whose white marks that part, or "
                                     "alpha (the init image's transparent pixels).", heading=EDIT, edit=True)
    mask_box: str | None = setting(None, 'Repaint only this rectangle of --init-image, "x,y,w,h" in its pixels.',
                                   heading=EDIT, edit=True)
    mask_blur: float = setting(4.0, "Feather the mask's edge over this many pixels, inward, so the repainted part "
                                    "fades into the kept one (0: a hard edge).", heading=EDIT, edit=True)
    invert_mask: bool = setting(False, "Repaint what the mask leaves and keep what it marks.", heading=EDIT, edit=True)
    extend: str | None = setting(None, 'Outpaint: grow the picture beyond --init-image\'s borders, "left=128,top=64" '
                                       "(sides left, top, right, bottom), and paint the new part; --width and "
                                       "--height are the grown size.", heading=EDIT, edit=True)
    extend_fill: str = setting("reflect", "What the grown border starts as: the picture mirrored at its edge, or "
                                          "noise.", choices=FILLS, heading=EDIT, edit=True)
    mask_sha256: str | None = setting(None, "The mask file's sha256, recorded by the run so --from refuses a "
                                            "changed mask.", edit=True)
    # speed and memory
    precision: str = setting("auto", "Forward passes in full precision (fp32) or under autocast to bf16/fp16. auto: "
                                     "bf16 where the device computes it natively (CUDA compute capability 8.0 and "
                                     "later, CPUs with avx512_bf16 or AMX), else fp32. The PNG records the choice.",
                             choices=PRECISIONS)
    channels_last: bool | None = setting(None, "Keep convolution inputs in channels-last memory. Not given: on with "
                                               "bf16/fp16, whose measured speed-up (1.5-2.3x on a CPU with "
                                               "avx512_bf16) came with it, off in fp32, where none was measured.")
    compile: bool = setting(False, "torch.compile the CLIP image encoder and the generator's model (falls back "
                                   "to eager where compiling is unavailable).")
    checkpointing: bool | None = setting(None, "Gradient checkpointing of the generator's network: less memory for "
                                               "large images, some extra time. Not given: on only when the size's "
                                               "estimated memory exceeds what the device has free.")
    # output
    output: str = setting(DEFAULT_OUTPUT, "Output path template: {prompt} {seed} {n} {generator} {width} "
                                          "{height} {date} {time}.")
    save_every: int = setting(0, "Also write an intermediate image every N steps (0: only the final one).")
    save_scale: int = setting(1, "Also write each image enlarged N times (nearest neighbour) beside it as "
                                 "NAME.xN.png, to view small images (1: off; animation frames stay 1:1).")
    upscale: int = setting(1, "Also write each image enlarged 2 or 4 times by artgen upscale's tiled refinement "
                              "(its default tile, overlap and strength) beside it as NAME.up2.png (1: off).")
    overwrite: bool = setting(False, "Replace existing files instead of refusing.")

    def validate(self) -> None:
        """Check values that need no model; raise UsageError naming the flag and the fix."""
        require(self, positive=("steps", "width", "height", "cutn", "batch", "keep", "cut_pow"),
                non_negative=("aug_noise", "save_every", "candidates"),
                finite=("aug_noise", "tv_scale", "range_scale", "sat_scale", "clip_guidance_scale"))
        require(self, non_negative=("symmetry_scale", "palette_scale"), finite=("symmetry_scale", "palette_scale"))
        if not 0 <= self.symmetry_end <= 1:
            raise UsageError(f"--symmetry-end is a share of the run: give 0 to 1, got {self.symmetry_end}")
        parse_symmetry(self.symmetry)
        if self.palette is not None:
            parse_palette(self.palette)
        if not 1 <= self.save_scale <= MAX_SAVE_SCALE:
            raise UsageError(f"--save-scale must be a whole factor from 1 (no enlargement) to {MAX_SAVE_SCALE}, "
                             f"got {self.save_scale}")
        if self.upscale != 1 and self.upscale not in UPSCALES:
            raise UsageError(f"--upscale must be 2 or 4 (or 1: off), got {self.upscale}: upscale twice for more")
        if self.candidates and self.keep > self.candidates:
            raise UsageError(f"--keep {self.keep} is more than --candidates {self.candidates}: keep at most all "
                             "of them")
        if self.candidates and self.batch > 1:
            raise UsageError("--candidates draws one image per seed: use it without --batch")
        require_choice(self, "precision", PRECISIONS)
        parse_prompts(self.prompts)  # syntax errors now, before any model is loaded
        parse_prompts(self.image_prompts)
        if not self.clip:
            raise UsageError("no CLIP model: give at least one --clip NAME:PRETRAINED")
        self._validate_edit()

    def _validate_edit(self) -> None:
        """The mask and --extend flags: their syntax, and what they need (an init image) or exclude."""
        if self.mask_box is not None:
            parse_box(self.mask_box)
        if self.extend is not None:
            parse_extension(self.extend)
        require(self, non_negative=("mask_blur",), finite=("mask_blur",))
        require_choice(self, "extend_fill", FILLS)
        asked = [name for name in ("mask", "mask_box", "extend") if getattr(self, name)]
        if self.mask and self.mask_box:
            raise UsageError("--mask and --mask-box both say what to repaint: give one of them")
        if self.invert_mask and not (self.mask or self.mask_box):
            raise UsageError("--invert-mask swaps what --mask or --mask-box marks: give one of them")
        if asked and not self.init_image:
            raise UsageError(f"--{flag(asked[0])} edits a picture: give it with --init-image (or use artgen edit "
                             "IMAGE)")
        if asked and self.tile:
            raise UsageError(f"--{flag(asked[0])} and --tile do not go together: an edit keeps the picture's own "
                             "borders")
        if len(self.clip_checkpoint) > len(self.clip):
            raise UsageError("more --clip-checkpoint files than --clip models: give one --clip per checkpoint")


@dataclass
class AnimationSettings:
    """What ``artgen animate`` and ``artgen stylize-video`` add: frames, camera moves, video in and out."""

    frames: int = setting(0, "animate: frames to render; stylize-video: at most this many input frames (0: all).")
    prompt_keyframes: str = setting("", 'Prompts by key frame, "0:a forest at dawn|60:a city at night" (added '
                                        "to any --prompt).")
    prompt_transition: int = setting(0, "Frames over which a keyed prompt fades in as the previous fades out.")
    zoom: str = setting("1.0", 'Zoom per frame, a schedule "0:(1.0), 50:(1.05)" (above 1 moves in).')
    angle: str = setting("0", "Rotation per frame in degrees, counter-clockwise (a schedule).")
    translation_x: str = setting("0", "Shift per frame in pixels, positive to the right (a schedule).")
    translation_y: str = setting("0", "Shift per frame in pixels, positive downward (a schedule).")
    steps_per_frame: str = setting("", "Steps for each frame after the first, a schedule (default: --steps).")
    init_strength: str = setting("0.5", "How much a frame keeps of its start image, 0-1, a schedule: diffusion "
                                        "skips that share of its steps, VQGAN pulls its codes toward the start.")
    interpolation: str = setting("linear", "Between key frames: linear, or step (hold until the next key).",
                                 choices=INTERPOLATIONS)
    border: str = setting("reflect", "What the camera move shows beyond the edge (--tile always wraps).",
                          choices=BORDERS)
    video_input: str | None = setting(None, "stylize-video: the input video.")
    every_nth: int = setting(1, "stylize-video: use every n-th input frame.")
    blend: float = setting(0.0, "stylize-video: share of the previous output frame mixed into each input frame, "
                                "0-1 (temporal coherence).")
    frames_dir: str = setting(DEFAULT_FRAMES_DIR, "Frames folder (frame_00001.png, ...); the video is written "
                                                  "next to it. Template fields as --output.")
    fps: float | None = setting(None, "Video frame rate (default 12; stylize-video: the input's).")
    crf: int = setting(18, "H.264 quality, 0 (lossless) to 51 (worst).")
    gif: bool = setting(False, "Also write a gif.")
    resume: bool = setting(False, "Continue the animation in the frames folder from its last complete frame.")

    def validate(self) -> None:
        require(self, positive=("every_nth",), non_negative=("frames", "prompt_transition"))
        if not 0 <= self.blend <= 1:
            raise UsageError(f"--blend must be between 0 and 1, got {self.blend}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise UsageError(f"--fps must be a positive number, got {self.fps}")
        if not 0 <= self.crf <= 51:
            raise UsageError(f"--crf must be between 0 and 51, got {self.crf}")
        for name in ("zoom", "angle", "translation_x", "translation_y", "init_strength"):
            parse_schedule(getattr(self, name), flag(name))
        if self.steps_per_frame:
            parse_schedule(self.steps_per_frame, "steps-per-frame")
        if self.prompt_keyframes:
            parse_prompt_keyframes(self.prompt_keyframes, self.prompt_transition)
        require_choice(self, "interpolation", INTERPOLATIONS)
        require_choice(self, "border", BORDERS)


@dataclass
class UpscaleSettings:
    """What ``artgen upscale`` adds: how much larger, in which tiles, and how much of the enlargement each keeps."""

    scale: int = setting(2, "How many times larger each side becomes: 2 or 4.")
    upscale_tile: int | None = setting(None, "Side of the square tiles refined one at a time, in output pixels: "
                                             "memory grows with it, not with the output (default: the source's "
                                             "smaller side, at most 256).")
    upscale_overlap: int | None = setting(None, "Pixels that neighbouring tiles share, blended with weights that "
                                                "fade across them so no seam shows (default: a quarter tile).")
    strength: float = setting(0.6, "How much of the enlarged picture each tile keeps, 0-1: diffusion skips that "
                                   "share of its steps, VQGAN pulls its codes toward the tile that hard; pixels, "
                                   "pixel-art and strokes start from the tile itself and have no pull.")

    def validate(self) -> None:
        if self.scale not in UPSCALES:
            raise UsageError(f"--scale must be 2 or 4, got {self.scale}: upscale twice for more")
        if not 0 <= self.strength <= 1:
            raise UsageError(f"--strength is a share of the enlarged picture to keep: give 0 to 1, got "
                             f"{self.strength}")
        if self.upscale_tile is not None and self.upscale_tile < 16:
            raise UsageError(f"--upscale-tile must be at least 16 pixels, got {self.upscale_tile}")
        if self.upscale_overlap is not None and self.upscale_overlap < 1:
            raise UsageError(f"--upscale-overlap must be at least 1 pixel (feathering needs a shared strip), got "
                             f"{self.upscale_overlap}")

    def sized(self, width: int, height: int) -> "UpscaleSettings":
        """These settings for a source of ``width`` x ``height``: the defaults filled in, then checked against
        the output's size (a tile never larger than the output; an overlap under half a tile)."""
        tile = self.upscale_tile or max(16, min(width, height, 256) // 16 * 16)
        overlap = self.upscale_overlap or max(1, tile // 4)
        side = min(width, height) * self.scale
        if tile > side:
            raise UsageError(f"--upscale-tile {tile} is larger than the {width * self.scale}x{height * self.scale} "
                             f"output: give at most {side}")
        if overlap * 2 > tile:
            raise UsageError(f"--upscale-overlap {overlap} is more than half of the {tile}-pixel tile: give at "
                             f"most {tile // 2}")
        return dataclasses.replace(self, upscale_tile=tile, upscale_overlap=overlap)


@dataclass(frozen=True)
class Settings:
    """A validated run: the shared settings, the chosen generator's options, and (animations) the animation's.

    Reading ``settings.NAME`` finds the field in whichever part holds it, as in a preset or a recipe.
    """

    run: RunSettings
    options: Any  # the Options dataclass of run.generator
    animation: AnimationSettings | None = None

    def parts(self) -> list[Any]:
        return [self.run, self.options] + ([self.animation] if self.animation is not None else [])

    def __getattr__(self, name: str) -> Any:
        for part in object.__getattribute__(self, "parts")():
            if name in {f.name for f in fields(part)}:
                return getattr(part, name)
        raise AttributeError(name)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with flat-named fields changed (each goes to the part that holds it)."""
        parts = []
        for part in self.parts():
            names = {f.name for f in fields(part)}
            parts.append(dataclasses.replace(part, **{k: v for k, v in changes.items() if k in names}))
        unknown = set(changes) - {f.name for part in self.parts() for f in fields(part)}
        if unknown:
            raise TypeError(f"no settings named {sorted(unknown)}")
        return Settings(*parts)

    def validate(self) -> "Settings":
        """Check every part (values that need no model); raise UsageError naming the flag and the fix."""
        self.run.validate()
        self.options.validate(self.run)
        if self.animation is not None:
            self.animation.validate()
            edits = [name for name in ("mask", "mask_box", "extend") if getattr(self.run, name)]
            if edits:
                raise UsageError(f"--{flag(edits[0])} edits single pictures (artgen edit, artgen generate), not "
                                 "animations: drop it")
        keyed = self.animation is not None and self.animation.prompt_keyframes
        if not self.run.prompts and not self.run.image_prompts and not keyed:
            raise UsageError('nothing to aim for: give a prompt (artgen generate "a red circle") or --image-prompt')
        return self

    def to_dict(self) -> dict[str, Any]:
        """The flat recipe: every field of every part, as a preset or a PNG records it."""
        values: dict[str, Any] = {}
        for part in self.parts():
            values |= dataclasses.asdict(part)
        return values


def generator_options() -> dict[str, type]:
    """Generator name -> its Options dataclass (from the registry)."""
    from .generators import GENERATORS

    return {name: cls.Options for name, cls in GENERATORS.items()}


def field_names(kind: type) -> list[str]:
    return [f.name for f in fields(kind)]


def _owner(name: str) -> str | None:
    """Which generator's options hold a field name (None: no generator's)."""
    for generator, options in generator_options().items():
        if name in field_names(options):
            return generator
    return None


def _coerce(name: str, value: Any, annotation: Any, source: str) -> Any:
    """Check a value against the field's type, accepting what YAML and JSON naturally produce."""
    text = str(annotation)
    if value is None and "None" in text:
        return None
    if "list" in text:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise UsageError(f"{source}: {name} must be a string or a list of strings")
        return list(items)
    for kind, label in [(bool, "bool"), (int, "int"), (float, "float"), (str, "str")]:
        if label in text.replace("builtins.", ""):
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
                return value
            raise UsageError(f"{source}: {name} must be {_article(label)}, got {value!r}")
    raise TypeError(f"unhandled settings type {annotation} for {name}")


def _article(label: str) -> str:
    return {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}[label]


def _apply(part: Any, values: dict[str, Any], source: str) -> Any:
    """A copy of one settings part with ``values`` (its own fields only) checked and applied."""
    types = get_type_hints(type(part))
    return dataclasses.replace(part, **{name: _coerce(name, value, types[name], source)
                                        for name, value in values.items()})


def split(values: dict[str, Any], generator: str, animation: bool, source: str,
          strict: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Sort flat ``values`` into (run, options, animation) fields for ``generator``.

    Unknown names are usage errors. Another generator's options, and animation settings outside an
    animation, are refused when ``strict`` (flags and keywords the user gave) and skipped otherwise (a
    preset or recipe written for another generator or command); skipped preset values are named in a warning.
    """
    options_of = generator_options()
    if generator not in options_of:
        raise UsageError(f"unknown generator {generator!r}: choose one of {', '.join(options_of)}")
    run_names, own_names = field_names(RunSettings), field_names(options_of[generator])
    animation_names = field_names(AnimationSettings)
    parts: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] = ({}, {}, {})
    skipped = []
    for key, value in values.items():
        name = key.replace("-", "_")
        if name in run_names:
            parts[0][name] = value
        elif name in own_names:
            parts[1][name] = value
        elif name in animation_names:
            if animation:
                parts[2][name] = value
            elif strict:
                raise UsageError(f"--{flag(name)} is an animation setting: use it with artgen animate or "
                                 "artgen stylize-video")
        elif _owner(name) is not None:
            if strict:
                raise UsageError(f"--{flag(name)} is an option of the {_owner(name)} generator, which this run "
                                 f"does not use (--generator {generator}): drop it, or use --generator "
                                 f"{_owner(name)}")
            skipped.append(name)
        else:
            known = run_names + animation_names + [n for o in options_of.values() for n in field_names(o)]
            near = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UsageError(f"{source}: unknown setting {key!r}{hint}")
    if skipped and source.startswith("preset"):
        log.warning("%s sets options of another generator, which the %s generator does not take: %s ignored",
                    source, generator, ", ".join(skipped))
    return parts


def generator_of(*sources: dict[str, Any] | None) -> str:
    """The generator named last (flags over preset over recipe), else the default."""
    chosen = RunSettings().generator
    for values in sources:
        if values and values.get("generator") is not None:
            chosen = values["generator"]
    if not isinstance(chosen, str):
        raise UsageError(f"generator must be a string, got {chosen!r}")
    return chosen


def build_settings(preset: str | None = None, base: dict[str, Any] | None = None,
                   overrides: dict[str, Any] | None = None, animation: bool = False) -> Settings:
    """Defaults, then a recipe (e.g. read from a PNG), then a preset, then explicit overrides; validated.

    The recipe and preset may hold options of another generator (skipped); the overrides may not.
    """
    from .recipe import upgrade_recipe

    base = upgrade_recipe(base) if base else None
    preset_values = load_preset(preset) if preset else None
    generator = generator_of(base, preset_values, overrides)
    if generator not in generator_options():
        raise UsageError(f"unknown generator {generator!r}: choose one of {', '.join(generator_options())}")
    run, options = RunSettings(), generator_options()[generator]()
    frames = AnimationSettings() if animation else None
    for values, source, strict in ((base, "recipe", False), (preset_values, f"preset {preset!r}", False),
                                   (overrides, "option", True)):
        if not values:
            continue
        own_run, own_options, own_animation = split(values, generator, animation, source, strict)
        run = _apply(run, own_run, source)
        options = _apply(options, own_options, source)
        if frames is not None:
            frames = _apply(frames, own_animation, source)
    return Settings(run, options, frames).validate()


def check_recipe(values: dict[str, Any], source: str) -> None:
    """Check that every name of a recorded recipe is a setting of its generator (or an animation's) and has the
    right type; raise one line otherwise."""
    from .recipe import upgrade_recipe

    values = upgrade_recipe(values)
    generator = generator_of(values)
    if generator not in generator_options():
        raise UsageError(f"{source}: unknown generator {generator!r}")
    run, options, frames = split(values, generator, True, source, strict=False)
    _apply(RunSettings(), run, source)
    _apply(generator_options()[generator](), options, source)
    _apply(AnimationSettings(), frames, source)


def preset_names() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.name[:-5] for p in resources.files("artgen.presets").iterdir() if p.name.endswith(".yaml"))


def preset_path(name_or_path: str) -> Path | Any:
    """A preset file: a bundled name, or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return readable_file(candidate, "preset file", "check the path, or use a name from `artgen presets`",
                             UsageError)
    bundled = resources.files("artgen.presets") / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise UsageError(f"unknown preset {name_or_path!r}: choose one of {', '.join(preset_names())} or give a "
                         "YAML file path")
    return bundled


def load_preset(name_or_path: str) -> dict[str, Any]:
    """The settings a preset sets (a YAML mapping of field names to values)."""
    source = preset_path(name_or_path)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UsageError(f"preset {name_or_path!r} is not valid YAML ({_first_line(error)}): fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"preset {name_or_path!r} must be a mapping of setting names to values")
    return data


def preset_description(name: str) -> str:
    """The first comment line of a bundled preset, which says what it is for."""
    for line in (resources.files("artgen.presets") / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
