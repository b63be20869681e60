"""Helpers shared by the loaders: layout search, image listing, image checks and .mat/JSON access.

Loaders only parse layouts; everything that reads a file the user gave us goes through these
helpers so that bad input always ends as one `DatasetFormatError` naming the file and field.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from valpat_keras.data.attribute_names import unknown_attribute
from valpat_keras.data.errors import DatasetFormatError, SkippedImages

#: File endings listed as images by `list_images` (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

RecordT = TypeVar("RecordT")


def existing_dir(root: str | Path, dataset: str) -> Path:
    """Returns ``root`` as an absolute `Path`, raising if it is not an existing folder.

    Args:
        root: The folder the user passed.
        dataset: Dataset name for the message.

    Raises:
        DatasetFormatError: When ``root`` does not exist or is not a folder.
    """
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise DatasetFormatError(path, "folder does not exist",
                                 expected=f"the {dataset} folder or its parent")
    return path


def find_layout(root: str | Path, candidates: Sequence[str],
                markers: Sequence[str | Sequence[str]], dataset: str) -> Path:
    """Finds the dataset folder below ``root`` holding every marker file or folder.

    Users point at the dataset folder or at a parent following torchreid, fast-reid or
    cluster-contrast conventions; the candidates list those sub-paths in order of preference.

    Args:
        root: The folder the user passed.
        candidates: Sub-paths of ``root`` to try, in order (``""`` is ``root`` itself).
        markers: Names that must all exist inside the dataset folder; a marker given as a
            tuple of names is satisfied by any one of them.
        dataset: Dataset name for the message.

    Returns:
        The absolute dataset folder.

    Raises:
        DatasetFormatError: When ``root`` is missing or no candidate holds all markers.
    """
    base = existing_dir(root, dataset)
    alternatives = [(m,) if isinstance(m, str) else tuple(m) for m in markers]
    for candidate in candidates:
        folder = base / candidate if candidate else base
        if all(any((folder / name).exists() for name in names) for names in alternatives):
            return folder
    tried = ", ".join(f"<root>/{c}" if c else "<root>" for c in candidates)
    wanted = ", ".join(" or ".join(names) for names in alternatives)
    raise DatasetFormatError(base, f"no {dataset} layout found",
                             expected=f"{wanted} inside one of {tried}")


def find_manifest(root: str | Path, names: Sequence[str], dataset: str, expected: str) -> Path:
    """The manifest file ``root`` names, or the first of ``names`` inside the folder ``root``.

    Raises:
        DatasetFormatError: When ``root`` is neither a file nor a folder holding one of ``names``.
    """
    path = Path(root).expanduser().absolute()
    if path.is_file():
        return path
    folder = existing_dir(path, dataset)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DatasetFormatError(folder / names[0], "manifest not found", expected=expected)


#: The side file declaring a manifest's attribute names, one per line.
ATTRIBUTE_NAMES_FILE = "attribute_names.txt"


def declared_attribute_names(manifest: Path) -> list[str] | None:
    """The names in ``attribute_names.txt`` next to ``manifest``, or None without that file."""
    side_file = manifest.parent / ATTRIBUTE_NAMES_FILE
    if not side_file.is_file():
        return None
    return [n.strip() for n in side_file.read_text(encoding="utf-8").splitlines() if n.strip()]


def check_attribute_name(name: str, declared: Sequence[str] | None, used: Sequence[str],
                         path: Path, where: str, field: str) -> None:
    """Raises on a misspelt attribute name (see `attribute_names.unknown_attribute`).

    Args:
        name: The name read.
        declared: The manifest's declared names (header, side file, option), or None.
        used: Every name the manifest uses.
        path: The manifest, for the message.
        where: The line (or ``"header"``), for the message.
        field: The field or column, for the message.

    Raises:
        DatasetFormatError: Naming the file, the line, the name and the closest valid names.
    """
    problem = unknown_attribute(name, declared, used)
    if problem is None:
        return
    source, close = problem
    hint = f"; closest valid name(s): {', '.join(close)}" if close else ""
    how = (f"; to use new names, list every name in {ATTRIBUTE_NAMES_FILE} next to the "
           "manifest (one per line)") if declared is None else ""
    raise DatasetFormatError(path, f"{where}: unknown attribute name {name!r}{hint}",
                             field=field, expected=f"a name from {source}{how}")


def first_existing(folder: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``folder / name`` that exists; raises naming all of them otherwise."""
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise DatasetFormatError(folder, f"no {what} found",
                             expected=" or ".join(f"<folder>/{n}" for n in names))


