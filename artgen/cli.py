"""The command line. Flags are generated from the Settings fields, so they map onto them one to one.

Errors the user can fix are printed on one line with a non-zero exit (2 for usage, 1 for run failures);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

import click
import yaml

from .errors import UserError
from .settings import Settings, build_settings, field_types, flag, preset_description, preset_names

SINGULAR_FLAGS = {"prompts": "prompt", "image_prompts": "image-prompt"}
SHORT_FLAGS = {"output": "-o", "steps": "-n", "seed": "-s"}
NOT_RECIPE = ("overwrite",)  # settings a reproduced run (--from) does not inherit


def option_name(name: str) -> str:
    return "--" + SINGULAR_FLAGS.get(name, flag(name))


def option_names(name: str) -> list[str]:
    return [option_name(name)] + ([SHORT_FLAGS[name]] if name in SHORT_FLAGS else [])


def settings_options(command):
    """Add one click option per Settings field; every default is None so only given flags override."""
    types = field_types()
    for spec in reversed(dataclasses.fields(Settings)):
        text = str(types[spec.name])
        help_text = spec.metadata.get("help", "")
        if "list" in text:
            option = click.option(option_name(spec.name), spec.name, multiple=True, help=help_text + " (repeatable)")
        elif "bool" in text:
            option = click.option(f"{option_name(spec.name)}/--no-{flag(spec.name)}", spec.name, default=None,
                                  help=help_text)
        else:
            kind = click.Choice(spec.metadata["choices"]) if "choices" in spec.metadata else (
                int if "int" in text else float if "float" in text else str)
            option = click.option(*option_names(spec.name), spec.name, type=kind, default=None, help=help_text)
        command = option(command)
    return command


def given(params: dict[str, Any]) -> dict[str, Any]:
    """The settings the user actually passed (unset options are None or empty)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if v not in (None, ())}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(package_name="artgen")
def cli(debug: bool) -> None:
    """artgen: optimization-based art with VQGAN+CLIP and CLIP-guided diffusion."""


@cli.command()
@click.argument("prompt", nargs=-1)
@click.option("--preset", help="Preset name (see `artgen presets`) or YAML file; flags override it.")
@click.option("--from", "from_image", type=click.Path(dir_okay=False),
              help="Reproduce the run recorded in a PNG written by artgen; flags override it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@settings_options
def generate(prompt: tuple[str, ...], preset: str | None, from_image: str | None, quiet: bool, **params: Any) -> None:
    """Optimize an image toward PROMPT (text prompts, "text:weight:stop", joined with "|")."""
    from .output import read_metadata
    from .run import generate as run_generate

    overrides = given(params)
    if prompt:
        overrides["prompts"] = list(prompt) + overrides.get("prompts", [])
    base = None
    if from_image:
        base = {k: v for k, v in read_metadata(from_image).get("settings", {}).items() if k not in NOT_RECIPE}
    settings = build_settings(preset, base, overrides)
    result = run_generate(settings, progress=not quiet)
    for path in result.paths:
        click.echo(str(path))


@cli.command("show-settings")
@click.argument("image", type=click.Path(dir_okay=False))
def show_settings(image: str) -> None:
    """Print the settings recorded in a PNG written by artgen (as YAML, usable as a --preset file)."""
    from .output import read_metadata

    metadata = read_metadata(image)
    click.echo(f"# artgen {metadata.get('artgen_version', '?')}, step {metadata.get('step')}, loss {metadata.get('loss')}")
    click.echo(yaml.safe_dump(metadata.get("settings", {}), sort_keys=False).rstrip())


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
    """Known models, whether they are in the cache, and their size there."""
    from .models import hub

    click.echo(f"{'name':28} {'kind':10} {'cached':7} size")
    for name, model in hub.KNOWN_MODELS.items():
        cached = hub.is_cached(name)
        size = f"{hub.cached_size(name) / 2**20:.0f} MiB" if cached else "-"
        click.echo(f"{name:28} {model.kind:10} {'yes' if cached else 'no':7} {size}")


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
        logger.setLevel(logging.INFO)
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
