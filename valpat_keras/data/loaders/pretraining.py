"""Pretraining loaders: the LUPerson-TA-style manifest (``luperson_ta``) and ``image_folder``.

No public file format exists for LUPerson-TA, so VAL-PAT uses this one (the SynthPed generator
writes it too). The manifest is JSON Lines, UTF-8, one object per line:

- An optional first header line: ``{"format": "valpat-pretrain-v1", "attribute_names": [...]}``.
- Every further line: ``{"image": "<path relative to the manifest>", "captions": [str, ...],
  "attributes": [0/1/-1, ...]}``. ``attributes`` may also be a dict ``{"name": 0/1, ...}``,
  mapped by name (names it does not give are -1, unknown). Either key may be left out for an
  image without that supervision.
- Attribute names come from the header, else from ``attribute_names.txt`` next to the manifest
  (one name per line); when every entry uses the dict form, the keys in first-seen order.

Example (``pretrain/manifest.jsonl``)::

    {"format": "valpat-pretrain-v1", "attribute_names": ["Female", "Hat", "Backpack"]}
    {"image": "images/000001.jpg", "captions": ["a woman in a red coat"], "attributes": [1, 0, 0]}
    {"image": "images/000002.jpg", "captions": ["a man with a hat"], "attributes": {"Hat": 1}}

``image_folder`` reads an unlabeled folder of images (recursively; LUPerson as consumed by
SOLIDER/TransReID-SSL) into records without captions or attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.loaders._common import drop_unreadable, existing_dir, list_images
from valpat_keras.data.records import PretrainDataset, PretrainRecord
from valpat_keras.data.registry import register_dataset

#: The ``format`` value of the manifest header.
MANIFEST_FORMAT = "valpat-pretrain-v1"
_ENTRY = '{"image": "<relative path>", "captions": [...], "attributes": [...] or {...}}'


def _manifest_path(root: str) -> Path:
    path = Path(root).expanduser().absolute()
    if path.is_file():
        return path
    folder = existing_dir(path, "LUPerson-TA manifest")
    if (folder / "manifest.jsonl").is_file():
        return folder / "manifest.jsonl"
    raise DatasetFormatError(folder / "manifest.jsonl", "manifest not found",
                             expected="a JSON Lines manifest file, or a folder holding "
                             "manifest.jsonl")


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
    """An ``int8`` 1/0/-1 vector from list or dict form."""
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
    if any(v not in (-1, 0, 1) or isinstance(v, bool) for v in vector):
        raise DatasetFormatError(path, f"line {number}: attribute values {vector!r}",
                                 field="attributes", expected="values 1, 0 or -1 (unknown)")
    return np.asarray(vector, dtype=np.int8)


@register_dataset("luperson_ta", kind="pretraining")
def load_luperson_ta(root: str, verify_images: bool = False) -> PretrainDataset:
    """An image-text-attribute pretraining manifest (``valpat-pretrain-v1`` JSON Lines).

    See the module docstring for the format.

    Args:
        root: The manifest file, or its folder holding ``manifest.jsonl``.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.

    Returns:
        A `PretrainDataset` whose records carry captions and ``int8`` attribute vectors.

    Raises:
        DatasetFormatError: A missing manifest, a malformed line, an unknown format, an entry
            without ``image``, or attributes that do not match the names.
    """
    path = _manifest_path(root)
    lines = _read_lines(path)
    names: list[str] = []
    if lines and "format" in lines[0][1]:
        header = lines.pop(0)[1]
        if header["format"] != MANIFEST_FORMAT:
            raise DatasetFormatError(path, f"unknown format {header['format']!r}", field="format",
                                     expected=repr(MANIFEST_FORMAT))
        names = [str(n) for n in header.get("attribute_names", [])]
    side_file = path.parent / "attribute_names.txt"
    if not names and side_file.is_file():
        names = [n.strip() for n in side_file.read_text(encoding="utf-8").splitlines()
                 if n.strip()]
    forms = [entry["attributes"] for _, entry in lines if entry.get("attributes") is not None]
    if not names and forms and all(isinstance(form, dict) for form in forms):
        # Dict-form attributes name themselves; keep their first-seen order.
        for form in forms:
            names += [k for k in form if k not in names]
    records = []
    for number, entry in lines:
        if not isinstance(entry.get("image"), str):
            raise DatasetFormatError(path, f"line {number} has no image path", field="image",
                                     expected=_ENTRY)
        captions = entry.get("captions", [])
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise DatasetFormatError(path, f"line {number}: captions {captions!r}",
                                     field="captions", expected="a list of strings")
        attributes = entry.get("attributes")
        vector = None if attributes is None else _attribute_vector(attributes, names, path,
                                                                   number)
        records.append(PretrainRecord(str(path.parent / entry["image"]), tuple(captions),
                                      vector))
    records, dropped = drop_unreadable(records, verify_images, "luperson_ta: ")
    return PretrainDataset("luperson_ta", str(path), records, names,
                           {"unreadable images": dropped} if dropped else {})


@register_dataset("image_folder", kind="pretraining")
def load_image_folder(root: str, verify_images: bool = False) -> PretrainDataset:
    """An unlabeled folder of person images, searched recursively (no captions, no attributes).

    Args:
        root: The folder (``.jpg``, ``.jpeg``, ``.png``, ``.bmp`` and ``.webp`` files are used).
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.

    Raises:
        DatasetFormatError: When the folder is missing or holds no image.
    """
    folder = existing_dir(root, "image folder")
    records = [PretrainRecord(str(p)) for p in list_images(folder, recursive=True)]
    if not records:
        raise DatasetFormatError(folder, "no images found",
                                 expected=".jpg/.jpeg/.png/.bmp/.webp files (searched recursively)")
    records, dropped = drop_unreadable(records, verify_images, "image_folder: ")
    return PretrainDataset("image_folder", str(folder), records, [],
                           {"unreadable images": dropped} if dropped else {})
