"""`PersonIndex`: embed a gallery once, then query it by image, sentence and attributes.

``PersonIndex.build(images, init=RUN_DIR, out=INDEX)`` embeds an image folder (recursive) or a
manifest (CSV ``path`` column, or JSON Lines ``path`` / ``image`` keys, as the dataset
manifests) with the run's models (`valpat_keras.serving.encoders`), in chunks with a progress
bar; unreadable images are counted, listed and left out. The index folder:

```
INDEX/index.json          the manifest: format, library version, run folder(s), image size,
                          each space's file and dimension, attribute names and thresholds,
                          the query kinds, the verification calibration, the skipped count
INDEX/paths.json          the gallery image paths, in row order
INDEX/features.npy        (N, D) float32, L2-normalised: the image space
INDEX/text_features.npy   (N, D_text) float32, L2-normalised: images in the image-text space
INDEX/attributes.npy      (N, A) float32 attribute probabilities
INDEX/skipped.json        the unreadable images and why
INDEX/faiss_<space>.index an HNSW graph per similarity space (``ann="faiss"``)
```

Queries combine as `valpat_keras.serving.query` defines. Scoring is exact and blockwise over
memory-mapped features (``np.load(mmap_mode="r")``): memory holds one block of scores and
the running top-k, whatever the gallery size. ``ann="faiss"`` instead takes candidates from
an HNSW graph per similarity space (faiss-cpu) and scores only those exactly.

Example:

```python
index = PersonIndex.build("my_crops/", init="runs/pretrain", out="my_index")
index = PersonIndex.load("my_index")
result = index.query(image="query.jpg", text="a woman in a red coat",
                     attributes="Female,-Hat", k=10)
for hit in result.hits:
    print(hit.rank, hit.path, round(hit.score, 3), hit.match)
```
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from valpat_keras import __version__
from valpat_keras.data.loaders._common import check_images, is_image_file, list_images
from valpat_keras.errors import InputError
from valpat_keras.evaluation.reranking import re_ranking_from_features
from valpat_keras.evaluation.verification import read_calibration
from valpat_keras.run_outputs import write_json
from valpat_keras.serving.encoders import RunEncoders, load_run_encoders
from valpat_keras.serving.query import (
    ATTRIBUTE_MODES,
    AttributeQuery,
    QueryHit,
    QueryResult,
    attribute_terms,
    parse_attribute_query,
    query_weights,
    verdict_of,
)

INDEX_FORMAT = "valpat-index-v1"
MANIFEST_FILE = "index.json"
PATHS_FILE = "paths.json"
SKIPPED_FILE = "skipped.json"
#: The array file of each space.
SPACE_FILES = {"image": "features.npy", "text": "text_features.npy",
               "attributes": "attributes.npy"}
#: Approximate nearest-neighbour backends.
ANN_BACKENDS = ("faiss",)
#: Neighbours per node of the HNSW graph.
HNSW_NEIGHBOURS = 32
#: Rows scored at once by the exact search.
DEFAULT_BLOCK_SIZE = 65536
#: Images embedded per call of a run's embedding functions (one progress-bar step).
DEFAULT_CHUNK_SIZE = 1024
#: Candidates re-ranked with k-reciprocal re-ranking.
DEFAULT_RERANK_CANDIDATES = 100


def _manifest_paths(manifest: Path) -> list[str]:
    """The image paths of a CSV (``path`` column) or JSON Lines manifest, absolute."""
    if manifest.suffix.lower() == ".csv":
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "path" not in (reader.fieldnames or []):
                raise InputError(f"{manifest}: no 'path' column; expected a header row "
                                 "naming the image column 'path'")
            values = [row["path"] for row in reader if row.get("path")]
    else:
        values = []
        for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{manifest}: line {number} is not valid JSON ({err.msg}); "
                                 "expected one JSON object per line") from None
            value = row.get("path", row.get("image")) if isinstance(row, dict) else None
            if value is None and not (isinstance(row, dict) and "format" in row):
                raise InputError(f"{manifest}: line {number} has no 'path' (or 'image') key")
            if value is not None:
                values.append(value)
    return [str(manifest.parent.absolute() / value) for value in values]


def gallery_image_paths(images: str | Path | Sequence[str | os.PathLike]) -> list[str]:
    """The gallery's image files: a folder (searched recursively), a manifest, or a list.

    Raises:
        InputError: A missing folder or file, or a file that is not a .csv / .jsonl manifest.
    """
    if not isinstance(images, (str, os.PathLike)):
        return [str(Path(p).absolute()) for p in images]
    path = Path(images)
    if path.is_dir():
        return [str(p) for p in list_images(path, recursive=True)]
    if path.is_file() and path.suffix.lower() in (".csv", ".jsonl"):
        return _manifest_paths(path)
    if path.is_file() and is_image_file(path):
        return [str(path.absolute())]
    raise InputError(f"--images {images}: expected an image folder or a manifest file "
                     "(.csv with a 'path' column, or .jsonl)"
                     + ("" if path.exists() else "; it does not exist"))


def _check_query_image(path: str | os.PathLike) -> str:
    skipped = check_images([str(path)])
    if len(skipped):
        raise InputError(f"--image {path}: {skipped.reasons[0]}; expected a readable JPEG or "
                         "PNG image")
    return str(path)


def _faiss():
    # Imported on use: faiss-cpu is an optional dependency, needed only for ann="faiss".
    try:
        import faiss
    except ImportError:
        raise InputError("--ann faiss needs the faiss-cpu package (pip install faiss-cpu); "
                         "leave --ann out for the exact search") from None
    return faiss


def build_faiss_index(features: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE):
    """An HNSW inner-product (cosine, for unit vectors) faiss index over ``features``."""
    faiss = _faiss()
    index = faiss.IndexHNSWFlat(int(features.shape[1]), HNSW_NEIGHBOURS,
                                faiss.METRIC_INNER_PRODUCT)
    for start in range(0, len(features), block_size):
        index.add(np.ascontiguousarray(features[start:start + block_size], dtype=np.float32))
    return index


@dataclasses.dataclass
class _Query:
    """A query with its vectors computed and its attributes resolved to columns."""

    image: np.ndarray | None
    text: np.ndarray | None
    attributes: AttributeQuery | None
    weights: dict[str, float]
    mode: str


def _embed_gallery(paths: Sequence[str], functions: Mapping[str, Callable], out: Path,
                   chunk_size: int, verbose: bool) -> dict[str, int]:
    """Writes each space's ``(N, dim)`` array chunk by chunk (memory holds one chunk)."""
    progbar = keras.utils.Progbar(len(paths), unit_name="image") if verbose else None
    arrays: dict[str, np.ndarray] = {}
    for start in range(0, len(paths), chunk_size):
        chunk = list(paths[start:start + chunk_size])
        for space, function in functions.items():
            values = np.asarray(function(chunk), dtype=np.float32)
            if space not in arrays:
                arrays[space] = np.lib.format.open_memmap(
                    out / SPACE_FILES[space], mode="w+", dtype=np.float32,
                    shape=(len(paths), values.shape[1]))
            arrays[space][start:start + len(chunk)] = values
        if progbar is not None:
            progbar.update(start + len(chunk))
    dims = {}
    for space, array in arrays.items():
        array.flush()
        dims[space] = int(array.shape[1])
    return dims


