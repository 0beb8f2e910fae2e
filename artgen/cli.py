"""The command line: click commands whose flags are generated from the settings dataclasses.

Design: every field of RunSettings, of each generator's Options and (for animate and stylize-video) of
AnimationSettings is one flag of the same name, so a new generator's options appear here, in presets and in
recipes without touching this file. ``--help`` shows the flags under headings (common, controls, one per
generator, animation; a shared field may name its own heading in its metadata); ``--generator NAME --help``
shows only what that generator takes. Errors the user can fix are printed on one line with a non-zero exit
(2 for usage, 1 for run failures); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from functools import partial
from pathlib import Path
from typing import Any, get_type_hints

import click
import yaml

from .errors import UserError
from .generators import GENERATORS
from .settings import (AnimationSettings, RunSettings, Settings, UpscaleSettings, build_settings, check_recipe, flag,
                       load_preset, preset_description, preset_names)

SINGULAR_FLAGS = {"prompts": "prompt", "image_prompts": "image-prompt", "prompt_keyframes": "prompts"}
SHORT_FLAGS = {"output": "-o", "steps": "-n", "seed": "-s"}
NO_FLAG = ("video_input", "mask_sha256")  # set by a command's argument, or recorded by the run
COMMON = "Common options"
HELP_OPTIONS = ["-h", "--help"]
ANIMATION = "Animation options"
UPSCALE = "Upscale options"


def option_name(name: str) -> str:
    return "--" + SINGULAR_FLAGS.get(name, flag(name))


def option_names(name: str) -> list[str]:
    return [option_name(name)] + ([SHORT_FLAGS[name]] if name in SHORT_FLAGS else [])


def option_groups(animation: bool) -> list[tuple[str, type, str | None]]:
    """(heading, settings dataclass, generator name or None) for each group of flags of a command."""
    groups = [(COMMON, RunSettings, None)]
    groups += [(f"{cls.title} options (--generator {name})", cls.Options, name) for name, cls in GENERATORS.items()]
    return groups + ([(ANIMATION, AnimationSettings, None)] if animation else [])


def settings_options(animation: bool, without: tuple[str, ...] = ()):
    """Add one click option per settings field, in groups; defaults are None so only the flags given override.
    Animations take no edit flags (masks act on single pictures); ``without`` leaves out more fields."""
    def decorate(command):
        for heading, kind, generator in reversed(option_groups(animation)):
            types = get_type_hints(kind)
            own = [spec for spec in dataclasses.fields(kind) if spec.name not in NO_FLAG + without
                   and not (animation and spec.metadata.get("edit"))]
            for spec in reversed(own):
                own_heading = spec.metadata.get("heading", heading)  # a group of shared settings with a heading of its own
                command = _option(spec, types[spec.name], own_heading, generator)(command)
        return command
    return decorate


class GroupedOption(click.Option):
    """A click option that knows its help heading and, for a generator's option, its generator."""

    def __init__(self, *args: Any, heading: str = COMMON, generator: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heading, self.generator = heading, generator


def _option(spec: dataclasses.Field, annotation: Any, heading: str, generator: str | None):
    text = str(annotation)
    extra = dict(cls=GroupedOption, heading=heading, generator=generator, help=spec.metadata.get("help", ""))
    if "list" in text:
        return click.option(option_name(spec.name), spec.name, multiple=True, **extra | {
            "help": extra["help"] + " (repeatable)"})
    if "bool" in text:
        return click.option(f"{option_name(spec.name)}/--no-{flag(spec.name)}", spec.name, default=None, **extra)
    kind = click.Choice(spec.metadata["choices"]) if "choices" in spec.metadata else (
        int if "int" in text else float if "float" in text else str)
    return click.option(*option_names(spec.name), spec.name, type=kind, default=None, **extra)


class RunCommand(click.Command):
    """A rendering command whose --help groups the flags under headings; with --generator NAME given before
    --help it shows the common flags and that generator's only."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["artgen.generator"] = _named_generator(args)
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for heading, records in _sections(self, ctx, ctx.meta.get("artgen.generator")):
            with formatter.section(heading):
                formatter.write_dl(records)


def _named_generator(args: list[str]) -> str | None:
    """The value of --generator in raw arguments, if one of the registered generators."""
    for index, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--generator=") else (
            args[index + 1] if arg == "--generator" and index + 1 < len(args) else None)
        if value in GENERATORS:
            return value
    return None


def given(params: dict[str, Any]) -> dict[str, Any]:
    """The settings the user actually passed (unset options are None or empty)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if v not in (None, ())}


