"""The committed tutorial notebooks carry the outputs of a full-size run.

The documentation renders the notebooks as committed (mkdocs-jupyter with ``execute:
false``), so each one must hold its outputs, at least one figure, and come from a full-size
run (``scripts/execute_notebooks.sh``), not from a smoke run (``VALPAT_QUICK=1``). The size is
read off the banner that `valpat_keras.notebook.setup` prints in the first code cell. Pure
JSON reading: no kernel, no Keras.
"""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
BANNER = "valpat-keras notebook"


def _code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    else:
        text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def notebook_problems(notebook: dict) -> list[str]:
    """What keeps a notebook from being a committed full-size run (empty when nothing).

    Args:
        notebook: The parsed ``.ipynb`` JSON.

    Returns:
        One sentence per problem.
    """
    cells = _code_cells(notebook)
    outputs = [output for cell in cells for output in cell.get("outputs", [])]
    if not outputs:
        return ["has no outputs: run scripts/execute_notebooks.sh and commit the result"]
    problems = []
    if not any("image/png" in output.get("data", {}) for output in outputs):
        problems.append("has no PNG figure among its outputs")
    errors = [output.get("ename", "?") for output in outputs
              if output.get("output_type") == "error"]
    if errors:
        problems.append(f"has error outputs ({', '.join(errors)})")
    banner = [line for output in cells[0].get("outputs", []) for line in
              _text(output).splitlines() if line.startswith(BANNER)]
    if not banner:
        problems.append(f"its first code cell printed no '{BANNER} ...' banner (setup())")
    elif "| full size |" not in banner[0]:
        problems.append(f"was not executed at full size (VALPAT_QUICK=1?): {banner[0]!r}")
    return problems


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_holds_full_size_outputs(path):
    problems = notebook_problems(json.loads(path.read_text()))
    assert not problems, f"{path.name} " + "; ".join(problems)
