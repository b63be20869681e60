"""The LUPerson / LUPerson-NL LMDB layout: ``lmdb/`` env + ``keys.pkl``, as the authors write it."""

import pickle
from pathlib import Path

import lmdb
import numpy as np
import pytest

from valpat_keras import datasets
from valpat_keras.data import pipelines, shards
from valpat_keras.errors import InputError

SIZE = (32, 16)


def write_lmdb_tree(root: Path, images: dict[str, bytes], pids: list[int] | None = None,
                    keys: list[str] | None = None) -> Path:
    """``root/lmdb`` (key -> JPEG bytes) and ``root/keys.pkl`` as LUP(-NL)/convert_lmdb.py do."""
    (root / "lmdb").mkdir(parents=True)
    env = lmdb.open(str(root / "lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in images.items():
            txn.put(key.encode(), value)
    env.close()
    keys = list(images) if keys is None else keys
    content = keys if pids is None else {"keys": keys, "pids": pids}
    (root / "keys.pkl").write_bytes(pickle.dumps(content))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    from PIL import Image

    root = tmp_path_factory.mktemp("lup_images")
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)).save(
            root / f"00_01_{i // 4:04d}_{i:08d}.jpg")
    return root


@pytest.fixture(scope="module")
def lup_tree(folder, tmp_path_factory) -> Path:
    """LUPerson: keys.pkl is a list of keys in the folder's (sorted) order."""
    images = {p.stem: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}
    return write_lmdb_tree(tmp_path_factory.mktemp("lup") / "lup", images)


def test_lmdb_tree_loads_with_keys_and_lupnl_pids(lup_tree, folder, tmp_path):
    data = datasets.load("luperson_lmdb", str(lup_tree))
    assert [r.path for r in data.records] == sorted(p.stem for p in folder.glob("*.jpg"))
    assert data.pids is None and not data.has_captions and "8 images" in data.summary()
    images = {p.stem: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}
    nl_root = tmp_path / "LUPerson-NL"
    write_lmdb_tree(nl_root / "lupnl_lmdb", images, pids=[7, 7, 7, 7, 9, 9, 9, 9])
    nl = datasets.load("luperson_lmdb", str(nl_root))
    assert nl.pids == [7] * 4 + [9] * 4 and len(nl.records) == 8
    assert nl.read_bytes(nl.records[5].path) == images[nl.records[5].path]


@pytest.mark.parametrize("augment", [False, "reid"])
def test_pretraining_reads_lmdb_as_it_reads_the_folder(lup_tree, folder, augment):
    lup = datasets.load("luperson_lmdb", str(lup_tree))
    files = datasets.load("image_folder", str(folder))
    settings = {"image_size": SIZE, "batch_size": 4, "seed": 5, "augment": augment,
                "start_step": 0}
    want = pipelines.pretrain_dataset(files.records, **settings).take(4)
    got = pipelines.pretrain_dataset(lup.records, **settings,
                                     image_source=lup.image_source).take(4)
    for w, g in zip(want, got, strict=True):
        for key in ("view1", "view2"):
            np.testing.assert_array_equal(g[key].numpy(), w[key].numpy())


def test_lmdb_packs_into_shards_with_its_keys(lup_tree, folder, tmp_path):
    lup = datasets.load("luperson_lmdb", str(lup_tree))
    shards.pack(lup, tmp_path / "shards", num_shards=2, source=f"luperson_lmdb:{lup_tree}")
    back = datasets.load("shards", str(tmp_path / "shards"))
    assert [r.path for r in back.records] == [r.path for r in lup.records]
    for record in back.records:
        assert back.read_bytes(record.path) == (folder / f"{record.path}.jpg").read_bytes()


def test_bad_lmdb_trees_are_one_error_naming_the_file(folder, tmp_path):
    images = {p.stem: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}
    root = write_lmdb_tree(tmp_path / "a", images)
    (root / "keys.pkl").unlink()
    with pytest.raises(InputError, match=r"a/keys.pkl: missing keys.pkl"):
        datasets.load("luperson_lmdb", str(root))
    missing = write_lmdb_tree(tmp_path / "b", images, keys=[*images, "00_01_0009_00000099"])
    with pytest.raises(InputError, match=r"b/lmdb: 1 key\(s\) of keys.pkl have no value, "
                                         r"e.g. '00_01_0009_00000099'"):
        datasets.load("luperson_lmdb", str(missing))
    garbled = write_lmdb_tree(tmp_path / "c", images)
    (garbled / "keys.pkl").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match=r"c/keys.pkl: cannot unpickle"):
        datasets.load("luperson_lmdb", str(garbled))
    (garbled / "keys.pkl").write_bytes(pickle.dumps({"names": []}))
    with pytest.raises(InputError, match=r"c/keys.pkl: dict without 'keys'"):
        datasets.load("luperson_lmdb", str(garbled))


def test_an_unreadable_lmdb_value_is_dropped_and_counted_with_verify(folder, tmp_path):
    images = {p.stem: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}
    broken = next(iter(images))
    images[broken] = images[broken][:30]
    root = write_lmdb_tree(tmp_path / "d", images)
    with pytest.warns(UserWarning, match=broken):
        data = datasets.load("luperson_lmdb", str(root), verify_images=True)
    assert len(data.records) == 7 and data.skipped == {"unreadable images": 1}
