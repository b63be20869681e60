"""How a query scores the gallery, and what it returns: the formula, the hits, the verdict.

A query has up to three parts: an image (cosine similarity in the index's ``image`` space), a
sentence (cosine similarity in the ``text`` space, the image-text shared space) and
attributes (``"Female,Backpack,-Hat"``: a name wants the attribute present, ``-name``
absent). For gallery entry ``g``:

```
score(g) = w_image * cos(q_image, f_image[g])
         + w_text * cos(q_text, f_text[g])
         + w_attributes * mean_a log p_a(g)
```

where the mean runs over the queried attributes, ``p_a(g)`` is the entry's probability of
attribute ``a`` for a wanted one and ``1 -`` that for an unwanted one, clipped to
``[1e-6, 1]``. Terms of absent parts are left out. In ``"filter"`` mode (the default) entries
that do not satisfy every queried attribute (probability ``>=`` the attribute's threshold
for a wanted one, ``<`` for an unwanted one) are not returned at all; in ``"score"`` mode
only the log-probability term counts.

The verdict: with a threshold (``--threshold``, or the run's calibrated one from
``verification.json``, kept in the index manifest) and an image in the query, a hit is a
``match`` when its image cosine similarity is ``>=`` the threshold, and the query's verdict is
``"match"`` when any returned hit is one, else ``"no match"`` (the person is not in the
gallery). Without an image the threshold (given explicitly) applies to the sentence
similarity; the calibrated threshold is for image pairs only.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from valpat_keras.errors import InputError
from valpat_keras.evaluation.plots import _MATCH, _MISS, _finish, _show_image

#: The query parts, in the order they are reported.
QUERY_PARTS = ("image", "text", "attributes")
#: How queried attributes act: drop entries that fail them, or only add the log term.
ATTRIBUTE_MODES = ("filter", "score")
#: Probabilities are clipped here before the logarithm (log(1e-6) = -13.8).
MIN_PROBABILITY = 1e-6


@dataclasses.dataclass(frozen=True)
class AttributeQuery:
    """Wanted and unwanted attributes, as columns of the index's attribute matrix.

    Attributes:
        wanted: Names that must be present.
        unwanted: Names that must be absent.
        wanted_columns: Their columns.
        unwanted_columns: Their columns.
    """

    wanted: tuple[str, ...]
    unwanted: tuple[str, ...]
    wanted_columns: tuple[int, ...]
    unwanted_columns: tuple[int, ...]


def parse_attribute_query(query: str | Sequence[str], names: Sequence[str]) -> AttributeQuery:
    """Parses ``"Female,Backpack,-Hat"`` (or a list of such items) against known names.

    Names match case-insensitively.

    Raises:
        InputError: An unknown name (the message lists the valid ones), a name both wanted
            and unwanted, or no name at all.
    """
    items = query.split(",") if isinstance(query, str) else list(query)
    lookup = {name.lower(): column for column, name in enumerate(names)}
    wanted: dict[str, int] = {}
    unwanted: dict[str, int] = {}
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        negative = item.startswith("-")
        name = item[1:].strip() if negative else item.lstrip("+").strip()
        if name.lower() not in lookup:
            raise InputError(f"--attributes: unknown attribute {name!r}; the index knows "
                             f"{', '.join(names)}")
        column = lookup[name.lower()]
        (unwanted if negative else wanted)[names[column]] = column
    clash = sorted(set(wanted) & set(unwanted))
    if clash:
        raise InputError(f"--attributes: {', '.join(clash)} is both wanted and unwanted")
    if not wanted and not unwanted:
        raise InputError("--attributes: no attribute given; expected e.g. 'Female,-Hat'")
    return AttributeQuery(tuple(wanted), tuple(unwanted), tuple(wanted.values()),
                          tuple(unwanted.values()))


def attribute_terms(probabilities: np.ndarray, query: AttributeQuery,
                    thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(mean log-probability, satisfies every attribute)`` per row of ``probabilities``."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    wanted = probabilities[:, list(query.wanted_columns)]
    unwanted = probabilities[:, list(query.unwanted_columns)]
    chosen = np.concatenate([wanted, 1.0 - unwanted], axis=1)
    log_probability = np.log(np.clip(chosen, MIN_PROBABILITY, 1.0)).mean(axis=1)
    satisfied = (np.all(wanted >= thresholds[list(query.wanted_columns)], axis=1)
                 & np.all(unwanted < thresholds[list(query.unwanted_columns)], axis=1))
    return log_probability, satisfied


def query_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The weight of every query part (1 unless given), checked to be finite and >= 0."""
    result = {part: 1.0 for part in QUERY_PARTS}
    for part, weight in (weights or {}).items():
        if part not in result:
            raise InputError(f"weights: unknown query part {part!r}; expected "
                             f"{', '.join(QUERY_PARTS)}")
        if not np.isfinite(weight) or weight < 0:
            raise InputError(f"weights: {part}={weight} must be a finite number >= 0")
        result[part] = float(weight)
    return result


