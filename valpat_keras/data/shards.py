"""TFRecord shards: any dataset packed for many parallel readers (``valpat pack``).

A shard folder holds:

```
SHARDS/index.json                  format, library version, source, fields, attribute names,
                                   records per split, and per shard its file, count and bytes
SHARDS/records.jsonl               one line per record (no image): key, split, index, shard,
                                   offset, length, pid, camid, captions, attributes
SHARDS/shard-00000-of-00008.tfrecord ...   tf.train.Example records, FIELDS below
```

Each record stores the image's bytes as they were on disk (never re-encoded), its ``key``
(the path relative to the dataset root, or the LMDB key), ``split``, ``index`` (its position
in its split, which seeds its augmentation exactly as the folder pipelines do), ``captions``,
``attributes`` (1/0/-1; empty when unlabeled), ``pid`` and ``camid`` (-1 when absent). Record
``j`` of the pack order goes to shard ``j % num_shards``, so a deterministic interleave of all
shards (one record from each in turn) reads the pack order back. Shards, ``records.jsonl`` and
``index.json`` (last) are written to temporary names and renamed, so a killed ``pack`` leaves
no folder that looks complete.

Readers:

- `shard_pretrain_dataset` streams a split for pretraining: the shard files (shuffled per
  pass), ``interleave`` with ``num_parallel_calls`` (deterministic), a shuffle buffer, the same
  views, caption choice and attribute vectors as `pretrain_dataset`. Repeatable given a seed;
  with ``shuffle=False`` its batches equal `pretrain_dataset`'s on the source records. A
  resumed run skips the records before its step without decoding them (it still reads them).
- `shard_image_source` gives random access by record offset (``records.jsonl``), for the P x K
  sampler: ``reid_train_dataset(shard_reid_records(shards), image_source=...)``.
- `load_shard_transfer` (the ``shards`` loader with ``kind="reid" | "attributes" | "text"``)
  gives back the packed transfer dataset, every split, records' ``path`` ``SHARDS/KEY``. The
  pipelines given no ``image_source`` find the shard folder of such paths
  (`image_source_for_paths`) and read by offset; figures read through `read_image_bytes`. So
  ``valpat reid / attributes / search / evaluate --data shards:SHARDS`` read only the shards
  and give the batches and scores of the folder that was packed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from valpat_keras import __version__
from valpat_keras.data.errors import DECODE_FAILURE_MARKER, DatasetFormatError, SkippedImages
from valpat_keras.data.loaders.luperson_lmdb import bytes_problem
from valpat_keras.data.pipelines import (
    AUTOTUNE,
    ImageSource,
    _map_in_order,
    _pick_caption,
    _tokenize_batch,
    decode_image_bytes,
    pretrain_views,
)
from valpat_keras.data.records import (
    AttributeDataset,
    AttributeRecord,
    PretrainDataset,
    PretrainRecord,
    ReIDDataset,
    ReIDRecord,
    TextDataset,
    TextRecord,
)
from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.errors import InputError

__all__ = ["FIELDS", "FORMAT", "INDEX_FILE", "PackItem", "PackReport", "ShardAttributeDataset",
           "ShardPretrainDataset", "ShardReIDDataset", "ShardSet", "ShardTextDataset",
           "image_source_for_paths", "items_of", "load_shard_transfer", "open_shards", "pack",
           "read_image_bytes", "shard_folder_of", "shard_image_source", "shard_pretrain_dataset",
           "shard_reid_records", "verify_shards"]

FORMAT = "valpat-shards-v1"
INDEX_FILE = "index.json"
RECORDS_FILE = "records.jsonl"
FIELDS = ("key", "image", "split", "index", "captions", "attributes", "pid", "camid")
#: More shards than this would keep too many files open while packing.
MAX_SHARDS = 4096
_EXPECTED = f"a folder written by `valpat pack` ({INDEX_FILE}, {RECORDS_FILE}, shard-*.tfrecord)"
_SPEC = {
    "key": tf.io.FixedLenFeature([], tf.string),
    "image": tf.io.FixedLenFeature([], tf.string),
    "split": tf.io.FixedLenFeature([], tf.string),
    "index": tf.io.FixedLenFeature([], tf.int64),
    "captions": tf.io.RaggedFeature(tf.string),
    "attributes": tf.io.RaggedFeature(tf.int64),
    "pid": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "camid": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


@dataclasses.dataclass(frozen=True)
class PackItem:
    """One record to pack: metadata and how to read its encoded image.

    Attributes:
        key: Unique name within its split (path relative to the dataset root, LMDB key).
        split: ``train``, ``query``, ``gallery``, ``val`` or ``test``.
        read: Returns the encoded image bytes (raises ``OSError``/``KeyError`` if it cannot).
        captions: Captions (may be empty).
        attributes: 1/0/-1 vector or None.
        pid: Person id, -1 when absent.
        camid: Camera id, -1 when absent.
    """

    key: str
    split: str
    read: Callable[[], bytes]
    captions: tuple[str, ...] = ()
    attributes: np.ndarray | None = None
    pid: int = -1
    camid: int = -1


def _file_reader(path: str) -> Callable[[], bytes]:
    return lambda: Path(path).read_bytes()


def _key_of(path: str, base: Path) -> str:
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _base_folder(dataset: Any) -> Path:
    root = Path(dataset.root)
    return root.parent if root.is_file() else root


def items_of(dataset: Any) -> tuple[list[PackItem], list[str], list[int] | None]:
    """Every record of a loaded dataset as `PackItem` (all splits), attribute names, eval set.

    Args:
        dataset: A `PretrainDataset` (also the LMDB and shard ones), `ReIDDataset`,
            `AttributeDataset` or `TextDataset`.

    Returns:
        ``(items, attribute_names, eval_indices)`` (``eval_indices`` for attribute sets).

    Raises:
        InputError: Another type.
    """
    base = _base_folder(dataset)
    own_bytes = getattr(dataset, "read_bytes", None)  # LMDB / shard datasets: keys, not files
    key_of = getattr(dataset, "key_of", lambda path: path)  # shard transfers: SHARDS/KEY

    def item(record, split: str, **fields: Any) -> PackItem:
        if own_bytes is not None:
            return PackItem(key_of(record.path), split, lambda: own_bytes(record.path),
                            **fields)
        return PackItem(_key_of(record.path, base), split, _file_reader(record.path), **fields)

    if isinstance(dataset, PretrainDataset):
        pids = getattr(dataset, "pids", None) or [-1] * len(dataset.records)
        items = [item(r, "train", captions=tuple(r.captions), attributes=r.attributes, pid=p)
                 for r, p in zip(dataset.records, pids)]
        return items, list(dataset.attribute_names), None
    if isinstance(dataset, ReIDDataset):
        return ([item(r, split, pid=r.pid, camid=r.camid)
                 for split in ("train", "query", "gallery") for r in getattr(dataset, split)],
                [], None)
    if isinstance(dataset, AttributeDataset):
        return ([item(r, split, attributes=r.attributes)
                 for split in ("train", "val", "test") for r in getattr(dataset, split)],
                list(dataset.all_attribute_names), list(dataset.eval_indices))
    if isinstance(dataset, TextDataset):
        return ([item(r, split, pid=r.pid, captions=tuple(r.captions))
                 for split in ("train", "val", "test") for r in getattr(dataset, split)],
                [], None)
    raise InputError(f"cannot pack a {type(dataset).__name__}; expected a dataset a registered "
                     "loader returns")


def _example(item: PackItem, raw: bytes, index: int) -> bytes:
    """The serialized ``tf.train.Example`` of one record."""
    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    attributes = [] if item.attributes is None else np.asarray(item.attributes).reshape(-1)
    feature = {"key": strings([item.key.encode()]), "image": strings([raw]),
               "split": strings([item.split.encode()]), "index": ints([index]),
               "captions": strings(c.encode() for c in item.captions),
               "attributes": ints(attributes), "pid": ints([item.pid]),
               "camid": ints([item.camid])}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@dataclasses.dataclass
class PackReport:
    """What `pack` wrote.

    Attributes:
        folder: The shard folder.
        counts: Records per shard.
        splits: Records per split.
        skipped: The unreadable images, by key (left out, counted in ``index.json``).
    """

    folder: Path
    counts: list[int]
    splits: dict[str, int]
    skipped: SkippedImages

    def summary(self) -> str:
        """One paragraph: records, shards, splits and what was skipped."""
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        text = (f"packed {sum(self.counts)} records into {len(self.counts)} shards in "
                f"{self.folder} ({splits})")
        return text + ("\n" + self.skipped.report() if len(self.skipped) else "")


def _shard_count(total: int, shard_size: int | None, num_shards: int | None) -> int:
    if shard_size is not None and num_shards is not None:
        raise InputError("give --shard-size or --num-shards, not both")
    if num_shards is None:
        num_shards = math.ceil(total / int(shard_size or 10_000))
    if int(num_shards) < 1 or (shard_size is not None and int(shard_size) < 1):
        raise InputError("--shard-size and --num-shards must be at least 1")
    num_shards = max(1, min(int(num_shards), total))
    if num_shards > MAX_SHARDS:
        raise InputError(f"{num_shards} shards are too many to write at once (at most "
                         f"{MAX_SHARDS}); raise --shard-size")
    return num_shards


def _loaded(items: Sequence[PackItem], verify: bool, workers: int | None
            ) -> Iterator[tuple[PackItem, bytes | None, str | None]]:
    """``(item, bytes, problem)`` in order, read (and decoded when ``verify``) by threads."""
    def load(item: PackItem) -> tuple[PackItem, bytes | None, str | None]:
        try:
            raw = item.read()
        except FileNotFoundError:
            return item, None, "missing"
        except (OSError, KeyError) as err:
            return item, None, f"unreadable: {type(err).__name__} ({err})"
        problem = bytes_problem(raw) if verify else (None if raw else "empty file")
        return item, raw, problem

    # PIL and file reads release the GIL: threads read and check in parallel.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), 1024):
            yield from pool.map(load, items[start:start + 1024])


def _shard_name(number: int, total: int) -> str:
    return f"shard-{number:05d}-of-{total:05d}.tfrecord"


def _prepare_folder(out: Path, overwrite: bool) -> None:
    """Creates ``out``; an existing shard folder is replaced only with ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if (out / INDEX_FILE).exists():
        if not overwrite:
            raise InputError(f"--out {out}: already holds shards ({INDEX_FILE}); pass "
                             "--overwrite to replace them")
        (out / INDEX_FILE).unlink()  # first: a half-replaced folder must not look complete
        for old in out.glob("shard-*-of-*.tfrecord"):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_json_atomic(path: Path, value: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _write_shards(out: Path, items: Sequence[PackItem], num_shards: int, verify: bool,
                  workers: int | None) -> tuple[list[int], list[int], dict[str, int],
                                                SkippedImages]:
    """Writes the shards and ``records.jsonl`` under temporary names; renames them at the end."""
    names = [_shard_name(i, num_shards) for i in range(num_shards)]
    temporary = [out / (name + ".tmp") for name in names]
    writers = [tf.io.TFRecordWriter(str(path)) for path in temporary]
    counts, sizes = [0] * num_shards, [0] * num_shards
    splits: dict[str, int] = {}
    skipped = SkippedImages()
    records_tmp = out / (RECORDS_FILE + ".tmp")
    kept = 0
    with records_tmp.open("w", encoding="utf-8") as lines:
        for item, raw, problem in _loaded(items, verify, workers):
            if problem is not None:
                skipped.add(f"{item.split}/{item.key}", problem)
                continue
            shard, index = kept % num_shards, splits.get(item.split, 0)
            serialized = _example(item, raw, index)
            writers[shard].write(serialized)
            # TFRecord framing: 8-byte length, 4-byte CRC, data, 4-byte CRC.
            lines.write(json.dumps({
                "key": item.key, "split": item.split, "index": index, "shard": shard,
                "offset": sizes[shard] + 12, "length": len(serialized), "pid": item.pid,
                "camid": item.camid, "captions": list(item.captions),
                "attributes": None if item.attributes is None
                else np.asarray(item.attributes).astype(int).tolist()}) + "\n")
            sizes[shard] += len(serialized) + 16
            counts[shard] += 1
            splits[item.split] = index + 1
            kept += 1
    for writer in writers:
        writer.close()
    for path, name in zip(temporary, names):
        os.replace(path, out / name)
    os.replace(records_tmp, out / RECORDS_FILE)
    return counts, sizes, splits, skipped


def pack(dataset: Any, out: str | Path, shard_size: int | None = None,
         num_shards: int | None = None, source: str = "", verify: bool = True,
         overwrite: bool = False, workers: int | None = None) -> PackReport:
    """Packs every record of ``dataset`` into TFRecord shards (see the module docstring).

    Args:
        dataset: A loaded dataset (`items_of` lists the types).
        out: The shard folder (created).
        shard_size: Records per shard (default 10,000 when ``num_shards`` is not given).
        num_shards: Number of shards instead.
        source: What was packed, for ``index.json`` (e.g. ``market1501:/data``).
        verify: Decode every image (PIL) and leave out, count and name unreadable ones;
            without it only unreadable files (missing, empty) are left out.
        overwrite: Replace the shards of an earlier pack in ``out``.
        workers: Reading threads (default: Python's).

    Returns:
        The `PackReport`.

    Raises:
        InputError: Both or invalid shard options, an existing shard folder without
            ``overwrite``, or nothing readable to pack.
    """
    items, attribute_names, eval_indices = items_of(dataset)
    if not items:
        raise InputError(f"{dataset.root}: no records to pack")
    out = Path(out)
    shards = _shard_count(len(items), shard_size, num_shards)
    _prepare_folder(out, overwrite)
    counts, sizes, splits, skipped = _write_shards(out, items, shards, verify, workers)
    if not sum(counts):
        raise InputError(f"{dataset.root}: none of the {len(items)} images is readable "
                         f"({skipped.report()})")
    _write_json_atomic(out / INDEX_FILE, {
        "format": FORMAT, "library_version": __version__, "source": source or dataset.root,
        "dataset": dataset.name, "kind": _kind_of(dataset),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fields": list(FIELDS), "attribute_names": attribute_names,
        "eval_indices": eval_indices, "num_records": sum(counts), "splits": splits,
        "records_file": RECORDS_FILE,
        "shards": [{"file": _shard_name(i, shards), "count": c, "bytes": b}
                   for i, (c, b) in enumerate(zip(counts, sizes))],
        # What the source loader dropped too, so the shard dataset's summary says it.
        "skipped": {**dict(getattr(dataset, "skipped", None) or {}),
                    **({"unreadable images": len(skipped)} if len(skipped) else {})},
        "unreadable": [{"key": p, "reason": r}
                       for p, r in zip(skipped.paths[:1000], skipped.reasons[:1000])]})
    return PackReport(out, counts, splits, skipped)


def _kind_of(dataset: Any) -> str:
    for kind, cls in (("pretraining", PretrainDataset), ("reid", ReIDDataset),
                      ("attributes", AttributeDataset), ("text", TextDataset)):
        if isinstance(dataset, cls):
            return kind
    return "unknown"


@dataclasses.dataclass
class ShardSet:
    """An opened shard folder (`open_shards`).

    Attributes:
        folder: The folder.
        index: The parsed ``index.json``.
    """

    folder: Path
    index: dict[str, Any]

    @property
    def files(self) -> list[str]:
        """The shard files, in shard order."""
        return [str(self.folder / s["file"]) for s in self.index["shards"]]

    @property
    def attribute_names(self) -> list[str]:
        """The attribute names the records' vectors follow."""
        return list(self.index.get("attribute_names") or [])

    def records(self, split: str | None = None) -> list[dict[str, Any]]:
        """The lines of ``records.jsonl`` (of one split), in pack order.

        Raises:
            DatasetFormatError: A missing or malformed ``records.jsonl`` (named).
        """
        path = self.folder / RECORDS_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise DatasetFormatError(path, f"cannot read ({err.strerror or err})",
                                     expected=_EXPECTED) from None
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise DatasetFormatError(path, f"line {number} is not valid JSON",
                                         expected=_EXPECTED) from None
            if split is None or row.get("split") == split:
                rows.append(row)
        return rows


def _read_index(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a shard folder (no such folder); expected {_EXPECTED}")
    path = folder / INDEX_FILE
    if not path.is_file():
        raise DatasetFormatError(path, "missing: not a shard folder", expected=_EXPECTED)
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})", expected=_EXPECTED) from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DatasetFormatError(path, "not a shard index", field="format",
                                 expected=repr(FORMAT))
    return index


