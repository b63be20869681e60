"""A user's own data from a CSV or JSON Lines manifest (``manifest`` / ``folder``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from valpat_keras import datasets
from valpat_keras.data.errors import DatasetFormatError

CSV = """path,pid,camid,split,caption,caption_2,attr:Female,attr:Hat
images/a.jpg,7,0,train,a woman in a red coat,,1,0
images/b.jpg,7,1,train,the same woman,a woman seen from behind,1,
images/c.jpg,3,0,train,a man,,0,1
images/d.jpg,20,0,query,a child,,0,0
images/e.jpg,20,2,gallery,a child walking,,0,-1
"""


def write_csv(folder: Path, write_images, text: str = CSV, name: str = "manifest.csv") -> Path:
    write_images(folder / "images", ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    (folder / name).write_text(text)
    return folder / name


def test_csv_reid(tmp_path, write_images):
    write_csv(tmp_path, write_images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every query has an other-camera match
        data = datasets.load("manifest", tmp_path)
    assert isinstance(data, datasets.ReIDDataset)
    assert [(r.pid, r.camid) for r in data.train] == [(1, 0), (1, 1), (0, 0)]
    assert [(r.pid, r.camid) for r in data.query] == [(20, 0)]
    assert data.gallery[0].path == str(tmp_path / "images/e.jpg")


def test_csv_attributes_and_text(tmp_path, write_images):
    path = write_csv(tmp_path, write_images, CSV.replace(",query,", ",val,")
                     .replace(",gallery,", ",test,"))
    attrs = datasets.load("folder", path, kind="attributes")
    assert isinstance(attrs, datasets.AttributeDataset)
    assert attrs.attribute_names == ["Female", "Hat"]
    np.testing.assert_array_equal(attrs.train[1].attributes, [1, -1])  # empty cell -> -1
    np.testing.assert_array_equal(attrs.test[0].attributes, [0, -1])
    text = datasets.load("manifest", path, kind="text")
    assert isinstance(text, datasets.TextDataset)
    assert text.train[1].captions == ("the same woman", "a woman seen from behind")
    assert sorted({r.pid for r in text.train}) == [0, 1] and text.val[0].pid == 20


def test_jsonl_without_split_or_camid_seeded_hold_out(tmp_path, write_images):
    rows = [{"path": f"img/{pid}_{k}.jpg", "pid": pid, "captions": [f"person {pid}"],
             "attributes": {"Hat": pid % 2}} for pid in range(10) for k in range(3)]
    write_images(tmp_path, [r["path"] for r in rows])
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    everything = datasets.load("manifest", tmp_path)
    assert len(everything.train) == 30 and not everything.query
    assert {r.camid for r in everything.train} == {0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no camera column: the camera check is not applied
        first = datasets.load("manifest", tmp_path, test_fraction=0.2, seed=3)
    again = datasets.load("manifest", tmp_path, test_fraction=0.2, seed=3)
    assert [r.path for r in first.query] == [r.path for r in again.query]
    assert len(first.query) == 2 and len(first.gallery) == 4 and first.num_train_pids == 8
    assert {r.pid for r in first.query} == {r.pid for r in first.gallery}
    text = datasets.load("manifest", tmp_path, kind="text", test_fraction=0.2)
    assert len(text.test) == 6 and sorted({r.pid for r in text.train}) == list(range(8))
    attrs = datasets.load("manifest", tmp_path, kind="attributes", test_fraction=0.5)
    assert len(attrs.test) == 15 and attrs.attribute_names == ["Hat"]


def test_manifest_errors(tmp_path, write_images):
    with pytest.raises(DatasetFormatError, match="manifest not found"):
        datasets.load("manifest", tmp_path)
    write_csv(tmp_path, write_images, "file,pid\na.jpg,1\n")
    with pytest.raises(DatasetFormatError, match="no 'path' column"):
        datasets.load("manifest", tmp_path)
    write_csv(tmp_path, write_images, "path,pid\nimages/a.jpg,seven\n")
    with pytest.raises(DatasetFormatError, match="line 2: pid is 'seven'"):
        datasets.load("manifest", tmp_path)
    write_csv(tmp_path, write_images, "path,pid,split\nimages/a.jpg,1,test\n")
    with pytest.raises(DatasetFormatError, match="split 'test'.*train, query, gallery"):
        datasets.load("manifest", tmp_path)
    write_csv(tmp_path, write_images, "path,pid,caption\nimages/a.jpg,0,\n")
    with pytest.raises(DatasetFormatError, match="none of the 1 rows has a caption"):
        datasets.load("manifest", tmp_path, kind="text")
    write_csv(tmp_path, write_images, "path,attr:Hat\nimages/a.jpg,2\n")
    with pytest.raises(DatasetFormatError, match="attribute Hat is 2"):
        datasets.load("manifest", tmp_path, kind="attributes")
