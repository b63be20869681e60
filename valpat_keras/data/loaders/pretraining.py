"""Pretraining loaders: the LUPerson-TA-style manifest (``luperson_ta``) and ``image_folder``.

No public file format exists for LUPerson-TA, so VAL-PAT uses this one (the SynthPed generator
writes it too). The manifest is JSON Lines, UTF-8, one object per line:

- An optional first header line: ``{"format": "valpat-pretrain-v1", "attribute_names": [...]}``.
- Every further line: ``{"image": "<path relative to the manifest>", "captions": [str, ...],
  "attributes": [0/1/-1, ...]}``. ``attributes`` may also be a dict ``{"name": 0/1, ...}``,
  mapped by name (names it does not give are -1, unknown). Either key may be left out for an
  image without that supervision.
- Attribute names come from the header, else from ``attribute_names.txt`` next to the manifest
  (one name per line); when every entry uses the dict form, the keys in first-seen order. A
  dict key that is not a declared name, or (without declared names) a key spelt like a public
  attribute name in another case or close to one, is an error naming the line, the name and the
  closest valid names, never a new attribute. A value other than 1, 0 or -1 is an error naming
  the line, the attribute and the value; -1 (unknown) values are counted in ``skipped``.
- An empty or whitespace-only caption is not a caption: it is left out and counted, and an
  entry whose captions were all blank is dropped and counted (an entry without ``captions``
  is an image without text supervision, and kept).

Example (``pretrain/manifest.jsonl``)::

    {"format": "valpat-pretrain-v1", "attribute_names": ["Female", "Hat", "Backpack"]}
    {"image": "images/000001.jpg", "captions": ["a woman in a red coat"], "attributes": [1, 0, 0]}
    {"image": "images/000002.jpg", "captions": ["a man with a hat"], "attributes": {"Hat": 1}}

``image_folder`` reads an unlabeled folder of images (recursively; LUPerson as consumed by
SOLIDER/TransReID-SSL) into records without captions or attributes; every common image
extension is read in any case and the other files are counted in ``skipped``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.loaders._common import (
    check_attribute_name,
    declared_attribute_names,
    drop_unreadable,
    existing_dir,
    find_manifest,
    list_images,
)
from valpat_keras.data.loaders.text import count_blank_captions
from valpat_keras.data.records import PretrainDataset, PretrainRecord
from valpat_keras.data.registry import note_ignored_options, register_dataset

__all__ = ["MANIFEST_FORMAT", "load_image_folder", "load_luperson_ta"]

#: The ``format`` value of the manifest header.
MANIFEST_FORMAT = "valpat-pretrain-v1"
_ENTRY = '{"image": "<relative path>", "captions": [...], "attributes": [...] or {...}}'


def _manifest_path(root: str) -> Path:
    return find_manifest(root, ("manifest.jsonl",), "LUPerson-TA manifest",
                         "a JSON Lines manifest file, or a folder holding manifest.jsonl")


def _read_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    objects = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetFormatError(path, f"line {number}, column {err.colno} is not valid "
                                     f"JSON ({err.msg})",
                                     expected=f"one object per line: {_ENTRY}") from None
        if not isinstance(value, dict):
            raise DatasetFormatError(path, f"line {number} is not a JSON object",
                                     expected=_ENTRY)
        objects.append((number, value))
    return objects


def _attribute_vector(value: Any, names: list[str], path: Path, number: int) -> np.ndarray:
    """An ``int8`` 1/0/-1 vector from list or dict form (misspelt keys already refused)."""
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise DatasetFormatError(path, f"line {number}: unknown attribute {unknown[0]!r}",
                                     field="attributes",
                                     expected=f"names from the header/attribute_names.txt "
                                     f"({len(names)} names)")
        vector = [value.get(n, -1) for n in names]
    elif isinstance(value, list):
        if not names:
            raise DatasetFormatError(path, f"line {number}: list-form attributes without names",
                                     field="attributes",
                                     expected="attribute_names in the header or an "
                                     "attribute_names.txt next to the manifest")
        if len(value) != len(names):
            raise DatasetFormatError(path, f"line {number}: {len(value)} attribute values",
                                     field="attributes", expected=f"{len(names)} values")
        vector = value
    else:
        raise DatasetFormatError(path, f"line {number}: attributes is a {type(value).__name__}",
                                 field="attributes", expected="a list or a name -> value dict")
    for column, v in enumerate(vector):
        if isinstance(v, bool) or v not in (-1, 0, 1):
            raise DatasetFormatError(
                path, f"line {number}, column {column + 1} ({names[column]}): attribute value "
                f"{v!r}", field=f"attributes.{names[column]}",
                expected="values 1, 0 or -1 (unknown)")
    return np.asarray(vector, dtype=np.int8)


def _header_names(path: Path, lines: list[tuple[int, dict[str, Any]]]) -> list[str] | None:
    """Pops the optional header line; the declared names (header, else side file) or None."""
    if lines and "format" in lines[0][1]:
        header = lines.pop(0)[1]
        if header["format"] != MANIFEST_FORMAT:
            raise DatasetFormatError(path, f"unknown format {header['format']!r}", field="format",
                                     expected=repr(MANIFEST_FORMAT))
        if header.get("attribute_names"):
            return [str(n) for n in header["attribute_names"]]
    return declared_attribute_names(path)


def _attribute_names(path: Path, lines: list[tuple[int, dict[str, Any]]],
                     declared: list[str] | None) -> list[str]:
    """The declared names, else the dict keys in first-seen order; misspelt keys refused."""
    first_seen: dict[str, int] = {}
    for number, entry in lines:
        if isinstance(entry.get("attributes"), dict):
            for key in entry["attributes"]:
                first_seen.setdefault(key, number)
    used = list(first_seen)
    for name, number in first_seen.items():
        check_attribute_name(name, declared, used, path, f"line {number}", "attributes")
    forms = [entry["attributes"] for _, entry in lines if entry.get("attributes") is not None]
    if declared is None and forms and all(isinstance(form, dict) for form in forms):
        return used  # dict-form attributes name themselves
    return declared or []


def _record(path: Path, number: int, entry: dict[str, Any], names: list[str],
            skipped: dict[str, int]) -> PretrainRecord | None:
    """One entry as a record; None (counted) when all its captions are blank."""
    if not isinstance(entry.get("image"), str):
        raise DatasetFormatError(path, f"line {number} has no image path", field="image",
                                 expected=_ENTRY)
    captions = entry.get("captions", [])
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise DatasetFormatError(path, f"line {number}: captions {captions!r}",
                                 field="captions", expected="a list of strings")
    kept = count_blank_captions(captions, "the manifest", skipped)
    if captions and not kept:
        skipped["images whose captions are all blank"] = \
            skipped.get("images whose captions are all blank", 0) + 1
        return None
    attributes = entry.get("attributes")
    vector = None if attributes is None else _attribute_vector(attributes, names, path, number)
    return PretrainRecord(str(path.parent / entry["image"]), kept, vector)


@register_dataset("luperson_ta", kind="pretraining")
def load_luperson_ta(root: str, verify_images: bool = False, **options: Any) -> PretrainDataset:
    """An image-text-attribute pretraining manifest (``valpat-pretrain-v1`` JSON Lines).

    See the module docstring for the format.

    Args:
        root: The manifest file, or its folder holding ``manifest.jsonl``.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Returns:
        A `PretrainDataset` whose records carry captions and ``int8`` attribute vectors;
        ``skipped`` counts blank captions, dropped entries and unknown (-1) labels.

    Raises:
        DatasetFormatError: A missing manifest, a malformed line, an unknown format, an entry
            without ``image``, attributes that do not match the names, a value outside
            1/0/-1 or a misspelt attribute name.
    """
    path = _manifest_path(root)
    lines = _read_lines(path)
    names = _attribute_names(path, lines, _header_names(path, lines))
    skipped: dict[str, int] = {}
    records = [r for r in (_record(path, n, e, names, skipped) for n, e in lines) if r]
    unknown = sum(int((r.attributes == -1).sum()) for r in records if r.attributes is not None)
    if unknown:
        skipped["attribute labels -1 or not given (unknown)"] = unknown
    records, dropped = drop_unreadable(records, verify_images, "luperson_ta: ")
    if dropped:
        skipped["unreadable images"] = dropped
    return note_ignored_options(PretrainDataset("luperson_ta", str(path), records, names,
                                                skipped), options)


@register_dataset("image_folder", kind="pretraining")
def load_image_folder(root: str, verify_images: bool = False, **options: Any) -> PretrainDataset:
    """An unlabeled folder of person images, searched recursively (no captions, no attributes).

    Args:
        root: The folder (``.jpg``, ``.jpeg``, ``.png``, ``.bmp`` and ``.webp`` files in any
            case are used; other files are counted in ``skipped``).
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: When the folder is missing or holds no image.
    """
    folder = existing_dir(root, "image folder")
    skipped: dict[str, int] = {}
    records = [PretrainRecord(str(p))
               for p in list_images(folder, recursive=True, skipped=skipped)]
    if not records:
        raise DatasetFormatError(folder, "no images found",
                                 expected=".jpg/.jpeg/.png/.bmp/.webp files (searched recursively)")
    records, dropped = drop_unreadable(records, verify_images, "image_folder: ")
    if dropped:
        skipped["unreadable images"] = dropped
    return note_ignored_options(PretrainDataset("image_folder", str(folder), records, [],
                                                skipped), options)
