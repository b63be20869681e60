"""Text-based person search loaders: CUHK-PEDES, ICFG-PEDES and RSTPReid, with IRRA's rules.

Each annotation file is a JSON list of ``{"split", "captions", "file_path" | "img_path", "id"}``
entries. Split ``train`` goes to train, ``test`` to test and anything else to val. Train ids
must form 0..N-1 after the dataset's id rule (CUHK-PEDES ``id - 1``, the others as-is), as IRRA
asserts; val/test ids are kept as stored. An empty or whitespace-only caption is not a caption:
it is left out and counted, and an image with no caption left is dropped and counted (both in
``skipped``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.loaders._common import (
    drop_unreadable,
    find_layout,
    read_json,
    require_contiguous,
)
from valpat_keras.data.records import TextDataset, TextRecord
from valpat_keras.data.registry import note_ignored_options, register_dataset

__all__ = ["count_blank_captions", "load_cuhk_pedes", "load_icfg_pedes", "load_rstpreid"]


def count_blank_captions(captions: list[str], split: str, skipped: dict[str, int]
                         ) -> tuple[str, ...]:
    """The captions that are not empty or whitespace only; the others counted in ``skipped``.

    Shared by the text, manifest and pretraining loaders. The caller drops (and counts) a
    record left with no caption where its format needs one.
    """
    kept = tuple(c for c in captions if c.strip())
    if len(kept) < len(captions):
        key = f"blank captions in {split}"
        skipped[key] = skipped.get(key, 0) + len(captions) - len(kept)
    return kept


def _entry_id(entry: dict[str, Any], index: int, json_path: Path) -> int:
    value = entry["id"]
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise DatasetFormatError(json_path, f"entry {index} has id {value!r}",
                                 field="id", expected="an integer") from None


def _parse_entries(name: str, json_path: Path, image_dir: Path, path_key: str,
                   train_pid: Callable[[int], int], rule: str,
                   verify_images: bool, options: dict[str, Any]) -> TextDataset:
    """Turns the annotation list into a `TextDataset`, validating each entry.

    ``options`` are the loader's unused options, recorded as ignored.
    """
    entries = read_json(json_path)
    if not isinstance(entries, list):
        raise DatasetFormatError(json_path, f"top level is a {type(entries).__name__}",
                                 expected="a JSON list of annotation objects")
    splits: dict[str, list[TextRecord]] = {"train": [], "val": [], "test": []}
    skipped: dict[str, int] = {}
    train_ids: list[int] = []  # before dropping images without a caption: the id rule's check
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetFormatError(json_path, f"entry {index} is not an object",
                                     expected="an object with split, captions, "
                                     f"{path_key} and id")
        for key in (path_key, "id", "captions"):
            if key not in entry:
                raise DatasetFormatError(json_path, f"entry {index} has no '{key}'", field=key,
                                         expected=f"every entry to have split, captions, "
                                         f"{path_key} and id")
        captions = entry["captions"]
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise DatasetFormatError(json_path, f"entry {index} has captions {captions!r}",
                                     field="captions", expected="a list of strings")
        pid = _entry_id(entry, index, json_path)
        split = entry.get("split")
        split = split if split in ("train", "test") else "val"
        if split == "train":
            pid = train_pid(pid)
            train_ids.append(pid)
        captions = count_blank_captions(captions, split, skipped)
        if not captions:
            key = f"{split} images without a caption"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        splits[split].append(TextRecord(str(image_dir / entry[path_key]), pid, captions))
    require_contiguous(train_ids, json_path, rule)
    for split, records in splits.items():
        splits[split], dropped = drop_unreadable(records, verify_images, f"{name} {split}: ")
        if dropped:
            skipped[f"unreadable {split} images"] = dropped
    dataset = TextDataset(name, str(json_path.parent), splits["train"], splits["val"],
                          splits["test"], skipped)
    return note_ignored_options(dataset, options)


def _image_dir(folder: Path) -> Path:
    if not (folder / "imgs").is_dir():
        raise DatasetFormatError(folder / "imgs", "folder does not exist",
                                 expected="the images under imgs/ next to the annotation file")
    return folder / "imgs"


@register_dataset("cuhk_pedes", kind="text")
def load_cuhk_pedes(root: str, verify_images: bool = False, **options: Any) -> TextDataset:
    """CUHK-PEDES (``reid_raw.json`` + ``imgs/``; 1-based ids, train pid = id - 1).

    Args:
        root: The ``CUHK-PEDES/`` folder or its parent.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: Missing layout, an entry without captions/file_path/id, or train
            ids that are not 1..N.
    """
    folder = find_layout(root, ("", "CUHK-PEDES", "cuhk-pedes", "cuhk_pedes",
                                "cuhk_pedes/CUHK-PEDES"), ("reid_raw.json",), "CUHK-PEDES")
    return _parse_entries("cuhk_pedes", folder / "reid_raw.json", _image_dir(folder),
                          "file_path", lambda pid: pid - 1, "pid = id - 1", verify_images,
                          options)


@register_dataset("icfg_pedes", kind="text")
def load_icfg_pedes(root: str, verify_images: bool = False, **options: Any) -> TextDataset:
    """ICFG-PEDES (``ICFG-PEDES.json`` or ``ICFG_PEDES.json`` + ``imgs/``; 0-based ids as-is).

    IRRA's code opens ``ICFG-PEDES.json`` while its README says ``ICFG_PEDES.json``; both are
    accepted (hyphen first). There is no val split.

    Args:
        root: The ``ICFG-PEDES/`` folder or its parent.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: Missing layout, an entry without captions/file_path/id, or train
            ids that are not 0..N-1.
    """
    folder = find_layout(root, ("", "ICFG-PEDES", "ICFG_PEDES", "icfg-pedes", "icfg_pedes"),
                         (("ICFG-PEDES.json", "ICFG_PEDES.json"),), "ICFG-PEDES")
    json_path = folder / "ICFG-PEDES.json"
    if not json_path.is_file():
        json_path = folder / "ICFG_PEDES.json"
    return _parse_entries("icfg_pedes", json_path, _image_dir(folder), "file_path",
                          lambda pid: pid, "ids as stored", verify_images, options)


@register_dataset("rstpreid", kind="text")
def load_rstpreid(root: str, verify_images: bool = False, **options: Any) -> TextDataset:
    """RSTPReid (``data_captions.json`` with ``img_path`` + ``imgs/``; 0-based ids as-is).

    Args:
        root: The ``RSTPReid/`` folder or its parent.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: Missing layout, an entry without captions/img_path/id, or train
            ids that are not 0..N-1.
    """
    folder = find_layout(root, ("", "RSTPReid", "rstpreid", "RSTPReID"),
                         ("data_captions.json",), "RSTPReid")
    return _parse_entries("rstpreid", folder / "data_captions.json", _image_dir(folder),
                          "img_path", lambda pid: pid, "ids as stored", verify_images, options)
