"""CUHK-PEDES, ICFG-PEDES and RSTPReid loaders on tiny annotation files in the real layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from valpat_keras import datasets
from valpat_keras.data.errors import DatasetFormatError


def entry(split: str, pid: int, path: str, path_key: str = "file_path", captions=None) -> dict:
    captions = [f"a person number {pid}", f"person {pid} walking"] if captions is None \
        else captions
    return {"split": split, "captions": captions, path_key: path, "id": pid,
            "processed_tokens": [c.split() for c in captions]}


def write_dataset(folder: Path, write_images, json_name: str, entries: list[dict],
                  path_key: str = "file_path") -> Path:
    write_images(folder / "imgs", [e[path_key] for e in entries])
    (folder / json_name).write_text(json.dumps(entries))
    return folder


CUHK = [entry("train", 1, "CUHK01/0363004.png"), entry("train", 2, "cam_a/0001_a.png"),
        entry("train", 1, "CUHK03/0001.png"), entry("val", 3, "Market/0003_c1.jpg"),
        entry("test", 4, "test_query/p4.jpg"), entry("test", 5, "test_query/p5.jpg")]


def test_cuhk_pedes(tmp_path, write_images):
    write_dataset(tmp_path / "CUHK-PEDES", write_images, "reid_raw.json", CUHK)
    data = datasets.load("cuhk_pedes", tmp_path)
    assert isinstance(data, datasets.TextDataset)
    assert sorted(r.pid for r in data.train) == [0, 0, 1]  # id - 1
    assert [r.pid for r in data.val] == [3] and [r.pid for r in data.test] == [4, 5]
    assert data.train[0].captions == ("a person number 1", "person 1 walking")
    assert all(Path(r.path).is_file() for r in data.train + data.test)
    assert data.test[0].path.endswith("imgs/test_query/p4.jpg")


def test_cuhk_pedes_other_split_is_val_and_gap_is_an_error(tmp_path, write_images):
    entries = CUHK + [entry("validation", 9, "Market/x.jpg")]
    write_dataset(tmp_path, write_images, "reid_raw.json", entries)
    assert [r.pid for r in datasets.load("cuhk_pedes", tmp_path).val] == [3, 9]
    write_dataset(tmp_path, write_images, "reid_raw.json", CUHK + [entry("train", 4, "a/b.png")])
    with pytest.raises(DatasetFormatError, match="not contiguous.*pid = id - 1"):
        datasets.load("cuhk_pedes", tmp_path)


def test_entry_without_captions_key_is_an_error(tmp_path, write_images):
    entries = [dict(e) for e in CUHK]
    del entries[2]["captions"]
    write_dataset(tmp_path, write_images, "reid_raw.json", entries)
    with pytest.raises(DatasetFormatError) as err:
        datasets.load("cuhk_pedes", tmp_path)
    assert err.value.path.endswith("reid_raw.json") and err.value.field == "captions"
    assert "entry 2" in str(err.value)


@pytest.mark.parametrize("captions", [[], ["", "  \t"]])
def test_entry_with_no_caption_left_is_dropped_and_counted(tmp_path, write_images, captions):
    entries = [dict(e) for e in CUHK]
    entries[2]["captions"] = captions
    write_dataset(tmp_path, write_images, "reid_raw.json", entries)
    data = datasets.load("cuhk_pedes", tmp_path)
    # Entry 2 (train, id 1) is gone; id 1 keeps its other image, so ids stay contiguous.
    assert [Path(r.path).name for r in data.train] == ["0363004.png", "0001_a.png"]
    expected = {"train images without a caption": 1}
    if captions:
        expected["blank captions in train"] = 2
    assert data.skipped == expected
    assert "skipped 1 (train images without a caption)" in data.summary()


@pytest.mark.parametrize("json_name", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_icfg_pedes_both_file_names(tmp_path, write_images, json_name):
    entries = [entry("train", 0, "train/0000/0000_002_01_0303morning_0009_0.jpg"),
               entry("train", 1, "train/0001/0001_000_03_0303morning_0001_0.jpg"),
               entry("test", 0, "test/0000/0000_000_01_0302noon_0001_0.jpg")]
    write_dataset(tmp_path / "ICFG-PEDES", write_images, json_name, entries)
    data = datasets.load("icfg_pedes", tmp_path)
    assert [r.pid for r in data.train] == [0, 1] and data.val == []
    assert [r.pid for r in data.test] == [0]


def test_icfg_pedes_one_based_train_ids_rejected(tmp_path, write_images):
    write_dataset(tmp_path, write_images, "ICFG-PEDES.json",
                  [entry("train", 1, "train/a.jpg"), entry("train", 2, "train/b.jpg")])
    with pytest.raises(DatasetFormatError, match="not contiguous"):
        datasets.load("icfg_pedes", tmp_path)


def test_rstpreid_img_path(tmp_path, write_images):
    entries = [entry("train", 0, "0000_c5_0022.jpg", "img_path"),
               entry("train", 1, "0001_c1_0001.jpg", "img_path"),
               entry("val", 2, "0002_c2_0001.jpg", "img_path"),
               entry("test", 3, "0003_c3_0001.jpg", "img_path")]
    write_dataset(tmp_path / "RSTPReid", write_images, "data_captions.json", entries, "img_path")
    data = datasets.load("rstpreid", tmp_path)
    assert [len(s) for s in (data.train, data.val, data.test)] == [2, 1, 1]
    assert data.val[0].path.endswith("RSTPReid/imgs/0002_c2_0001.jpg")
    assert "captions" in data.summary()


def test_text_missing_layout_and_unreadable_image(tmp_path, write_images):
    with pytest.raises(DatasetFormatError, match="no RSTPReid layout"):
        datasets.load("rstpreid", tmp_path)
    write_dataset(tmp_path, write_images, "reid_raw.json", CUHK)
    (tmp_path / "imgs/test_query/p5.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        data = datasets.load("cuhk_pedes", tmp_path, verify_images=True)
    assert len(data.test) == 1 and data.skipped == {"unreadable test images": 1}
