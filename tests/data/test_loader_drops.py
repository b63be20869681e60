"""Nothing lost silently: every loader counts what it leaves out, and refuses what it cannot read.

Broken trees in the real layouts are built in ``tmp_path``; each test asserts the message (file,
row, column, value or name), the counts in ``skipped`` and the line ``summary()`` prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from valpat_keras import datasets
from valpat_keras.cli._transfer_args import load_dataset
from valpat_keras.data.attribute_names import PA100K_ATTRIBUTES, PETA_EVAL_ATTRIBUTES
from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.registry import _REGISTRY
from valpat_keras.errors import InputError


def _cell(strings: list[str]) -> np.ndarray:
    array = np.empty((len(strings), 1), dtype=object)
    array.ravel()[:] = strings
    return array


# --- image listings -------------------------------------------------------------------------

def test_market_reads_every_image_extension_and_counts_the_other_files(tmp_path, write_images):
    root = tmp_path / "Market-1501-v15.09.15"
    write_images(root / "bounding_box_train", ["0002_c1s1_000451_03.JPG", "0002_c2s1_000551_01.png",
                                               "0007_c3s1_000101_01.jpeg"])
    write_images(root / "query", ["0010_c1s1_001051_00.Jpg"])
    write_images(root / "bounding_box_test", ["0010_c2s1_001201_01.PNG", "-1_c1s1_000401_03.jpg"])
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / "bounding_box_train" / "._0002_c1s1_000451_03.JPG").write_bytes(b"fork")
    (root / "bounding_box_test" / "readme.txt").write_text("notes")
    write_images(root / "bounding_box_test" / "extra", ["0010_c3s1_000001_01.jpg"])

    data = datasets.load("market1501", tmp_path)
    assert [Path(r.path).name for r in data.train] == [
        "0002_c1s1_000451_03.JPG", "0002_c2s1_000551_01.png", "0007_c3s1_000101_01.jpeg"]
    assert len(data.query) == 1 and len(data.gallery) == 1
    assert data.skipped == {
        "files that are not images in bounding_box_train, e.g. ._0002_c1s1_000451_03.JPG": 2,
        "files that are not images in bounding_box_test, e.g. readme.txt": 1,
        "sub-folders not searched in bounding_box_test, e.g. extra": 1,
        "junk pid -1 in bounding_box_test": 1,
    }
    summary = data.summary()
    assert "skipped 2 (files that are not images in bounding_box_train" in summary
    assert "skipped 1 (sub-folders not searched in bounding_box_test, e.g. extra)" in summary


def test_image_folder_reads_every_extension_in_any_case(tmp_path, write_images):
    write_images(tmp_path / "lup", ["a/1.JPEG", "a/2.Png", "b/3.jpg"])
    Image.new("RGB", (4, 8)).save(tmp_path / "lup" / "b" / "4.BMP", format="BMP")
    Image.new("RGB", (4, 8)).save(tmp_path / "lup" / "b" / "5.webp", format="WEBP")
    (tmp_path / "lup" / "a" / "list.csv").write_text("x")
    (tmp_path / "lup" / ".DS_Store").write_bytes(b"\0")
    data = datasets.load("image_folder", tmp_path / "lup", verify_images=True)
    assert sorted(Path(r.path).name for r in data.records) == ["1.JPEG", "2.Png", "3.jpg",
                                                                "4.BMP", "5.webp"]
    assert data.skipped == {"files that are not images in lup, e.g. .DS_Store": 2}


# --- attribute labels -----------------------------------------------------------------------

def _pa100k(folder: Path, write_images, bad: tuple[str, int, int, float] | None = None) -> None:
    mat = {"attributes": _cell(list(PA100K_ATTRIBUTES))}
    start = 1
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        names = [f"{i:06d}.jpg" for i in range(start, start + n)]
        start += n
        labels = np.zeros((n, 26), dtype=np.float64)
        labels[:, ::3] = 1
        if bad and bad[0] == split:
            labels[bad[1], bad[2]] = bad[3]
        mat[f"{split}_images_name"] = _cell(names)
        mat[f"{split}_label"] = labels
        write_images(folder / "data", names)
    scipy.io.savemat(folder / "annotation.mat", mat)


@pytest.mark.parametrize("value, shown", [(2, "is 2"), (-1, "is -1"), (np.nan, "is nan")])
def test_pa100k_label_outside_0_1_names_file_row_column_and_value(tmp_path, write_images,
                                                                   value, shown):
    _pa100k(tmp_path, write_images, bad=("test", 1, 7, value))
    with pytest.raises(DatasetFormatError) as err:
        datasets.load("pa100k", tmp_path)
    assert err.value.path == str(tmp_path / "annotation.mat")
    assert err.value.field == "test_label"
    # Row 2 of the test split is image 000006.jpg; column 8 is "Hat".
    assert f"row 2 (000006.jpg), column 8 (Hat) {shown}; 1 value(s) out of range" in str(err.value)
    assert "expected labels 0, 1" in str(err.value)


def test_pa100k_in_range_labels_load_unchanged(tmp_path, write_images):
    _pa100k(tmp_path, write_images)
    data = datasets.load("pa100k", tmp_path)
    assert data.skipped == {}
    np.testing.assert_array_equal(data.test[1].attributes, np.tile([1, 0, 0], 9)[:26])


def test_peta_label_outside_0_1_is_an_error(tmp_path, write_images):
    n, names = 4, list(PETA_EVAL_ATTRIBUTES)
    data = np.zeros((n, 4 + len(names)), dtype=np.float64)
    data[:, 0] = np.arange(1, n + 1)
    data[2, 4 + 5] = 2
    part = {"train": np.array([[1.0], [2.0]]), "val": np.array([[3.0]]),
            "test": np.array([[4.0]])}
    partitions = np.empty((1, 1), dtype=object)
    partitions[0, 0] = part
    peta = {"data": data, "attribute": _cell(names),
            "selected_attribute": np.arange(5, 40, dtype=np.float64)[None, :],
            "partion_attribute": partitions}
    scipy.io.savemat(tmp_path / "PETA.mat", {"peta": peta})
    write_images(tmp_path / "images", [f"{i:05d}.png" for i in range(1, n + 1)])
    with pytest.raises(DatasetFormatError) as err:
        datasets.load("peta", tmp_path)
    assert "row 3 (00003.png), column 6 (carryingOther) is 2" in str(err.value)
    assert err.value.field.startswith("peta.data")


def test_rap_uncertain_labels_are_counted_and_other_values_refused(tmp_path, write_images):
    n = 6
    names = [f"attr{i}" for i in range(52)] + ["viewpoint"]
    data = np.zeros((n, 53), dtype=np.float64)
    data[:, :52] = np.random.default_rng(0).integers(0, 2, (n, 52))
    data[:, 52] = [1, 2, 3, 4, 1, 2]  # the viewpoint: not a label column
    data[0, 3] = data[4, 10] = data[5, 10] = 2  # uncertain
    part = {"train_index": np.arange(1, 4, dtype=np.float64)[None, :],
            "val_index": np.array([[4.0]]), "test_index": np.array([[5.0, 6.0]])}
    partitions = np.empty((1, 1), dtype=object)
    partitions[0, 0] = part
    images = [f"img{i}.png" for i in range(n)]
    struct = {"name": _cell(images), "data": data, "attribute": _cell(names),
              "selected_attribute": np.arange(1, 52, dtype=np.float64)[None, :],
              "partition_attribute": partitions}
    (tmp_path / "RAP_annotation").mkdir()
    mat_path = tmp_path / "RAP_annotation" / "RAP_annotation.mat"
    scipy.io.savemat(mat_path, {"RAP_annotation": struct})
    write_images(tmp_path / "RAP_dataset", images)
    loaded = datasets.load("rap", tmp_path)
    assert loaded.skipped == {"uncertain labels (2) read as unknown (-1)": 3,
                              "non-label columns left out (viewpoint)": 1}
    assert loaded.train[0].attributes[3] == -1 and loaded.test[1].attributes[10] == -1
    assert "skipped 3 (uncertain labels (2) read as unknown (-1))" in loaded.summary()


# --- manifests: attribute names and values --------------------------------------------------

def _csv(folder: Path, write_images, text: str) -> Path:
    write_images(folder / "images", ["a.jpg", "b.jpg", "c.jpg"])
    (folder / "manifest.csv").write_text(text)
    return folder / "manifest.csv"


def test_misspelt_csv_attribute_column_names_file_name_and_closest(tmp_path, write_images):
    path = _csv(tmp_path, write_images,
                "path,pid,attr:Female,attr:Femal,attr:Hat\nimages/a.jpg,1,1,,0\n"
                "images/b.jpg,2,,1,1\n")
    with pytest.raises(DatasetFormatError) as err:
        datasets.load("manifest", tmp_path, kind="attributes")
    message = str(err.value)
    assert err.value.path == str(path) and err.value.field == "attr:Femal"
    assert "header: unknown attribute name 'Femal'; closest valid name(s): Female" in message
    assert "attribute_names.txt" in message


def test_misspelt_jsonl_attribute_names_the_line(tmp_path, write_images):
    write_images(tmp_path / "images", ["a.jpg", "b.jpg"])
    rows = [{"path": "images/a.jpg", "attributes": {"Female": 1, "Backpack": 0}},
            {"path": "images/b.jpg", "attributes": {"female": 1}}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DatasetFormatError, match=r"line 2: unknown attribute name 'female'; "
                                                 r"closest valid name\(s\): Female"):
        datasets.load("manifest", tmp_path, kind="attributes")


def test_declared_attribute_names_refuse_other_names(tmp_path, write_images):
    _csv(tmp_path, write_images, "path,attr:Umbrela,attr:Scarf\nimages/a.jpg,1,0\n")
    (tmp_path / "attribute_names.txt").write_text("Umbrella\nScarf\nGloves\n")
    with pytest.raises(DatasetFormatError, match="unknown attribute name 'Umbrela'; closest "
                                                 r"valid name\(s\): Umbrella") as err:
        datasets.load("manifest", tmp_path, kind="attributes")
    assert "from the declared attribute names" in str(err.value)
    (tmp_path / "attribute_names.txt").write_text("Umbrela\nScarf\nGloves\n")
    data = datasets.load("manifest", tmp_path, kind="attributes")
    assert data.attribute_names == ["Umbrela", "Scarf", "Gloves"]
    np.testing.assert_array_equal(data.train[0].attributes, [1, 0, -1])
    assert data.skipped == {"attribute labels -1, empty or not given (unknown)": 1}


def test_a_vocabulary_of_ones_own_is_not_taken_for_misspellings(tmp_path, write_images):
    # "Hats" is close to PA-100K's "Hat", but this manifest uses no public name at all.
    _csv(tmp_path, write_images, "path,attr:Hats,attr:Umbrella\nimages/a.jpg,1,\n"
                                 "images/b.jpg,0,-1\n")
    data = datasets.load("manifest", tmp_path, kind="attributes")
    assert data.attribute_names == ["Hats", "Umbrella"]
    assert data.skipped == {"attribute labels -1, empty or not given (unknown)": 2}


def test_manifest_attribute_value_out_of_range_names_line_column_and_value(tmp_path,
                                                                           write_images):
    _csv(tmp_path, write_images, "path,attr:Female,attr:Hat\nimages/a.jpg,1,0\n"
                                 "images/b.jpg,0,3\n")
    with pytest.raises(DatasetFormatError) as err:
        datasets.load("manifest", tmp_path, kind="attributes")
    assert "line 3: attribute Hat is 3" in str(err.value) and err.value.field == "attr:Hat"


# --- captions -------------------------------------------------------------------------------

def test_blank_captions_are_counted_and_captionless_rows_dropped(tmp_path, write_images):
    _csv(tmp_path, write_images, "path,pid,caption,caption_2\n"
                                 "images/a.jpg,1,a man in black,   \n"
                                 "images/b.jpg,1, ,\t\n"
                                 "images/c.jpg,2,a woman,a woman with a bag\n")
    data = datasets.load("manifest", tmp_path, kind="text")
    assert [r.captions for r in data.train] == [("a man in black",),
                                                ("a woman", "a woman with a bag")]
    assert data.skipped == {"blank captions in train": 3, "train images without a caption": 1}
    assert "skipped 1 (train images without a caption)" in data.summary()


def test_pretraining_manifest_blank_captions_names_and_values(tmp_path, write_images):
    write_images(tmp_path / "images", ["1.jpg", "2.jpg", "3.jpg"])
    header = {"format": "valpat-pretrain-v1", "attribute_names": ["Female", "Hat"]}
    lines = [header,
             {"image": "images/1.jpg", "captions": ["a woman", ""], "attributes": [1, -1]},
             {"image": "images/2.jpg", "captions": ["  "], "attributes": [0, 0]},
             {"image": "images/3.jpg", "attributes": {"Hat": 1}}]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines))
    data = datasets.load("luperson_ta", tmp_path)
    assert [Path(r.path).name for r in data.records] == ["1.jpg", "3.jpg"]
    assert data.records[0].captions == ("a woman",) and data.records[1].captions == ()
    assert data.skipped == {"blank captions in the manifest": 2,
                            "images whose captions are all blank": 1,
                            "attribute labels -1 or not given (unknown)": 2}
    lines[3] = {"image": "images/3.jpg", "attributes": {"Hta": 1}}
    manifest.write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(DatasetFormatError, match=r"line 4: unknown attribute name 'Hta'; "
                                                 r"closest valid name\(s\): Hat"):
        datasets.load("luperson_ta", tmp_path)
    lines[3] = {"image": "images/3.jpg", "attributes": [1, 2]}
    manifest.write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(DatasetFormatError, match=r"line 4, column 2 \(Hat\): attribute value 2"):
        datasets.load("luperson_ta", tmp_path)


# --- options owned by the registry ----------------------------------------------------------

def test_unused_options_are_named_and_a_wrong_kind_refused(tmp_path, write_images):
    _pa100k(tmp_path, write_images)
    data = datasets.load("pa100k", tmp_path, split=2, kind="attributes", seed=None)
    assert data.ignored_options == {"split": 2}
    assert "ignored options: split=2 (pa100k does not use them)" in data.summary()
    with pytest.raises(InputError, match="pa100k is a dataset of kind 'attributes', not 'reid'.*market1501"):
        datasets.load("pa100k", tmp_path, kind="reid")

    @datasets.register_dataset("tiny_own_reid", kind="reid")
    def load_tiny_own_reid(root, scale=1):
        """A loader without **options."""
        return datasets.ReIDDataset("tiny_own_reid", root, [], [], [])

    try:
        own = datasets.load("tiny_own_reid", tmp_path, scale=2, verify_images=True)
        assert own.ignored_options == {"verify_images": True}
    finally:
        _REGISTRY.pop("tiny_own_reid", None)


def _args(data: str, out: Path, command: str = "evaluate") -> argparse.Namespace:
    return argparse.Namespace(data=data, out=str(out), command=command)


def test_load_dataset_for_evaluate_checks_user_images_and_generates_synthped(tmp_path,
                                                                           write_images):
    root = tmp_path / "market"
    write_images(root / "bounding_box_train", ["0002_c1s1_000451_03.jpg"])
    write_images(root / "query", ["0010_c1s1_001051_00.jpg"])
    write_images(root / "bounding_box_test", ["0010_c2s1_001201_01.jpg",
                                              "0010_c3s1_001201_01.jpg"])
    (root / "bounding_box_test" / "0010_c3s1_001201_01.jpg").write_bytes(b"\xff\xd8 half")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        data = load_dataset(_args(f"market1501:{root}", tmp_path / "run"), "market1501")
    assert len(data.gallery) == 1 and data.skipped == {"unreadable gallery images": 1}
    assert data.ignored_options == {}

    synthped = load_dataset(_args("synthped", tmp_path / "run"), "market1501")
    written = tmp_path / "run" / "synthped" / "synthped.json"
    assert synthped.name == "market1501" and written.is_file()
    stamp = written.stat().st_mtime_ns
    again = load_dataset(_args("synthped", tmp_path / "run"), "market1501")
    assert written.stat().st_mtime_ns == stamp  # reused, not generated again
    assert [r.path for r in again.gallery] == [r.path for r in synthped.gallery]

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(InputError, match="holds no synthped.json"):
        load_dataset(_args(f"synthped:{tmp_path / 'mine'}", tmp_path / "run"), "market1501")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"