@dataclasses.dataclass(frozen=True)
class QueryHit:
    """One ranked gallery entry.

    Attributes:
        rank: 1-based rank.
        index: Row of the entry in the index.
        path: Its image file.
        score: The combined score (see the module docstring).
        image_similarity: Cosine similarity with the query image (None without one).
        text_similarity: Cosine similarity with the sentence (None without one).
        attribute_log_probability: The mean log-probability term (None without attributes).
        attributes: The entry's probability of each queried attribute.
        match: Whether the verification similarity reaches the threshold (None without one).
        rerank_distance: The k-reciprocal distance, when re-ranked.
    """

    rank: int
    index: int
    path: str
    score: float
    image_similarity: float | None = None
    text_similarity: float | None = None
    attribute_log_probability: float | None = None
    attributes: dict[str, float] = dataclasses.field(default_factory=dict)
    match: bool | None = None
    rerank_distance: float | None = None


@dataclasses.dataclass
class QueryResult:
    """A ranked gallery and the verdict.

    Attributes:
        hits: The best entries, best first.
        query: What was asked: ``image`` (path), ``text``, ``attributes`` (wanted / unwanted).
        weights: The weight of each query part.
        attribute_mode: ``"filter"`` or ``"score"``.
        threshold: The verification threshold used (None: no verdict).
        threshold_source: ``"option"``, ``"calibration"`` or None.
        verdict: ``"match"``, ``"no match"`` or None (no threshold, or no similarity part).
        num_candidates: Entries that passed the attribute filter (all entries without it).
        search: ``"exact"`` or ``"faiss"``; ``rerank`` says whether re-ranking ran.
        rerank: Whether the hits were re-ranked (k-reciprocal).
    """

    hits: list[QueryHit]
    query: dict[str, Any]
    weights: dict[str, float]
    attribute_mode: str
    threshold: float | None
    threshold_source: str | None
    verdict: str | None
    num_candidates: int
    search: str = "exact"
    rerank: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``valpat query`` prints)."""
        return dataclasses.asdict(self)


def verdict_of(hits: Sequence[QueryHit], threshold: float | None) -> str | None:
    """``"match"`` when a hit reaches the threshold, ``"no match"`` when none does."""
    if threshold is None or not hits or hits[0].match is None:
        return None
    return "match" if any(hit.match for hit in hits) else "no match"


def describe_query(query: Mapping[str, Any]) -> str:
    """One line for the figure: the sentence and the attributes of a query."""
    parts = []
    if query.get("text"):
        parts.append(f'"{query["text"]}"')
    if query.get("attributes"):
        attributes = query["attributes"]
        parts.append(", ".join([*attributes["wanted"], *(f"-{n}" for n in
                                                         attributes["unwanted"])]))
    return " + ".join(parts)


def plot_query_result(result: QueryResult, path: str | None = None, topk: int = 10) -> Figure:
    """The query (image and/or words) then its top-k hits, each titled with its score.

    Borders: green for a match, red for a non-match (with a threshold), none otherwise.
    """
    hits = result.hits[:topk]
    image = result.query.get("image")
    words = describe_query(result.query)
    columns = 1 + max(len(hits), 1)
    # Words alone get a wider first column; under a query image they wrap to its width.
    first = 2 if words and image is None else 1
    fig = Figure(figsize=(1.2 * (columns + first - 1), 2.6))
    axes = fig.subplots(1, columns, squeeze=False,
                        gridspec_kw={"width_ratios": [first] + [1] * (columns - 1)})
    query_ax = axes[0, 0]
    if image is not None:
        _show_image(query_ax, image, "black", textwrap.fill(f"query {words}".strip(), 20))
    else:
        query_ax.axis("off")
        query_ax.text(0, 0.5, textwrap.fill(words, 25), fontsize=7, va="center")
    verdict = f" ({result.verdict})" if result.verdict else ""
    fig.suptitle(f"top {len(hits)} of {result.num_candidates}{verdict}", fontsize=8)
    for column, hit in enumerate(hits, start=1):
        border = None if hit.match is None else (_MATCH if hit.match else _MISS)
        _show_image(axes[0, column], hit.path, border, f"#{hit.rank} {hit.score:.2f}")
    for column in range(len(hits) + 1, columns):
        axes[0, column].axis("off")
    return _finish(fig, path)
