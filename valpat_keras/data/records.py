"""Datasets as plain records, in the style of torchreid and fast-reid.

Loaders only parse on-disk layouts into these records; pipelines only transform them.
Paths are absolute strings so records can be handed straight to `tf.data`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["AttributeDataset", "AttributeRecord", "PretrainDataset", "PretrainRecord",
           "ReIDDataset", "ReIDRecord", "TextDataset", "TextRecord", "camids_of", "pids_of"]


@dataclasses.dataclass(frozen=True)
class ReIDRecord:
    """One person crop of a re-identification set.

    Attributes:
        path: Absolute image path.
        pid: Person id (train ids relabelled 0..N-1; query/gallery ids kept; 0 = distractor).
        camid: 0-based camera index.
    """

    path: str
    pid: int
    camid: int


@dataclasses.dataclass(frozen=True)
class AttributeRecord:
    """One person crop with a multi-attribute label vector.

    Attributes:
        path: Absolute image path.
        attributes: ``int8`` vector over *all* attributes of the dataset; 1 positive,
            0 negative, -1 unknown/uncertain (masked out of losses and metrics).
    """

    path: str
    attributes: np.ndarray


@dataclasses.dataclass(frozen=True)
class TextRecord:
    """One person crop with its captions (text-based person search).

    Attributes:
        path: Absolute image path.
        pid: Person id (train ids 0-based and contiguous).
        captions: The captions describing this image.
    """

    path: str
    pid: int
    captions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PretrainRecord:
    """One pretraining image: captions and attributes may be absent.

    Attributes:
        path: Absolute image path.
        captions: Captions of the image (empty for an unlabeled folder).
        attributes: ``int8`` vector (1/0/-1 unknown) or ``None`` when unlabeled.
    """

    path: str
    captions: tuple[str, ...] = ()
    attributes: np.ndarray | None = None


class _Reported:
    """What every dataset reports below its table: records left out and options ignored."""

    name: str
    skipped: dict[str, int]
    ignored_options: dict[str, object]

    def _report(self, rows: list[str]) -> str:
        rows = rows + [f"  skipped {count} ({reason})" for reason, count in self.skipped.items()]
        if self.ignored_options:
            given = ", ".join(f"{k}={v!r}" for k, v in self.ignored_options.items())
            rows.append(f"  ignored options: {given} ({self.name} does not use them)")
        return "\n".join(rows)


@dataclasses.dataclass
class ReIDDataset(_Reported):
    """A re-identification dataset: train / query / gallery record lists.

    Attributes:
        name: Registered loader name.
        root: Folder the data was read from.
        train: Training records (pids relabelled 0..N-1).
        query: Query records.
        gallery: Gallery records (pid 0 distractors kept).
        skipped: What the loader left out or read as unknown, counted by reason (junk
            pid -1, unreadable images, non-image files, blank captions, uncertain labels).
        ignored_options: Options given to the loader that it does not use (in ``summary()``).
    """

    name: str
    root: str
    train: list[ReIDRecord]
    query: list[ReIDRecord]
    gallery: list[ReIDRecord]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    ignored_options: dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        """Number of training identities."""
        return _distinct(pids_of(self.train))

    @property
    def num_cameras(self) -> int:
        """Number of distinct cameras over all splits."""
        return _distinct(camids_of([*self.train, *self.query, *self.gallery]))

    def summary(self) -> str:
        """A short table of images and identities per split."""
        rows = [f"{self.name} ({self.root})"]
        for split in ("train", "query", "gallery"):
            recs = getattr(self, split)
            rows.append(f"  {split:<8} {len(recs):>7} images {_distinct(pids_of(recs)):>6} ids "
                        f"{_distinct(camids_of(recs)):>3} cameras")
        return self._report(rows)

    def check_queries(self) -> int:
        """Warns about query ids with no gallery image under another camera.

        Such queries are not valid under the Market-1501 protocol (they are skipped by the
        metric); peers only assert. Returns the number of such queries.
        """
        by_pid: dict[int, set[int]] = {}
        for r in self.gallery:
            by_pid.setdefault(r.pid, set()).add(r.camid)
        bad = [r for r in self.query if not (by_pid.get(r.pid, set()) - {r.camid})]
        if bad:
            warnings.warn(
                f"{self.name}: {len(bad)} of {len(self.query)} query images have no gallery "
                f"image of the same identity under another camera (e.g. {bad[0].path}); they "
                "will not count as valid queries in evaluation.", UserWarning, stacklevel=2)
        return len(bad)


@dataclasses.dataclass
class AttributeDataset(_Reported):
    """A pedestrian attribute recognition dataset.

    Attributes:
        name: Registered loader name.
        root: Folder the data was read from.
        train: Training records.
        val: Validation records (may be empty, e.g. RAP v1).
        test: Test records.
        all_attribute_names: Names of every attribute column in the records.
        eval_indices: Columns of the evaluated attribute set (PA-100K 26, PETA 35, ...).
        split: Index of the partition used (PETA/RAP have 5).
        skipped: What the loader left out or read as unknown, counted by reason (junk
            pid -1, unreadable images, non-image files, blank captions, uncertain labels).
        ignored_options: Options given to the loader that it does not use (in ``summary()``).
    """

    name: str
    root: str
    train: list[AttributeRecord]
    val: list[AttributeRecord]
    test: list[AttributeRecord]
    all_attribute_names: list[str]
    eval_indices: list[int]
    split: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    ignored_options: dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def attribute_names(self) -> list[str]:
        """Names of the evaluated attributes."""
        return [self.all_attribute_names[i] for i in self.eval_indices]

    def summary(self) -> str:
        """A short table of images per split and the attribute counts."""
        rows = [f"{self.name} ({self.root}) split {self.split}",
                f"  train {len(self.train)}  val {len(self.val)}  test {len(self.test)} images",
                f"  {len(self.eval_indices)} evaluated of {len(self.all_attribute_names)} attributes"]
        return self._report(rows)


@dataclasses.dataclass
class TextDataset(_Reported):
    """A text-based person search dataset.

    Attributes:
        name: Registered loader name.
        root: Folder the data was read from.
        train: Training records (pids 0-based, contiguous).
        val: Validation records.
        test: Test records (captions are the queries, images the gallery).
        skipped: What the loader left out or read as unknown, counted by reason (junk
            pid -1, unreadable images, non-image files, blank captions, uncertain labels).
        ignored_options: Options given to the loader that it does not use (in ``summary()``).
    """

    name: str
    root: str
    train: list[TextRecord]
    val: list[TextRecord]
    test: list[TextRecord]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    ignored_options: dict[str, object] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """A short table of images, captions and identities per split."""
        rows = [f"{self.name} ({self.root})"]
        for split in ("train", "val", "test"):
            recs = getattr(self, split)
            rows.append(f"  {split:<6} {len(recs):>7} images "
                        f"{sum(len(r.captions) for r in recs):>7} captions "
                        f"{_distinct(pids_of(recs)):>6} ids")
        return self._report(rows)


@dataclasses.dataclass
class PretrainDataset(_Reported):
    """An image(-text-attribute) pretraining set such as LUPerson-TA or SynthPed.

    Attributes:
        name: Registered loader name.
        root: Folder or manifest the data was read from.
        records: The images with optional captions and attributes.
        attribute_names: Names of the attribute vector entries (empty if unlabeled).
        skipped: What the loader left out or read as unknown, counted by reason (junk
            pid -1, unreadable images, non-image files, blank captions, uncertain labels).
        ignored_options: Options given to the loader that it does not use (in ``summary()``).
    """

    name: str
    root: str
    records: list[PretrainRecord]
    attribute_names: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    ignored_options: dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def has_captions(self) -> bool:
        """True when every record carries at least one caption."""
        return bool(self.records) and all(r.captions for r in self.records)

    @property
    def has_attributes(self) -> bool:
        """True when every record carries an attribute vector."""
        return bool(self.records) and all(r.attributes is not None for r in self.records)

    def summary(self) -> str:
        """A short description of size and available supervision."""
        rows = [f"{self.name} ({self.root})",
                (f"  {len(self.records)} images, captions: "
                 f"{'yes' if self.has_captions else 'no'}, attributes: "
                 f"{len(self.attribute_names) if self.has_attributes else 'no'}")]
        return self._report(rows)


def pids_of(records: Sequence[ReIDRecord | TextRecord]) -> np.ndarray:
    """The person ids of records as an ``int64`` array."""
    return np.asarray([r.pid for r in records], dtype=np.int64)


def camids_of(records: Sequence[ReIDRecord]) -> np.ndarray:
    """The camera ids of records as an ``int64`` array."""
    return np.asarray([r.camid for r in records], dtype=np.int64)


def _distinct(values: np.ndarray) -> int:
    return int(np.unique(values).size)
