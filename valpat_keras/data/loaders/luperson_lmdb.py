"""The LUPerson / LUPerson-NL LMDB layout (``luperson_lmdb``): an ``lmdb`` env plus ``keys.pkl``.

The layout the LUPerson authors' ``convert_lmdb.py`` scripts write (see the dataset notes):

```
ROOT/lmdb/data.mdb, ROOT/lmdb/lock.mdb   the LMDB environment: key -> raw JPEG bytes
ROOT/keys.pkl                            LUPerson: a list of keys
                                         LUPerson-NL: {"keys": [...], "pids": [...]}
                                         (``pids`` and ``vids`` are optional)
```

LUPerson keys look like ``"{country:02d}_{city:02d}_{vid:04d}_{img:08d}"``, LUPerson-NL keys
``"{vid:05d}_{pid:06d}_{frame:07d}_{obj:02d}"``; keys may be stored as ``str`` or ``bytes``.
``ROOT`` may also be the ``lupnl_lmdb`` folder's parent, or the environment folder itself with
``keys.pkl`` inside. The images stay in the LMDB: records carry the key as their ``path`` and
the dataset's `LMDBPretrainDataset.image_source` reads them (random access, in a parallel
``tf.data`` map), so ``pretrain_dataset`` gives the same batches as the same images in a folder.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from valpat_keras.data.errors import DECODE_FAILURE_MARKER, DatasetFormatError, SkippedImages
from valpat_keras.data.loaders._common import existing_dir
from valpat_keras.data.records import PretrainDataset, PretrainRecord
from valpat_keras.data.registry import note_ignored_options, register_dataset

__all__ = ["LMDBPretrainDataset", "LMDBStore", "bytes_problem", "find_lmdb_tree",
           "load_luperson_lmdb"]

_EXPECTED = "an LMDB environment folder lmdb/ (data.mdb) and keys.pkl next to it"
_KEYS_FORM = 'a list of keys, or a dict {"keys": [...], "pids": [...]} (pids optional)'
#: Open read-only environments by (process id, folder).
_OPEN: dict[tuple[int, str], Any] = {}
_OPEN_LOCK = threading.Lock()


def bytes_problem(raw: bytes | None) -> str | None:
    """Decodes encoded image bytes fully with PIL; None when readable, else why not."""
    if raw is None:
        return "no value for the key"
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as err:
        return f"unreadable: {type(err).__name__} ({err})"
    return None


def find_lmdb_tree(root: str | Path) -> tuple[Path, Path]:
    """``(env_folder, keys_pkl)`` of a LUPerson LMDB tree under ``root``.

    Raises:
        DatasetFormatError: No folder, no ``keys.pkl`` or no LMDB environment (named).
    """
    base = existing_dir(root, "LUPerson LMDB")
    for folder in (base, base / "lupnl_lmdb"):
        if (folder / "lmdb" / "data.mdb").is_file():
            keys = folder / "keys.pkl"
            if not keys.is_file():
                raise DatasetFormatError(keys, "missing keys.pkl next to the LMDB environment "
                                         f"{folder / 'lmdb'}", expected=_KEYS_FORM)
            return folder / "lmdb", keys
        if (folder / "data.mdb").is_file() and (folder / "keys.pkl").is_file():
            return folder, folder / "keys.pkl"
    if (base / "keys.pkl").is_file():
        raise DatasetFormatError(base / "lmdb", "no LMDB environment (data.mdb) found",
                                 expected=_EXPECTED)
    raise DatasetFormatError(base / "keys.pkl", "missing keys.pkl (no LUPerson LMDB tree here)",
                             expected=_EXPECTED)


def _as_key(value: Any, keys_file: Path, position: int) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise DatasetFormatError(keys_file, f"key {position} is a {type(value).__name__}",
                             field="keys", expected="str or bytes keys")


def read_keys(keys_file: Path) -> tuple[list[str], list[int] | None]:
    """The keys (and LUPerson-NL pids, when given) of ``keys.pkl``.

    Raises:
        DatasetFormatError: An unreadable pickle, another structure, or pids not matching.
    """
    try:
        with keys_file.open("rb") as handle:
            value = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError,
            IndexError) as err:
        raise DatasetFormatError(keys_file, f"cannot unpickle ({type(err).__name__}: {err})",
                                 expected=_KEYS_FORM) from None
    pids = None
    if isinstance(value, dict):
        if "keys" not in value:
            raise DatasetFormatError(keys_file, "dict without 'keys'", field="keys",
                                     expected=_KEYS_FORM)
        pids = value.get("pids")
        value = value["keys"]
    if not isinstance(value, (list, tuple)):
        raise DatasetFormatError(keys_file, f"holds a {type(value).__name__}",
                                 expected=_KEYS_FORM)
    keys = [_as_key(k, keys_file, i) for i, k in enumerate(value)]
    if pids is not None:
        pids = [int(p) for p in pids]
        if len(pids) != len(keys):
            raise DatasetFormatError(keys_file, f"{len(pids)} pids for {len(keys)} keys",
                                     field="pids", expected="one pid per key")
    return keys, pids


class LMDBStore:
    """Read-only access to an LMDB environment of encoded images, safe across threads.

    The environment is opened lazily, once per process (an LMDB environment must not be
    shared across ``fork``), read-only and without locking, so many readers can share it.

    Args:
        env_folder: The environment folder (holding ``data.mdb``).
    """

    def __init__(self, env_folder: str | Path):
        self.env_folder = Path(env_folder).absolute()

    def _environment(self):
        # Imported here: lmdb is an optional dependency (the `lmdb` extra).
        import lmdb

        # LMDB allows one open environment per path and process: stores of the same folder
        # share it, and a forked child opens its own.
        slot = (os.getpid(), str(self.env_folder))
        with _OPEN_LOCK:
            if slot not in _OPEN:
                try:
                    _OPEN[slot] = lmdb.open(str(self.env_folder), readonly=True, lock=False,
                                            readahead=False, meminit=False, max_readers=512)
                except lmdb.Error as err:
                    raise DatasetFormatError(self.env_folder, f"cannot open the LMDB "
                                             f"environment ({err})", expected=_EXPECTED) from None
            return _OPEN[slot]

    def get(self, key: str) -> bytes | None:
        """The value of ``key`` (None when the key has no value)."""
        with self._environment().begin(buffers=False) as txn:
            return txn.get(key.encode("utf-8"))

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The keys without a value (one read-only transaction, no value copied)."""
        with self._environment().begin(buffers=True) as txn:
            return [k for k in keys if txn.get(k.encode("utf-8")) is None]

    def read(self, key: str) -> bytes:
        """The value of ``key``; raises naming the environment and the key when absent."""
        value = self.get(key)
        if value is None:
            raise KeyError(f"{DECODE_FAILURE_MARKER} {self.env_folder}: key {key!r} has no "
                           "value")
        return value

    def check(self, keys: Sequence[str], workers: int | None = None) -> SkippedImages:
        """Decodes every key's image (threads) and reports the unreadable ones by key."""
        keys = [str(k) for k in keys]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            problems = list(pool.map(lambda k: bytes_problem(self.get(k)), keys, chunksize=64))
        skipped = SkippedImages()
        for key, problem in zip(keys, problems):
            if problem is not None:
                skipped.add(f"{self.env_folder}:{key}", problem)
        return skipped

    def image_source(self):
        """An `ImageSource` reading this environment inside ``tf.data``."""
        # Imported here: TensorFlow is heavy and only the pipelines need it.
        import tensorflow as tf

        from valpat_keras.data.pipelines import ImageSource

        def read_bytes(key: np.ndarray) -> np.ndarray:
            return np.asarray(self.read(key.decode("utf-8") if isinstance(key, bytes)
                                        else str(key)), dtype=object)

        def read(key: tf.Tensor) -> tf.Tensor:
            value = tf.numpy_function(read_bytes, [key], tf.string, stateful=False)
            return tf.ensure_shape(value, [])

        return ImageSource(read=read, check=self.check, name=str(self.env_folder))


