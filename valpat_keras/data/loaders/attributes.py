"""Pedestrian attribute loaders: PA-100K, PETA, RAP v1 and RAP v2.

The ``.mat`` annotations are read with scipy's default `loadmat` conventions
(``squeeze_me=False``, ``struct_as_record=True``) and indexed as Rethinking_of_PAR's converters
index them, so a real download reads the same way as the tiny trees of the tests. Records carry
every binary attribute column; ``eval_indices`` selects the evaluated set (PA-100K 26, PETA 35,
RAP v1 51, RAP v2 54). Labels are 1 / 0, and -1 for unknown: RAP's documented 2 (uncertain)
becomes -1 and is counted in ``skipped``; any other value (a 2 in PA-100K or PETA, a -1, a NaN)
is an error naming the file, the row (image), the column (attribute) and the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.loaders._common import (
    checked_labels,
    drop_unreadable,
    find_layout,
    first_existing,
    load_mat,
    mat_field,
    mat_indices,
    mat_strings,
)
from valpat_keras.data.records import AttributeDataset, AttributeRecord
from valpat_keras.data.registry import note_ignored_options, register_dataset

__all__ = ["load_pa100k", "load_peta", "load_rap"]

_PA100K_KEYS = ("attributes", "train_images_name", "val_images_name", "test_images_name",
                "train_label", "val_label", "test_label")


def _records(image_dir: Path, names: list[str], labels: np.ndarray,
             rows: np.ndarray | None = None) -> list[AttributeRecord]:
    rows = np.arange(len(names)) if rows is None else rows
    return [AttributeRecord(str(image_dir / names[i]), labels[i]) for i in rows]


def _finish(name: str, root: Path, splits: dict[str, list[AttributeRecord]],
            attribute_names: list[str], eval_indices: list[int], split: int,
            verify_images: bool, options: dict[str, Any],
            skipped: dict[str, int] | None = None) -> AttributeDataset:
    """Optionally drops unreadable images (counted in ``skipped``) and builds the dataset.

    ``options`` are the loader's unused options, recorded as ignored; ``skipped`` holds what
    the loader already counted (uncertain labels, non-label columns).
    """
    skipped = {k: v for k, v in (skipped or {}).items() if v}
    for key, records in splits.items():
        splits[key], dropped = drop_unreadable(records, verify_images, f"{name} {key}: ")
        if dropped:
            skipped[f"unreadable {key} images"] = dropped
    dataset = AttributeDataset(name, str(root), splits["train"], splits["val"], splits["test"],
                               attribute_names, eval_indices, split, skipped)
    return note_ignored_options(dataset, options)


def _check_rows(rows: np.ndarray, total: int, path: Path, field: str) -> np.ndarray:
    if rows.size and (rows.min() < 0 or rows.max() >= total):
        raise DatasetFormatError(path, f"index out of range ({rows.min() + 1}..{rows.max() + 1})",
                                 expected=f"1-based indices in 1..{total}", field=field)
    return rows


def _check_split(split: int, count: int, path: Path, field: str) -> None:
    if not 0 <= split < count:
        raise DatasetFormatError(path, f"split {split} requested but {count} partitions stored",
                                 expected=f"split in 0..{count - 1}", field=field)


@register_dataset("pa100k", kind="attributes")
def load_pa100k(root: str, verify_images: bool = False, **options: Any) -> AttributeDataset:
    """PA-100K (26 attributes; 80k/10k/10k) from ``annotation.mat``.

    Accepts the official layout ``PA-100K/{annotation/annotation.mat, release_data/release_data}``,
    torchreid's ``pa100k/{annotation/annotation.mat, data}`` and fast-reid's
    ``PA-100K/{annotation.mat, data}``.

    Args:
        root: The dataset folder or its parent.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: Missing layout or image folder, or a key missing in the .mat.
    """
    folder = find_layout(root, ("", "PA-100K", "pa100k", "PA100k", "PA100K", "data/PA100k"),
                         (("annotation/annotation.mat", "annotation.mat"),), "PA-100K")
    mat_path = first_existing(folder, ("annotation/annotation.mat", "annotation.mat"),
                              "annotation.mat")
    mat = load_mat(mat_path, _PA100K_KEYS)
    image_dir = first_existing(folder, ("release_data/release_data", "release_data", "data",
                                        "images"), "PA-100K image folder")
    names = mat_strings(mat["attributes"])
    splits = {}
    for split in ("train", "val", "test"):
        images = mat_strings(mat[f"{split}_images_name"])
        labels = np.asarray(mat[f"{split}_label"])
        if labels.ndim != 2 or labels.shape != (len(images), len(names)):
            raise DatasetFormatError(mat_path, f"shape {labels.shape} does not match "
                                     f"{len(images)} images x {len(names)} attributes",
                                     field=f"{split}_label",
                                     expected="one row of 0/1 labels per image")
        labels, _ = checked_labels(labels, mat_path, f"{split}_label", images, names)
        splits[split] = _records(image_dir, images, labels)
    return _finish("pa100k", folder, splits, names, list(range(len(names))), 0, verify_images,
                   options)


@register_dataset("peta", kind="attributes")
def load_peta(root: str, split: int = 0, verify_images: bool = False,
              **options: Any) -> AttributeDataset:
    """PETA (19,000 images; 35 evaluated of 105 attributes) from ``PETA.mat``.

    ``PETA.mat`` holds a struct ``peta`` with ``data`` (19000 x 109: 4 metadata columns, then
    105 labels), ``attribute`` (names), ``selected_attribute`` (1-based ``data`` columns of the
    35 evaluated attributes) and ``partion_attribute`` (sic; 5 partitions of 1-based rows).
    Images are ``images/00001.png`` ... (row i -> ``f"{i + 1:05d}.png"``).

    Args:
        root: The ``PETA/`` folder or its parent.
        split: Which of the 5 partitions to use.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: Missing layout, a missing key or field, or a bad split index.
    """
    folder = find_layout(root, ("", "PETA", "peta", "data/PETA"), ("PETA.mat",), "PETA")
    mat_path = folder / "PETA.mat"
    peta = load_mat(mat_path, ("peta",))["peta"]
    data = np.asarray(mat_field(peta, "data", None, mat_path, "peta"))
    names = mat_strings(mat_field(peta, "attribute", None, mat_path, "peta"))
    selected = mat_indices(mat_field(peta, "selected_attribute", None, mat_path, "peta")) - 4
    partitions = np.asarray(mat_field(peta, "partion_attribute", None, mat_path, "peta")).ravel()
    if data.ndim != 2 or data.shape[1] != 4 + len(names):
        raise DatasetFormatError(mat_path, f"shape {data.shape} does not match 4 metadata "
                                 f"columns + {len(names)} attributes", field="peta.data",
                                 expected="N x (4 + number of attributes)")
    _check_rows(selected, len(names), mat_path, "peta.selected_attribute")
    _check_split(split, len(partitions), mat_path, "peta.partion_attribute")
    image_dir = first_existing(folder, ("images",), "PETA image folder")
    image_names = [f"{i + 1:05d}.png" for i in range(len(data))]
    labels, _ = checked_labels(data[:, 4:], mat_path, "peta.data (after 4 metadata columns)",
                               image_names, names)
    splits = {}
    for key in ("train", "val", "test"):
        field = f"peta.partion_attribute[{split}].{key}"
        rows = mat_indices(mat_field(partitions[split], key, None, mat_path,
                                     f"peta.partion_attribute[{split}]"))
        splits[key] = _records(image_dir, image_names, labels,
                               _check_rows(rows, len(data), mat_path, field))
    return _finish("peta", folder, splits, names, selected.tolist(), split, verify_images,
                   options)


def _binary_columns(data: np.ndarray) -> np.ndarray:
    """Columns that are labels (values in 0/1/2), not viewpoints or box coordinates."""
    return np.flatnonzero(np.isin(data, (0, 1, 2)).all(axis=0))


def _rap_v2(struct: Any, mat_path: Path, split: int) -> tuple[Any, ...]:
    """RAP v2: fields by name; partitions hold ``train_index`` / ``val_index`` / ``test_index``."""
    context = "RAP_annotation"
    images = mat_strings(mat_field(struct, "name", None, mat_path, context))
    data = np.asarray(mat_field(struct, "data", None, mat_path, context))
    names = mat_strings(mat_field(struct, "attribute", None, mat_path, context))
    selected = mat_indices(mat_field(struct, "selected_attribute", None, mat_path, context))
    partitions = np.asarray(mat_field(struct, "partition_attribute", None, mat_path,
                                      context)).ravel()
    _check_split(split, len(partitions), mat_path, f"{context}.partition_attribute")
    rows = {}
    for key in ("train", "val", "test"):
        rows[key] = mat_indices(mat_field(partitions[split], f"{key}_index", None, mat_path,
                                          f"{context}.partition_attribute[{split}]"))
    return images, data, names, selected, rows


def _rap_v1(struct: Any, mat_path: Path, split: int) -> tuple[Any, ...]:
    """RAP v1: fields by position (0 partition, 1 labels, 3 English names, 5 image names)."""
    element = np.asarray(struct).ravel()[0]
    if element.dtype.names is None or len(element.dtype.names) < 6:
        raise DatasetFormatError(mat_path, "struct 'RAP_annotation' has too few fields",
                                 field="RAP_annotation",
                                 expected="RAP v1 (partition, data, chinese names, english "
                                 "names, position, image names, ...) or RAP v2 named fields "
                                 "(name, data, attribute, selected_attribute, "
                                 "partition_attribute)")
    partitions = np.asarray(element[0]).ravel()
    data = np.asarray(element[1])
    names = mat_strings(element[3])
    images = mat_strings(element[5])
    _check_split(split, len(partitions), mat_path, "RAP_annotation[0] (partition)")
    # Each partition is a 1x1 struct whose first two fields are the trainval and test rows.
    part = np.asarray(partitions[split]).ravel()[0]
    trainval, test = part[0], part[1]
    rows = {"train": mat_indices(trainval), "val": np.zeros(0, np.int64),
            "test": mat_indices(test)}
    selected = np.arange(min(51, len(names)))
    return images, data, names, selected, rows


@register_dataset("rap", kind="attributes")
def load_rap(root: str, split: int = 0, verify_images: bool = False,
             **options: Any) -> AttributeDataset:
    """RAP v1 or RAP v2 from ``RAP_annotation/RAP_annotation.mat`` (detected from the struct).

    RAP v2 has named fields (``name``, ``data``, ``attribute``, ``selected_attribute``,
    ``partition_attribute``) and evaluates the 54 selected attributes; its label 2
    (uncertain) becomes -1. RAP v1 is read by position, as Rethinking_of_PAR does, evaluates the
    first 51 attributes and has no validation set (``val`` is empty; ``train`` is trainval).
    Non-label columns (RAP v2's viewpoint and box coordinates) are left out of the records.

    Args:
        root: The RAP folder (holding ``RAP_annotation/`` and ``RAP_dataset/``) or its parent.
        split: Which of the 5 partitions to use.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: Missing layout, a missing key or field, or a bad split index.
    """
    folder = find_layout(root, ("", "RAP", "rap", "RAPv2", "RAP2", "data/RAP", "data/RAP2"),
                         ("RAP_annotation/RAP_annotation.mat",), "RAP")
    mat_path = folder / "RAP_annotation" / "RAP_annotation.mat"
    struct = load_mat(mat_path, ("RAP_annotation",))["RAP_annotation"]
    fields = set(np.asarray(struct).dtype.names or ())
    is_v2 = {"name", "partition_attribute"} <= fields
    images, data, names, selected, rows = (_rap_v2 if is_v2 else _rap_v1)(struct, mat_path, split)
    if data.ndim != 2 or data.shape != (len(images), len(names)):
        raise DatasetFormatError(mat_path, f"label shape {data.shape} does not match "
                                 f"{len(images)} images x {len(names)} attributes",
                                 field="RAP_annotation.data", expected="one label row per image")
    _check_rows(selected, len(names), mat_path, "RAP_annotation.selected_attribute")
    keep = _binary_columns(data)
    column = {old: new for new, old in enumerate(keep.tolist())}
    missing = [names[i] for i in selected if i not in column]
    if missing:
        raise DatasetFormatError(mat_path, f"evaluated attributes with non-binary values: "
                                 f"{missing[:5]}", field="RAP_annotation.data",
                                 expected="labels 0, 1 or 2 (uncertain)")
    labels, uncertain = checked_labels(data[:, keep], mat_path, "RAP_annotation.data", images,
                                       [names[i] for i in keep], unknown=(2,))
    left_out = [names[i] for i in range(len(names)) if i not in column]
    skipped = {"uncertain labels (2) read as unknown (-1)": uncertain,
               f"non-label columns left out ({', '.join(left_out[:3])}"
               f"{', ...' if len(left_out) > 3 else ''})": len(left_out)}
    image_dir = first_existing(folder, ("RAP_dataset", "images", "data"), "RAP image folder")
    splits = {key: _records(image_dir, images, labels,
                            _check_rows(r, len(images), mat_path, f"partition[{split}].{key}"))
              for key, r in rows.items()}
    return _finish("rap", folder, splits, [names[i] for i in keep],
                   [column[i] for i in selected], split, verify_images, options, skipped)
