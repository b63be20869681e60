"""A user's own reID, attribute or text data from one CSV or JSON Lines manifest.

Registered as ``manifest`` and, as an alias, ``folder``. One row per image:

- ``path`` (required): the image, relative to the manifest's folder or absolute.
- ``pid``: integer person id (required for ``kind="reid"`` and ``kind="text"``).
- ``camid`` (optional): integer camera id, used as stored. Without it every image gets camera 0,
  so reID evaluation must then **disable the same-camera filter** (otherwise the Market-1501
  protocol removes every true match); treating each image as its own camera would be wrong.
- ``split`` (optional): ``train``, ``query``, ``gallery`` (reID) or ``train``, ``val``,
  ``test`` (attributes, text). Without it every row is train, unless ``test_fraction`` asks
  for a seeded hold-out.
- captions (``kind="text"``): CSV columns ``caption``, ``caption_1``, ``caption_2``, ... (one
  caption per non-empty cell); JSONL ``"caption": str`` or ``"captions": [str, ...]``.
- attributes (``kind="attributes"``): CSV columns ``attr:<name>``; JSONL an ``"attributes"``
  dict ``{name: value}``. Values 1, 0 or -1 (unknown); an empty cell or a missing name is -1
  (counted as unknown labels in ``skipped``); any other value is an error naming the line, the
  column and the value. The names are declared by an ``attribute_names.txt`` next to the
  manifest (one per line) or the ``attribute_names`` option; without either a name spelt like
  a public one (PA-100K, PETA) in another case, or close to one, is refused as a misspelling.

Nothing is dropped silently: for ``kind="text"`` an empty or whitespace-only caption is left out
and a row with no caption left is dropped, both counted in ``skipped``; unreadable images are
dropped and counted with ``verify_images``.

Example ``manifest.csv``::

    path,pid,camid,split,caption,attr:Female,attr:Hat
    images/a.jpg,7,0,train,a woman in a red coat,1,0
    images/b.jpg,7,1,query,the same woman seen from behind,1,
    images/c.jpg,7,2,gallery,a woman with a red coat walking,1,0

The same rows as JSON Lines (``manifest.jsonl``)::

    {"path": "images/a.jpg", "pid": 7, "camid": 0, "split": "train",
     "captions": ["a woman in a red coat"], "attributes": {"Female": 1, "Hat": 0}}

Train person ids are relabelled 0..N-1 in sorted order; query/gallery/val/test ids are kept.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.loaders._common import (
    check_attribute_name,
    declared_attribute_names,
    drop_unreadable,
    find_manifest,
    relabel,
)
from valpat_keras.data.loaders.text import count_blank_captions
from valpat_keras.data.records import (
    AttributeDataset,
    AttributeRecord,
    ReIDDataset,
    ReIDRecord,
    TextDataset,
    TextRecord,
)
from valpat_keras.data.registry import note_ignored_options, register_dataset

__all__ = ["load_manifest"]

_SPLITS = {"reid": ("train", "query", "gallery"), "attributes": ("train", "val", "test"),
           "text": ("train", "val", "test")}
_ATTRIBUTE_PREFIX = "attr:"


def _manifest_path(root: str) -> Path:
    return find_manifest(root, ("manifest.csv", "manifest.jsonl"), "manifest",
                         "a .csv or .jsonl manifest file, or a folder holding manifest.csv or "
                         "manifest.jsonl")


def _integer(value: Any, path: Path, where: str, field: str) -> int:
    if isinstance(value, bool):
        value = None
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise DatasetFormatError(path, f"{where}: {field} is {value!r}", field=field,
                                 expected="an integer") from None


def _read_csv(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Rows as ``(where, normalised row)``; ``where`` names the line for messages."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "path" not in columns:
            raise DatasetFormatError(path, "no 'path' column", field="path",
                                     expected="a header row with path, pid, [camid], [split], "
                                     "[caption...], [attr:<name>...]")
        caption_columns = [c for c in columns if c == "caption" or c.startswith("caption_")]
        attribute_columns = [c for c in columns if c.startswith(_ATTRIBUTE_PREFIX)]
        rows = []
        for number, raw in enumerate(reader, 2):
            row: dict[str, Any] = {k: raw[k] for k in ("path", "pid", "camid", "split")
                                   if k in raw and raw[k] not in (None, "")}
            row["captions"] = [raw[c] for c in caption_columns if raw.get(c)]
            row["attributes"] = {c[len(_ATTRIBUTE_PREFIX):]: raw[c]
                                 for c in attribute_columns if raw.get(c) not in (None, "")}
            rows.append((f"line {number}", row))
    return rows


def _read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetFormatError(path, f"{where}, column {err.colno} is not valid JSON "
                                     f"({err.msg})",
                                     expected="one JSON object per line") from None
        if not isinstance(raw, dict):
            raise DatasetFormatError(path, f"{where} is not a JSON object",
                                     expected='{"path": ..., "pid": ..., ...}')
        captions = raw.get("captions", [raw["caption"]] if "caption" in raw else [])
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise DatasetFormatError(path, f"{where}: captions {captions!r}", field="captions",
                                     expected="a string or a list of strings")
        attributes = raw.get("attributes", {})
        if not isinstance(attributes, dict):
            raise DatasetFormatError(path, f"{where}: attributes {attributes!r}",
                                     field="attributes", expected="a {name: 1/0/-1} object")
        row = {k: raw[k] for k in ("path", "pid", "camid", "split") if raw.get(k) is not None}
        row.update(captions=captions, attributes=attributes)
        rows.append((where, row))
    return rows


def _hold_out(groups: list[Any], fraction: float, seed: int) -> set[Any]:
    """A seeded random ``fraction`` of ``groups`` (at least one when the fraction is > 0)."""
    if fraction <= 0 or not groups:
        return set()
    count = min(len(groups), max(1, math.ceil(fraction * len(groups))))
    order = np.random.default_rng(seed).permutation(len(groups))
    return {groups[i] for i in order[:count]}


@register_dataset("manifest", kind="reid")
def load_manifest(root: str, kind: str = "reid", test_fraction: float = 0.0, seed: int = 0,
                  verify_images: bool = False, attribute_names: Sequence[str] | None = None,
                  **options: Any) -> ReIDDataset | AttributeDataset | TextDataset:
    """Your own data from a CSV or JSON Lines manifest (see the module docstring for columns).

    Args:
        root: The ``.csv`` / ``.jsonl`` file, or a folder holding ``manifest.csv`` or
            ``manifest.jsonl``.
        kind: ``"reid"`` (`ReIDDataset`), ``"attributes"`` (`AttributeDataset`) or ``"text"``
            (`TextDataset`).
        test_fraction: Without a ``split`` column, the fraction held out for evaluation:
            identities for reID (one image each as query, the rest gallery) and text, images for
            attributes. 0 keeps everything in train.
        seed: Seed of that hold-out.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        attribute_names: The valid attribute names (default: ``attribute_names.txt`` next to
            the manifest, else the names the manifest uses, checked for misspellings).
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Returns:
        The dataset of the requested kind; ``skipped`` counts what was left out.

    Raises:
        DatasetFormatError: A missing manifest or column, a value that is not an integer, an
            unknown split, no row with a caption for ``kind="text"``, an attribute value not
            in 1/0/-1 or a misspelt attribute name (with the closest valid names).

    Example:

    ```python
    from valpat_keras import datasets

    reid = datasets.load("manifest", "my_data/manifest.csv")
    attrs = datasets.load("manifest", "my_data/manifest.csv", kind="attributes")
    ```
    """
    if kind not in _SPLITS:
        raise ValueError(f"manifest: kind must be one of {tuple(_SPLITS)}, got {kind!r}")
    path = _manifest_path(root)
    rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)
    if not rows:
        raise DatasetFormatError(path, "no rows", expected="one row per image")
    has_split = any("split" in row for _, row in rows)
    has_camid = any("camid" in row for _, row in rows)
    for where, row in rows:
        _normalise_row(row, path, where, kind, has_split, has_camid)
    if not has_split:
        _assign_hold_out(rows, kind, test_fraction, seed)
    skipped: dict[str, int] = {}
    if kind == "attributes":
        declared = declared_attribute_names(path) if attribute_names is None \
            else [str(n) for n in attribute_names]
        dataset = _build_attributes(path, rows, _attribute_names(path, rows, declared),
                                    verify_images, skipped)
    elif kind == "text":
        dataset = _build_text(path, _with_captions(path, rows, skipped), verify_images, skipped)
    else:
        dataset = _build_reid(path, rows, has_camid, verify_images)
    unused = {"attribute_names": attribute_names} if kind != "attributes" else {}
    return note_ignored_options(dataset, {**unused, **options})


register_dataset("folder", kind="reid")(load_manifest)


def _normalise_row(row: dict[str, Any], path: Path, where: str, kind: str, has_split: bool,
                   has_camid: bool) -> None:
    """Resolves the path, parses pid / camid and checks the split of one row, in place."""
    if "path" not in row:
        raise DatasetFormatError(path, f"{where} has no path", field="path",
                                 expected="an image path on every row")
    row["path"] = str(path.parent / row["path"])
    if kind != "attributes" or "pid" in row:
        row["pid"] = _integer(row.get("pid"), path, where, "pid")
    row["camid"] = _integer(row.get("camid"), path, where, "camid") if has_camid else 0
    split = row.get("split", "train" if not has_split else None)
    if split not in _SPLITS[kind]:
        raise DatasetFormatError(path, f"{where}: split {split!r}", field="split",
                                 expected=f"one of {', '.join(_SPLITS[kind])} for "
                                 f"kind={kind!r}")
    row["split"] = split


def _attribute_names(path: Path, rows: list[tuple[str, dict[str, Any]]],
                     declared: list[str] | None) -> list[str]:
    """The attribute columns: the declared names, else those used; misspellings refused."""
    first_seen: dict[str, str] = {}
    for where, row in rows:
        for name in row["attributes"]:
            first_seen.setdefault(name, where)
    used = list(first_seen)
    csv_file = path.suffix.lower() == ".csv"
    for name, where in first_seen.items():
        field = f"{_ATTRIBUTE_PREFIX}{name}" if csv_file else f"attributes.{name}"
        check_attribute_name(name, declared, used, path, "header" if csv_file else where, field)
    return used if declared is None else declared


def _with_captions(path: Path, rows: list[tuple[str, dict[str, Any]]],
                   skipped: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    """The rows with at least one non-blank caption; blank captions and bare rows counted."""
    kept = []
    for where, row in rows:
        row["captions"] = count_blank_captions(row["captions"], row["split"], skipped)
        if row["captions"]:
            kept.append((where, row))
        else:
            key = f"{row['split']} images without a caption"
            skipped[key] = skipped.get(key, 0) + 1
    if not kept:
        raise DatasetFormatError(path, f"none of the {len(rows)} rows has a caption",
                                 field="captions",
                                 expected="at least one non-blank caption per image for "
                                 "kind='text'")
    return kept


def _assign_hold_out(rows: list[tuple[str, dict[str, Any]]], kind: str, fraction: float,
                     seed: int) -> None:
    """Moves a seeded fraction of identities (reID, text) or images (attributes) to evaluation."""
    if kind == "attributes":
        held = _hold_out(list(range(len(rows))), fraction, seed)
        for index, (_, row) in enumerate(rows):
            row["split"] = "test" if index in held else "train"
        return
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for _, row in rows:
        by_pid.setdefault(row["pid"], []).append(row)
    # A reID query needs a gallery match, so only identities with two or more images qualify.
    eligible = sorted(p for p, r in by_pid.items() if kind == "text" or len(r) > 1)
    for pid in _hold_out(eligible, fraction, seed):
        for index, row in enumerate(by_pid[pid]):
            row["split"] = "test" if kind == "text" else ("query" if index == 0 else "gallery")


def _drop(splits: dict[str, list[Any]], verify: bool, skipped: dict[str, int]) -> None:
    """Drops (and counts in ``skipped``) unreadable images of every split, in place."""
    for split, records in splits.items():
        splits[split], dropped = drop_unreadable(records, verify, f"manifest {split}: ")
        if dropped:
            skipped[f"unreadable {split} images"] = dropped


def _records_by_split(kind: str, rows: list[tuple[str, dict[str, Any]]], make
                      ) -> dict[str, list[Any]]:
    """``make(row, pid)`` per row into its split; train pids relabelled 0..N-1."""
    labels = relabel(r["pid"] for _, r in rows if r["split"] == "train" and "pid" in r)
    splits: dict[str, list[Any]] = {s: [] for s in _SPLITS[kind]}
    for _, row in rows:
        pid = labels[row["pid"]] if row["split"] == "train" and "pid" in row else row.get("pid")
        splits[row["split"]].append(make(row, pid))
    return splits


def _build_reid(path: Path, rows: list[tuple[str, dict[str, Any]]], has_camid: bool,
                verify: bool) -> ReIDDataset:
    splits = _records_by_split("reid", rows,
                               lambda row, pid: ReIDRecord(row["path"], pid, row["camid"]))
    skipped: dict[str, int] = {}
    _drop(splits, verify, skipped)
    dataset = ReIDDataset("manifest", str(path), splits["train"], splits["query"],
                          splits["gallery"], skipped)
    if has_camid:
        # Without cameras every query would be flagged; the docstring says why.
        dataset.check_queries()
    return dataset


def _attribute_vector(row: dict[str, Any], names: list[str], path: Path, where: str
                      ) -> np.ndarray:
    vector = np.full(len(names), -1, dtype=np.int8)
    for name, value in row["attributes"].items():
        value = _integer(value, path, where, f"attr:{name}")
        if value not in (-1, 0, 1):
            raise DatasetFormatError(path, f"{where}: attribute {name} is {value}",
                                     field=f"attr:{name}", expected="1, 0 or -1 (unknown)")
        vector[names.index(name)] = value
    return vector


def _build_attributes(path: Path, rows: list[tuple[str, dict[str, Any]]], names: list[str],
                      verify: bool, skipped: dict[str, int]) -> AttributeDataset:
    if not names:
        raise DatasetFormatError(path, "no attribute columns", field="attr:<name>",
                                 expected="CSV columns 'attr:<name>' or a JSONL 'attributes' "
                                 "object for kind='attributes'")
    vectors = {id(row): _attribute_vector(row, names, path, where) for where, row in rows}
    unknown = int(sum((v == -1).sum() for v in vectors.values()))
    if unknown:
        skipped["attribute labels -1, empty or not given (unknown)"] = unknown
    splits = _records_by_split("attributes", rows,
                               lambda row, _: AttributeRecord(row["path"], vectors[id(row)]))
    _drop(splits, verify, skipped)
    return AttributeDataset("manifest", str(path), splits["train"], splits["val"],
                            splits["test"], names, list(range(len(names))), 0, skipped)


def _build_text(path: Path, rows: list[tuple[str, dict[str, Any]]], verify: bool,
                skipped: dict[str, int]) -> TextDataset:
    splits = _records_by_split("text", rows,
                               lambda row, pid: TextRecord(row["path"], pid, row["captions"]))
    _drop(splits, verify, skipped)
    return TextDataset("manifest", str(path), splits["train"], splits["val"], splits["test"],
                       skipped)
