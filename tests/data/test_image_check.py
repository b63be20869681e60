"""`check_images`: full decoding, once, cached by (path, size, mtime), in parallel."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from valpat_keras.data.loaders import _common
from valpat_keras.data.loaders._common import check_images


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("VALPAT_CACHE", str(folder))
    return folder


@pytest.fixture
def decodes(monkeypatch):
    """The list of files actually decoded (not answered from the cache)."""
    seen = []
    decode = _common._decode_problem

    def counting(path):
        seen.append(path)
        return decode(path)

    monkeypatch.setattr(_common, "_decode_problem", counting)
    return seen


def _truncated_jpeg(path):
    Image.effect_noise((32, 64), 60).convert("RGB").save(path, format="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as image:  # the header alone still reads
        assert image.size == (32, 64)
    return path


def test_a_truncated_jpeg_is_reported_with_its_name(tmp_path, cache, write_image):
    good = write_image(tmp_path / "good.jpg")
    bad = _truncated_jpeg(tmp_path / "half.jpg")
    skipped = check_images([good, bad, tmp_path / "gone.jpg"])
    assert skipped.paths == [str(bad), str(tmp_path / "gone.jpg")]
    assert skipped.reasons[0].startswith("unreadable: OSError (image file is truncated")
    assert skipped.reasons[1] == "missing"
    assert "skipped 2 unreadable image(s)" in skipped.report() and "half.jpg" in skipped.report()


def test_a_format_the_pipelines_cannot_decode_is_reported(tmp_path, cache):
    path = tmp_path / "scan.jpg"
    Image.new("RGB", (4, 8)).save(path, format="TIFF")
    assert check_images([path]).reasons == [
        "unsupported format TIFF (the input pipelines decode JPEG, PNG, GIF, BMP and WebP)"]


def test_a_second_check_decodes_only_new_or_changed_files(tmp_path, cache, decodes,
                                                          write_images):
    paths = write_images(tmp_path, [f"{i}.jpg" for i in range(5)])
    bad = _truncated_jpeg(tmp_path / "half.jpg")
    assert len(check_images([*paths, bad], workers=3)) == 1
    assert sorted(decodes) == sorted(str(p) for p in [*paths, bad])
    assert (cache / "image_checks.sqlite").is_file()

    decodes.clear()
    again = check_images([*paths, bad])
    assert decodes == [] and again.paths == [str(bad)]  # the failure is cached too

    os.utime(paths[0], ns=(0, 10**9))  # touched: checked again
    Image.new("RGB", (4, 8)).save(bad, format="JPEG")  # repaired: checked again, now good
    decodes.clear()
    assert len(check_images([*paths, bad])) == 0
    assert sorted(decodes) == sorted([str(paths[0]), str(bad)])


def test_an_empty_cache_variable_switches_the_cache_off(tmp_path, monkeypatch, decodes,
                                                       write_image):
    monkeypatch.setenv("VALPAT_CACHE", "")
    path = write_image(tmp_path / "a.jpg")
    check_images([path])
    check_images([path])
    assert decodes == [str(path), str(path)]
    assert _common.cache_dir() is None


def test_an_unwritable_cache_folder_is_not_used(tmp_path, monkeypatch, write_image):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VALPAT_CACHE", str(blocker / "cache"))
    assert len(check_images([write_image(tmp_path / "a.jpg")])) == 0


def test_loaders_drop_and_count_a_truncated_image(tmp_path, cache, write_images):
    from valpat_keras import datasets

    root = tmp_path / "Market-1501-v15.09.15"
    write_images(root / "bounding_box_train", ["0002_c1s1_000451_03.jpg"])
    write_images(root / "query", ["0010_c1s1_001051_00.jpg"])
    write_images(root / "bounding_box_test", ["0010_c2s1_001201_01.jpg"])
    bad = _truncated_jpeg(root / "bounding_box_test" / "0010_c3s1_001301_01.jpg")
    with pytest.warns(UserWarning, match=r"market1501 gallery: skipped 1 unreadable.*0010_c3s1"):
        data = datasets.load("market1501", tmp_path, verify_images=True)
    assert data.skipped == {"unreadable gallery images": 1}
    assert [r.path for r in data.gallery] == [str(root / "bounding_box_test" /
                                                  "0010_c2s1_001201_01.jpg")]
    assert str(bad) not in {r.path for r in data.gallery}
