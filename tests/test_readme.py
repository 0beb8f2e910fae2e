"""The README stays true and short: every ```python snippet runs, and every command line of its ```bash blocks runs
as written, with the substitutions of ``runnable`` where a command needs model weights that cannot be downloaded
here. A command the test does not know how to run fails the test, so a new README command comes with a rule here.
The README is a user guide: it lists every bundled preset and links the generated flag reference (docs/cli.md,
checked by tests/test_cli_options.py) and the lab page instead of copying them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

import artgen
from artgen.settings import load_preset, preset_names

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")
MAKEFILE = README.parent / "Makefile"
MAX_LINES = 285  # a user guide; the flag reference lives in docs/cli.md, the models' measurements in lab/README.md

# Commands that only make sense with the network, a GPU or minutes of time, and why they are not run here.
SKIPPED = {
    ("make", "demo"): "builds .venv with pip (network); test_make_demo_runs_the_readme_command runs its command",
    ("make", "test"): "the whole test suite, this test included",
    ("pip", "install"): "installs from the package index (network)",
    (".venv/bin/python", "benchmarks/bench_vqgan_clip.py"): "a benchmark: minutes, meant for a GPU",
    (".venv/bin/python", "benchmarks/bench_diffusion.py"): "a benchmark: minutes, meant for a GPU",
    (".venv/bin/python", "-m", "lab.zoo_report"): "measures the bundled models over 72 images: most of an hour on a CPU",
}
AS_WRITTEN = {"--help", "presets", "models", "show-settings", "encode"}  # need no model weights
DRAWING = {"generate", "edit", "animate", "stylize-video"}
# options whose value picks model weights, the size or the run's length: dropped, then given tiny values
SUBSTITUTED = {"--clip", "--clip-checkpoint", "--clip-config", "--vqgan-model", "--vqgan-config", "--vqgan-checkpoint",
               "--diffusion-model", "--diffusion-checkpoint", "--diffusion-config", "--diffusion-steps",
               "--timestep-respacing", "--width", "--height", "--steps", "-n", "--steps-per-frame", "--cutn"}
# the bundled models of the offline presets are here: those runs are only shortened
OFFLINE_PRESETS = {"offline": ["--steps", "2", "--cutn", "4", "--preselect", "2", "--preselect-preview", "2"],
                   "offline-vqgan": ["--steps", "2", "--cutn", "4"]}
LONG_ANIMATION, FRAME_DIVISOR = 40, 10  # animations of 40 frames or more run a tenth of them
KEYED = {"--frames", "--prompts", "--prompt-transition", "--zoom", "--angle", "--translation-x", "--translation-y",
         "--init-strength"}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", TEXT, flags=re.S)


def command_lines(block: str) -> list[tuple[list[str], str]]:
    """Each command of a bash block as (words, comment), continuation lines joined."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            comment = line.split(" # ", 1)[1] if " # " in line else ""
            commands.append((words, comment))
        elif line.strip().startswith("# ->") and commands:  # "# -> files it writes", under its command
            commands[-1] = (commands[-1][0], line.strip()[1:])
    return commands


def runnable(words: list[str], tiny) -> list[str] | str:
    """The artgen arguments to run for a README command, or the reason it is skipped.

    Rules: listed SKIPPED commands are not run; artgen commands that need no weights run as written; drawing
    commands keep every flag except SUBSTITUTED ones, which are replaced by the tiny test models of
    tests/conftest.py (32x32, one VQGAN step or twelve diffusion sampling steps, 4 cutouts; generators with no
    model of their own get only the tiny CLIP). With an offline
    preset the bundled models stay and only the run is shortened. An animation of LONG_ANIMATION frames or more
    runs a tenth of them, its key frames and fades divided alike. Anything else is an error: teach this function.
    """
    for prefix, reason in SKIPPED.items():
        if tuple(words[:len(prefix)]) == prefix:
            return reason
    if words[0] != "artgen" or len(words) < 2:
        raise AssertionError(f"README command {shlex.join(words)!r} is unknown to tests/test_readme.py: add a rule")
    args = words[1:]
    if args[0] in AS_WRITTEN:
        return args
    if args[0] not in DRAWING:
        raise AssertionError(f"README command artgen {args[0]} is unknown to tests/test_readme.py: add a rule")
    kept = [word for index, word in enumerate(args)
            if word not in SUBSTITUTED and (index == 0 or args[index - 1] not in SUBSTITUTED)]
    if "--frames" in args and int(args[args.index("--frames") + 1]) >= LONG_ANIMATION:
        kept = [shorter_timeline(kept[index - 1], word) if index and kept[index - 1] in KEYED else word
                for index, word in enumerate(kept)]
    preset = args[args.index("--preset") + 1] if "--preset" in args else None
    if preset in OFFLINE_PRESETS:
        return [*kept, *OFFLINE_PRESETS[preset], "--quiet"]
    generator = (args[args.index("--generator") + 1] if "--generator" in args else
                 load_preset(preset).get("generator", "vqgan") if preset else "vqgan")
    diffusion = generator == "diffusion"
    # generators without a model of their own (pixels, ...) need only the tiny CLIP and a small size
    tiny_flags = {"diffusion": tiny.diffusion_flags, "vqgan": tiny.vqgan_flags}.get(
        generator, [*tiny.clip_flags, "--width", "32", "--height", "32", "--cutn", "4"])
    if args[0] == "edit":  # an edit keeps its picture's size (photo.png, 32x48, and any --extend)
        tiny_flags = [word for index, word in enumerate(tiny_flags) if word not in ("--width", "--height")
                      and tiny_flags[index - 1] not in ("--width", "--height")]
    length = ["--timestep-respacing", "12"] if diffusion else ["--steps", "1"]
    per_frame = ["--steps-per-frame", "1"] if args[0] in ("animate", "stylize-video") else []
    return [*kept, *tiny_flags, *length, *per_frame, "--quiet"]


