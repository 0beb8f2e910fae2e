"""The README's flag reference, generated from the CLI itself.

Run `python tests/readme_reference.py --write` after changing flags; tests/test_readme.py fails while the
README's copy is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from artgen.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- reference:start -->", "<!-- reference:end -->"
COMMANDS = [["--help"], ["generate", "--help"], ["show-settings", "--help"], ["presets", "--help"],
            ["models", "list", "--help"], ["models", "path", "--help"]]


def reference() -> str:
    """Each command's --help output, as markdown code blocks."""
    runner = CliRunner()
    blocks = []
    for args in COMMANDS:
        output = runner.invoke(cli, args, prog_name="artgen", terminal_width=110).output.rstrip()
        blocks.append(f"### `artgen {' '.join(a for a in args if a != '--help')}`\n\n```text\n{output}\n```")
    return "\n\n".join(blocks)


def with_reference(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference()}\n{END}{tail}"


if __name__ == "__main__":
    current = README.read_text(encoding="utf-8")
    if "--write" in sys.argv:
        README.write_text(with_reference(current), encoding="utf-8")
    else:
        print(reference())
