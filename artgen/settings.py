"""Run settings: one flat dataclass, loaded from defaults, a preset, a PNG's recipe and flags, in that order.

Every field is a CLI flag of the same name (``cutn`` -> ``--cutn``), so presets, flags, the PNG metadata
and the Python API all speak the same vocabulary.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import UsageError
from .files import readable_file
from .prompts import parse_prompts
from .schedules import parse_prompt_keyframes, parse_schedule

DEFAULT_OUTPUT = "outputs/{prompt}-{seed}-{n}.png"
OPTIMIZERS = ("adam", "adamw")
INITS = ("random", "noise")
NOISE_SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")
PRECISIONS = ("fp32", "bf16", "fp16")
INTERPOLATIONS = ("linear", "step")
BORDERS = ("reflect", "wrap")
DEFAULT_FRAMES_DIR = "outputs/{prompt}-{seed}"
MAX_SAVE_SCALE = 16  # a 256x256 image enlarged 16 times is 4096x4096: enough to view, small enough to write
ANIMATION = {"scope": "animation"}  # fields only `animate` and `stylize-video` take


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A settings field with its CLI help text (and extra click hints such as choices)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class Settings:
    """Everything that decides a run. Two runs with equal settings (and a seed) give the same image."""

    # what to draw
    prompts: list[str] = _opt([], 'Text prompts "text:weight:stop", several joined with "|".')
    image_prompts: list[str] = _opt([], 'Image prompts "path:weight:stop".')
    init_image: str | None = _opt(None, "Start from this image instead of random codes.")
    init: str = _opt("random", "Start without an init image: random codebook entries or encoded pixel noise.",
                     choices=INITS)
    # generator and models
    generator: str = _opt("vqgan", "Which generator draws the image.")
    vqgan_model: str = _opt("vqgan_imagenet_f16_16384", "Known VQGAN name (see `artgen models list`).")
    vqgan_config: str | None = _opt(None, "Local taming .yaml config (with --vqgan-checkpoint; no download).")
    vqgan_checkpoint: str | None = _opt(None, "Local taming .ckpt checkpoint (with --vqgan-config).")
    diffusion_model: str = _opt("256x256_diffusion_uncond", "Known guided-diffusion model name (see `artgen models list`).")
    diffusion_checkpoint: str | None = _opt(None, "Local guided-diffusion .pt (no download); its architecture is "
                                                  "--diffusion-model's unless --diffusion-config is given.")
    diffusion_config: str | None = _opt(None, "YAML file of UNet settings (image_size, num_channels, ...) for a "
                                              "checkpoint of another architecture.")
    clip: list[str] = _opt(["ViT-B-32:openai"], 'CLIP model(s) "name:pretrained:weight"; repeat for an ensemble.')
    clip_checkpoint: list[str] = _opt([], "Local open_clip checkpoint for the n-th --clip (no download).")
    clip_config: list[str] = _opt([], "open_clip model-config JSON of a custom architecture; its file name "
                                      "becomes a --clip name.")
    # size and optimization
    width: int = _opt(256, "Image width in pixels.")
    height: int = _opt(256, "Image height in pixels.")
    steps: int = _opt(250, "Optimization steps.")
    lr: float = _opt(0.1, "Learning rate.")
    optimizer: str = _opt("adam", "Optimizer for the latent.", choices=OPTIMIZERS)
    seed: int | None = _opt(None, "Random seed (chosen and recorded when not given).")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N.")
    batch: int = _opt(1, "Images drawn at once.")
    candidates: int = _opt(0, "Draw this many candidates one after another (seeds seed, seed+1, ...) and keep the "
                              "best by CLIP score (0: off).")
    keep: int = _opt(1, "How many of the --candidates to keep.")
    preselect: int = _opt(0, "Diffusion: start each image from the best of this many noise images, each sampled "
                             "unguided and scored by CLIP (0 or 1: off).")
    preselect_share: float = _opt(0.4, "Diffusion: share of the steps the --preselect starts run unguided, or that "
                                       "the best preview is noised back to.")
    preselect_preview: int = _opt(0, "Diffusion: judge each --preselect start by a preview, a finished picture "
                                     "drawn unguided in this many DDIM steps (0: by its prediction after "
                                     "--preselect-share of the steps).")
    init_weight: float = _opt(0.0, "VQGAN: weight of a pull of the codes back toward where they started (the init "
                                   "image's).")
    prior_scale: float = _opt(0.0, "VQGAN: weight of a diffusion prior (score distillation from --diffusion-model) "
                                   "that pulls the image toward pictures that model knows (0: off).")
    prior_guidance_scale: float = _opt(0.0, "VQGAN: CLIP guidance of the prior's prediction, as --clip-guidance-scale "
                                            "guides the diffusion generator (0: an unguided prior).")
    prior_draws: int = _opt(2, "VQGAN: noise draws of the prior per step.")
    # diffusion sampling
    diffusion_steps: int = _opt(1000, "Timesteps the diffusion model was trained with.")
    timestep_respacing: str | None = _opt(None, 'Sampling steps: "250", "ddim50", "50,100,..." (default: --steps).')
    noise_schedule: str = _opt("linear", "Beta schedule the model was trained with.", choices=NOISE_SCHEDULES)
    sampler: str = _opt("ddpm", "Diffusion sampler.", choices=SAMPLERS)
    eta: float = _opt(0.0, "DDIM eta (0: deterministic).")
    skip_steps: int = _opt(0, "Diffusion: start this many steps in, from the noised init image.")
    init_scale: float = _opt(0.0, "Diffusion: weight of the pixel loss toward the init image.")
    clamp_grad: bool = _opt(True, "Diffusion (and --prior-guidance-scale): limit the guidance gradient's RMS "
                            "to --clamp-max.")
    clamp_max: float = _opt(0.05, "Diffusion (and the prior): the gradient RMS limit.")
    clamp_by_signal: bool = _opt(False, "Diffusion (and the prior): scale --clamp-max by sqrt(alpha-bar) of each "
                                        "step, so that the noisiest steps, where a push counts most, push least.")
    diffusion_fp16: bool = _opt(True, "Diffusion: run the UNet in half precision on CUDA (ignored on the CPU).")
    # cutouts
    cutn: int = _opt(32, "Cutouts per step.")
    cut_pow: float = _opt(1.0, "Cutout size exponent: above 1 favours small cutouts.")
    cut_overview: str = _opt("", 'Whole-image cutouts per step over 1000 parts of the run, e.g. "[12]*400+[4]*600" '
                                 '(with --cut-innercut it replaces --cutn).')
    cut_innercut: str = _opt("", 'Random-crop cutouts per step, e.g. "[4]*400+[12]*600".')
    aug_flip: bool = _opt(True, "Random horizontal flips of the cutouts.")
    aug_affine: bool = _opt(True, "Random affine transforms of the cutouts.")
    aug_perspective: bool = _opt(True, "Random perspective transforms of the cutouts.")
    aug_jitter: bool = _opt(True, "Random colour jitter of the cutouts.")
    aug_noise: float = _opt(0.1, "Std of gaussian noise added to the cutouts (0 disables).")
    # loss weights
    clip_guidance_scale: float | None = _opt(None, "Weight of the CLIP prompt loss (default: the generator's own, "
                                                   "1 for VQGAN).")
    tv_scale: float = _opt(0.0, "Total-variation weight (smoothness).")
    range_scale: float = _opt(0.0, "Weight pulling pixel values back into [0,1].")
    sat_scale: float = _opt(0.0, "Saturation weight (positive mutes colours, negative boosts them).")
    # speed and memory
    precision: str = _opt("fp32", "Forward passes in full precision, or autocast to bf16/fp16 (faster on GPUs).",
                          choices=PRECISIONS)
    channels_last: bool = _opt(False, "Keep convolution inputs in channels-last memory (faster on recent GPUs).")
    compile: bool = _opt(False, "torch.compile the CLIP image encoder and the generator's model (falls back to "
                                "eager where compiling is unavailable).")
    checkpointing: bool = _opt(False, "Gradient checkpointing of the VQGAN decoder / UNet: less memory for large "
                                      "images, some extra time.")
    # output
    output: str = _opt(DEFAULT_OUTPUT, "Output path template: {prompt} {seed} {n} {generator} {width} {height} {date} {time}.")
    save_every: int = _opt(0, "Also write an intermediate image every N steps (0: only the final one).")
    save_scale: int = _opt(1, "Also write each image enlarged N times (nearest neighbour) beside it as NAME.xN.png, "
                              "to view small images (1: off; animation frames stay 1:1).")
    overwrite: bool = _opt(False, "Replace existing files instead of refusing.")
    # animation and video input (artgen animate, artgen stylize-video)
    frames: int = _opt(0, "animate: frames to render; stylize-video: at most this many input frames (0: all).",
                       **ANIMATION)
    prompt_keyframes: str = _opt("", 'Prompts by key frame, "0:a forest at dawn|60:a city at night" (added to '
                                     "any --prompt).", **ANIMATION)
    prompt_transition: int = _opt(0, "Frames over which a keyed prompt fades in as the previous fades out.",
                                  **ANIMATION)
    zoom: str = _opt("1.0", 'Zoom per frame, a schedule "0:(1.0), 50:(1.05)" (above 1 moves in).', **ANIMATION)
    angle: str = _opt("0", "Rotation per frame in degrees, counter-clockwise (a schedule).", **ANIMATION)
    translation_x: str = _opt("0", "Shift per frame in pixels, positive to the right (a schedule).", **ANIMATION)
    translation_y: str = _opt("0", "Shift per frame in pixels, positive downward (a schedule).", **ANIMATION)
    steps_per_frame: str = _opt("", "Steps for each frame after the first, a schedule (default: --steps).",
                                **ANIMATION)
    init_strength: str = _opt("0.5", "How much a frame keeps of its start image, 0-1, a schedule: diffusion skips "
                                     "that share of its steps, VQGAN pulls its codes toward the start.", **ANIMATION)
    interpolation: str = _opt("linear", "Between key frames: linear, or step (hold until the next key).",
                              choices=INTERPOLATIONS, **ANIMATION)
    border: str = _opt("reflect", "What the camera move shows beyond the edge.", choices=BORDERS, **ANIMATION)
    video_input: str | None = _opt(None, "stylize-video: the input video.", **ANIMATION)
    every_nth: int = _opt(1, "stylize-video: use every n-th input frame.", **ANIMATION)
    blend: float = _opt(0.0, "stylize-video: share of the previous output frame mixed into each input frame, 0-1 "
                             "(temporal coherence).", **ANIMATION)
    frames_dir: str = _opt(DEFAULT_FRAMES_DIR, "Frames folder (frame_00001.png, ...); the video is written next "
                                               "to it. Template fields as --output.", **ANIMATION)
    fps: float | None = _opt(None, "Video frame rate (default 12; stylize-video: the input's).", **ANIMATION)
    crf: int = _opt(18, "H.264 quality, 0 (lossless) to 51 (worst).", **ANIMATION)
    gif: bool = _opt(False, "Also write a gif.", **ANIMATION)
    resume: bool = _opt(False, "Continue the animation in the frames folder from its last complete frame.",
                        **ANIMATION)

    def validate(self) -> "Settings":
        """Check values that need no model; raise UsageError naming the field and the fix."""
        for name in ("steps", "width", "height", "cutn", "batch", "keep", "diffusion_steps", "prior_draws"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{flag(name)} must be a positive integer, got {getattr(self, name)}")
        for name in ("lr", "cut_pow"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"--{flag(name)} must be a positive number, got {value}")
        for name in ("aug_noise", "tv_scale", "range_scale", "sat_scale", "clip_guidance_scale", "prior_scale",
                     "prior_guidance_scale"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise UsageError(f"--{flag(name)} must be a finite number")
        for name in ("aug_noise", "save_every", "candidates", "preselect", "preselect_preview", "skip_steps", "eta",
                     "clamp_max", "init_weight", "prior_scale", "prior_guidance_scale"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{flag(name)} must not be negative, got {getattr(self, name)}")
        if not 1 <= self.save_scale <= MAX_SAVE_SCALE:
            raise UsageError(f"--save-scale must be a whole factor from 1 (no enlargement) to {MAX_SAVE_SCALE}, "
                             f"got {self.save_scale}")
        if self.candidates and self.keep > self.candidates:
            raise UsageError(f"--keep {self.keep} is more than --candidates {self.candidates}: keep at most all of them")
        if self.candidates and self.batch > 1:
            raise UsageError("--candidates draws one image per seed: use it without --batch")
        self._validate_preselect()
        if self.prior_scale and self.generator == "diffusion":
            raise UsageError("--prior-scale adds a diffusion prior to generators that lack one; the diffusion "
                             "generator samples from its model already: use --prior-scale 0")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise UsageError(f"unknown noise schedule {self.noise_schedule!r}: choose one of {', '.join(NOISE_SCHEDULES)}")
        if self.noise_schedule == "linear" and self.diffusion_steps <= 20:
            # the linear schedule scales its last beta by 1000/steps; at 20 steps or fewer it reaches 1
            raise UsageError(f"--diffusion-steps {self.diffusion_steps} is too few for the linear noise schedule: "
                             "use more than 20 (models are trained with 1000) or --noise-schedule cosine")
        if self.init not in INITS:
            raise UsageError(f"unknown init {self.init!r}: choose one of {', '.join(INITS)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if not self.prompts and not self.image_prompts and not self.prompt_keyframes:
            raise UsageError('nothing to aim for: give a prompt (artgen generate "a red circle") or --image-prompt')
        parse_prompts(self.prompts)  # syntax errors now, before any model is loaded
        parse_prompts(self.image_prompts)
        self._validate_animation()
        if not self.clip:
            raise UsageError("no CLIP model: give at least one --clip NAME:PRETRAINED")
        if len(self.clip_checkpoint) > len(self.clip):
            raise UsageError("more --clip-checkpoint files than --clip models: give one --clip per checkpoint")
        if (self.vqgan_config is None) != (self.vqgan_checkpoint is None):
            raise UsageError("--vqgan-config and --vqgan-checkpoint go together: give both local files or neither")
        return self

    def _validate_preselect(self) -> None:
        if self.preselect <= 1:  # one start or none: nothing to choose, as in run.preselect
            return
        if self.generator != "diffusion":
            raise UsageError("--preselect chooses among diffusion starts: use it with --generator diffusion, or "
                             "turn it off with --preselect 0")
        if not 0 < self.preselect_share < 1:
            raise UsageError(f"--preselect-share must lie between 0 and 1 (a share of the steps), got "
                             f"{self.preselect_share}")
        if self.preselect_preview == 1:
            raise UsageError(f"--preselect-preview draws each start in that many DDIM steps: give 2 or more (or 0 "
                             f"to judge the starts part-way), got {self.preselect_preview}")

    def _validate_animation(self) -> None:
        for name in ("frames", "prompt_transition"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{flag(name)} must not be negative, got {getattr(self, name)}")
        if self.every_nth <= 0:
            raise UsageError(f"--every-nth must be a positive integer, got {self.every_nth}")
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
        for name, choices in (("interpolation", INTERPOLATIONS), ("border", BORDERS)):
            if getattr(self, name) not in choices:
                raise UsageError(f"unknown {name} {getattr(self, name)!r}: choose one of {', '.join(choices)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def flag(name: str) -> str:
    """The CLI flag for a field name."""
    return name.replace("_", "-")


def field_names() -> list[str]:
    return [f.name for f in fields(Settings)]


def field_types() -> dict[str, Any]:
    return get_type_hints(Settings)


def apply(settings: Settings, values: dict[str, Any], source: str) -> Settings:
    """Return a copy of settings with values applied; unknown keys and wrong types are usage errors."""
    known = field_names()
    types = field_types()
    changes = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UsageError(f"{source}: unknown setting {key!r}{hint}")
        changes[name] = _coerce(name, value, types[name], source)
    return dataclasses.replace(settings, **changes)


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
    kinds = [(bool, "bool"), (int, "int"), (float, "float"), (str, "str")]
    for kind, label in kinds:
        if label in text.replace("builtins.", ""):
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if ok:
                return value
            raise UsageError(f"{source}: {name} must be {_article(label)}, got {value!r}")
    raise TypeError(f"unhandled settings type {annotation} for {name}")


def _article(label: str) -> str:
    return {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}[label]


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
        raise UsageError(f"unknown preset {name_or_path!r}: choose one of {', '.join(preset_names())} or give a YAML file path")
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


def build_settings(preset: str | None = None, base: dict[str, Any] | None = None,
                   overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then a recipe (e.g. read from a PNG), then a preset, then explicit overrides; validated."""
    settings = Settings()
    if base:
        settings = apply(settings, base, "recipe")
    if preset:
        settings = apply(settings, load_preset(preset), f"preset {preset!r}")
    if overrides:
        settings = apply(settings, overrides, "option")
    return settings.validate()