def open_shards(folder: str | Path) -> ShardSet:
    """Opens a shard folder, checking its index and every shard's presence and size.

    Raises:
        InputError: Not a shard folder, a malformed index, or a missing or corrupt
            (wrong-sized) shard; each names the file.
    """
    folder = Path(folder).expanduser().absolute()
    shards = ShardSet(folder, _read_index(folder))
    for entry in shards.index["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            raise DatasetFormatError(path, "missing shard", expected=_EXPECTED)
        if path.stat().st_size != entry["bytes"]:
            raise DatasetFormatError(path, f"corrupt shard: {path.stat().st_size} bytes, the "
                                     f"index says {entry['bytes']}",
                                     expected="the shard as `valpat pack` wrote it (re-pack)")
    return shards


def verify_shards(shards: ShardSet) -> None:
    """Reads every record of every shard (CRCs checked) and compares the counts.

    Raises:
        InputError: A shard whose records are corrupt or whose count differs (named).
    """
    for entry, path in zip(shards.index["shards"], shards.files):
        try:
            count = sum(1 for _ in tf.data.TFRecordDataset(path))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise DatasetFormatError(path, f"corrupt shard ({err.message.splitlines()[0]})",
                                     expected="the shard as `valpat pack` wrote it "
                                     "(re-pack)") from None
        if count != entry["count"]:
            raise DatasetFormatError(path, f"corrupt shard: {count} records, the index says "
                                     f"{entry['count']}", expected="re-pack")


@dataclasses.dataclass
class ShardPretrainDataset(PretrainDataset):
    """A `PretrainDataset` read from shards: records' ``path`` are the keys.

    Attributes:
        shards: The opened shard folder.
        split: The split the records are.
        pids: Person ids of the records (-1 when absent).
    """

    shards: ShardSet | None = None
    split: str = "train"
    pids: list[int] | None = None

    def read_bytes(self, key: str) -> bytes:
        """The encoded image of ``key`` (random access; what a re-pack copies)."""
        if not hasattr(self, "_reader"):
            self._reader = _OffsetReader(self.shards, self.split)
        return self._reader.read(key)


def load_shard_pretraining(root: str, split: str = "train", verify: bool = False
                           ) -> ShardPretrainDataset:
    """The ``split`` records of a shard folder as a `ShardPretrainDataset`.

    Raises:
        InputError: See `open_shards` (and `verify_shards` with ``verify``); no such split.
    """
    shards = open_shards(root)
    if verify:
        verify_shards(shards)
    rows = shards.records(split)
    if not rows:
        raise DatasetFormatError(shards.folder / INDEX_FILE, f"no {split!r} records",
                                 field="splits", expected=f"one of {list(shards.index['splits'])}")
    records = [PretrainRecord(r["key"], tuple(r.get("captions") or ()),
                              None if r.get("attributes") is None
                              else np.asarray(r["attributes"], np.int8)) for r in rows]
    return ShardPretrainDataset(
        "shards", str(shards.folder), records, shards.attribute_names,
        dict(shards.index.get("skipped") or {}), shards=shards, split=split,
        pids=[int(r.get("pid", -1)) for r in rows])


def shard_reid_records(shards: ShardSet, split: str = "train") -> list[ReIDRecord]:
    """The ``split`` records with pid and camid (``path`` is the key) for the P x K sampler."""
    return [ReIDRecord(r["key"], int(r["pid"]), int(r["camid"])) for r in shards.records(split)]


class _OffsetReader:
    """Random access to records by key through ``records.jsonl``'s offsets.

    ``split=None`` reads every split (a key names one image: the same key in two splits is
    the same source file); ``prefix`` is put before each key (the transfer records' paths).
    """

    def __init__(self, shards: ShardSet, split: str | None, prefix: str = ""):
        files = shards.files
        self._where = {prefix + r["key"]: (files[r["shard"]], r["offset"], r["length"])
                       for r in shards.records(split)}
        self.folder, self.prefixed = shards.folder, bool(prefix)

    def read(self, key: str) -> bytes:
        if key not in self._where:
            raise KeyError(f"{DECODE_FAILURE_MARKER} {self.folder}: no record {key!r}")
        path, offset, length = self._where[key]
        with open(path, "rb") as handle:
            handle.seek(offset)
            serialized = handle.read(length)
        example = tf.train.Example.FromString(serialized)
        return example.features.feature["image"].bytes_list.value[0]

    def check(self, keys: Sequence[str]) -> SkippedImages:
        skipped = SkippedImages()
        for key in keys:
            try:
                problem = bytes_problem(self.read(key))
            except (OSError, KeyError, ValueError) as err:
                problem = f"unreadable: {err}"
            if problem is not None:
                # A transfer record's key is its path (SHARDS/KEY): named as it is.
                skipped.add(key if self.prefixed else f"{self.folder}:{key}", problem)
        return skipped


def shard_image_source(shards: ShardSet, split: str = "train") -> ImageSource:
    """An `ImageSource` reading a split's images by key (random access by record offset)."""
    return _source_of(_OffsetReader(shards, split))


def _source_of(reader: _OffsetReader) -> ImageSource:
    """The `ImageSource` reading ``reader``'s records inside a parallel ``tf.data`` map."""
    def read_bytes(key) -> np.ndarray:
        return np.asarray(reader.read(key.decode() if isinstance(key, bytes) else str(key)),
                          dtype=object)

    def read(key: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(tf.numpy_function(read_bytes, [key], tf.string, stateful=False),
                               [])

    return ImageSource(read=read, check=reader.check, name=str(reader.folder))


# --- Transfer datasets (re-ID, attributes, text search) read from shards ------------------

#: Opened shard folders of this process: folder -> (index.json mtime, shards, reader, source).
_OPENED: dict[str, tuple[int, ShardSet, _OffsetReader, ImageSource]] = {}
_OPENED_LOCK = threading.Lock()
_TRANSFER_KINDS = ("reid", "attributes", "text")


def _prefix(folder: Path) -> str:
    """What a transfer record's path puts before its key: ``SHARDS/``."""
    return folder.as_posix().rstrip("/") + "/"


def _opened(folder: Path) -> tuple[ShardSet, _OffsetReader, ImageSource]:
    """The shard folder, its all-splits reader and image source (cached; reopened if
    ``index.json`` changed, e.g. after ``pack --overwrite``)."""
    name = folder.as_posix()
    stamp = (folder / INDEX_FILE).stat().st_mtime_ns
    with _OPENED_LOCK:
        if name not in _OPENED or _OPENED[name][0] != stamp:
            shards = open_shards(folder)
            reader = _OffsetReader(shards, None, _prefix(shards.folder))
            _OPENED[name] = (stamp, shards, reader, _source_of(reader))
        return _OPENED[name][1:]


def shard_folder_of(path: str | Path) -> Path | None:
    """The shard folder a transfer record's path (``SHARDS/KEY``) lies in, or None.

    Folders opened in this process are matched by prefix; otherwise the parents of an
    absolute path that is no file are looked at for ``index.json`` and ``records.jsonl``.
    """
    text = Path(path).as_posix()
    for name in list(_OPENED):
        if text.startswith(_prefix(Path(name))):
            return Path(name)
    candidate = Path(text)
    if not candidate.is_absolute() or candidate.is_file():
        return None
    for parent in candidate.parents:
        if (parent / INDEX_FILE).is_file() and (parent / RECORDS_FILE).is_file():
            return parent
    return None


def image_source_for_paths(paths: Sequence[Any]) -> ImageSource | None:
    """The `ImageSource` of records read from shards (paths ``SHARDS/KEY``); None for files.

    The pipelines call it when given no ``image_source``, so every transfer reading a shard
    dataset's records (training, feature extraction, encoding) reads the shards. The first
    record decides (a record list comes from one dataset).
    """
    if not len(paths):
        return None
    first = paths[0]
    folder = shard_folder_of(str(getattr(first, "path", first)))
    return None if folder is None else _opened(folder)[2]


def read_image_bytes(path: str | Path) -> bytes:
    """The encoded image at ``path``: a file, or a record read from shards (``SHARDS/KEY``).

    Raises:
        OSError: An unreadable file.
        KeyError: A path under a shard folder that is no record of it.
    """
    folder = shard_folder_of(path)
    if folder is None:
        return Path(path).read_bytes()
    return _opened(folder)[1].read(Path(path).as_posix())


class _ShardBacked:
    """Adds the shard reads to a transfer dataset (records' paths are ``SHARDS/KEY``)."""

    shards: ShardSet | None

    @property
    def image_source(self) -> ImageSource:
        """Reads the images of every split from the shards (random access by offset)."""
        return _opened(self.shards.folder)[2]

    def key_of(self, path: str) -> str:
        """The packed key of a record's ``path`` (what a re-pack stores)."""
        prefix = _prefix(self.shards.folder)
        return path.removeprefix(prefix)

    def read_bytes(self, path: str) -> bytes:
        """The encoded image of a record's ``path``."""
        return _opened(self.shards.folder)[1].read(path)


@dataclasses.dataclass
class ShardReIDDataset(_ShardBacked, ReIDDataset):
    """A `ReIDDataset` read from shards (``image_source``; paths ``SHARDS/KEY``)."""

    shards: ShardSet | None = None


@dataclasses.dataclass
class ShardAttributeDataset(_ShardBacked, AttributeDataset):
    """An `AttributeDataset` read from shards (``image_source``; paths ``SHARDS/KEY``)."""

    shards: ShardSet | None = None


@dataclasses.dataclass
class ShardTextDataset(_ShardBacked, TextDataset):
    """A `TextDataset` read from shards (``image_source``; paths ``SHARDS/KEY``)."""

    shards: ShardSet | None = None


def _check_kind(shards: ShardSet, kind: str) -> None:
    packed = shards.index.get("kind")
    if kind not in _TRANSFER_KINDS:
        raise InputError(f"{shards.folder}: kind must be one of {_TRANSFER_KINDS} or "
                         f"'pretraining', got {kind!r}")
    if packed != kind:
        source = shards.index.get("source") or shards.index.get("dataset")
        raise DatasetFormatError(shards.folder / INDEX_FILE,
                                 f"holds a {packed} dataset (packed from {source}), not a "
                                 f"{kind} one", field="kind",
                                 expected=f"shards packed from a {kind} dataset")


def load_shard_transfer(root: str | Path, kind: str, verify: bool = False
                        ) -> ShardReIDDataset | ShardAttributeDataset | ShardTextDataset:
    """A shard folder's records (every split) as the ``kind`` dataset the pack came from.

    Records keep the pack order of each split, their ids, labels and captions; a record's
    ``path`` is ``SHARDS/KEY`` (KEY: the path relative to the packed dataset's root), and
    every pipeline reads it from the shards (`image_source_for_paths`).

    Args:
        root: The shard folder.
        kind: ``reid``, ``attributes`` or ``text``: what the pack must hold.
        verify: Also read every shard through (`verify_shards`).

    Raises:
        InputError: See `open_shards`; a pack of another kind (named).
    """
    shards = _opened(Path(root).expanduser().absolute())[0]
    if verify:
        verify_shards(shards)
    _check_kind(shards, kind)
    prefix, rows = _prefix(shards.folder), {}
    for row in shards.records():
        rows.setdefault(row["split"], []).append(row)

    def split(name: str, record: Callable[[dict, str], Any]) -> list:
        return [record(r, prefix + r["key"]) for r in rows.get(name, [])]

    common = {"name": str(shards.index.get("dataset") or "shards"), "root": str(shards.folder),
              "skipped": dict(shards.index.get("skipped") or {}), "shards": shards}
    if kind == "reid":
        return ShardReIDDataset(train=split("train", _reid_record),
                                query=split("query", _reid_record),
                                gallery=split("gallery", _reid_record), **common)
    if kind == "attributes":
        return ShardAttributeDataset(
            train=split("train", _attribute_record), val=split("val", _attribute_record),
            test=split("test", _attribute_record), all_attribute_names=shards.attribute_names,
            eval_indices=list(shards.index.get("eval_indices") or []), **common)
    return ShardTextDataset(train=split("train", _text_record), val=split("val", _text_record),
                            test=split("test", _text_record), **common)


def _reid_record(row: dict[str, Any], path: str) -> ReIDRecord:
    return ReIDRecord(path, int(row["pid"]), int(row["camid"]))


def _attribute_record(row: dict[str, Any], path: str) -> AttributeRecord:
    return AttributeRecord(path, np.asarray(row["attributes"], np.int8))


def _text_record(row: dict[str, Any], path: str) -> TextRecord:
    return TextRecord(path, int(row["pid"]), tuple(row.get("captions") or ()))


def _parsed_pass(files: list[str], split: str, seed: int, shuffle: bool, shuffle_buffer: int,
                 cycle_length: int | None, input_shard: tuple[int, int] | None
                 ) -> tf.data.Dataset:
    """One pass over a split's parsed records (images still encoded), shuffled if asked."""
    names = tf.data.Dataset.from_tensor_slices(files)
    if input_shard is not None:
        names = names.shard(input_shard[1], input_shard[0])
    if shuffle:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = names.interleave(
        tf.data.TFRecordDataset, cycle_length=cycle_length or min(len(files), 16),
        block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
    parsed = records.map(lambda s: tf.io.parse_single_example(s, _SPEC),
                         num_parallel_calls=AUTOTUNE)
    parsed = parsed.filter(lambda r: tf.equal(r["split"], split))
    if shuffle:
        parsed = parsed.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return parsed


def _supervision(dataset: ShardPretrainDataset, tokenizer: CaptionTokenizer | None,
                 num_attributes: int | None) -> tuple[bool, int | None]:
    """Whether batches carry captions, and the attribute vector length (None: none)."""
    records = dataset.records
    with_captions = tokenizer is not None and any(r.captions for r in records)
    if with_captions and not all(r.captions for r in records):
        raise ValueError(f"shard_pretrain_dataset: some records of {dataset.root} have no "
                         "caption; pass tokenizer=None or give every record a caption")
    if num_attributes is None:
        lengths = {len(r.attributes) for r in records if r.attributes is not None}
        num_attributes = lengths.pop() if len(lengths) == 1 else None
    return with_captions, num_attributes


def shard_pretrain_dataset(dataset: ShardPretrainDataset, image_size: tuple[int, int] = (256, 128),
                           batch_size: int = 64, tokenizer: CaptionTokenizer | None = None,
                           seed: int = 0, augment: bool | str | Callable = True,
                           shuffle: bool = True, drop_remainder: bool = True,
                           num_attributes: int | None = None, start_step: int | None = None, *,
                           shuffle_buffer: int = 10_000, cycle_length: int | None = None,
                           input_shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """`pretrain_dataset`'s dict batches, streamed from shards with a parallel interleave.

    Args:
        dataset: The shard records (`load_shard_pretraining`).
        image_size, batch_size, tokenizer, seed, augment, shuffle, drop_remainder,
            num_attributes, start_step: As `pretrain_dataset`. ``start_step`` skips the
            records before it without decoding them (they are still read).
        shuffle_buffer: Records in the shuffle buffer (after shuffling the shard order).
        cycle_length: Shards read at once (default ``min(num_shards, 16)``); with all shards
            and ``shuffle=False`` the stream is the pack order.
        input_shard: ``(reader_index, num_readers)``: this reader's share of the shard files
            (shards ``reader_index``, ``reader_index + num_readers``, ...; one share per
            host); a pass is then that share's records.

    Returns:
        A dataset of dict batches (``view1``, ``view2``, ``token_ids``, ``attributes``).
    """
    num = len(dataset.records) if input_shard is None else sum(
        1 for r in dataset.shards.records(dataset.split)
        if r["shard"] % input_shard[1] == input_shard[0])
    if drop_remainder and num < batch_size:
        raise ValueError(f"shard_pretrain_dataset: {num} records give no full batch of "
                         f"{batch_size}; lower batch_size")
    with_captions, width = _supervision(dataset, tokenizer, num_attributes)
    source_size, views = pretrain_views(augment, image_size)
    one_pass = tf.data.Dataset.zip(
        _parsed_pass(dataset.shards.files, dataset.split, seed, shuffle, shuffle_buffer,
                     cycle_length, input_shard),
        tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True))
    if drop_remainder:
        one_pass = one_pass.take(num // batch_size * batch_size)
    stream, total = one_pass, num if not drop_remainder else num // batch_size * batch_size
    if start_step is not None:
        if not drop_remainder or int(start_step) < 0:
            raise ValueError("shard_pretrain_dataset: start_step needs drop_remainder=True "
                             f"and must be >= 0, got {start_step}")
        stream = one_pass.repeat().skip(int(start_step) * batch_size)
        total = 2**62

    def load(record, r):
        element_seed = tf.stack([r, record["index"]])
        batch = views(decode_image_bytes(record["image"], source_size), element_seed)
        if with_captions:
            captions = record["captions"]
            batch["caption"] = _pick_caption(captions, tf.zeros([1], tf.int64),
                                             tf.shape(captions, tf.int64)[:1],
                                             tf.constant(0, tf.int64), element_seed)
        if width is not None:
            values = tf.cast(record["attributes"], tf.float32)
            batch["attributes"] = tf.ensure_shape(tf.cond(
                tf.size(values) > 0, lambda: values, lambda: tf.fill([width], -1.0)), [width])
        return batch

    def check(keys: Sequence[str]) -> SkippedImages:
        # Built only when an element failed: the offset table of a big split is large.
        return _OffsetReader(dataset.shards, dataset.split).check(keys)

    batches = _map_in_order(stream, load, total, [r.path for r in dataset.records],
                            "shard_pretrain_dataset", check)
    batches = batches.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=AUTOTUNE)
    if with_captions:
        batches = batches.map(lambda b: _tokenize_batch(b, tokenizer), num_parallel_calls=AUTOTUNE)
    return batches.prefetch(AUTOTUNE)