@dataclasses.dataclass
class LMDBPretrainDataset(PretrainDataset):
    """A `PretrainDataset` whose images are values of an LMDB environment.

    Attributes:
        lmdb_folder: The environment folder; records' ``path`` are its keys.
        pids: LUPerson-NL's noisy person ids, one per record (None for LUPerson).
    """

    lmdb_folder: str = ""
    pids: list[int] | None = None

    @property
    def store(self) -> LMDBStore:
        """The read-only store of the images (one per dataset object)."""
        if not hasattr(self, "_store"):
            self._store = LMDBStore(self.lmdb_folder)
        return self._store

    @property
    def image_source(self):
        """The `ImageSource` the pipelines read the images with."""
        return self.store.image_source()

    def read_bytes(self, key: str) -> bytes:
        """The encoded image of ``key`` (what ``valpat pack`` copies into shards)."""
        return self.store.read(key)


@register_dataset("luperson_lmdb", kind="pretraining")
def load_luperson_lmdb(root: str, verify_images: bool = False, **options: Any
                       ) -> LMDBPretrainDataset:
    """LUPerson / LUPerson-NL as released: an LMDB of JPEG bytes plus ``keys.pkl``.

    See the module docstring for the layout. Every key is looked up once (a key without a
    value is an error naming it); with ``verify_images`` every image is decoded too and
    unreadable ones are dropped and counted.

    Args:
        root: The folder holding ``lmdb/`` and ``keys.pkl`` (or ``lupnl_lmdb/``).
        verify_images: Decode every image and drop (and count) unreadable ones.
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Returns:
        An `LMDBPretrainDataset` (no captions, no attributes; ``pids`` for LUPerson-NL).

    Raises:
        DatasetFormatError: A missing ``keys.pkl`` or environment, a malformed ``keys.pkl``,
            no keys, or a key without a value (the first few are named).
    """
    env_folder, keys_file = find_lmdb_tree(root)
    keys, pids = read_keys(keys_file)
    if not keys:
        raise DatasetFormatError(keys_file, "holds no keys", expected=_KEYS_FORM)
    dataset = LMDBPretrainDataset("luperson_lmdb", str(env_folder.parent if env_folder.name ==
                                                       "lmdb" else env_folder),
                                  [PretrainRecord(k) for k in keys], [], {},
                                  lmdb_folder=str(env_folder), pids=pids)
    missing = dataset.store.missing(keys)
    if missing:
        raise DatasetFormatError(env_folder, f"{len(missing)} key(s) of {keys_file.name} have "
                                 f"no value, e.g. {', '.join(map(repr, missing[:3]))}",
                                 field="keys", expected="a value (JPEG bytes) for every key")
    if verify_images:
        skipped = dataset.store.check(keys)
        if len(skipped):
            skipped.warn("luperson_lmdb: ")
            bad = set(skipped.paths)
            keep = [f"{env_folder}:{k}" not in bad for k in keys]
            dataset.records = [r for r, ok in zip(dataset.records, keep) if ok]
            if pids is not None:
                dataset.pids = [p for p, ok in zip(pids, keep) if ok]
            dataset.skipped["unreadable images"] = len(skipped)
    return note_ignored_options(dataset, options)