def _space_sources(init: str | Path, text_from: str | Path | None,
                   attributes_from: str | Path | None, batch_size: int
                   ) -> dict[str, RunEncoders]:
    """Which run embeds each space: the main run, or ``text_from`` / ``attributes_from``."""
    main = load_run_encoders(init, batch_size)
    sources = {"image": main}
    for space, other, option in (("text", text_from, "--text-from"),
                                 ("attributes", attributes_from, "--attributes-from")):
        run = main if other is None else load_run_encoders(other, batch_size)
        if space in run.spaces:
            sources[space] = run
        elif other is not None:
            raise InputError(f"{option} {other}: this {run.kind} run has no {space} space; "
                             "expected " + ("a pretraining or search run" if space == "text"
                                            else "an attributes run or a pretraining run "
                                            "trained with attributes"))
    return sources


def _space_entry(space: str, run: RunEncoders, dim: int) -> dict[str, Any]:
    entry = {"file": SPACE_FILES[space], "dim": dim, "run_dir": str(Path(run.run_dir).absolute()),
             "run_kind": run.kind, "image_size": list(run.image_size)}
    if space == "attributes":
        entry.update(names=list(run.attribute_names),
                     thresholds=[float(t) for t in run.attribute_thresholds])
    return entry


def _embedding_function(space: str, run: RunEncoders) -> Callable:
    return {"image": run.embed_images, "text": run.embed_images_for_text,
            "attributes": run.attribute_probabilities}[space]


