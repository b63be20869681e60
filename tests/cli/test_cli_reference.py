"""The command reference page shows the parsers' current ``--help`` (generated, not typed)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cli_reference.py"


def _module():
    spec = importlib.util.spec_from_file_location("cli_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_help_block_of_the_cli_page_is_current():
    module = _module()
    page = module.PAGE.read_text()
    assert page.count("usage: valpat") >= 9  # the top level and eight commands
    assert module.render(page) == page, (
        "tutorials/cli.md is stale: run `python scripts/cli_reference.py`")


def test_a_changed_help_block_is_rewritten():
    module = _module()
    stale = "```text\nusage: valpat pretrain [-h] (an old flag list)\n```\n"
    rendered = module.render(stale)
    assert "--checkpoint-every STEPS" in rendered and "(an old flag list)" not in rendered