def shorter_timeline(option: str, value: str) -> str:
    """A frame count, fade or schedule with every frame number divided by FRAME_DIVISOR ("0:(1), 20:(2)" ->
    "0:(1), 2:(2)"); values (in brackets, after a prompt's text, or a bare camera value) stay."""
    if option in ("--frames", "--prompt-transition"):
        return str(int(value) // FRAME_DIVISOR)
    return re.sub(r"(^|[|,]\s*)(\d+)(?=\s*:)", lambda key: f"{key[1]}{int(key[2]) // FRAME_DIVISOR}", value)


def written_files(comment: str) -> list[str]:
    """The files a command's "# -> ..." comment says it writes."""
    return re.findall(r"outputs/\S+?\.(?:png|mp4|gif)", comment) if comment.startswith(" ->") else []


def test_readme_is_a_short_guide_that_links_the_reference_and_the_lab():
    assert len(TEXT.splitlines()) <= MAX_LINES, f"README has {len(TEXT.splitlines())} lines; keep it to {MAX_LINES}"
    for page in ("docs/cli.md", "lab/README.md"):
        assert f"]({page})" in TEXT, f"README does not link {page}"


def test_readme_names_every_bundled_preset():
    missing = [name for name in preset_names() if f"`{name}`" not in TEXT]
    assert not missing, f"README does not list the presets {missing}"


def first_command(block: str) -> str:
    return " ".join(command_lines(block)[0][0][:2])


@pytest.mark.parametrize("block", blocks("bash"), ids=first_command)
def test_every_readme_command_runs(block, artgen, tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path / "cache"))
    # the video the README's stylize-video example reads, as a user would have one: 4 frames at 32x32
    imageio.mimwrite(tmp_path / "walk.mp4", [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(4)], fps=4)
    # and the picture its init-image examples start from
    imageio.imwrite(tmp_path / "photo.png", np.linspace(0, 255, 48 * 32 * 3).astype(np.uint8).reshape(48, 32, 3))
    # and the mask its edit example repaints: the photo's lower half
    imageio.imwrite(tmp_path / "mask.png", np.repeat(np.array([0, 255], np.uint8), 24)[:, None].repeat(32, 1))
    for words, comment in command_lines(block):
        args = runnable(words, tiny_models)
        if isinstance(args, str):
            continue
        result = artgen(*args)
        assert result.code == 0, f"README: {shlex.join(words)} failed as artgen {shlex.join(args)}:\n{result.err}"
        for name in written_files(comment):
            assert (tmp_path / name).is_file(), f"README says {shlex.join(words)} writes {name}; it did not"


@pytest.mark.parametrize("snippet", blocks("python"), ids=lambda snippet: snippet.splitlines()[-1][:30])
def test_every_python_snippet_runs(snippet, tiny_models, monkeypatch, tmp_path, capsys):
    """Each snippet runs with artgen.generate and artgen.animate given the tiny models and one step (per frame)
    over whatever it asks."""
    monkeypatch.chdir(tmp_path)
    tiny = {key: value for key, value in tiny_models.settings(steps=1).items() if key not in ("prompts", "seed")}
    for name in ("generate", "animate"):
        real = getattr(artgen, name)
        monkeypatch.setattr(artgen, name, lambda *args, real=real, **kwargs: real(*args, **(kwargs | tiny),
                                                                                  progress=False))
    exec(compile(snippet, "README.md python snippet", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_make_demo_runs_the_readme_command(artgen, tiny_models, tmp_path):
    """The README names the Makefile's demo command and the files it writes; the command runs (shortened)."""
    makefile = MAKEFILE.read_text(encoding="utf-8")
    prompt = re.search(r"^PROMPT \?= (.+)$", makefile, flags=re.M).group(1)
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, flags=re.M).group(1)
    command = recipe.replace("$(VENV)/bin/", "").replace("$(PROMPT)", prompt)
    text = " ".join(TEXT.split())
    assert f"`make demo` runs `{command}`" in text
    written = re.search(r"It writes `(\S+)` .*? beside it `(\S+)`", text)
    result = artgen(*runnable(shlex.split(command), tiny_models))
    assert result.code == 0, result.err
    image = tmp_path / written[1]
    assert image.is_file() and (image.parent / written[2]).is_file()


def test_commands_the_test_cannot_run_are_refused():
    with pytest.raises(AssertionError, match="unknown to tests/test_readme.py"):
        runnable(["curl", "http://example.com"], None)
    with pytest.raises(AssertionError, match="unknown to tests/test_readme.py"):
        runnable(["artgen", "upscale", "x.png"], None)
