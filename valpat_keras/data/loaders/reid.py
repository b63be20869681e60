"""Image re-identification loaders: Market-1501, DukeMTMC-reID, Occluded-Duke and MSMT17.

They read the layouts torchreid, fast-reid, cluster-contrast and SOLIDER-REID read, with the
same id rules: junk pid -1 dropped (and counted), pid 0 distractors kept in the gallery,
camids 0-based, train pids relabelled 0..N-1 in sorted order, query/gallery pids kept.
Market-style folders are listed with every common image extension in any case (``.jpg``,
``.JPG``, ``.png``, ...); files that are not images and sub-folders are counted in
``skipped``, never dropped silently.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.loaders._common import drop_unreadable, find_layout, list_images, relabel
from valpat_keras.data.records import ReIDDataset, ReIDRecord, pids_of
from valpat_keras.data.registry import note_ignored_options, register_dataset

__all__ = ["REID_NAME_PATTERN", "load_dukemtmc_reid", "load_market1501", "load_msmt17",
           "load_occluded_duke"]

#: The regex every peer uses on Market/Duke-style names (``\d+`` also covers MSMT's 2 digits).
REID_NAME_PATTERN = re.compile(r"^([-\d]+)_c(\d+)")
_MARKET_STYLE_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
_MSMT_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")


def _parse_folder(folder: Path, max_camera: int, example: str,
                  skipped: dict[str, int]) -> tuple[list[ReIDRecord], int]:
    """Parses the image names of one split folder; returns records (raw pids) and junk count.

    Files that are not images (and macOS ``._*`` metadata) are counted in ``skipped``.
    """
    records, junk = [], 0
    for path in list_images(folder, skipped=skipped):
        match = REID_NAME_PATTERN.match(path.name)
        try:
            pid, camera = int(match.group(1)), int(match.group(2))
        except (AttributeError, ValueError):
            pid = camera = None
        if pid is None or camera is None:
            raise DatasetFormatError(path, "file name does not parse",
                                     expected=f"'<pid>_c<camera>...' image names matching "
                                     f"{REID_NAME_PATTERN.pattern}, e.g. {example}",
                                     field="file name")
        if pid == -1:
            junk += 1
            continue
        if pid < 0:
            raise DatasetFormatError(path, f"person id {pid} is negative", field="pid",
                                     expected="-1 (junk), 0 (distractor) or a positive id")
        if not 1 <= camera <= max_camera:
            raise DatasetFormatError(path, f"camera {camera} out of range", field="camera",
                                     expected=f"a camera in 1..{max_camera}")
        records.append(ReIDRecord(str(path), pid, camera - 1))
    return records, junk


def _finish(name: str, root: Path, train: list[ReIDRecord], query: list[ReIDRecord],
            gallery: list[ReIDRecord], skipped: dict[str, int],
            verify_images: bool, options: dict[str, Any]) -> ReIDDataset:
    """Relabels train pids, optionally drops unreadable images and checks the queries.

    ``options`` are the loader's unused options, recorded as ignored.
    """
    splits = {"train": train, "query": query, "gallery": gallery}
    for split, records in splits.items():
        kept, dropped = drop_unreadable(records, verify_images, f"{name} {split}: ")
        splits[split] = kept
        if dropped:
            skipped[f"unreadable {split} images"] = dropped
    labels = relabel(pids_of(splits["train"]).tolist())
    train = [ReIDRecord(r.path, labels[r.pid], r.camid) for r in splits["train"]]
    dataset = ReIDDataset(name, str(root), train, splits["query"], splits["gallery"],
                          {k: v for k, v in skipped.items() if v})
    dataset.check_queries()
    return note_ignored_options(dataset, options)


def _load_market_style(name: str, folder: Path, max_camera: int, example: str,
                       verify_images: bool, options: dict[str, Any]) -> ReIDDataset:
    """Loads ``bounding_box_train`` / ``query`` / ``bounding_box_test`` below ``folder``."""
    splits, skipped = {}, {}
    for split, sub in zip(("train", "query", "gallery"), _MARKET_STYLE_FOLDERS):
        splits[split], junk = _parse_folder(folder / sub, max_camera, example, skipped)
        skipped[f"junk pid -1 in {sub}"] = junk
    return _finish(name, folder, splits["train"], splits["query"], splits["gallery"], skipped,
                   verify_images, options)


#: Market-style datasets: (folders below the root to try, label, cameras, example name).
_LAYOUTS = {
    "market1501": (("", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501",
                    "Market-1501", "market"), "Market-1501", 6, "0002_c1s1_000451_03.jpg"),
    "dukemtmc_reid": (("", "DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID",
                       "dukemtmcreid/DukeMTMC-reID", "dukemtmc/DukeMTMC-reID", "dukemtmc-reid",
                       "dukemtmcreid"), "DukeMTMC-reID", 8, "0001_c2_f0046182.jpg"),
    "occluded_duke": (("", "Occluded_Duke", "occluded_duke/Occluded_Duke",
                       "occluded_dukemtmc/Occluded_Duke", "occluded_duke"), "Occluded-Duke", 8,
                      "0001_c2_f0046182.jpg"),
}


def _load_layout(name: str, root: str, verify_images: bool, options: dict[str, Any]
                 ) -> ReIDDataset:
    """Finds the Market-style layout of ``name`` (see `_LAYOUTS`) below ``root`` and loads it."""
    candidates, label, cameras, example = _LAYOUTS[name]
    folder = find_layout(root, candidates, _MARKET_STYLE_FOLDERS, label)
    return _load_market_style(name, folder, cameras, example, verify_images, options)


@register_dataset("market1501", kind="reid")
def load_market1501(root: str, verify_images: bool = False, **options: Any) -> ReIDDataset:
    """Market-1501 (751 train ids, 6 cameras), torchreid / fast-reid / SOLIDER-REID layouts.

    Args:
        root: ``Market-1501-v15.09.15/``, its parent, ``market1501/`` above it, or a flat
            folder holding ``bounding_box_train``, ``query`` and ``bounding_box_test``.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Returns:
        The `ReIDDataset`; junk (-1) images are counted in ``skipped``.

    Raises:
        DatasetFormatError: Missing layout, unparsable file name or camera outside 1..6.
    """
    return _load_layout("market1501", root, verify_images, options)


@register_dataset("dukemtmc_reid", kind="reid")
def load_dukemtmc_reid(root: str, verify_images: bool = False, **options: Any) -> ReIDDataset:
    """DukeMTMC-reID (702 train ids, 8 cameras), torchreid / fast-reid / cluster-contrast layouts.

    Args:
        root: ``DukeMTMC-reID/``, its parent, or ``dukemtmc-reid/`` / ``dukemtmcreid/`` above it.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: Missing layout, unparsable file name or camera outside 1..8.
    """
    return _load_layout("dukemtmc_reid", root, verify_images, options)


@register_dataset("occluded_duke", kind="reid")
def load_occluded_duke(root: str, verify_images: bool = False, **options: Any) -> ReIDDataset:
    """Occluded-DukeMTMC (Duke names, ``Occluded_Duke/`` folder; 8 cameras).

    Args:
        root: ``Occluded_Duke/`` or its parent (also ``occluded_duke/Occluded_Duke``).
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: Missing layout, unparsable file name or camera outside 1..8.
    """
    return _load_layout("occluded_duke", root, verify_images, options)


def _read_msmt_list(list_file: Path, image_dir: Path) -> list[ReIDRecord]:
    """Reads ``<pid-folder>/<file> <pid>`` lines; camid from the third ``_`` field of the name."""
    records = []
    expected = "lines '<pid-folder>/<file> <pid>', e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'"
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(" ")
        try:
            relative, pid = parts[0], int(parts[1])
            camera = int(Path(relative).name.split("_")[2])
        except (IndexError, ValueError):
            raise DatasetFormatError(list_file, f"line {number} does not parse: {line.strip()!r}",
                                     expected=expected, field="line") from None
        if not 1 <= camera <= 15:
            raise DatasetFormatError(list_file, f"line {number}: camera {camera} out of range",
                                     expected="a camera in 01..15", field="camera")
        records.append(ReIDRecord(str(image_dir / relative), pid, camera - 1))
    return records


@register_dataset("msmt17", kind="reid")
def load_msmt17(root: str, use_val: bool = False, verify_images: bool = False,
                **options: Any) -> ReIDDataset:
    """MSMT17 V1 or V2 (1,041 train ids, 15 cameras), list layout or Market-style layout.

    The list layout (torchreid, fast-reid, SOLIDER-REID) is ``MSMT17_V1/{train,test}`` or
    ``MSMT17_V2/{mask_train_v2,mask_test_v2}`` with ``list_{train,val,query,gallery}.txt``;
    the list files are authoritative. The Market-style layout (cluster-contrast, SpCL) has
    ``bounding_box_train`` / ``query`` / ``bounding_box_test`` with names like
    ``0781_c11_0015.jpg``. V1 is preferred over V2 when both are present.

    Args:
        root: ``MSMT17_V1/``, ``MSMT17_V2/``, ``MSMT17/``, or a parent (also ``msmt17/``).
        use_val: Add ``list_val`` to training (SOLIDER-REID/TransReID). The default trains on
            ``list_train`` only, as torchreid and fast-reid do for comparable results.
        verify_images: Decode every image (cached) and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Raises:
        DatasetFormatError: Missing layout, malformed list line or camera outside 1..15.
    """
    candidates = ("", "MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2",
                  "MSMT17", "msmt17", "msmt17/MSMT17")
    folder = find_layout(root, candidates, (("list_train.txt", "bounding_box_train"),),
                         "MSMT17")
    if not (folder / "list_train.txt").is_file():
        missing = [d for d in _MARKET_STYLE_FOLDERS if not (folder / d).is_dir()]
        if missing:
            raise DatasetFormatError(folder / missing[0], "folder does not exist",
                                     expected=f"{', '.join(_MARKET_STYLE_FOLDERS)} (Market-style "
                                     f"MSMT17) or {', '.join(_MSMT_LISTS)} (list layout)")
        return _load_market_style("msmt17", folder, 15, "0781_c11_0015.jpg", verify_images,
                                  options)
    for name in _MSMT_LISTS:
        if not (folder / name).is_file():
            raise DatasetFormatError(folder / name, "list file missing",
                                     expected=f"all of {', '.join(_MSMT_LISTS)}")
    train_dir = next((folder / d for d in ("train", "mask_train_v2") if (folder / d).is_dir()),
                     None)
    test_dir = next((folder / d for d in ("test", "mask_test_v2") if (folder / d).is_dir()), None)
    if train_dir is None or test_dir is None:
        raise DatasetFormatError(folder, "image folders missing",
                                 expected="train/ and test/ (V1) or mask_train_v2/ and "
                                 "mask_test_v2/ (V2)")
    train = _read_msmt_list(folder / "list_train.txt", train_dir)
    if use_val:
        train += _read_msmt_list(folder / "list_val.txt", train_dir)
    query = _read_msmt_list(folder / "list_query.txt", test_dir)
    gallery = _read_msmt_list(folder / "list_gallery.txt", test_dir)
    return _finish("msmt17", folder, train, query, gallery, {}, verify_images, options)
