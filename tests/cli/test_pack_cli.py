"""`valpat pack`, and `valpat pretrain` reading its shards and a LUPerson LMDB tree."""

import json
import pickle

import lmdb
import numpy as np
import pytest
from PIL import Image

from valpat_keras.cli.main import main


def _images(folder, count):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)).save(
            folder / f"{i:04d}.jpg")
    return sorted(folder.glob("*.jpg"))


def test_pack_cli_writes_shards_and_reports_unreadable_images(tmp_path, capsys):
    paths = _images(tmp_path / "images", 6)
    paths[2].write_bytes(b"not a jpeg")
    out = tmp_path / "shards"
    assert main(["pack", str(tmp_path / "images"), "--out", str(out), "--num-shards", "2"]) == 0
    captured = capsys.readouterr()
    assert "packed 5 records into 2 shards" in captured.out
    assert "skipped 1 unreadable image(s): train/0002.jpg" in captured.err
    index = json.loads((out / "index.json").read_text())
    assert index["source"] == str(tmp_path / "images") and index["num_records"] == 5
    assert main(["pack", str(tmp_path / "images"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["pack", "market1501:" + str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["datasets", f"shards:{tmp_path}"]) == 2
    assert "index.json: missing: not a shard folder" in capsys.readouterr().err


def _lmdb_tree(root, paths):
    (root / "lmdb").mkdir(parents=True)
    env = lmdb.open(str(root / "lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for path in paths:
            txn.put(path.stem.encode(), path.read_bytes())
    env.close()
    (root / "keys.pkl").write_bytes(pickle.dumps([p.stem for p in paths]))


@pytest.mark.keras
def test_pretrain_reads_shards_and_lmdb_trees(tmp_path, capsys):
    paths = _images(tmp_path / "images", 8)
    _lmdb_tree(tmp_path / "lup", paths)
    assert main(["pack", f"luperson_lmdb:{tmp_path / 'lup'}", "--out", str(tmp_path / "shards"),
                 "--num-shards", "2"]) == 0
    flags = ["--batch-size", "4", "--image-size", "32x16", "--steps", "2", "--queue-size", "0",
             "--objectives", "ssl",
             "--quiet"]
    losses = {}
    for name, data in (("shards", tmp_path / "shards"), ("lmdb", tmp_path / "lup")):
        out = tmp_path / f"run_{name}"
        status = main(["pretrain", "--data", str(data), "--out", str(out), *flags])
        assert status == 0, capsys.readouterr().err
        config = json.loads((out / "config.json").read_text())
        assert config["data"] == str(data)
        losses[name] = json.loads((out / "history.json").read_text())["ssl_loss"]
        assert len(losses[name]) == 1 and np.isfinite(losses[name]).all()
    assert "ssl" in capsys.readouterr().out
