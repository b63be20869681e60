"""`valpat index` and `valpat query` end to end on a tiny SynthPed gallery.

The JSON the command prints equals `PersonIndex.query` with the same options; each bad input
(missing or corrupt query image, another model's index, an unknown attribute, an empty
gallery or index, a sentence on an index without a text space) is one line and exit 2.
The run folders and the pretraining index come from tests/index_fixtures.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

# The shared fixtures are imported by name, so their parameters shadow them (F811).
# ruff: noqa: F811
from index_fixtures import pretrain_index, serving_workspace  # noqa: F401

from valpat_keras.cli.main import EXIT_BAD_INPUT, main
from valpat_keras.data.loaders._common import list_images
from valpat_keras.serving.index import PersonIndex

pytestmark = pytest.mark.keras


def _error(argv, capsys) -> str:
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_index_then_query_by_image_sentence_and_attributes(serving_workspace, tmp_path,
                                                           capsys):
    out = tmp_path / "idx"
    assert main(["index", "--images", str(serving_workspace["gallery"]), "--init",
                 str(serving_workspace["reid_run"]), "--text-from",
                 str(serving_workspace["pretrain_run"]), "--attributes-from",
                 str(serving_workspace["attributes_run"]), "--out", str(out),
                 "--batch-size", "8"]) == 0
    printed = capsys.readouterr().out
    assert "indexed 21 images" in printed and "queries: image, text, attributes" in printed
    query = str(list_images(serving_workspace["gallery"])[2])
    argv = ["query", str(out), "--image", query, "--text", "a man in a blue shirt",
            "--attributes", "Female,-Hat", "--attribute-mode", "score", "-k", "4",
            "--weights", "image=1,text=0.5", "--threshold", "0.9", "--json",
            str(tmp_path / "hits.json"), "--plot", str(tmp_path / "top.png")]
    assert main(argv) == 0
    assert "verdict: match" in capsys.readouterr().out
    written = json.loads((tmp_path / "hits.json").read_text())
    expected = PersonIndex.load(out).query(
        image=query, text="a man in a blue shirt", attributes="Female,-Hat", k=4,
        weights={"image": 1, "text": 0.5}, attribute_mode="score", threshold=0.9)
    assert [h["index"] for h in written["hits"]] == [h.index for h in expected.hits]
    assert [h["score"] for h in written["hits"]] == pytest.approx(
        [h.score for h in expected.hits], abs=1e-6)
    assert written["verdict"] == expected.verdict == "match"
    assert (tmp_path / "top.png").stat().st_size > 0


def test_query_prints_json_with_rerank_and_faiss(pretrain_index, capsys):
    argv = ["query", str(pretrain_index.folder), "--image", pretrain_index.paths[5],
            "--rerank", "--rerank-candidates", "15", "-k", "3"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = pretrain_index.query_image(pretrain_index.paths[5], k=3, rerank=True,
                                          rerank_candidates=15)
    assert printed["rerank"] and [h["index"] for h in printed["hits"]] == [
        h.index for h in expected.hits]
    assert main(["query", str(pretrain_index.folder), "--attributes", "Female", "--ann",
                 "faiss", "-k", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    female = np.asarray(pretrain_index.arrays["attributes"])[:, 0]
    assert printed["num_candidates"] == int((female >= 0.5).sum())


def test_bad_queries_are_one_line_and_exit_2(serving_workspace, pretrain_index,
                                             tmp_path, capsys):
    folder = str(pretrain_index.folder)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    assert "missing" in _error(["query", folder, "--image", str(tmp_path / "no.jpg")], capsys)
    assert "corrupt.jpg: unreadable" in _error(["query", folder, "--image", str(corrupt)],
                                               capsys)
    message = _error(["query", folder, "--attributes", "Female,Umbrella"], capsys)
    assert "unknown attribute 'Umbrella'" in message and "Backpack" in message
    message = _error(["query", folder, "--text", "a man", "--init",
                      str(serving_workspace["other_run"])], capsys)
    assert "dimension 32" in message and "gives 16" in message
    assert "not an index folder" in _error(["query", str(tmp_path), "--image", "q.jpg"],
                                           capsys)


def test_bad_indexes_are_one_line_and_exit_2(serving_workspace, pretrain_index,
                                             tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no images found" in _error(
        ["index", "--images", str(tmp_path / "empty"), "--init",
         str(serving_workspace["reid_run"]), "--out", str(tmp_path / "idx")], capsys)
    assert "reid run has no text space" in _error(
        ["index", "--images", str(serving_workspace["gallery"]), "--init",
         str(serving_workspace["pretrain_run"]), "--text-from",
         str(serving_workspace["reid_run"]), "--out", str(tmp_path / "idx")], capsys)
    empty = PersonIndex(pretrain_index.manifest, [],
                        {space: array[:0] for space, array in pretrain_index.arrays.items()})
    empty.save(tmp_path / "empty_index")
    assert "empty" in _error(["query", str(tmp_path / "empty_index"), "--attributes",
                              "Female"], capsys)
    image_only = PersonIndex({**pretrain_index.manifest, "query_kinds": ["image"],
                              "spaces": {"image": pretrain_index.manifest["spaces"]["image"]}},
                             pretrain_index.paths, {"image": pretrain_index.arrays["image"]})
    image_only.save(tmp_path / "image_only")
    message = _error(["query", str(tmp_path / "image_only"), "--text", "a man"], capsys)
    assert "no text space" in message and "--text-from" in message
