"""TFRecord shards: pack -> read round trip, streamed pretraining batches, P x K, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from valpat_keras import datasets
from valpat_keras.data import pipelines, shards
from valpat_keras.data.records import ReIDDataset, ReIDRecord
from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.errors import InputError

SIZE = (32, 16)
NAMES = ["Female", "Hat", "Backpack"]
CAPTIONS = ["a woman in a red coat", "a man with a hat", "a person with a bag", "a child"]


def write_noise_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` distinct 32x16 JPEGs (noise, so that every image decodes differently)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A luperson_ta manifest of 10 images, each with 1-2 captions and an attribute vector."""
    root = tmp_path_factory.mktemp("lupta")
    paths = write_noise_jpegs(root / "images", 10)
    lines = [json.dumps({"format": "valpat-pretrain-v1", "attribute_names": NAMES})]
    for i, path in enumerate(paths):
        lines.append(json.dumps({
            "image": f"images/{path.name}", "captions": CAPTIONS[i % 4: i % 4 + 1 + i % 2],
            "attributes": [i % 2, (i // 2) % 2, -1 if i == 3 else (i // 3) % 2]}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def source(manifest):
    return datasets.load("luperson_ta", str(manifest))


@pytest.fixture(scope="module")
def packed(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "shards"
    report = shards.pack(source, out, num_shards=3, source="luperson_ta:test")
    assert report.counts == [4, 3, 3] and report.splits == {"train": 10}
    return out


@pytest.fixture(scope="module")
def tokenizer(source):
    return CaptionTokenizer.from_captions([c for r in source.records for c in r.captions],
                                          vocabulary_size=50, sequence_length=8)


def _parsed(folder: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(folder.glob("shard-*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(str(path)):
            record = tf.io.parse_single_example(serialized, shards._SPEC)
            out[record["key"].numpy().decode()] = {k: v.numpy() for k, v in record.items()}
    return out


def test_pack_round_trip_preserves_every_field(source, packed):
    index = json.loads((packed / shards.INDEX_FILE).read_text())
    assert index["format"] == shards.FORMAT and index["source"] == "luperson_ta:test"
    assert index["attribute_names"] == NAMES and index["num_records"] == 10
    assert [s["count"] for s in index["shards"]] == [4, 3, 3] and index["library_version"]
    assert set(index["fields"]) == set(shards.FIELDS)
    assert not list(packed.glob("*.tmp"))  # written atomically: no temporary names left
    parsed = _parsed(packed)
    assert len(parsed) == 10
    for position, record in enumerate(source.records):
        key = f"images/{Path(record.path).name}"
        got = parsed[key]
        assert got["image"] == Path(record.path).read_bytes()  # the stored bytes, as on disk
        assert [c.decode() for c in got["captions"]] == list(record.captions)
        np.testing.assert_array_equal(got["attributes"], record.attributes)
        assert got["index"] == position and got["split"] == b"train"
        assert got["pid"] == -1 and got["camid"] == -1
    # The loader reads the same records back (metadata from records.jsonl).
    loaded = datasets.load("shards", str(packed))
    assert [r.path for r in loaded.records] == [f"images/{Path(r.path).name}"
                                                for r in source.records]
    assert [r.captions for r in loaded.records] == [r.captions for r in source.records]
    assert loaded.attribute_names == NAMES and loaded.has_attributes


def _batches(dataset, count):
    return [{k: v.numpy() for k, v in b.items()} for b in dataset.take(count)]


@pytest.mark.parametrize("augment", [False, "reid"])
def test_streamed_shards_give_the_folder_pipelines_batches(source, packed, tokenizer, augment):
    settings = {"image_size": SIZE, "batch_size": 4, "tokenizer": tokenizer, "seed": 3,
                "augment": augment, "shuffle": False, "start_step": 0}
    folder = _batches(pipelines.pretrain_dataset(source.records, **settings), 5)
    streamed = _batches(shards.shard_pretrain_dataset(datasets.load("shards", str(packed)),
                                                      **settings), 5)
    # 5 batches of 4 from 8 usable records per pass: passes 1, 2 and half of 3.
    for want, got in zip(folder, streamed, strict=True):
        assert set(want) == set(got) == {"view1", "view2", "token_ids", "attributes"}
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_shuffled_stream_is_repeatable_and_resumes(packed, tokenizer):
    data = datasets.load("shards", str(packed))
    settings = {"image_size": SIZE, "batch_size": 2, "tokenizer": tokenizer, "seed": 1,
                "augment": "reid", "shuffle": True, "shuffle_buffer": 4}
    first = _batches(shards.shard_pretrain_dataset(data, start_step=0, **settings), 8)
    again = _batches(shards.shard_pretrain_dataset(data, start_step=0, **settings), 8)
    resumed = _batches(shards.shard_pretrain_dataset(data, start_step=3, **settings), 5)
    for want, got in zip(first, again, strict=True):
        np.testing.assert_array_equal(got["view1"], want["view1"])
    for want, got in zip(first[3:], resumed, strict=True):
        np.testing.assert_array_equal(got["view1"], want["view1"])
        np.testing.assert_array_equal(got["token_ids"], want["token_ids"])
    other = _batches(shards.shard_pretrain_dataset(data, start_step=0, **{**settings,
                                                                          "seed": 2}), 1)
    assert not np.array_equal(other[0]["view1"], first[0]["view1"])


def test_pk_sampler_reads_shards_by_record_offset(tmp_path):
    paths = write_noise_jpegs(tmp_path / "market", 12)
    train = [ReIDRecord(str(p), pid=i // 3, camid=i % 2) for i, p in enumerate(paths[:8])]
    query = [ReIDRecord(str(p), pid=i, camid=0) for i, p in enumerate(paths[8:])]
    reid = ReIDDataset("toy", str(tmp_path / "market"), train, query, [])
    report = shards.pack(reid, tmp_path / "shards", shard_size=3)
    assert report.splits == {"train": 8, "query": 4} and len(report.counts) == 4
    opened = shards.open_shards(tmp_path / "shards")
    records = shards.shard_reid_records(opened, "train")
    assert [(r.pid, r.camid) for r in records] == [(r.pid, r.camid) for r in train]
    kwargs = {"image_size": SIZE, "p": 2, "k": 2, "seed": 0, "epochs": 2}
    want, steps = pipelines.reid_train_dataset(train, **kwargs)
    got, got_steps = pipelines.reid_train_dataset(
        records, **kwargs, image_source=shards.shard_image_source(opened, "train"))
    assert steps == got_steps
    for (wi, wp), (gi, gp) in zip(want, got, strict=True):
        np.testing.assert_array_equal(gi.numpy(), wi.numpy())
        np.testing.assert_array_equal(gp.numpy(), wp.numpy())


def test_unreadable_images_are_counted_and_named_not_dropped_silently(tmp_path):
    paths = write_noise_jpegs(tmp_path / "images", 4)
    paths[1].write_bytes(paths[1].read_bytes()[:40])  # a half-copied file
    data = datasets.load("image_folder", str(tmp_path / "images"))
    report = shards.pack(data, tmp_path / "shards", num_shards=2)
    assert sum(report.counts) == 3 and len(report.skipped) == 1
    assert "0001.jpg" in report.summary()
    index = json.loads((tmp_path / "shards" / shards.INDEX_FILE).read_text())
    assert index["skipped"] == {"unreadable images": 1}
    assert index["unreadable"][0]["key"] == "train/0001.jpg"
    with pytest.raises(InputError, match="already holds shards"):
        shards.pack(data, tmp_path / "shards", num_shards=2)


def test_bad_shard_folders_are_one_error_naming_the_file(packed, tmp_path):
    with pytest.raises(InputError, match="index.json: missing: not a shard folder"):
        datasets.load("shards", str(tmp_path))
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in packed.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    victim = sorted(copy.glob("shard-*.tfrecord"))[1]
    data = bytearray(victim.read_bytes())
    data[30:40] = b"x" * 10  # same size, broken record: found by reading it through
    victim.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"{victim}: corrupt shard"):
        datasets.load("shards", str(copy), verify_images=True)
    victim.write_bytes(bytes(data[:-7]))  # truncated: found when opening
    with pytest.raises(InputError, match=f"{victim}: corrupt shard: .* bytes, the index says"):
        datasets.load("shards", str(copy))
    victim.unlink()
    with pytest.raises(InputError, match=f"{victim}: missing shard"):
        datasets.load("shards", str(copy))
    (copy / shards.INDEX_FILE).write_text("{not json")
    with pytest.raises(InputError, match="index.json: not valid JSON"):
        datasets.load("shards", str(copy))


def test_readers_split_the_shards_between_them(source, packed):
    data = datasets.load("shards", str(packed))
    settings = {"image_size": SIZE, "batch_size": 1, "augment": False, "shuffle": False,
                "drop_remainder": False}
    seen = []
    for reader in (0, 1):
        stream = shards.shard_pretrain_dataset(data, input_shard=(reader, 2), **settings)
        seen.append([b["view1"].numpy()[0] for b in stream])
    assert [len(s) for s in seen] == [7, 3]  # shards 0 and 2 (4 + 3 records), shard 1 (3)
    every = [b.numpy()[0] for b in pipelines.image_dataset([r.path for r in source.records],
                                                          SIZE, batch_size=1)]
    ours = sorted(seen[0] + seen[1], key=lambda a: a.tobytes())
    for got, want in zip(ours, sorted(every, key=lambda a: a.tobytes()), strict=True):
        np.testing.assert_array_equal(got, want)
