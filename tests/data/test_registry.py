"""The dataset registry and the shared loader helpers (`check_images`, layout search)."""

from __future__ import annotations

import pytest

from valpat_keras import datasets
from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.loaders import check_images
from valpat_keras.data.loaders._common import find_layout, list_images
from valpat_keras.data.registry import _REGISTRY

BUILTIN = {"market1501": "reid", "dukemtmc_reid": "reid", "occluded_duke": "reid",
           "msmt17": "reid", "pa100k": "attributes", "peta": "attributes", "rap": "attributes",
           "cuhk_pedes": "text", "icfg_pedes": "text", "rstpreid": "text",
           "luperson_ta": "pretraining", "image_folder": "pretraining", "manifest": "reid",
           "folder": "reid"}


def test_available_lists_every_builtin_loader():
    assert set(BUILTIN) <= set(datasets.available())
    for name, kind in BUILTIN.items():
        assert name in datasets.available(kind)
        assert datasets.get_entry(name).description


def test_user_dataset_registered_with_the_decorator(tmp_path):
    @datasets.register_dataset("my_tiny_reid", kind="reid")
    def load_my_tiny_reid(root, scale=1):
        """My own tiny set."""
        record = datasets.ReIDRecord(str(tmp_path / "a.jpg"), 0, 0)
        return datasets.ReIDDataset("my_tiny_reid", root, [record] * scale, [], [])

    try:
        assert "my_tiny_reid" in datasets.available("reid")
        data = datasets.load("my_tiny_reid", tmp_path, scale=2)
        assert len(data.train) == 2 and data.root == str(tmp_path)
        assert datasets.get_entry("my_tiny_reid").description == "My own tiny set."
    finally:
        _REGISTRY.pop("my_tiny_reid", None)
    with pytest.raises(KeyError, match="unknown dataset 'my_tiny_reid'"):
        datasets.load("my_tiny_reid", tmp_path)


def test_check_images_counts_and_reports(tmp_path, write_image):
    good = [write_image(tmp_path / "a.jpg"), write_image(tmp_path / "b.png")]
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    skipped = check_images([*good, tmp_path / "bad.jpg", tmp_path / "missing.jpg"])
    assert len(skipped) == 2
    assert skipped.reasons[1] == "missing" and skipped.paths[0].endswith("bad.jpg")
    assert "skipped 2 unreadable image(s)" in skipped.report()
    assert len(check_images(good)) == 0


def test_layout_search_and_listing(tmp_path, write_image):
    write_image(tmp_path / "x" / "deep" / "b.JPG")
    write_image(tmp_path / "x" / "a.png")
    (tmp_path / "x" / "._a.png").write_bytes(b"macOS resource fork")
    assert [p.name for p in list_images(tmp_path / "x")] == ["a.png"]
    assert [p.name for p in list_images(tmp_path / "x", recursive=True)] == ["a.png", "b.JPG"]
    assert find_layout(tmp_path, ("y", "x"), (("deep", "other"),), "test") == tmp_path / "x"
    with pytest.raises(DatasetFormatError, match="no test layout.*deep.*<root>/y, <root>/x"):
        find_layout(tmp_path, ("y", "x"), ("deep", "a.png", "c"), "test")