@click.group(context_settings={"help_option_names": HELP_OPTIONS, "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(package_name="artgen")
def cli(debug: bool) -> None:
    """artgen: optimization-based art with VQGAN+CLIP and CLIP-guided diffusion."""


def run_options(command, from_image: bool = True):
    """The options every rendering command shares besides the settings (upscale takes its recipe from its
    IMAGE, so it has no --from)."""
    command = click.option("--verbose", is_flag=True, help="Also report what is loaded, timings and files written.")(command)
    command = click.option("--quiet", is_flag=True, help="No progress bars; only warnings and errors.")(command)
    if from_image:
        command = click.option("--from", "from_image", type=click.Path(dir_okay=False),
                               help="Reuse the recipe recorded in a PNG written by artgen; flags override it.")(command)
    command = click.option("--preset", help="Preset name (see `artgen presets`) or YAML file; flags override it.")(command)
    return click.argument("prompt", nargs=-1)(command)


def upscale_options(command):
    """One flag per UpscaleSettings field, under their own heading."""
    types = get_type_hints(UpscaleSettings)
    for spec in reversed(dataclasses.fields(UpscaleSettings)):
        command = _option(spec, types[spec.name], UPSCALE, None)(command)
    return command


def command_overrides(prompt: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    """The settings a command line gives: its flags, with the PROMPT arguments first among the prompts. Also
    applies --verbose (which is not a setting) to the log level."""
    if params.pop("verbose", False):
        logging.getLogger("artgen").setLevel(logging.INFO)
    overrides = given(params)
    if prompt:
        overrides["prompts"] = list(prompt) + overrides.get("prompts", [])
    return overrides


def settings_from(prompt: tuple[str, ...], preset: str | None, from_image: str | None, params: dict[str, Any],
                  animation: bool = False, **fixed: Any) -> Settings:
    """Defaults, then the recipe of --from, then the preset, then the flags (PROMPT arguments first).

    A recipe from a PNG is sanitized first (artgen.recipe): it never chooses where files go or reads files
    outside the PNG's folder, and the rerun never replaces that PNG.
    """
    from .output import read_metadata, recorded_settings
    from .recipe import rerun_recipe, spare_source

    overrides = command_overrides(prompt, params) | fixed
    if not from_image:
        return build_settings(preset, None, overrides, animation)
    named = {key.replace("-", "_") for key in [*overrides, *(load_preset(preset) if preset else {})]}
    metadata = read_metadata(from_image)
    if isinstance(metadata.get("upscale"), dict):
        source = metadata["upscale"].get("source") or {}
        raise UserError(f"{from_image} is an upscale of {_one_line(source.get('file'))}: rerun that image's recipe "
                        "(--from SOURCE), or upscale it again with artgen upscale")
    base = rerun_recipe(recorded_settings(metadata, from_image), Path(from_image), named)
    return spare_source(build_settings(preset, base, overrides, animation), Path(from_image))


@cli.command(cls=RunCommand)
@run_options
@settings_options(animation=False)
def generate(prompt: tuple[str, ...], preset: str | None, from_image: str | None, quiet: bool,
             **params: Any) -> None:
    """Optimize an image toward PROMPT (text prompts, "text:weight:stop", joined with "|")."""
    from .run import generate as run_generate

    result = run_generate(settings_from(prompt, preset, from_image, params), progress=not quiet)
    for path in [*result.paths, *result.upscaled]:
        click.echo(str(path))


@cli.command(cls=RunCommand)
@click.argument("image", type=click.Path(dir_okay=False))
@partial(run_options, from_image=False)
@settings_options(animation=False, without=("init_image",))
def edit(image: str, prompt: tuple[str, ...], preset: str | None, quiet: bool, **params: Any) -> None:
    """Repaint part of IMAGE toward PROMPT: what --mask (white = repaint, or alpha) or --mask-box marks, or the
    border --extend grows; the rest keeps IMAGE's pixels. Without a mask: a variation of the whole image."""
    from .run import edit as run_edit

    result = run_edit(image, preset=preset, progress=not quiet, **command_overrides(prompt, params))
    for path in [*result.paths, *result.upscaled]:
        click.echo(str(path))


@cli.command(cls=RunCommand)
@click.argument("image", type=click.Path(dir_okay=False))
@partial(run_options, from_image=False)
@upscale_options
@settings_options(animation=False, without=("upscale", "mask", "mask_box", "mask_blur", "invert_mask", "extend",
                                            "extend_fill"))
def upscale(image: str, prompt: tuple[str, ...], preset: str | None, quiet: bool, **params: Any) -> None:
    """Enlarge IMAGE 2 or 4 times (--scale) and refine it tile by tile with a generator, toward the prompt of
    its recipe (or PROMPT); writes IMAGE.up2.png (or -o). Generator flags and --preset change the recipe's."""
    from .upscale import upscale as run_upscale

    names = {spec.name for spec in dataclasses.fields(UpscaleSettings)}
    overrides = command_overrides(prompt, params)
    upscaling = UpscaleSettings(**{name: overrides.pop(name) for name in names if name in overrides})
    result = run_upscale(image, upscaling, preset, progress=not quiet, **overrides)
    click.echo(str(result.path))


@cli.command(cls=RunCommand)
@run_options
@settings_options(animation=True)
def animate(prompt: tuple[str, ...], preset: str | None, from_image: str | None, quiet: bool,
            **params: Any) -> None:
    """Render --frames N frames, each the previous one moved by the camera (--zoom, --angle, --translation-x/y)
    and optimized toward PROMPT; writes a frames folder and an mp4."""
    from .animation import animate as run_animate

    result = run_animate(settings_from(prompt, preset, from_image, params, animation=True), progress=not quiet)
    click.echo(str(result.video))


@cli.command("stylize-video", cls=RunCommand)
@click.argument("video", type=click.Path(dir_okay=False))
@run_options
@settings_options(animation=True)
def stylize_video(video: str, prompt: tuple[str, ...], preset: str | None, from_image: str | None, quiet: bool,
                  **params: Any) -> None:
    """Stylize each frame of VIDEO toward PROMPT, starting from that frame (optionally blended with the
    previous output, --blend); writes a frames folder and an mp4 at the input's frame rate."""
    from .animation import animate as run_animate

    result = run_animate(settings_from(prompt, preset, from_image, params, animation=True, video_input=video),
                         progress=not quiet)
    click.echo(str(result.video))


@cli.command()
@click.argument("frames_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Video path (default: FRAMES_DIR.mp4).")
@click.option("--fps", type=float, help="Frame rate (default: the one recorded in the frames, else 12).")
@click.option("--crf", type=click.IntRange(0, 51), default=18, show_default=True, help="H.264 quality.")
@click.option("--gif", is_flag=True, help="Also write a gif.")
@click.option("--overwrite", is_flag=True, help="Replace existing videos.")
def encode(frames_dir: str, output: str | None, fps: float | None, crf: int, gif: bool, overwrite: bool) -> None:
    """Assemble the frame_*.png files of FRAMES_DIR into an mp4 (and a gif)."""
    from .animation import encode as run_encode

    for path in run_encode(frames_dir, output, fps, crf, gif, overwrite):
        click.echo(str(path))


@cli.command("show-settings")
@click.argument("image", type=click.Path(dir_okay=False))
def show_settings(image: str) -> None:
    """Print the settings recorded in a PNG written by artgen (as YAML, usable as a --preset file)."""
    from .output import read_metadata, recorded_settings
    from .recipe import applicable

    metadata = read_metadata(image)
    recorded = recorded_settings(metadata, image)
    check_recipe(recorded, f"recipe of {image}")  # unknown names or wrong types: one line, not a bad preset
    recorded = applicable(recorded, animation="frame" in metadata)
    click.echo(f"# artgen {_one_line(metadata.get('artgen_version', '?'))}, step {_one_line(metadata.get('step'))}, "
               f"loss {_one_line(metadata.get('loss'))}")
    if isinstance(metadata.get("upscale"), dict):
        up = metadata["upscale"]
        source = up.get("source") if isinstance(up.get("source"), dict) else {}
        click.echo(f"# upscale x{_one_line(up.get('scale'))} of {_one_line(source.get('file'))} in tiles of "
                   f"{_one_line(up.get('upscale_tile'))} (overlap {_one_line(up.get('upscale_overlap'))}, strength "
                   f"{_one_line(up.get('strength'))}); the settings below are each tile's")
    click.echo(yaml.safe_dump(recorded, sort_keys=False).rstrip())


def _one_line(value: Any) -> str:
    """A recorded value for a comment line: whatever a forged PNG holds cannot start a new YAML line."""
    return " ".join(str(value).split())[:80]


@cli.command()
def presets() -> None:
    """List the bundled presets."""
    names = preset_names()
    width = max(map(len, names), default=0)
    for name in names:
        click.echo(f"{name:{width}}  {preset_description(name)}")


@cli.group()
def models() -> None:
    """Known model files and the local cache."""


@models.command("list")
def models_list() -> None:
    """Known models, whether they are in the cache (or bundled with artgen), and their size."""
    from .models import hub

    hub.home()  # a misconfigured cache folder is one error line, not a table cut short
    click.echo(f"{'name':28} {'kind':10} {'cached':7} size")
    for name, model in hub.KNOWN_MODELS.items():
        cached = hub.is_cached(name)
        size = f"{hub.cached_size(name) / 2**20:.1f} MiB" if cached else "-"
        state = "bundled" if model.bundled else "yes" if cached else "no"
        click.echo(f"{name:28} {model.kind:10} {state:7} {size}")


@models.command("path")
@click.argument("name", required=False)
def models_path(name: str | None) -> None:
    """The cache folder ($ARTGEN_HOME), or where each file of model NAME goes."""
    from .models import hub

    if name is None:
        click.echo(str(hub.home()))
        return
    for role in hub.known_model(name).files:
        click.echo(f"{role}: {hub.model_path(name, role)}")


@models.command("verify")
@click.option("--accept", is_flag=True, help="Record the current hash of files that changed, keeping them.")
def models_verify(accept: bool) -> None:
    """Check every cached model file against the sha256 recorded at its download (or published): ok, recorded
    (first check), changed (refused when loaded), or accepted (with --accept)."""
    from .models import hub, integrity

    cached = [(f"{name} {role}", hub.model_path(name, role), known.sha256) for name, model in hub.KNOWN_MODELS.items()
              if not model.bundled for role, known in model.files.items()]
    clip_folder = hub.home() / "clip"  # CLIP weights placed by hand, one folder per model and tag
    cached += [(f"CLIP {path.parent.name}", path, None) for path in sorted(clip_folder.glob("*/*"))
               if path.suffix not in (".sha256", ".lock", ".part")]
    changed = []
    for label, path, published in cached:
        if path.is_file():
            word = integrity.status(path, published, accept)
            click.echo(f"{label}: {word} ({path})")
            changed += [path] if word == "changed" else []
    if changed:
        raise UserError(f"{len(changed)} cached file(s) changed since first used, {changed[0]} first: delete them "
                        "to download them again, or run `artgen models verify --accept` to keep them")


@cli.command()
@click.option("--device", default="auto", show_default=True, help="The device to report on: auto, cpu, cuda or cuda:N.")
@click.option("--preset", help="Report the automatic choices for this preset's generator and size.")
@click.pass_context
def doctor(ctx: click.Context, device: str, preset: str | None) -> None:
    """What this machine gives a run: versions, the device, what the automatic settings (--precision auto,
    --channels-last and --checkpointing when not given) choose there and why, and the models cache."""
    from .doctor import report
    from .models import hub

    for line in report(device, preset):
        click.echo(line)
    click.echo(f"models cache: {hub.home()}")
    ctx.invoke(models_list)


def reference_markdown() -> str:
    """docs/cli.md: every command and flag, grouped as ``--help`` groups them (a test keeps the file current)."""
    lines = ["# artgen command reference", "",
             "Generated from the CLI by `artgen.cli.reference_markdown()`; "
             "`python -c 'from artgen.cli import reference_markdown as r; print(r(), end=\"\")' > docs/cli.md` "
             "rewrites it.", ""]
    for path, command in _commands(cli, "artgen"):
        with click.Context(command, info_name=path, help_option_names=HELP_OPTIONS) as ctx:
            lines += [f"## {path}", "", f"    {command.get_usage(ctx)}", "",
                      (command.help or "").strip().replace("\n", " "), ""]
            for heading, records in _sections(command, ctx):
                lines += [f"### {heading}", "", "| flag | what it does |", "| --- | --- |"]
                lines += [f"| `{name}` | {_cell(text)} |" for name, text in records] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command))
    return found


def _sections(command: click.Command, ctx: click.Context,
              generator: str | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """(heading, help records) of a command's options; with ``generator``, other generators' are left out."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if generator and getattr(param, "generator", None) not in (None, generator):
            continue
        if record is not None:
            sections.setdefault(getattr(param, "heading", "Options"), []).append(record)
    return list(sections.items())


class _EchoHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"artgen: {record.levelname.lower()}: {record.getMessage()}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line per user error, exit 2 for usage and 1 for run failures."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    logger = logging.getLogger("artgen")
    if not logger.handlers:
        logger.addHandler(_EchoHandler())
        logger.propagate = False  # libraries may configure the root logger; say each thing once
    logger.setLevel(logging.WARNING)
    try:
        code = cli.main(args=args, prog_name="artgen", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("interrupted", 130)
    except click.ClickException as error:
        if debug:
            raise
        hint = f" (see `{error.ctx.command_path} --help`)" if getattr(error, "ctx", None) else ""
        _fail(error.format_message().replace("\n", " ") + hint, error.exit_code)
    except UserError as error:
        if debug:
            raise
        _fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"artgen: error: {message}", err=True)
    sys.exit(code)
