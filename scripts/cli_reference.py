"""Rewrites the ``--help`` blocks of tutorials/cli.md from the parser itself (never typed).

Every fenced ``text`` block of the page whose first line is ``usage: valpat ...`` is replaced
by the current ``--help`` of that command, at 100 columns. Run after changing a flag:
``python scripts/cli_reference.py``; tests/cli/test_cli_reference.py fails when the page is stale.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "tutorials" / "cli.md"
BLOCK = re.compile(r"```text\n(usage: valpat(?: (\w+))?[^\n]*\n.*?)```", re.DOTALL)


def help_text(command: str | None) -> str:
    """``valpat [command] --help`` as printed at 100 columns."""
    os.environ["COLUMNS"] = "100"
    from valpat_keras.cli.main import build_parser

    argv = ([command] if command else []) + ["--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args(argv)
    return out.getvalue()


def render(page: str) -> str:
    """The page with every help block replaced by the current help."""
    return BLOCK.sub(lambda m: f"```text\n{help_text(m.group(2))}```", page)


def main() -> int:
    text = PAGE.read_text()
    new = render(text)
    if "--check" in sys.argv[1:]:
        return 0 if new == text else 1
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
