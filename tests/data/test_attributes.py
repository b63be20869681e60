"""PA-100K, PETA and RAP v1/v2 loaders on tiny ``.mat`` files written in the real layouts.

Each writer is checked against the indexing the reference converters (Rethinking_of_PAR) use on
the real files, so the loader is tested on files that read back the way real downloads do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from valpat_keras import datasets
from valpat_keras.data.attribute_names import PA100K_ATTRIBUTES, PETA_EVAL_ATTRIBUTES
from valpat_keras.data.errors import DatasetFormatError


def cell(strings: list[str], row: bool = False) -> np.ndarray:
    """A MATLAB cell array of strings (N x 1, or 1 x N)."""
    array = np.empty((1, len(strings)) if row else (len(strings), 1), dtype=object)
    array.ravel()[:] = strings
    return array


def structs(items: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """A MATLAB cell array whose elements are 1x1 structs."""
    array = np.empty(shape, dtype=object)
    for i, item in enumerate(items):
        array.ravel()[i] = item
    return array


# --- PA-100K -----------------------------------------------------------------------------

def write_pa100k(folder: Path, write_images, drop_key: str | None = None,
                 official: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = {"train": 4, "val": 2, "test": 2}
    mat = {"attributes": cell(list(PA100K_ATTRIBUTES))}
    start = 1
    for split, n in sizes.items():
        names = [f"{i:06d}.jpg" for i in range(start, start + n)]
        start += n
        mat[f"{split}_images_name"] = cell(names)
        mat[f"{split}_label"] = rng.integers(0, 2, (n, 26)).astype(np.uint8)
        write_images(folder / ("release_data/release_data" if official else "data"), names)
    if drop_key:
        del mat[drop_key]
    annotation = folder / ("annotation/annotation.mat" if official else "annotation.mat")
    annotation.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(annotation, mat)
    return mat


def test_pa100k_writer_reads_like_the_real_file(tmp_path, write_images):
    write_pa100k(tmp_path, write_images)
    mat = scipy.io.loadmat(tmp_path / "annotation/annotation.mat")
    assert mat["train_images_name"][1][0][0] == "000002.jpg"
    assert mat["attributes"][0][0][0] == "Female"
    assert mat["train_label"].shape == (4, 26) and mat["train_label"].dtype == np.uint8


@pytest.mark.parametrize("official", [True, False])
def test_pa100k(tmp_path, write_images, official):
    written = write_pa100k(tmp_path / "PA-100K", write_images, official=official)
    data = datasets.load("pa100k", tmp_path)
    assert isinstance(data, datasets.AttributeDataset)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 2)
    assert data.attribute_names == list(PA100K_ATTRIBUTES)
    assert data.eval_indices == list(range(26))
    assert Path(data.val[1].path).name == "000006.jpg" and Path(data.val[1].path).is_file()
    assert data.train[2].attributes.dtype == np.int8
    np.testing.assert_array_equal(data.test[0].attributes, written["test_label"][0])


def test_pa100k_missing_key(tmp_path, write_images):
    write_pa100k(tmp_path, write_images, drop_key="val_label")
    with pytest.raises(DatasetFormatError) as err:
        datasets.load("pa100k", tmp_path)
    assert err.value.path.endswith("annotation.mat") and err.value.field == "val_label"
    assert "missing key 'val_label'" in str(err.value)


def test_pa100k_missing_images_folder_or_layout(tmp_path, write_images):
    write_pa100k(tmp_path / "PA-100K", write_images)
    (tmp_path / "PA-100K/release_data").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetFormatError, match="no PA-100K image folder found"):
        datasets.load("pa100k", tmp_path)
    with pytest.raises(DatasetFormatError, match="no PA-100K layout"):
        datasets.load("pa100k", tmp_path / "elsewhere")


# --- PETA --------------------------------------------------------------------------------

PETA_NAMES = list(PETA_EVAL_ATTRIBUTES) + ["upperBodyBlack", "upperBodyBlue", "lowerBodyBlack",
                                           "hairBlack", "personalFemale"]


def write_peta(folder: Path, write_images, fields: tuple[str, ...] | None = None) -> np.ndarray:
    n = 12
    rng = np.random.default_rng(1)
    data = np.zeros((n, 4 + len(PETA_NAMES)), dtype=np.uint16)
    data[:, 0] = np.arange(1, n + 1)
    data[:, 1] = np.arange(1, n + 1) // 2 + 1
    data[:, 2] = 1
    data[:, 4:] = rng.integers(0, 2, (n, len(PETA_NAMES)))
    partitions = []
    for split in range(5):
        order = np.random.default_rng(split).permutation(n) + 1
        partitions.append({"train": order[:6, None].astype(np.float64),
                           "val": order[6:8, None].astype(np.float64),
                           "test": order[8:, None].astype(np.float64)})
    peta = {"data": data, "attribute": cell(PETA_NAMES),
            "selected_attribute": np.arange(5, 40, dtype=np.float64)[None, :],
            "partion_attribute": structs(partitions, (5, 1))}
    if fields is not None:
        peta = {k: v for k, v in peta.items() if k in fields}
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "PETA.mat", {"peta": peta})
    write_images(folder / "images", [f"{i:05d}.png" for i in range(1, n + 1)])
    return data


def test_peta_writer_reads_like_the_real_file(tmp_path, write_images):
    data = write_peta(tmp_path, write_images)
    peta = scipy.io.loadmat(tmp_path / "PETA.mat")
    # Rethinking_of_PAR format_peta.py indexing:
    assert [i[0][0] for i in peta["peta"][0][0][1]][:2] == PETA_NAMES[:2]
    np.testing.assert_array_equal(peta["peta"][0][0][0][:, 4:], data[:, 4:])
    train = peta["peta"][0][0][3][2][0][0][0][0][:, 0] - 1
    assert train.shape == (6,) and set(train) <= set(range(12))


@pytest.mark.parametrize("split", [0, 3])
def test_peta(tmp_path, write_images, split):
    raw = write_peta(tmp_path / "PETA", write_images)
    data = datasets.load("peta", tmp_path, split=split)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 4)
    assert data.split == split
    assert data.eval_indices == list(range(35))
    assert data.attribute_names == list(PETA_EVAL_ATTRIBUTES)
    assert len(data.all_attribute_names) == 40
    order = np.random.default_rng(split).permutation(12)
    first = data.train[0]
    assert Path(first.path).name == f"{order[0] + 1:05d}.png" and Path(first.path).is_file()
    np.testing.assert_array_equal(first.attributes, raw[order[0], 4:])


def test_peta_missing_field_and_bad_split(tmp_path, write_images):
    write_peta(tmp_path, write_images, fields=("data", "attribute", "selected_attribute"))
    with pytest.raises(DatasetFormatError) as err:
        datasets.load("peta", tmp_path)
    assert err.value.path.endswith("PETA.mat") and err.value.field == "partion_attribute"
    write_peta(tmp_path, write_images)
    with pytest.raises(DatasetFormatError, match="split 5 requested but 5 partitions"):
        datasets.load("peta", tmp_path, split=5)
    scipy.io.savemat(tmp_path / "PETA.mat", {"other": np.zeros(2)})
    with pytest.raises(DatasetFormatError, match="missing key 'peta'"):
        datasets.load("peta", tmp_path)


# --- RAP v1 / v2 -------------------------------------------------------------------------

def write_rap_v1(folder: Path, write_images) -> np.ndarray:
    n, num_attributes = 10, 55
    labels = np.random.default_rng(2).integers(0, 2, (n, num_attributes)).astype(np.float64)
    images = [f"CAM01_2014-02-15_20140215161032-20140215162620_tarid{i}_frame218_line1.png"
              for i in range(n)]
    partitions = [{"trainval": (np.arange(n)[(np.arange(n) + s) % 5 != 0] + 1)[None, :]
                   .astype(np.float64),
                   "test": (np.arange(n)[(np.arange(n) + s) % 5 == 0] + 1)[None, :]
                   .astype(np.float64)} for s in range(5)]
    struct = {"partion": structs(partitions, (5, 1)), "data": labels,
              "attribute_chinese": cell([f"cn{i}" for i in range(num_attributes)]),
              "attribute_eng": cell([f"attr{i}" for i in range(num_attributes)]),
              "position": np.zeros((n, 4)), "imagesname": cell(images),
              "attribute_exp": cell([f"attr{i}" for i in range(51)])}
    (folder / "RAP_annotation").mkdir(parents=True)
    scipy.io.savemat(folder / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": struct})
    write_images(folder / "RAP_dataset", images)
    return labels


def write_rap_v2(folder: Path, write_images) -> np.ndarray:
    n = 12
    rng = np.random.default_rng(3)
    binary = rng.integers(0, 2, (n, 56)).astype(np.float64)
    binary[0, 3] = 2  # uncertain
    viewpoint = rng.integers(1, 5, (n, 1)).astype(np.float64)
    boxes = rng.integers(10, 200, (n, 2)).astype(np.float64)
    # Column 10 is the viewpoint, the last two box coordinates (as in the real layout).
    data = np.concatenate([binary[:, :10], viewpoint, binary[:, 10:], boxes], axis=1)
    names = [f"attr{i}" for i in range(10)] + ["viewpoint"] + \
        [f"attr{i}" for i in range(10, 56)] + ["box_x", "box_y"]
    selected = [i + 1 for i in range(56) if i != 10][:54]  # 1-based, skipping the viewpoint
    partitions = [{"train_index": (np.arange(0, 6) + 1)[None, :].astype(np.float64),
                   "val_index": (np.arange(6, 9) + 1)[None, :].astype(np.float64),
                   "test_index": (np.arange(9, 12) + 1)[None, :].astype(np.float64)}
                  for _ in range(5)]
    images = [f"CAM{i:02d}-2013-12-23-20131223120147-20131223120735-tarid{i}-frame1.png"
              for i in range(n)]
    struct = {"name": cell(images), "data": data, "attribute": cell(names),
              "selected_attribute": np.asarray(selected, dtype=np.float64)[None, :],
              "person_identity": np.arange(n, dtype=np.float64)[:, None],
              "partition_attribute": structs(partitions, (1, 5))}
    (folder / "RAP_annotation").mkdir(parents=True)
    scipy.io.savemat(folder / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": struct})
    write_images(folder / "RAP_dataset", images)
    return data


def test_rap_writers_read_like_the_real_files(tmp_path, write_images):
    write_rap_v1(tmp_path / "v1", write_images)
    write_rap_v2(tmp_path / "v2", write_images)
    v1 = scipy.io.loadmat(tmp_path / "v1/RAP_annotation/RAP_annotation.mat")
    # Rethinking_of_PAR format_rap.py (v1, by position) and format_rap2.py (v2, by name):
    assert v1["RAP_annotation"][0][0][5][0][0][0].startswith("CAM01")
    assert v1["RAP_annotation"][0][0][3][1][0][0] == "attr1"
    assert v1["RAP_annotation"][0][0][0][2][0][0][0][0][0].shape == (8,)
    v2 = scipy.io.loadmat(tmp_path / "v2/RAP_annotation/RAP_annotation.mat")["RAP_annotation"]
    assert v2["name"][0][0][1][0][0].endswith("tarid1-frame1.png")
    assert v2["partition_attribute"][0][0][0][4]["val_index"][0][0][0].tolist() == [7, 8, 9]
    assert (v2["selected_attribute"][0][0][0] - 1).shape == (54,)


def test_rap_v1(tmp_path, write_images):
    labels = write_rap_v1(tmp_path / "RAP", write_images)
    data = datasets.load("rap", tmp_path, split=1)
    assert (len(data.train), len(data.val), len(data.test)) == (8, 0, 2)
    assert data.eval_indices == list(range(51))
    assert len(data.all_attribute_names) == 55
    test_rows = [i for i in range(10) if (i + 1) % 5 == 0]
    assert [Path(r.path).name.split("_")[3] for r in data.test] == [f"tarid{i}" for i in test_rows]
    np.testing.assert_array_equal(data.test[0].attributes, labels[test_rows[0]])


def test_rap_v2(tmp_path, write_images):
    raw = write_rap_v2(tmp_path, write_images)
    data = datasets.load("rap", tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 3, 3)
    # Viewpoint and box columns are not labels; the 54 selected map past the removed column.
    assert "viewpoint" not in data.all_attribute_names and len(data.all_attribute_names) == 56
    assert len(data.eval_indices) == 54
    assert data.attribute_names == [f"attr{i}" for i in range(54)]
    first = data.train[0].attributes
    assert first[3] == -1  # 2 = uncertain
    assert first[11] == raw[0, 12] and set(np.unique(first)) <= {-1, 0, 1}


def test_rap_missing_key(tmp_path):
    (tmp_path / "RAP_annotation").mkdir()
    scipy.io.savemat(tmp_path / "RAP_annotation" / "RAP_annotation.mat",
                     {"RAP_annotation": {"name": cell(["a.png"]), "data": np.zeros((1, 1)),
                                         "partition_attribute": np.zeros((1, 1))}})
    with pytest.raises(DatasetFormatError) as err:
        datasets.load("rap", tmp_path)
    assert err.value.field == "attribute" and "RAP_annotation.mat" in err.value.path