def is_image_file(path: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> bool:
    """True for a file name ending in an image extension (any case), not macOS ``._`` metadata."""
    name = Path(path).name
    return Path(name).suffix.lower() in extensions and not name.startswith("._")


def list_images(folder: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                recursive: bool = False, skipped: dict[str, int] | None = None,
                where: str | None = None) -> list[Path]:
    """Image files of a folder, sorted by path so runs are repeatable.

    Every common image extension is accepted in any case (``.jpg``, ``.JPEG``, ``.png``,
    ``.bmp``, ``.webp``, ...). What is not listed is counted in ``skipped`` when given: files
    that are not images (``Thumbs.db``, ``readme.txt``, macOS ``._*`` metadata) and, without
    ``recursive``, the sub-folders that are not searched.

    Args:
        folder: The folder to list.
        extensions: Accepted endings, lower case with the dot (matched case-insensitively).
        recursive: Also list sub-folders.
        skipped: A loader's ``skipped`` mapping to count the files left out in.
        where: How the reasons name the folder (default: its name).

    Returns:
        Absolute paths.
    """
    folder = Path(folder).absolute()
    entries = sorted(folder.glob("**/*" if recursive else "*"))
    files = [p for p in entries if p.is_file()]
    images = [p for p in files if is_image_file(p, extensions)]
    if skipped is not None:
        where = where or folder.name
        others = [p for p in files if not is_image_file(p, extensions)]
        if others:
            skipped[f"files that are not images in {where}, e.g. {others[0].name}"] = len(others)
        folders = [] if recursive else [p for p in entries if p.is_dir()]
        if folders:
            skipped[f"sub-folders not searched in {where}, e.g. {folders[0].name}"] = len(folders)
    return images


#: Formats the tf.data pipelines decode (`tf.io.decode_image`), as PIL names them.
DECODABLE_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"})

#: Environment variable naming the cache folder (empty: no cache).
CACHE_ENV = "VALPAT_CACHE"
_CACHE_FILE = "image_checks.sqlite"


def cache_dir() -> Path | None:
    """The folder of valpat's caches: ``$VALPAT_CACHE``, else ``~/.cache/valpat_keras``.

    ``VALPAT_CACHE=""`` switches caching off (returns None).
    """
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return Path(value).expanduser() if value.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "valpat_keras"


def _decode_problem(path: str) -> str | None:
    """Decodes the whole image (not only its header); None when it is readable."""
    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
            image_format = image.format
    except FileNotFoundError:
        return "missing"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as err:
        return f"unreadable: {type(err).__name__} ({err})"
    if width <= 0 or height <= 0:
        return "empty image"
    if image_format not in DECODABLE_FORMATS:
        return (f"unsupported format {image_format} (the input pipelines decode "
                "JPEG, PNG, GIF, BMP and WebP)")
    return None


class _CheckCache:
    """Results of earlier checks keyed by (path, size, mtime), in one SQLite file.

    SQLite, so that two runs (or two processes of one run) can share it safely. A cache
    that cannot be opened or written (read-only home, full disk) is simply not used.
    """

    def __init__(self, folder: Path | None):
        self._db = None
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(folder / _CACHE_FILE), timeout=30)
            self._db.execute("CREATE TABLE IF NOT EXISTS images (path TEXT PRIMARY KEY, "
                             "size INTEGER, mtime_ns INTEGER, problem TEXT)")
        except (OSError, sqlite3.Error):
            self._db = None

    def lookup(self, path: str, size: int, mtime_ns: int) -> tuple[bool, str | None]:
        """``(found, problem)`` for a file of this size and mtime checked before."""
        if self._db is None:
            return False, None
        try:
            row = self._db.execute("SELECT size, mtime_ns, problem FROM images WHERE path = ?",
                                   (path,)).fetchone()
        except sqlite3.Error:
            return False, None
        if row is None or (row[0], row[1]) != (size, mtime_ns):
            return False, None
        return True, row[2]

    def store(self, rows: list[tuple[str, int, int, str | None]]) -> None:
        if self._db is None or not rows:
            return
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def check_images(paths: Iterable[str | Path], workers: int | None = None) -> SkippedImages:
    """Decodes every image fully with PIL and reports the ones that cannot be read.

    A header check lets a truncated JPEG (a half-copied file) through, which then fails
    inside ``fit`` without a file name; so each image is decoded completely, in a thread
    pool, once: the result is cached by (path, size, modification time) in
    ``cache_dir()/image_checks.sqlite`` and a later run only decodes new or changed files.
    Formats the input pipelines cannot decode (e.g. TIFF) are reported too.

    Args:
        paths: Image files.
        workers: Decoding threads (default: ``min(32, CPUs + 4)``).

    Returns:
        A `SkippedImages` listing the unreadable files (in input order) and why.
    """
    paths = [str(p) for p in paths]
    problems: dict[str, str | None] = {}
    pending: list[tuple[str, int, int]] = []
    cache = _CheckCache(cache_dir())
    try:
        for path in paths:
            if path in problems:
                continue
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                problems[path] = "missing"
                continue
            except OSError as err:
                problems[path] = f"unreadable: {type(err).__name__} ({err})"
                continue
            found, problem = cache.lookup(path, stat.st_size, stat.st_mtime_ns)
            if found:
                problems[path] = problem
            else:
                problems[path] = None
                pending.append((path, stat.st_size, stat.st_mtime_ns))
        if pending:
            # PIL releases the GIL while it decodes, so threads decode in parallel.
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(_decode_problem, [p for p, _, _ in pending],
                                        chunksize=64))
            for (path, _, _), problem in zip(pending, results):
                problems[path] = problem
            cache.store([(path, size, mtime, problems[path]) for path, size, mtime in pending
                         if problems[path] != "missing"])
    finally:
        cache.close()
    skipped = SkippedImages()
    for path in paths:
        if problems[path] is not None:
            skipped.add(path, problems[path])
    return skipped


