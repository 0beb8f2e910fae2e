"""The command line. Flags are generated from the Settings fields, so they map onto them one to one.

Errors the user can fix are printed on one line with a non-zero exit (2 for usage, 1 for run failures);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from .errors import UserError
from .settings import Settings, apply, build_settings, field_types, flag, load_preset, preset_description, preset_names

SINGULAR_FLAGS = {"prompts": "prompt", "image_prompts": "image-prompt", "prompt_keyframes": "prompts"}
SHORT_FLAGS = {"output": "-o", "steps": "-n", "seed": "-s"}
NO_FLAG = ("video_input",)  # set by a command's argument instead


def option_name(name: str) -> str:
    return "--" + SINGULAR_FLAGS.get(name, flag(name))


def option_names(name: str) -> list[str]:
    return [option_name(name)] + ([SHORT_FLAGS[name]] if name in SHORT_FLAGS else [])


def settings_options(animation: bool):
    """Add one click option per Settings field (animation fields only where asked); defaults are None so
    only the flags given override."""
    def decorate(command):
        for spec in reversed(dataclasses.fields(Settings)):
            if spec.name not in NO_FLAG and (animation or spec.metadata.get("scope") != "animation"):
                command = _option(spec)(command)
        return command
    return decorate


def _option(spec: dataclasses.Field):
    text = str(field_types()[spec.name])
    help_text = spec.metadata.get("help", "")
    if "list" in text:
        return click.option(option_name(spec.name), spec.name, multiple=True, help=help_text + " (repeatable)")
    if "bool" in text:
        return click.option(f"{option_name(spec.name)}/--no-{flag(spec.name)}", spec.name, default=None, help=help_text)
    kind = click.Choice(spec.metadata["choices"]) if "choices" in spec.metadata else (
        int if "int" in text else float if "float" in text else str)
    return click.option(*option_names(spec.name), spec.name, type=kind, default=None, help=help_text)


def given(params: dict[str, Any]) -> dict[str, Any]:
    """The settings the user actually passed (unset options are None or empty)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if v not in (None, ())}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(package_name="artgen")
def cli(debug: bool) -> None:
    """artgen: optimization-based art with VQGAN+CLIP and CLIP-guided diffusion."""


def run_options(command):
    """The options every rendering command shares besides the settings."""
    command = click.option("--verbose", is_flag=True, help="Also report what is loaded, timings and files written.")(command)
    command = click.option("--quiet", is_flag=True, help="No progress bars; only warnings and errors.")(command)
    command = click.option("--from", "from_image", type=click.Path(dir_okay=False),
                           help="Reuse the recipe recorded in a PNG written by artgen; flags override it.")(command)
    command = click.option("--preset", help="Preset name (see `artgen presets`) or YAML file; flags override it.")(command)
    return click.argument("prompt", nargs=-1)(command)


def settings_from(prompt: tuple[str, ...], preset: str | None, from_image: str | None, params: dict[str, Any],
                  **fixed: Any) -> Settings:
    """Defaults, then the recipe of --from, then the preset, then the flags (PROMPT arguments first).

    A recipe from a PNG is sanitized first (artgen.recipe): it never chooses where files go or reads files
    outside the PNG's folder, and the rerun never replaces that PNG. Also applies --verbose (which is not a
    setting) to the log level.
    """
    from .output import read_metadata, recorded_settings
    from .recipe import rerun_recipe, spare_source

    if params.pop("verbose", False):
        logging.getLogger("artgen").setLevel(logging.INFO)
    overrides = given(params) | fixed
    if prompt:
        overrides["prompts"] = list(prompt) + overrides.get("prompts", [])
    if not from_image:
        return build_settings(preset, None, overrides)
    named = {key.replace("-", "_") for key in [*overrides, *(load_preset(preset) if preset else {})]}
    base = rerun_recipe(recorded_settings(read_metadata(from_image), from_image), Path(from_image), named)
    return spare_source(build_settings(preset, base, overrides), Path(from_image))


@cli.command()
@run_options
@settings_options(animation=False)
def generate(prompt: tuple[str, ...], preset: str | None, from_image: str | None, quiet: bool,
             **params: Any) -> None:
    """Optimize an image toward PROMPT (text prompts, "text:weight:stop", joined with "|")."""
    from .run import generate as run_generate

    result = run_generate(settings_from(prompt, preset, from_image, params), progress=not quiet)
    for path in result.paths:
        click.echo(str(path))


@cli.command()
@run_options
@settings_options(animation=True)
def animate(prompt: tuple[str, ...], preset: str | None, from_image: str | None, quiet: bool,
            **params: Any) -> None:
    """Render --frames N frames, each the previous one moved by the camera (--zoom, --angle, --translation-x/y)
    and optimized toward PROMPT; writes a frames folder and an mp4."""
    from .animation import animate as run_animate

    result = run_animate(settings_from(prompt, preset, from_image, params), progress=not quiet)
    click.echo(str(result.video))


@cli.command("stylize-video")
@click.argument("video", type=click.Path(dir_okay=False))
@run_options
@settings_options(animation=True)
def stylize_video(video: str, prompt: tuple[str, ...], preset: str | None, from_image: str | None, quiet: bool,
                  **params: Any) -> None:
    """Stylize each frame of VIDEO toward PROMPT, starting from that frame (optionally blended with the
    previous output, --blend); writes a frames folder and an mp4 at the input's frame rate."""
    from .animation import animate as run_animate

    result = run_animate(settings_from(prompt, preset, from_image, params, video_input=video), progress=not quiet)
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

    metadata = read_metadata(image)
    recorded = recorded_settings(metadata, image)
    apply(Settings(), recorded, f"recipe of {image}")  # unknown names or wrong types: one line, not a bad preset
    click.echo(f"# artgen {_one_line(metadata.get('artgen_version', '?'))}, step {_one_line(metadata.get('step'))}, "
               f"loss {_one_line(metadata.get('loss'))}")
    click.echo(yaml.safe_dump(recorded, sort_keys=False).rstrip())


def _one_line(value: Any) -> str:
    """A recorded value for a comment line: whatever a forged PNG holds cannot start a new YAML line."""
    return " ".join(str(value).split())[:80]


@cli.command()
def presets() -> None:
    """List the bundled presets."""
    for name in preset_names():
        click.echo(f"{name:12} {preset_description(name)}")


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
