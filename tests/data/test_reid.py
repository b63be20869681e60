"""Loaders of Market-1501, DukeMTMC-reID, Occluded-Duke and MSMT17 on tiny trees in real layouts."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from valpat_keras import datasets
from valpat_keras.data.errors import DatasetFormatError

MARKET_TRAIN = ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s1_000101_01.jpg",
                "0005_c6s2_000201_02.jpg"]
MARKET_QUERY = ["0010_c1s1_001051_00.jpg", "0011_c2s1_001101_00.jpg"]
MARKET_GALLERY = ["0010_c2s1_001201_01.jpg", "0010_c1s1_001301_01.jpg", "0011_c4s2_000301_02.jpg",
                  "0000_c1s1_000001_01.jpg", "-1_c1s1_000401_03.jpg", "-1_c3s1_000402_03.jpg"]


def make_market_style(folder: Path, write_images, train=MARKET_TRAIN, query=MARKET_QUERY,
                      gallery=MARKET_GALLERY) -> Path:
    write_images(folder / "bounding_box_train", train)
    write_images(folder / "query", query)
    write_images(folder / "bounding_box_test", gallery)
    return folder


@pytest.mark.parametrize("layout", ["market1501/Market-1501-v15.09.15", "Market-1501-v15.09.15",
                                    "market1501", ""])
def test_market1501_layouts(tmp_path, write_images, layout):
    make_market_style(tmp_path / layout if layout else tmp_path, write_images)
    data = datasets.load("market1501", tmp_path)
    assert isinstance(data, datasets.ReIDDataset)
    assert (len(data.train), len(data.query), len(data.gallery)) == (4, 2, 4)
    assert Path(data.root) == (tmp_path / layout if layout else tmp_path)
    assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in data.gallery)


def test_market1501_ids_and_cameras(tmp_path, write_images):
    make_market_style(tmp_path / "Market-1501-v15.09.15", write_images)
    data = datasets.load("market1501", tmp_path)
    # Train pids 2, 5, 7 relabelled in sorted order; cameras 0-based.
    by_name = {Path(r.path).name: (r.pid, r.camid) for r in data.train}
    assert by_name["0002_c1s1_000451_03.jpg"] == (0, 0)
    assert by_name["0005_c6s2_000201_02.jpg"] == (1, 5)
    assert by_name["0007_c3s1_000101_01.jpg"] == (2, 2)
    assert sorted(r.pid for r in data.query) == [10, 11]
    gallery_pids = sorted(r.pid for r in data.gallery)
    assert gallery_pids == [0, 10, 10, 11]  # distractor 0 kept, junk -1 dropped
    assert data.skipped == {"junk pid -1 in bounding_box_test": 2}
    assert data.num_train_pids == 3
    assert "skipped 2" in data.summary()


def test_market1501_bad_file_name(tmp_path, write_images):
    make_market_style(tmp_path, write_images)
    bad = write_images(tmp_path / "query", ["img_0001.jpg"])[0]
    with pytest.raises(DatasetFormatError) as err:
        datasets.load("market1501", tmp_path)
    assert err.value.path == str(bad)
    assert "_c(\\d+)" in str(err.value) and "0002_c1s1_000451_03.jpg" in str(err.value)


def test_market1501_camera_out_of_range(tmp_path, write_images):
    make_market_style(tmp_path, write_images, query=["0010_c7s1_001051_00.jpg"])
    with pytest.raises(DatasetFormatError, match="camera 7 out of range.*1..6"):
        datasets.load("market1501", tmp_path)


def test_market1501_missing_folders(tmp_path, write_images):
    with pytest.raises(DatasetFormatError, match="folder does not exist"):
        datasets.load("market1501", tmp_path / "nowhere")
    write_images(tmp_path / "Market-1501-v15.09.15" / "bounding_box_train", MARKET_TRAIN)
    with pytest.raises(DatasetFormatError, match="no Market-1501 layout.*query"):
        datasets.load("market1501", tmp_path)


def test_query_without_other_camera_match_warns(tmp_path, write_images):
    make_market_style(tmp_path, write_images,
                      query=MARKET_QUERY + ["0012_c1s1_000001_00.jpg", "0013_c2s1_000001_00.jpg"],
                      gallery=MARKET_GALLERY + ["0012_c1s1_000002_01.jpg"])
    with pytest.warns(UserWarning, match="2 of 4 query images have no gallery image"):
        datasets.load("market1501", tmp_path)


def test_unreadable_image_dropped_counted_and_warned(tmp_path, write_images):
    make_market_style(tmp_path, write_images)
    (tmp_path / "bounding_box_test" / "0011_c5s1_000001_01.jpg").write_bytes(b"not a jpeg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = datasets.load("market1501", tmp_path)  # without verification nothing is opened
    assert len(kept.gallery) == 5
    with pytest.warns(UserWarning, match="skipped 1 unreadable image.*0011_c5s1_000001_01.jpg"):
        data = datasets.load("market1501", tmp_path, verify_images=True)
    assert len(data.gallery) == 4
    assert data.skipped["unreadable gallery images"] == 1


@pytest.mark.parametrize("name,layout", [("dukemtmc_reid", "dukemtmc-reid/DukeMTMC-reID"),
                                         ("dukemtmc_reid", "DukeMTMC-reID"),
                                         ("occluded_duke", "Occluded_Duke")])
def test_duke_layouts_and_eight_cameras(tmp_path, write_images, name, layout):
    make_market_style(tmp_path / layout, write_images,
                      train=["0001_c2_f0046182.jpg", "0003_c8_f0001234.jpg"],
                      query=["0005_c1_f0000001.jpg"],
                      gallery=["0005_c8_f0000002.jpg", "0100_c3_f0000003.jpg"])
    data = datasets.load(name, tmp_path)
    assert data.name == name
    assert sorted((r.pid, r.camid) for r in data.train) == [(0, 1), (1, 7)]
    assert sorted(r.camid for r in data.gallery) == [2, 7]
    assert data.skipped == {}


def test_duke_camera_nine_rejected(tmp_path, write_images):
    make_market_style(tmp_path / "DukeMTMC-reID", write_images, train=["0001_c9_f0046182.jpg"])
    with pytest.raises(DatasetFormatError, match="1..8"):
        datasets.load("dukemtmc_reid", tmp_path)


MSMT_TRAIN = ["0000/0000_000_01_0303morning_0015_0.jpg 0",
              "0000/0000_001_05_0303morning_0016_0_ex.jpg 0",
              "0001/0001_000_15_0113noon_0100_1.jpg 1"]
MSMT_VAL = ["0002/0002_000_03_0114afternoon_0001_0.jpg 2"]
MSMT_QUERY = ["0000/0000_000_02_0302noon_0001_0.jpg 0", "0001/0001_000_04_0302noon_0002_0.jpg 1"]
MSMT_GALLERY = ["0000/0000_001_07_0302noon_0003_0.jpg 0", "0001/0001_001_09_0302noon_0004_0.jpg 1"]


def make_msmt_lists(folder: Path, write_images, train_dir="train", test_dir="test") -> Path:
    lists = {"list_train.txt": MSMT_TRAIN, "list_val.txt": MSMT_VAL,
             "list_query.txt": MSMT_QUERY, "list_gallery.txt": MSMT_GALLERY}
    for name, lines in lists.items():
        image_dir = folder / (train_dir if name in ("list_train.txt", "list_val.txt") else test_dir)
        write_images(image_dir, [line.split(" ")[0] for line in lines])
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("layout,dirs", [("msmt17/MSMT17_V1", ("train", "test")),
                                         ("msmt17/MSMT17_V2", ("mask_train_v2", "mask_test_v2")),
                                         ("MSMT17", ("train", "test"))])
def test_msmt17_list_layouts(tmp_path, write_images, layout, dirs):
    make_msmt_lists(tmp_path / layout, write_images, *dirs)
    data = datasets.load("msmt17", tmp_path)
    assert Path(data.root) == tmp_path / layout
    assert sorted((r.pid, r.camid) for r in data.train) == [(0, 0), (0, 4), (1, 14)]
    assert all(Path(r.path).is_file() and dirs[0] in r.path for r in data.train)
    assert sorted((r.pid, r.camid) for r in data.query) == [(0, 1), (1, 3)]
    assert sorted((r.pid, r.camid) for r in data.gallery) == [(0, 6), (1, 8)]


def test_msmt17_use_val_and_v1_first(tmp_path, write_images):
    make_msmt_lists(tmp_path / "MSMT17_V1", write_images)
    make_msmt_lists(tmp_path / "MSMT17_V2", write_images, "mask_train_v2", "mask_test_v2")
    data = datasets.load("msmt17", tmp_path, use_val=True)
    assert data.root.endswith("MSMT17_V1")
    assert data.num_train_pids == 3 and len(data.train) == 4


def test_msmt17_market_style(tmp_path, write_images):
    make_market_style(tmp_path / "msmt17" / "MSMT17_V1", write_images,
                      train=["0781_c11_0015.jpg", "0002_c15_0001.jpg"],
                      query=["1000_c3_0001.jpg"], gallery=["1000_c12_0002.jpg"])
    data = datasets.load("msmt17", tmp_path)
    assert sorted((r.pid, r.camid) for r in data.train) == [(0, 14), (1, 10)]


def test_msmt17_bad_list_line(tmp_path, write_images):
    folder = make_msmt_lists(tmp_path / "MSMT17_V1", write_images)
    (folder / "list_query.txt").write_text("0000/0000_000_02_0302noon_0001_0.jpg\n")
    with pytest.raises(DatasetFormatError, match="list_query.txt: line 1 does not parse"):
        datasets.load("msmt17", tmp_path)


def test_msmt17_missing_layout(tmp_path):
    with pytest.raises(DatasetFormatError, match="no MSMT17 layout"):
        datasets.load("msmt17", tmp_path)
