"""The LUPerson-TA-style manifest (``luperson_ta``) and the unlabeled ``image_folder`` loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from valpat_keras import datasets
from valpat_keras.data.errors import DatasetFormatError

NAMES = ["Female", "Hat", "Backpack"]


def write_manifest(folder: Path, write_images, lines: list[dict], header: dict | None = None,
                   name: str = "manifest.jsonl") -> Path:
    write_images(folder, [line["image"] for line in lines if "image" in line])
    rows = ([header] if header else []) + lines
    (folder / name).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder / name


LINES = [{"image": "images/000001.jpg", "captions": ["a woman in a red coat"],
          "attributes": [1, 0, 0]},
         {"image": "images/000002.jpg", "captions": ["a man", "a man with a hat"],
          "attributes": {"Hat": 1}}]
HEADER = {"format": "valpat-pretrain-v1", "attribute_names": NAMES}


def test_manifest_with_header(tmp_path, write_images):
    write_manifest(tmp_path, write_images, LINES, HEADER)
    data = datasets.load("luperson_ta", tmp_path)
    assert isinstance(data, datasets.PretrainDataset)
    assert data.attribute_names == NAMES and data.has_captions and data.has_attributes
    np.testing.assert_array_equal(data.records[0].attributes, [1, 0, 0])
    np.testing.assert_array_equal(data.records[1].attributes, [-1, 1, -1])  # missing -> -1
    assert data.records[1].captions == ("a man", "a man with a hat")
    assert Path(data.records[0].path) == tmp_path / "images/000001.jpg"


def test_manifest_file_path_and_side_file(tmp_path, write_images):
    path = write_manifest(tmp_path, write_images, LINES, name="lup.jsonl")
    (tmp_path / "attribute_names.txt").write_text("\n".join(NAMES) + "\n")
    data = datasets.load("luperson_ta", path)
    assert data.attribute_names == NAMES and data.root == str(path)


def test_manifest_errors(tmp_path, write_images):
    with pytest.raises(DatasetFormatError, match="manifest not found"):
        datasets.load("luperson_ta", tmp_path)
    write_manifest(tmp_path, write_images, LINES)  # list form and no names anywhere
    with pytest.raises(DatasetFormatError, match="line 1: list-form attributes without names"):
        datasets.load("luperson_ta", tmp_path)
    write_manifest(tmp_path, write_images, [{"image": "a.jpg", "attributes": [1, 0]}], HEADER)
    with pytest.raises(DatasetFormatError, match="line 2: 2 attribute values.*3 values"):
        datasets.load("luperson_ta", tmp_path)
    write_manifest(tmp_path, write_images, [{"captions": ["x"]}], HEADER)
    with pytest.raises(DatasetFormatError, match="line 2 has no image path"):
        datasets.load("luperson_ta", tmp_path)
    write_manifest(tmp_path, write_images, LINES, {"format": "other-v9"})
    with pytest.raises(DatasetFormatError, match="unknown format"):
        datasets.load("luperson_ta", tmp_path)


def test_image_folder_recursive_and_unreadable(tmp_path, write_images):
    write_images(tmp_path / "lup", ["es/madrid/00000001_0001.jpg", "es/madrid/00000002_0001.jpg",
                                    "fr/paris/00000001_0001.png"])
    (tmp_path / "lup/notes.txt").write_text("not an image")
    (tmp_path / "lup/fr/broken.jpg").write_bytes(b"\xff\xd8 truncated")
    data = datasets.load("image_folder", tmp_path / "lup")
    assert len(data.records) == 4 and not data.has_captions and not data.has_attributes
    with pytest.warns(UserWarning, match="broken.jpg"):
        data = datasets.load("image_folder", tmp_path / "lup", verify_images=True)
    assert len(data.records) == 3
    assert data.skipped == {"files that are not images in lup, e.g. notes.txt": 1,
                            "unreadable images": 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no images found"):
        datasets.load("image_folder", tmp_path / "empty")


def test_manifest_dict_attributes_name_themselves(tmp_path, write_images):
    lines = [{"image": "a.jpg", "captions": ["x"], "attributes": {"Hat": 1, "Female": 0}},
             {"image": "b.jpg", "captions": ["y"], "attributes": {"Backpack": 1}}]
    write_manifest(tmp_path, write_images, lines)
    data = datasets.load("luperson_ta", tmp_path)
    assert data.attribute_names == ["Hat", "Female", "Backpack"]
    np.testing.assert_array_equal(data.records[1].attributes, [-1, -1, 1])
