"""Helpers for the tutorial notebooks: set-up, display, and the shared pretraining run.

A notebook opens with its story and one call:

```python
from valpat_keras.notebook import setup, show, show_table

nb = setup("02")  # valpat-keras notebook 02 | full size | backend jax | work folder /tmp/...
```

`setup` chooses the size (``VALPAT_QUICK=1``: smoke size, for CI), the Keras backend (JAX
unless ``KERAS_BACKEND`` says otherwise) and quiets the framework messages that say nothing
about the tutorial; it must therefore run before Keras is imported, and this module imports
Keras (through the pretraining cache) only inside the function that trains, and IPython
(optional outside Jupyter) only inside the functions that display.

The transfer notebooks all start from one pretraining run: `shared_pretraining_run` trains it
the first time (the pretraining notebook does) and finds it afterwards, in
``~/.cache/valpat_keras/notebooks`` (``$VALPAT_CACHE`` overrides the folder). The SynthPed
data it is trained on is cached there too (`shared_synthped`), keyed by its config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import io
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from valpat_keras import datasets
from valpat_keras.data.synthped import SynthPedInfo, ensure_synthped
from valpat_keras.demo.budget import CHOSEN_LOSS_WEIGHTS, DemoBudget
from valpat_keras.quiet import quiet_frameworks
from valpat_keras.tasks.pretrain_config import PretrainConfig

#: The SynthPed preset and image size (height, width) of each notebook size. Full size is
#: the `valpat demo` default (`DemoBudget.full`): the notebooks tell the demo's story.
SIZES: dict[bool, dict[str, Any]] = {
    False: {"name": "full size", "synthped": "small", "image_size": (64, 32)},
    True: {"name": "smoke size", "synthped": "tiny", "image_size": (64, 32)},
}

#: The arguments of `pretrain` for the shared run, per size (``quick``). Full size is the
#: demo's pretraining budget: 600 steps of 32 images, the demo's loss weights
#: (`valpat_keras.demo.budget.CHOSEN_LOSS_WEIGHTS`, chosen on validation).
PRETRAIN_ARGUMENTS: dict[bool, dict[str, Any]] = {
    False: {"config": "tiny", "steps": 600, "batch_size": 32, "learning_rate": 1e-3,
            "loss_weights": dict(CHOSEN_LOSS_WEIGHTS), "seed": 0, "verbose": 2},
    True: {"config": "tiny", "steps": 4, "batch_size": 8, "learning_rate": 1e-3,
           "seed": 0, "verbose": 2},
}


@dataclasses.dataclass(frozen=True)
class NotebookContext:
    """What `setup` decided for a notebook.

    Attributes:
        name: The notebook's number or name, e.g. ``"02"``.
        quick: True at smoke size (``VALPAT_QUICK=1``).
        backend: The Keras backend the kernel uses.
        work: A fresh working folder for this notebook's outputs.
        image_size: (height, width) of the images at this size.
    """

    name: str
    quick: bool
    backend: str
    work: Path
    image_size: tuple[int, int]

    @property
    def size(self) -> str:
        """``"full size"`` or ``"smoke size"``, as the banner says."""
        return SIZES[self.quick]["name"]

    @property
    def banner(self) -> str:
        """The line `setup` prints."""
        return (f"valpat-keras notebook {self.name} | {self.size} | backend {self.backend} | "
                f"work folder {self.work}")


def _backend() -> str:
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    return os.environ["KERAS_BACKEND"]


def setup(name: str) -> NotebookContext:
    """Prepares a tutorial notebook: size, backend, quiet frameworks, a working folder.

    Call it in the first code cell, before anything imports Keras: it sets
    ``KERAS_BACKEND`` (default ``"jax"``) and ``TF_CPP_MIN_LOG_LEVEL`` (default ``"3"``:
    TensorFlow only runs the input pipelines), installs the warning filters, imports
    TensorFlow without its import-time C++ log lines, makes a fresh temporary working folder
    and prints one banner line with the size, which the committed-notebook check reads.

    Args:
        name: The notebook's number or short name, shown in the banner and the folder name.

    Returns:
        The `NotebookContext`: ``quick``, ``backend``, ``work``, ``image_size``.

    Example:

    ```python
    nb = setup("02")
    info = shared_synthped(nb.quick)
    ```
    """
    quick = os.environ.get("VALPAT_QUICK") == "1"
    os.environ.setdefault("KERAS_BACKEND", "jax")
    quiet_frameworks()
    work = Path(tempfile.mkdtemp(prefix=f"valpat_nb{name}_"))
    context = NotebookContext(name=str(name), quick=quick, backend=_backend(), work=work,
                              image_size=tuple(SIZES[quick]["image_size"]))
    print(context.banner)
    return context


def show(fig: Any, dpi: int = 100) -> None:
    """Displays a matplotlib figure as a PNG and closes it.

    A PNG output looks the same whichever matplotlib backend the kernel has, and closing
    the figure keeps the inline backend from drawing it a second time.

    Args:
        fig: A `matplotlib.figure.Figure`.
        dpi: Resolution of the PNG.
    """
    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if fig.canvas.manager is not None:  # a pyplot figure; a bare Figure has no manager
        import matplotlib.pyplot as plt

        plt.close(fig)
    display(Image(data=buffer.getvalue()))


class Table:
    """A small table that displays as HTML in Jupyter, Markdown or aligned text elsewhere.

    Args:
        columns: The column headers.
        rows: One sequence of cells per row (already formatted strings).
    """

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[str]]):
        self.columns = [str(c) for c in columns]
        self.rows = [[str(c) for c in row] for row in rows]

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _repr_markdown_(self) -> str:
        lines = [self.columns, ["---"] * len(self.columns), *self.rows]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |"
                         for line in lines)

    def __repr__(self) -> str:
        widths = [max(len(line[i]) for line in [self.columns, *self.rows])
                  for i in range(len(self.columns))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                         for line in [self.columns, *self.rows])


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def make_table(rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], digits: int = 3,
               index: str = "") -> Table:
    """Builds a `Table` from records or a mapping (see `show_table`).

    Args:
        rows: A list of dicts (one row each, columns in order of first appearance), a dict
            of dicts (row name -> row), or a flat dict (name -> value: two columns).
        digits: Decimals of float cells.
        index: Header of the row-name column of a dict of rows.

    Returns:
        The table.
    """
    if isinstance(rows, Mapping):
        if all(isinstance(v, Mapping) for v in rows.values()):
            rows = [{index: name, **row} for name, row in rows.items()]
        else:
            rows = [{index or "name": name, "value": value} for name, value in rows.items()]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return Table(columns, [[_cell(row.get(c), digits) for c in columns] for row in rows])


def show_table(rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], digits: int = 3,
               index: str = "") -> None:
    """Displays a small table (HTML in Jupyter, aligned text in a terminal).

    Args:
        rows: A list of dicts (one row each), a dict of dicts (row name -> row) or a flat
            dict (name -> value).
        digits: Decimals of float cells.
        index: Header of the row-name column of a dict of rows.

    Example:

    ```python
    show_table({"random": {"mAP": 12.3}, "VAL-PAT": {"mAP": 45.6}}, digits=1, index="init")
    ```
    """
    from IPython.display import display

    display(make_table(rows, digits=digits, index=index))


def cache_dir() -> Path:
    """The notebooks' cache folder: ``$VALPAT_CACHE``, else ``~/.cache/valpat_keras/notebooks``.

    ``$XDG_CACHE_HOME`` replaces ``~/.cache`` when it is set.

    Returns:
        The folder (not created).
    """
    if os.environ.get("VALPAT_CACHE"):
        return Path(os.environ["VALPAT_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "valpat_keras" / "notebooks"


def shared_synthped(quick: bool) -> SynthPedInfo:
    """The notebooks' SynthPed, generated once per config into the cache folder.

    The folder is named after a hash of the `SynthPedConfig` and reused when its
    ``synthped.json`` holds the same config (`ensure_synthped`, which writes into a
    temporary sibling first, so an interrupted generation is never mistaken for a finished
    one).

    Args:
        quick: Smoke size (``"tiny"``) instead of full size (the demo's SynthPed: ``"small"``
            at 64x32 with a 1,500-identity attribute set).

    Returns:
        The `SynthPedInfo` of the cached folder.
    """
    size = SIZES[quick]
    config = (DemoBudget.quick() if quick else DemoBudget.full()).synthped_config(seed=0)
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    root = cache_dir() / f"synthped-{size['synthped']}-{digest[:12]}"
    return ensure_synthped(root, config, progress=lambda _: print(
        f"generating SynthPed ({size['synthped']}) in {root}"))


def shared_pretrain_config(quick: bool) -> PretrainConfig:
    """The `PretrainConfig` of the shared run: `PRETRAIN_ARGUMENTS` at the notebook size."""
    return PretrainConfig.from_arguments(
        {**PRETRAIN_ARGUMENTS[quick], "image_size": tuple(SIZES[quick]["image_size"])})


def shared_pretraining_run(quick: bool) -> Path:
    """The pretraining run every notebook shares: trained once, then found in the cache.

    Pretrains VAL-PAT (`cached_pretrain` with `shared_pretrain_config`) on the pretraining
    set of `shared_synthped`, in ``cache_dir()/pretraining``. The run is keyed by the data,
    the config and the Keras backend, so each size and backend has its own.

    Args:
        quick: Smoke size instead of full size.

    Returns:
        The run folder (`pretrain`'s layout: presets of the encoder, backbone, tokenizer).
    """
    # Imported here: the cache imports Keras, which must wait for `setup` (see above).
    from valpat_keras.tasks.pretrain_cache import cached_pretrain

    info = shared_synthped(quick)
    data = datasets.load("luperson_ta", info.paths["pretrain_manifest"])
    run, _ = cached_pretrain(data, cache_dir() / "pretraining", shared_pretrain_config(quick),
                             name=f"notebooks-{SIZES[quick]['synthped']}",
                             # The cache's hint names the demo's --fresh flag; a notebook
                             # retrains when the run folder is deleted.
                             printer=lambda line: print(
                                 line.strip().replace(" (--fresh retrains)", "")))
    return run
