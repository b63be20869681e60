"""Query scoring of `PersonIndex` on given features, recomputed independently (no model).

The index is built in memory from random unit vectors and attribute probabilities, and
queried with embeddings, so nothing here runs a Keras model: the ranking must equal a
brute-force sort of the documented formula, blockwise and with faiss alike.
"""

from __future__ import annotations

import numpy as np
import pytest

from valpat_keras.errors import InputError
from valpat_keras.evaluation.reranking import re_ranking
from valpat_keras.serving.index import PersonIndex
from valpat_keras.serving.query import (
    MIN_PROBABILITY,
    attribute_terms,
    parse_attribute_query,
    plot_query_result,
)

NAMES = ["Female", "Hat", "Backpack", "LongCoat"]
THRESHOLDS = [0.5, 0.3, 0.5, 0.7]


def _unit(rng, shape):
    x = rng.normal(size=shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _index(n=300, dim=16, text_dim=8, seed=0, calibration=None, spaces=("image", "text",
                                                                         "attributes")):
    rng = np.random.default_rng(seed)
    arrays = {"image": _unit(rng, (n, dim)), "text": _unit(rng, (n, text_dim)),
              "attributes": rng.random((n, len(NAMES))).astype(np.float32)}
    arrays = {space: arrays[space] for space in spaces}
    manifest = {"run_dir": "run", "query_kinds": list(spaces), "verification": calibration,
                "spaces": {space: {"file": f"{space}.npy", "dim": arrays[space].shape[1],
                                   "run_dir": "run"} for space in spaces}}
    if "attributes" in spaces:
        manifest["spaces"]["attributes"].update(names=NAMES, thresholds=THRESHOLDS)
    return PersonIndex(manifest, [f"img_{i}.jpg" for i in range(n)], arrays)


def _brute_force(index, image=None, text=None, wanted=(), unwanted=(), weights=None,
                 mode="filter"):
    """The documented score of every entry, written out directly, and the filter mask."""
    w = {"image": 1.0, "text": 1.0, "attributes": 1.0, **(weights or {})}
    score = np.zeros(len(index))
    keep = np.ones(len(index), dtype=bool)
    if image is not None:
        score += w["image"] * (index.arrays["image"].astype(np.float64) @ image)
    if text is not None:
        score += w["text"] * (index.arrays["text"].astype(np.float64) @ text)
    if wanted or unwanted:
        p = index.arrays["attributes"].astype(np.float64)
        logs = [np.log(np.maximum(p[:, NAMES.index(n)], MIN_PROBABILITY)) for n in wanted]
        logs += [np.log(np.maximum(1 - p[:, NAMES.index(n)], MIN_PROBABILITY))
                 for n in unwanted]
        score += w["attributes"] * np.mean(logs, axis=0)
        for n in wanted:
            keep &= p[:, NAMES.index(n)] >= THRESHOLDS[NAMES.index(n)]
        for n in unwanted:
            keep &= p[:, NAMES.index(n)] < THRESHOLDS[NAMES.index(n)]
    if mode == "score":
        keep[:] = True
    order = [i for i in np.argsort(-score, kind="stable") if keep[i]]
    return np.asarray(order), score


def _rows(result):
    return [hit.index for hit in result.hits]


def test_image_query_ranks_by_cosine_blockwise():
    index = _index()
    query = _unit(np.random.default_rng(1), 16)
    order, score = _brute_force(index, image=query)
    result = index.query_image(query, k=10, block_size=37)  # blocks that do not divide N
    assert _rows(result) == list(order[:10])
    assert [h.score for h in result.hits] == pytest.approx(score[order[:10]], abs=1e-6)
    assert [h.image_similarity for h in result.hits] == pytest.approx(score[order[:10]],
                                                                       abs=1e-6)
    assert result.num_candidates == 300 and result.verdict is None and result.search == "exact"


def test_combined_query_equals_the_documented_formula():
    index = _index()
    rng = np.random.default_rng(2)
    image, text = _unit(rng, 16), _unit(rng, 8)
    weights = {"image": 1.0, "text": 0.5, "attributes": 0.25}
    order, score = _brute_force(index, image, text, ("Female",), ("Hat",), weights)
    result = index.query(image=image, text=text, attributes="female, -HAT", k=20,
                         weights=weights, block_size=50)
    assert _rows(result) == list(order[:20])
    assert result.num_candidates == len(order) < 300  # the filter dropped entries
    assert [h.score for h in result.hits] == pytest.approx(score[order[:20]], abs=1e-6)
    p = index.arrays["attributes"]
    for hit in result.hits:
        assert hit.attributes == pytest.approx({"Female": p[hit.index, 0],
                                                "Hat": p[hit.index, 1]})
        expected = np.mean([np.log(p[hit.index, 0]), np.log(1 - p[hit.index, 1])])
        assert hit.attribute_log_probability == pytest.approx(expected, abs=1e-6)


def test_attribute_score_mode_keeps_every_entry():
    index = _index()
    order, _ = _brute_force(index, wanted=("Backpack", "LongCoat"), mode="score")
    result = index.query_attributes(["Backpack", "LongCoat"], k=15, attribute_mode="score")
    assert _rows(result) == list(order[:15]) and result.num_candidates == 300


def test_faiss_returns_the_exact_ranking_on_a_small_gallery():
    index = _index(n=200)
    rng = np.random.default_rng(3)
    image, text = _unit(rng, 16), _unit(rng, 8)
    for parts in ({"image": image}, {"text": text},
                  {"image": image, "text": text, "attributes": "-Backpack"}):
        exact = index.query(k=10, **parts)
        approximate = index.query(k=10, ann="faiss", **parts)
        assert approximate.search == "faiss"
        assert _rows(approximate) == _rows(exact)
        assert [h.score for h in approximate.hits] == pytest.approx(
            [h.score for h in exact.hits], abs=1e-6)


def test_rerank_scores_the_image_part_with_the_k_reciprocal_distance():
    index = _index(n=120)
    query = _unit(np.random.default_rng(4), 16)
    result = index.query_image(query, k=5, rerank=True, rerank_candidates=30)
    order, _ = _brute_force(index, image=query)
    shortlist = order[:30]
    features = index.arrays["image"][shortlist].astype(np.float64)
    q = query.astype(np.float64)[None]
    distance = re_ranking(1 - q @ features.T, 1 - q @ q.T, 1 - features @ features.T,
                          k1=20, k2=6)[0]
    expected = shortlist[np.lexsort((shortlist, distance))][:5]
    assert result.rerank and _rows(result) == list(expected)
    assert [h.score for h in result.hits] == pytest.approx(
        1 - np.sort(distance)[:5], abs=1e-5)


def test_threshold_gives_match_and_no_match_verdicts():
    calibration = {"threshold": 0.5, "similarity": "cosine", "target_fpr": 1e-3,
                   "split": "validation"}
    index = _index(calibration=calibration)
    entry = index.arrays["image"][7].copy()
    found = index.query_image(entry, k=3)
    assert found.threshold == 0.5 and found.threshold_source == "calibration"
    assert found.verdict == "match" and found.hits[0].index == 7 and found.hits[0].match
    assert [h.match for h in found.hits] == [h.image_similarity >= 0.5 for h in found.hits]
    missing = index.query_image(entry, k=3, threshold=1.01)
    assert missing.verdict == "no match" and missing.threshold_source == "option"
    # The calibration is for image pairs: a sentence alone gets no verdict unless asked.
    text = index.arrays["text"][7].copy()
    assert index.query_text(text).verdict is None
    assert index.query_text(text, threshold=0.99).verdict == "match"


def test_round_trip_through_a_folder_memory_maps_the_arrays(tmp_path):
    index = _index()
    query = _unit(np.random.default_rng(5), 16)
    index.save(tmp_path / "idx")
    loaded = PersonIndex.load(tmp_path / "idx")
    assert isinstance(loaded.arrays["image"], np.memmap)
    assert _rows(loaded.query_image(query)) == _rows(index.query_image(query))


def test_result_json_and_picture(tmp_path):
    from PIL import Image

    index = _index(n=4)
    for i, path in enumerate(index.paths):
        index.paths[i] = str(tmp_path / path)
        Image.new("RGB", (16, 32), (60 * i, 0, 0)).save(index.paths[i])
    result = index.query(text=index.arrays["text"][0].copy(), attributes="Female", k=3,
                         attribute_mode="score")
    record = result.to_dict()
    assert record["hits"][0]["path"] == result.hits[0].path
    assert record["query"]["attributes"] == {"wanted": ["Female"], "unwanted": []}
    plot_query_result(result, str(tmp_path / "top.png"))
    assert (tmp_path / "top.png").stat().st_size > 0


def test_attribute_parsing_and_terms():
    query = parse_attribute_query("Female,+backpack, -Hat", NAMES)
    assert query.wanted == ("Female", "Backpack") and query.unwanted == ("Hat",)
    p = np.array([[0.9, 0.2, 0.6, 0.1], [0.9, 0.4, 0.6, 0.1]])
    log_probability, satisfied = attribute_terms(p, query, THRESHOLDS)
    assert log_probability[0] == pytest.approx(np.mean(np.log([0.9, 0.6, 0.8])))
    assert satisfied.tolist() == [True, False]  # Hat 0.4 >= its threshold 0.3
    with pytest.raises(InputError, match="unknown attribute 'Umbrella'.*Female, Hat"):
        parse_attribute_query("Female,Umbrella", NAMES)
    with pytest.raises(InputError, match="both wanted and unwanted"):
        parse_attribute_query("Hat,-Hat", NAMES)


@pytest.mark.parametrize(("spaces", "options", "message"), [
    (("image",), {"text": np.ones(8)}, "no text space"),
    (("image",), {"attributes": "Female"}, "no attributes space"),
    (("image", "text"), {"image": np.ones(5)}, "dimension 16.*gives 5"),
    (("image",), {}, "at least one of --image, --text, --attributes"),
    (("image",), {"text": None, "image": np.ones(16), "rerank": True, "ann": "annoy"},
     "--ann annoy"),
])
def test_bad_queries_are_input_errors(spaces, options, message):
    with pytest.raises(InputError, match=message):
        _index(spaces=spaces).query(**options)


def test_an_empty_index_is_an_input_error():
    index = _index(n=0)
    with pytest.raises(InputError, match="empty"):
        index.query_image(np.ones(16))