def drop_unreadable(records: list[RecordT], verify: bool, context: str,
                    path_of: Callable[[RecordT], str] = lambda r: r.path
                    ) -> tuple[list[RecordT], int]:
    """Drops records whose image is unreadable when ``verify`` is set, warning about them.

    Args:
        records: The records of one split.
        verify: Whether to check the images at all (off by default: it decodes every image
            not checked before, see `check_images`).
        context: Prefix of the warning, e.g. ``"market1501 train: "``.
        path_of: How to get the image path of a record.

    Returns:
        The kept records and the number dropped.
    """
    if not verify or not records:
        return records, 0
    skipped = check_images(path_of(r) for r in records)
    if not len(skipped):
        return records, 0
    bad = set(skipped.paths)
    skipped.warn(context)
    return [r for r in records if path_of(r) not in bad], len(skipped)


def relabel(pids: Iterable[int]) -> dict[int, int]:
    """Maps the sorted distinct original ids to 0..N-1."""
    return {pid: label for label, pid in enumerate(sorted(set(pids)))}


def require_contiguous(pids: Iterable[int], path: Path, rule: str) -> None:
    """Raises unless ``pids`` are exactly 0..N-1 (IRRA asserts the same on train ids).

    Args:
        pids: Train person ids after the dataset's id rule.
        path: The annotation file, for the message.
        rule: How ids were derived, e.g. ``"pid = id - 1"``.
    """
    distinct = sorted(set(pids))
    if distinct and distinct != list(range(len(distinct))):
        missing = sorted(set(range(distinct[-1] + 1)) - set(distinct))[:5]
        raise DatasetFormatError(
            path, f"train person ids are not contiguous ({rule}; min {distinct[0]}, "
            f"max {distinct[-1]}, {len(distinct)} distinct, e.g. missing {missing})",
            expected="train ids forming exactly 0..N-1", field="id")


