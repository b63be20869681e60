"""tf.data pipelines: declared shapes/dtypes, determinism per seed, and feeding Keras fit."""

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from valpat_keras.data import pipelines
from valpat_keras.data.errors import DECODE_FAILURE_MARKER
from valpat_keras.data.records import PretrainRecord, ReIDRecord, TextRecord
from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.errors import InputError

pytestmark = pytest.mark.keras

SIZE = (64, 32)
CAPTIONS = (("a woman in a red coat", "a lady with a red bag"), ("a man in black trousers",))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """16 random person-shaped JPEG/PNG files of varying size."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = []
    for i in range(16):
        pixels = rng.integers(0, 256, (60 + 4 * i, 30 + i, 3), dtype=np.uint8)
        path = folder / f"{i:04d}.{'png' if i % 4 == 0 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        out.append(str(path))
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return CaptionTokenizer.from_captions([c for caps in CAPTIONS for c in caps],
                                          vocabulary_size=100, sequence_length=10)


def _pretrain_records(paths):
    return [PretrainRecord(p, CAPTIONS[i % 2],
                           None if i == 3 else np.array([1, 0, -1, i % 2], np.int8))
            for i, p in enumerate(paths)]


def _arrays(batch):
    if isinstance(batch, dict):
        return {k: v.numpy() for k, v in batch.items()}
    return [v.numpy() for v in batch]


def test_image_dataset_in_order(paths):
    batches = list(pipelines.image_dataset(paths, SIZE, batch_size=5))
    assert [b.shape[0] for b in batches] == [5, 5, 5, 1]
    images = np.concatenate(batches)
    assert images.dtype == np.float32 and images.shape == (16, *SIZE, 3)
    assert 0.0 <= images.min() and images.max() <= 1.0
    first = np.asarray(Image.open(paths[0]).convert("RGB").resize((32, 64)), np.float32) / 255
    assert np.abs(images[0] - first).mean() < 0.1  # image 0 really is the first path


def test_pretrain_without_augment_tokenizer_or_attributes(paths):
    records = [PretrainRecord(p) for p in paths]
    dataset = pipelines.pretrain_dataset(records, SIZE, batch_size=8, augment=False)
    batches = [_arrays(b) for b in dataset]
    assert len(batches) == 2 and set(batches[0]) == {"view1", "view2"}
    np.testing.assert_array_equal(batches[0]["view1"], batches[0]["view2"])


def test_pretrain_views_by_recipe_name(paths):
    records = [PretrainRecord(p) for p in paths]
    batch = _arrays(next(iter(pipelines.pretrain_dataset(records, SIZE, batch_size=8,
                                                          augment="reid"))))
    assert batch["view1"].shape == (8, *SIZE, 3) and 0.0 <= batch["view1"].min()
    assert not np.allclose(batch["view1"], batch["view2"])
    with pytest.raises(ValueError, match="moco_v2"):
        pipelines.pretrain_dataset(records, SIZE, batch_size=8, augment="simclr")


def test_pretrain_dataset_is_deterministic_with_declared_keys(paths, tokenizer):
    def build(seed):
        return pipelines.pretrain_dataset(_pretrain_records(paths), SIZE, batch_size=8,
                                          tokenizer=tokenizer, seed=seed)

    first, again = build(5), build(5)
    spec = first.element_spec
    assert spec["view1"].shape == (8, *SIZE, 3) and spec["view2"].dtype == tf.float32
    assert spec["token_ids"].shape == (8, 10) and spec["token_ids"].dtype == tf.int32
    assert spec["attributes"].shape == (8, 4) and spec["attributes"].dtype == tf.float32
    epoch0 = [_arrays(b) for b in first]
    for a, b in zip(epoch0, [_arrays(b) for b in again]):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    batch = epoch0[0]
    assert not np.allclose(batch["view1"], batch["view2"])
    assert (batch["token_ids"][:, 0] == tokenizer.cls_id).all()
    attributes = np.concatenate([b["attributes"] for b in epoch0])
    assert (attributes == -1).all(axis=1).sum() == 1  # record 3 has no attribute vector
    epoch1 = [_arrays(b) for b in first]  # iterating again is the next epoch
    assert not np.allclose(epoch0[0]["view1"], epoch1[0]["view1"])
    assert not np.allclose(epoch0[0]["view1"], _arrays(next(iter(build(6))))["view1"])


def test_reid_train_dataset_pk_batches(paths):
    records = [ReIDRecord(p, pid=i // 4, camid=i % 2) for i, p in enumerate(paths)]
    dataset, steps = pipelines.reid_train_dataset(records, SIZE, p=2, k=2, seed=1, epochs=2)
    batches = [_arrays(b) for b in dataset]
    assert len(batches) == 2 * steps and steps > 0
    for images, pids in batches:
        assert images.shape == (4, *SIZE, 3) and pids.dtype == np.int32
        assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]
    again, _ = pipelines.reid_train_dataset(records, SIZE, p=2, k=2, seed=1, epochs=2)
    np.testing.assert_array_equal(batches[-1][0], _arrays(list(again)[-1])[0])


def test_text_image_and_caption_datasets(paths, tokenizer):
    records = [TextRecord(p, pid=i // 2, captions=CAPTIONS[i % 2]) for i, p in enumerate(paths)]
    dataset = pipelines.text_image_dataset(records, tokenizer, SIZE, batch_size=6, seed=0)
    batches = [_arrays(b) for b in dataset]
    assert len(batches) == 2  # 16 // 6, remainder dropped
    assert batches[0]["images"].shape == (6, *SIZE, 3)
    assert batches[0]["token_ids"].shape == (6, 10) and batches[0]["pids"].dtype == np.int32
    ordered = pipelines.text_image_dataset(records, tokenizer, SIZE, batch_size=6, seed=0,
                                           augment=False, shuffle=False)
    picks = {tuple(next(iter(ordered))["token_ids"][0].numpy()) for _ in range(6)}
    assert picks == {tuple(row) for row in tokenizer(list(CAPTIONS[0])).numpy()}  # per epoch
    queries = ["a woman in a red coat", "a man", "a lady"]
    ids = np.concatenate(list(pipelines.caption_dataset(queries, tokenizer, batch_size=2)))
    np.testing.assert_array_equal(ids, tokenizer(queries).numpy())


def test_check_images_drops_and_warns(paths, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    records = [PretrainRecord(p) for p in paths[:8]] + [PretrainRecord(str(bad))]
    with pytest.warns(UserWarning, match="skipped 1 unreadable.*broken.jpg"):
        dataset = pipelines.pretrain_dataset(records, SIZE, batch_size=3, check_images=True)
    assert sum(b["view1"].shape[0] for b in dataset) == 6  # 8 readable, remainder dropped


def _tiny_classifier(num_outputs, activation):
    return keras.Sequential([
        keras.Input((*SIZE, 3)),
        keras.layers.Conv2D(4, 3, strides=4, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_outputs, activation=activation),
    ])


def test_pipelines_feed_keras_fit(paths):
    labels = np.random.default_rng(0).integers(0, 2, (16, 3)).astype(np.float32)
    attributes = pipelines.labeled_image_dataset(paths, labels, SIZE, batch_size=8,
                                                 training=True, seed=0)
    model = _tiny_classifier(3, "sigmoid")
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    history = model.fit(attributes, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()

    records = [ReIDRecord(p, pid=i // 4, camid=i % 2) for i, p in enumerate(paths)]
    reid, steps = pipelines.reid_train_dataset(records, SIZE, p=2, k=2, epochs=2)
    model = _tiny_classifier(4, None)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(reid, epochs=2, steps_per_epoch=steps, verbose=0)
    assert len(history.history["loss"]) == 2


def _copies(paths, folder):
    return [str(shutil.copy(p, folder / f"copy_{i:02d}{p[-4:]}")) for i, p in enumerate(paths)]


@pytest.mark.parametrize("victim", [5, 15])  # in the middle, and the very last element
def test_an_image_corrupted_after_the_check_is_named_when_decoding_fails(
        paths, tmp_path, monkeypatch, victim):
    monkeypatch.setenv("VALPAT_CACHE", str(tmp_path / "cache"))
    copies = _copies(paths, tmp_path)
    labels = np.arange(16, dtype=np.int32)
    dataset = pipelines.labeled_image_dataset(copies, labels, SIZE, batch_size=4,
                                              check_images=True)  # every image decodes now
    intact = [b[1].numpy() for b in dataset]
    data = Path(copies[victim]).read_bytes()
    Path(copies[victim]).write_bytes(data[: len(data) // 2])  # a half-copied file
    seen = []
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        for _, batch_labels in dataset:
            seen.append(batch_labels.numpy())
    assert DECODE_FAILURE_MARKER in str(err.value) and copies[victim] in str(err.value)
    # The batches before the failure are the intact ones, unchanged.
    assert len(seen) == victim // 4
    for got, want in zip(seen, intact):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError) as named, pipelines.named_decode_errors():
        list(pipelines.image_dataset(copies, SIZE, batch_size=4))
    message = str(named.value)
    assert message.startswith(f"image_dataset: element {victim} of the epoch failed to load; "
                              f"1 file(s) do not decode: {copies[victim]} (unreadable: ")
    assert "verify_images=True" in message and "\\'" not in message


def test_a_decode_failure_inside_fit_names_the_file(paths, tmp_path, monkeypatch):
    monkeypatch.setenv("VALPAT_CACHE", "")
    copies = _copies(paths, tmp_path)
    Path(copies[9]).write_bytes(Path(copies[9]).read_bytes()[:200])
    records = [ReIDRecord(p, pid=i // 4, camid=i % 2) for i, p in enumerate(copies)]
    reid, steps = pipelines.reid_train_dataset(records, SIZE, p=2, k=2, epochs=1)
    model = _tiny_classifier(4, None)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(InputError, match=f"reid_train_dataset: .*{copies[9]}"), \
            pipelines.named_decode_errors():
        model.fit(reid, epochs=1, steps_per_epoch=steps, verbose=0)