class PersonIndex:
    """A gallery embedded once, answering image, sentence and attribute queries.

    Build one with `build` (or ``valpat index``), open it with `load`; query with
    `query_image`, `query_text`, `query_attributes` or `query` (any combination, scored as
    `valpat_keras.serving.query` documents).

    Args:
        manifest: The index manifest (see the module docstring).
        paths: The gallery image paths, in row order.
        arrays: The ``(N, dim)`` array of each space (``image``, optional ``text`` and
            ``attributes``), NumPy or memory-mapped.
        folder: The index folder, if it has one (faiss graphs are read from it).
        init: A run folder replacing the index's main run for embedding queries (its
            dimension must match the index's).
    """

    def __init__(self, manifest: Mapping[str, Any], paths: Sequence[str],
                 arrays: Mapping[str, np.ndarray], folder: str | Path | None = None,
                 init: str | Path | None = None):
        self.manifest = dict(manifest)
        self.paths = [str(p) for p in paths]
        self.arrays = dict(arrays)
        self.folder = None if folder is None else Path(folder)
        self.init = None if init is None else str(init)
        self._encoders: dict[str, RunEncoders] = {}
        self._ann: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def query_kinds(self) -> list[str]:
        """The query kinds the index answers: among ``image``, ``text``, ``attributes``."""
        return list(self.manifest["query_kinds"])

    @property
    def attribute_names(self) -> list[str]:
        """The names of the attribute columns (empty without an attribute space)."""
        return list(self.manifest["spaces"].get("attributes", {}).get("names", []))

    @classmethod
    def build(cls, images: str | Path | Sequence[str | os.PathLike], init: str | Path,
              out: str | Path, text_from: str | Path | None = None,
              attributes_from: str | Path | None = None, batch_size: int = 64,
              ann: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
              verbose: bool = True) -> PersonIndex:
        """Embeds a gallery with a run's models and writes the index folder.

        Args:
            images: An image folder (searched recursively), a .csv / .jsonl manifest, or a
                list of image paths.
            init: The run folder whose models embed the gallery (and later the queries).
            out: The index folder (created).
            text_from: A pretraining or search run adding the text space, when ``init``
                has none (or to use another one).
            attributes_from: An attributes run (or pretraining run with attributes) adding
                the attribute probabilities likewise.
            batch_size: Images per forward pass.
            ann: ``"faiss"``: also store an HNSW graph per similarity space.
            chunk_size: Images embedded per step (memory holds one chunk's features).
            verbose: Show a progress bar.

        Returns:
            The index, loaded back from ``out``. ``index.manifest["skipped"]`` counts the
            unreadable images left out (listed in ``out/skipped.json``).

        Raises:
            InputError: No images, none readable, a run folder that is none of the
                library's runs, or a ``text_from`` / ``attributes_from`` without that space.
        """
        if ann not in (None, *ANN_BACKENDS):
            raise InputError(f"--ann {ann}: expected one of {', '.join(ANN_BACKENDS)}")
        paths = gallery_image_paths(images)
        if not paths:
            raise InputError(f"--images {images}: no images found (expected .jpg / .png "
                             "files, searched recursively, or manifest rows)")
        skipped = check_images(paths)
        unreadable = set(skipped.paths)
        paths = [p for p in paths if p not in unreadable]
        if not paths:
            raise InputError(f"--images {images}: none of the images can be read; "
                             f"{skipped.report()}")
        sources = _space_sources(init, text_from, attributes_from, batch_size)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        functions = {space: _embedding_function(space, run) for space, run in sources.items()}
        dims = _embed_gallery(paths, functions, out, chunk_size, verbose)
        manifest = cls._build_manifest(sources, dims, len(paths), len(skipped), ann)
        write_json(out / PATHS_FILE, paths)
        write_json(out / SKIPPED_FILE, {"count": len(skipped), "images": [
            {"path": p, "reason": r} for p, r in zip(skipped.paths, skipped.reasons)]})
        write_json(out / MANIFEST_FILE, manifest)
        index = cls.load(out)
        if ann == "faiss":
            index.write_ann()
        return index

    @staticmethod
    def _build_manifest(sources: Mapping[str, RunEncoders], dims: Mapping[str, int],
                        count: int, skipped: int, ann: str | None) -> dict[str, Any]:
        main = sources["image"]
        return {
            "format": INDEX_FORMAT, "library_version": __version__, "num_images": count,
            "skipped": skipped, "run_dir": str(Path(main.run_dir).absolute()),
            "run_kind": main.kind, "image_size": list(main.image_size),
            "embedding_dim": dims["image"], "similarity": "cosine",
            "query_kinds": list(sources),
            "spaces": {space: _space_entry(space, run, dims[space])
                       for space, run in sources.items()},
            "verification": read_calibration(main.run_dir),
            "ann": [] if ann is None else [ann],
        }

    def save(self, folder: str | Path) -> Path:
        """Writes the index (manifest, paths, arrays) to ``folder``; returns it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for space, array in self.arrays.items():
            np.save(folder / SPACE_FILES[space], np.asarray(array, dtype=np.float32))
        write_json(folder / PATHS_FILE, self.paths)
        spaces = {space: {**entry, "file": SPACE_FILES[space]}
                  for space, entry in self.manifest["spaces"].items()}
        manifest = {**self.manifest, "spaces": spaces, "num_images": len(self), "ann": []}
        write_json(folder / MANIFEST_FILE, manifest)
        return folder

    @classmethod
    def load(cls, folder: str | Path, init: str | Path | None = None,
             mmap: bool = True) -> PersonIndex:
        """Opens an index folder (arrays memory-mapped unless ``mmap=False``).

        Args:
            folder: The index folder (``valpat index --out``).
            init: A run folder replacing the index's main run for embedding queries.
            mmap: Memory-map the arrays instead of reading them.

        Raises:
            InputError: Not an index folder, or a corrupt or inconsistent one.
        """
        folder = Path(folder)
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise InputError(f"{folder}: not an index folder (no {MANIFEST_FILE}); build one "
                             "with `valpat index --images DIR --init RUN_DIR --out INDEX`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            paths = json.loads((folder / PATHS_FILE).read_text(encoding="utf-8"))
            arrays = {space: np.load(folder / entry["file"], mmap_mode="r" if mmap else None)
                      for space, entry in manifest["spaces"].items()}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"{folder}: corrupt index folder ({type(err).__name__}: {err}); "
                             "rebuild it with `valpat index`") from None
        for space, array in arrays.items():
            if array.ndim != 2 or len(array) != len(paths):
                raise InputError(f"{folder}: {SPACE_FILES[space]} has shape {array.shape} "
                                 f"for {len(paths)} paths; rebuild the index")
        return cls(manifest, paths, arrays, folder, init)

    # --- Approximate search -----------------------------------------------------------------

    def _similarity_spaces(self) -> list[str]:
        return [space for space in ("image", "text") if space in self.arrays]

    def write_ann(self, backend: str = "faiss") -> list[Path]:
        """Builds and stores an HNSW graph per similarity space in the index folder."""
        if backend not in ANN_BACKENDS:
            raise InputError(f"--ann {backend}: expected one of {', '.join(ANN_BACKENDS)}")
        if self.folder is None:
            raise InputError("write_ann needs an index folder: save the index first")
        faiss = _faiss()
        written = []
        for space in self._similarity_spaces():
            self._ann[space] = build_faiss_index(self.arrays[space])
            written.append(self.folder / f"faiss_{space}.index")
            faiss.write_index(self._ann[space], str(written[-1]))
        self.manifest["ann"] = [backend]
        write_json(self.folder / MANIFEST_FILE, self.manifest)
        return written

    def _ann_index(self, space: str):
        """The space's faiss graph: stored in the folder, else built now (kept in memory)."""
        if space not in self._ann:
            stored = None if self.folder is None else self.folder / f"faiss_{space}.index"
            if stored is not None and stored.is_file():
                self._ann[space] = _faiss().read_index(str(stored))
            else:
                self._ann[space] = build_faiss_index(self.arrays[space])
        return self._ann[space]

    def _ann_candidates(self, query: _Query, count: int) -> np.ndarray:
        """The union of each similarity part's ``count`` nearest entries in its graph."""
        found = []
        for space, vector in (("image", query.image), ("text", query.text)):
            if vector is None or not query.weights[space]:
                continue
            graph = self._ann_index(space)
            graph.hnsw.efSearch = max(int(count), 64)
            _, rows = graph.search(vector[None].astype(np.float32), int(count))
            found.append(rows[0][rows[0] >= 0])
        return np.unique(np.concatenate(found)) if found else np.arange(len(self))

    # --- Scoring ----------------------------------------------------------------------------

    def _terms(self, rows: slice | np.ndarray, query: _Query) -> dict[str, np.ndarray]:
        """Each part's term and the combined score of the entries ``rows`` (see query.py)."""
        count = len(self.paths[rows]) if isinstance(rows, slice) else len(rows)
        score = np.zeros(count, dtype=np.float64)
        keep = np.ones(count, dtype=bool)
        terms: dict[str, np.ndarray] = {}
        for space, vector in (("image", query.image), ("text", query.text)):
            if vector is not None:
                terms[space] = np.asarray(self.arrays[space][rows], np.float64) @ vector
                score += query.weights[space] * terms[space]
        if query.attributes is not None:
            thresholds = self.manifest["spaces"]["attributes"]["thresholds"]
            log_probability, satisfied = attribute_terms(self.arrays["attributes"][rows],
                                                         query.attributes, thresholds)
            terms["attributes"] = log_probability
            score += query.weights["attributes"] * log_probability
            if query.mode == "filter":
                keep = satisfied
        terms["score"] = np.where(keep, score, -np.inf)
        return terms

    def _exact_top(self, query: _Query, count: int, block_size: int) -> tuple[np.ndarray, int]:
        """The ``count`` best rows (unordered) and how many passed the filter, by blocks."""
        best: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        valid = 0
        for start in range(0, len(self), block_size):
            score = self._terms(slice(start, start + block_size), query)["score"]
            finite = int(np.isfinite(score).sum())
            valid += finite
            take = min(count, finite)
            if take:
                top = np.argpartition(-score, take - 1)[:take]
                best.append(top + start)
                scores.append(score[top])
        if not best:
            return np.zeros(0, dtype=np.int64), 0
        rows, score = np.concatenate(best), np.concatenate(scores)
        return rows[np.lexsort((rows, -score))[:count]], valid

    def _ranked(self, rows: np.ndarray, query: _Query) -> tuple[np.ndarray, dict]:
        """``rows`` ordered by score (ties by row), filtered out ones dropped, with terms."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        terms = self._terms(rows, query)
        order = np.lexsort((rows, -terms["score"]))
        order = order[np.isfinite(terms["score"][order])]
        return rows[order], {name: values[order] for name, values in terms.items()}

    def _rerank(self, query: _Query, rows: np.ndarray, terms: dict
                ) -> tuple[np.ndarray, dict, np.ndarray]:
        """Re-scores candidates with the image term ``1 - k-reciprocal distance``."""
        k1 = min(20, len(rows) - 1)
        features = np.asarray(self.arrays["image"][rows], dtype=np.float32)
        distance = re_ranking_from_features(query.image[None], features, k1=k1,
                                            k2=min(6, k1), metric="cosine")[0]
        score = terms["score"] + query.weights["image"] * (1.0 - distance - terms["image"])
        order = np.lexsort((rows, -score))
        terms = {name: values[order] for name, values in terms.items()}
        terms["score"] = score[order]
        return rows[order], terms, distance[order]

    # --- Queries ----------------------------------------------------------------------------

    def _require(self, space: str) -> None:
        if space in self.query_kinds:
            return
        how = {"image": "", "text": "; rebuild it from a pretraining or search run, or add "
               "--text-from RUN_DIR", "attributes": "; rebuild it from an attributes run "
               "(or a pretraining run with attributes), or add --attributes-from RUN_DIR"}
        raise InputError(f"index {self.folder or ''}: it has no {space} space (it answers "
                         f"{', '.join(self.query_kinds)} queries){how[space]}")

    def _run_encoders(self, space: str) -> RunEncoders:
        run_dir = self.manifest["spaces"][space]["run_dir"]
        if self.init is not None and run_dir == self.manifest["run_dir"]:
            run_dir = self.init
        if run_dir not in self._encoders:
            self._encoders[run_dir] = load_run_encoders(run_dir)
        return self._encoders[run_dir]

    def _query_vector(self, space: str, value) -> np.ndarray:
        """The unit query vector of an image path / sentence, or of a given embedding."""
        self._require(space)
        if isinstance(value, np.ndarray):
            vector = np.asarray(value, dtype=np.float64).reshape(-1)
            source = "the given embedding"
        else:
            encoders = self._run_encoders(space)
            source = f"the query model {encoders.run_dir}"
            if space == "image":
                vector = encoders.embed_images([_check_query_image(value)])[0]
            elif encoders.embed_sentences is None:
                raise InputError(f"--init {encoders.run_dir}: this {encoders.kind} run has no "
                                 "text encoder for the sentence query")
            else:
                vector = encoders.embed_sentences([str(value)])[0]
        dim = int(self.manifest["spaces"][space]["dim"])
        if vector.shape[0] != dim:
            raise InputError(
                f"index {self.folder or ''}: its {space} features have dimension {dim} "
                f"(built by {self.manifest['spaces'][space]['run_dir']}), but {source} gives "
                f"{vector.shape[0]}; query with the model that built the index, or rebuild "
                "the index with `valpat index --init` this model")
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def _prepare(self, image, text, attributes, weights, attribute_mode: str) -> _Query:
        if image is None and text is None and attributes is None:
            raise InputError("query: give at least one of --image, --text, --attributes")
        if attribute_mode not in ATTRIBUTE_MODES:
            raise InputError(f"--attribute-mode {attribute_mode}: expected one of "
                             f"{', '.join(ATTRIBUTE_MODES)}")
        if not len(self):
            raise InputError(f"index {self.folder or ''}: it is empty (0 images); rebuild it "
                             "with `valpat index` on a folder of readable images")
        parsed = None
        if attributes is not None:
            self._require("attributes")
            parsed = parse_attribute_query(attributes, self.attribute_names)
        return _Query(None if image is None else self._query_vector("image", image),
                      None if text is None else self._query_vector("text", text),
                      parsed, query_weights(weights), attribute_mode)

    def _threshold(self, query: _Query, threshold: float | None
                   ) -> tuple[float | None, str | None]:
        if threshold is not None:
            return float(threshold), "option"
        calibration = self.manifest.get("verification")
        if query.image is not None and calibration and \
                calibration.get("similarity", "cosine") == "cosine":
            return float(calibration["threshold"]), "calibration"
        return None, None

    def _hits(self, rows: np.ndarray, terms: dict, query: _Query, threshold: float | None,
              distance: np.ndarray | None) -> list[QueryHit]:
        names = [] if query.attributes is None else [*query.attributes.wanted,
                                                     *query.attributes.unwanted]
        columns = [] if query.attributes is None else [*query.attributes.wanted_columns,
                                                       *query.attributes.unwanted_columns]
        verified = "image" if query.image is not None else "text" if query.text is not None \
            else None
        hits = []
        for rank, row in enumerate(rows):
            value = {name: float(values[rank]) for name, values in terms.items()}
            probabilities = self.arrays["attributes"][row, columns] if names else []
            similarity = value.get(verified) if verified else None
            hits.append(QueryHit(
                rank + 1, int(row), self.paths[row], value["score"], value.get("image"),
                value.get("text"), value.get("attributes"),
                dict(zip(names, map(float, probabilities))),
                None if threshold is None or similarity is None else similarity >= threshold,
                None if distance is None else float(distance[rank])))
        return hits

    def query(self, image: str | os.PathLike | np.ndarray | None = None,
              text: str | np.ndarray | None = None,
              attributes: str | Sequence[str] | None = None, k: int = 10,
              weights: Mapping[str, float] | None = None, attribute_mode: str = "filter",
              rerank: bool = False, rerank_candidates: int = DEFAULT_RERANK_CANDIDATES,
              threshold: float | None = None, ann: str | None = None,
              ann_candidates: int | None = None,
              block_size: int = DEFAULT_BLOCK_SIZE) -> QueryResult:
        """Ranks the gallery for any combination of an image, a sentence and attributes.

        The score is ``w_image * cos_image + w_text * cos_text + w_attributes * mean log p``
        (see `valpat_keras.serving.query`); ``"filter"`` mode also drops the entries that do
        not satisfy every queried attribute.

        Args:
            image: A query image file, or its embedding in the index's image space.
            text: A sentence, or its embedding in the index's text space.
            attributes: ``"Female,Backpack,-Hat"`` or a list of such names.
            k: Number of hits.
            weights: ``{"image": w, "text": w, "attributes": w}`` (each 1 unless given).
            attribute_mode: ``"filter"`` or ``"score"``.
            rerank: Re-score the best ``rerank_candidates`` with k-reciprocal re-ranking of
                the image part: its term becomes ``1 - re-ranked distance`` (needs ``image``).
            rerank_candidates: Candidates re-ranked.
            threshold: Verification threshold on the cosine similarity (default: the run's
                calibrated one, for image queries).
            ann: ``"faiss"``: candidates from the HNSW graphs instead of every entry.
            ann_candidates: Candidates each similarity part draws from its graph
                (default ``max(10 k, 100)``).
            block_size: Rows scored at once by the exact search.

        Returns:
            A `QueryResult` (hits best first, the verdict).

        Raises:
            InputError: No query part, an unreadable query image, an unknown attribute, a
                part the index has no space for, an empty index, a dimension mismatch.
        """
        query = self._prepare(image, text, attributes, weights, attribute_mode)
        if rerank and query.image is None:
            raise InputError("--rerank re-ranks the image part: it needs --image")
        if ann not in (None, *ANN_BACKENDS):
            raise InputError(f"--ann {ann}: expected one of {', '.join(ANN_BACKENDS)}")
        k = max(1, int(k))
        count = max(k, int(rerank_candidates)) if rerank else k
        use_ann = ann is not None and (query.image is not None or query.text is not None)
        if use_ann:
            candidates = self._ann_candidates(query, ann_candidates or max(10 * count, 100))
            rows, terms = self._ranked(candidates, query)
            num_candidates = len(rows)
            rows, terms = rows[:count], {n: v[:count] for n, v in terms.items()}
        else:
            rows, num_candidates = self._exact_top(query, count, int(block_size))
            rows, terms = self._ranked(rows, query)
        distance = None
        if rerank and len(rows) > 1:
            rows, terms, distance = self._rerank(query, rows, terms)
        rows, terms = rows[:k], {name: values[:k] for name, values in terms.items()}
        distance = None if distance is None else distance[:k]
        threshold, source = self._threshold(query, threshold)
        hits = self._hits(rows, terms, query, threshold, distance)
        return QueryResult(hits, self._described(image, text, query), query.weights,
                           attribute_mode, threshold, source, verdict_of(hits, threshold),
                           int(num_candidates), "faiss" if use_ann else "exact",
                           distance is not None)

    @staticmethod
    def _described(image, text, query: _Query) -> dict[str, Any]:
        described: dict[str, Any] = {"image": None, "text": None, "attributes": None}
        if image is not None:
            described["image"] = str(image) if not isinstance(image, np.ndarray) else None
        if text is not None:
            described["text"] = text if isinstance(text, str) else None
        if query.attributes is not None:
            described["attributes"] = {"wanted": list(query.attributes.wanted),
                                       "unwanted": list(query.attributes.unwanted)}
        return described

    def query_image(self, image: str | os.PathLike | np.ndarray, k: int = 10,
                    **options) -> QueryResult:
        """`query` by an image alone (``options`` as there)."""
        return self.query(image=image, k=k, **options)

    def query_text(self, text: str | np.ndarray, k: int = 10, **options) -> QueryResult:
        """`query` by a sentence alone (``options`` as there)."""
        return self.query(text=text, k=k, **options)

    def query_attributes(self, attributes: str | Sequence[str], k: int = 10,
                         **options) -> QueryResult:
        """`query` by attributes alone (``options`` as there)."""
        return self.query(attributes=attributes, k=k, **options)