def read_json(path: Path) -> Any:
    """Parses a JSON file, turning a syntax error into a `DatasetFormatError`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetFormatError(path, f"invalid JSON at line {err.lineno}, column "
                                 f"{err.colno}: {err.msg}",
                                 expected="a JSON document") from None


def load_mat(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """Reads a MATLAB v5 file with scipy's defaults and checks that ``keys`` are present.

    The defaults (``squeeze_me=False``, ``struct_as_record=True``) are what the reference
    converters (Rethinking_of_PAR) use, so the indexing in the loaders matches theirs.

    Raises:
        DatasetFormatError: When the file is missing, unreadable or lacks a key.
    """
    # Deferred: scipy is only needed by the .mat loaders and is slow to import.
    import scipy.io

    if not path.is_file():
        raise DatasetFormatError(path, "file does not exist", expected="a MATLAB v5 .mat file")
    try:
        mat = scipy.io.loadmat(str(path))
    # scipy signals a MATLAB v7.3 (HDF5) file with NotImplementedError: report it like any
    # other unreadable .mat rather than letting it escape as a traceback.
    except (ValueError, TypeError, OSError, NotImplementedError) as err:
        raise DatasetFormatError(path, f"cannot read as a MATLAB v5 file ({err})",
                                 expected="a .mat file readable by scipy.io.loadmat") from None
    for key in keys:
        if key not in mat:
            raise DatasetFormatError(
                path, f"missing key '{key}'", field=key,
                expected=f"a MATLAB v5 file with keys {', '.join(keys)}")
    return mat


def mat_string(value: Any) -> str:
    """The string inside a MATLAB cell element however deeply scipy wrapped it."""
    while isinstance(value, np.ndarray):
        if value.dtype.kind in "US":
            return "".join(str(v) for v in value.ravel())
        if value.size == 0:
            return ""
        value = value.ravel()[0]
    return str(value)


def mat_strings(value: Any) -> list[str]:
    """The strings of a MATLAB cell array (N x 1 or 1 x N) as a list."""
    array = np.asarray(value)
    if array.dtype.kind in "US":
        return [str(v) for v in array.ravel()]
    return [mat_string(v) for v in array.ravel()]


def mat_field(struct: Any, name: str, position: int | None, path: Path, context: str) -> Any:
    """A field of a 1x1 MATLAB struct read with ``struct_as_record=True``.

    Args:
        struct: The struct array (``mat[key]``) or its single element.
        name: The field name.
        position: Fallback position when the file uses other field names (``None``: none).
        path: The .mat file, for the message.
        context: The struct's name, for the message.

    Raises:
        DatasetFormatError: When the field is absent.
    """
    element = struct
    while isinstance(element, np.ndarray) and element.dtype.names is not None \
            and element.size == 1 and element.ndim > 0:
        element = element.ravel()[0]
    names = getattr(element, "dtype", None) and element.dtype.names
    if names and name in names:
        return element[name]
    if position is not None and names and position < len(names):
        return element[position]
    raise DatasetFormatError(path, f"missing key '{context}.{name}'", field=name,
                             expected=f"a struct '{context}' with field '{name}'")


def mat_indices(value: Any) -> np.ndarray:
    """A MATLAB 1-based index vector (any shape) as 0-based ``int64``."""
    return np.asarray(value, dtype=np.int64).ravel() - 1


def int8_labels(labels: np.ndarray) -> np.ndarray:
    """Attribute labels as ``int8`` with 1/0 kept and anything else (2 = uncertain) -> -1."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int8)
    out[labels == 1] = 1
    out[labels == 0] = 0
    return out


def checked_labels(labels: np.ndarray, path: Path, field: str, image_names: Sequence[str],
                   attribute_names: Sequence[str], unknown: Sequence[int] = ()
                   ) -> tuple[np.ndarray, int]:
    """Attribute labels as ``int8`` 1/0/-1, refusing values outside the format's range.

    Args:
        labels: The ``(images, attributes)`` label matrix as stored.
        path: The annotation file, for the message.
        field: The key or field holding ``labels``, e.g. ``"train_label"``.
        image_names: One name per row, for the message.
        attribute_names: One name per column, for the message.
        unknown: Values the format documents as unknown/uncertain (e.g. RAP's 2): read as
            -1 and counted instead of refused.

    Returns:
        ``(labels, unknown_count)``.

    Raises:
        DatasetFormatError: On the first value that is not 0, 1 or one of ``unknown``, naming
            the row (and its image), the column (and its attribute) and the value.
    """
    labels = np.asarray(labels)
    allowed = (0, 1, *unknown)
    bad = np.argwhere(~np.isin(labels, allowed))
    if len(bad):
        row, column = (int(i) for i in bad[0])
        value = labels[row, column]
        value = int(value) if float(value).is_integer() else float(value)
        raise DatasetFormatError(
            path, f"row {row + 1} ({image_names[row]}), column {column + 1} "
            f"({attribute_names[column]}) is {value}; {len(bad)} value(s) out of range",
            field=field, expected=f"labels {', '.join(str(v) for v in allowed)}"
            + (f" ({', '.join(str(v) for v in unknown)} = unknown)" if unknown else ""))
    return int8_labels(labels), int(np.isin(labels, unknown).sum()) if unknown else 0

