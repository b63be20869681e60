"""Transfer datasets read from TFRecord shards: the same records and batches as the folder.

A tiny SynthPed set is packed in its three transfer layouts (Market-1501 re-ID, PA-100K
attributes, CUHK-PEDES text); the ``shards`` loader must give back the dataset of the kind
asked for, whose pipelines decode exactly the folder's images in the same order.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from valpat_keras.data import pipelines, registry, shards
from valpat_keras.data.synthped import SynthPedConfig, write_synthped
from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.errors import InputError

SIZE = (32, 16)
LAYOUTS = {"reid": ("market1501", ("train", "query", "gallery")),
           "attributes": ("pa100k", ("train", "val", "test")),
           "text": ("cuhk_pedes", ("train", "val", "test"))}


@pytest.fixture(scope="module")
def packs(tmp_path_factory) -> dict:
    """``kind -> (folder dataset, shard folder)`` for the three transfer layouts."""
    root = tmp_path_factory.mktemp("shard_transfers")
    write_synthped(root / "synthped", SynthPedConfig.preset("tiny"))
    result = {}
    for kind, (layout, _) in LAYOUTS.items():
        folder = registry.load(layout, root / "synthped")
        shards.pack(folder, root / f"{kind}_shards", num_shards=3, source=layout)
        result[kind] = (folder, root / f"{kind}_shards")
    return result


def _key(path: str, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def _images(dataset) -> np.ndarray:
    return np.concatenate(list(dataset.as_numpy_iterator()))


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_shards_loader_returns_the_packed_kind_with_every_record(packs, kind):
    folder, packed = packs[kind]
    loaded = registry.load("shards", packed, kind=kind)
    assert type(loaded).__name__ == {"reid": "ShardReIDDataset", "attributes":
                                     "ShardAttributeDataset", "text": "ShardTextDataset"}[kind]
    assert loaded.name == folder.name and loaded.image_source is not None
    assert loaded.skipped == folder.skipped  # what the source loader dropped, still said
    base = Path(folder.root)
    for split in LAYOUTS[kind][1]:
        want, got = getattr(folder, split), getattr(loaded, split)
        assert len(got) == len(want) > 0
        for a, b in zip(want, got):
            # Same record (ids, labels, captions), path SHARDS/KEY with the folder's key.
            assert _key(b.path, packed) == _key(a.path, base)
            fields = {f.name for f in dataclasses.fields(a)} - {"path"}
            for name in fields:
                np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
    if kind == "attributes":
        assert loaded.all_attribute_names == folder.all_attribute_names
        assert loaded.eval_indices == folder.eval_indices
    # A re-pack stores the original keys, not SHARDS/KEY.
    items, _, _ = shards.items_of(loaded)
    assert items[0].key == _key(folder.train[0].path, base)
    assert items[0].read() == Path(folder.train[0].path).read_bytes()


def test_reid_pipelines_give_the_folder_batches(packs):
    folder, packed = packs["reid"]
    loaded = registry.load("shards", packed, kind="reid")
    kwargs = {"image_size": SIZE, "p": 4, "k": 4, "seed": 3, "epochs": 2, "check_images": True}
    want, want_steps = pipelines.reid_train_dataset(folder.train, **kwargs)
    got, got_steps = pipelines.reid_train_dataset(loaded.train, **kwargs)
    assert got_steps == want_steps
    for (a_images, a_pids), (b_images, b_pids) in zip(want.as_numpy_iterator(),
                                                      got.as_numpy_iterator(), strict=True):
        np.testing.assert_array_equal(b_images, a_images)
        np.testing.assert_array_equal(b_pids, a_pids)
    # The query / gallery feature input (evaluation, clustering) and the explicit source.
    paths = [r.path for r in loaded.gallery]
    want = _images(pipelines.image_dataset([r.path for r in folder.gallery], SIZE, 8))
    np.testing.assert_array_equal(_images(pipelines.image_dataset(paths, SIZE, 8)), want)
    np.testing.assert_array_equal(_images(pipelines.image_dataset(
        paths, SIZE, 8, image_source=loaded.image_source)), want)


def test_attribute_and_text_pipelines_give_the_folder_batches(packs):
    folder, packed = packs["attributes"]
    loaded = registry.load("shards", packed, kind="attributes")
    labels = np.stack([r.attributes for r in folder.train])
    kwargs = {"image_size": SIZE, "batch_size": 4, "training": True, "seed": 1,
              "augment": True, "drop_remainder": True}
    want = pipelines.labeled_image_dataset([r.path for r in folder.train], labels, **kwargs)
    got = pipelines.labeled_image_dataset([r.path for r in loaded.train], labels, **kwargs)
    for a, b in zip(want.as_numpy_iterator(), got.as_numpy_iterator(), strict=True):
        np.testing.assert_array_equal(b[0], a[0])
        np.testing.assert_array_equal(b[1], a[1])

    folder, packed = packs["text"]
    loaded = registry.load("shards", packed, kind="text")
    tokenizer = CaptionTokenizer.from_captions(
        [c for r in folder.train for c in r.captions], vocabulary_size=80, sequence_length=12)
    kwargs = {"image_size": SIZE, "batch_size": 4, "seed": 2, "start_step": 1}
    want = pipelines.text_image_dataset(folder.train, tokenizer, **kwargs)
    got = pipelines.text_image_dataset(loaded.train, tokenizer, **kwargs)
    for a, b in zip(want.take(4).as_numpy_iterator(), got.take(4).as_numpy_iterator(),
                    strict=True):
        assert set(a) == set(b)
        for name in a:
            np.testing.assert_array_equal(b[name], a[name])


def test_plots_and_listings_read_shard_records_by_path(packs):
    folder, packed = packs["reid"]
    loaded = registry.load("shards", packed, kind="reid")
    record, original = loaded.query[0], folder.query[0]
    assert shards.read_image_bytes(record.path) == Path(original.path).read_bytes()
    assert shards.read_image_bytes(original.path) == Path(original.path).read_bytes()
    # A record of this folder not yet opened in the process is found through its parents.
    shards._OPENED.clear()
    assert shards.shard_folder_of(record.path) == packed
    assert shards.read_image_bytes(record.path) == Path(original.path).read_bytes()
    from valpat_keras.evaluation.plots import plot_ranked_results  # matplotlib: only here

    figure = plot_ranked_results([r.path for r in loaded.query[:2]],
                                 [r.path for r in loaded.gallery], np.zeros((2, 19)),
                                 np.asarray([r.pid for r in loaded.query[:2]]),
                                 np.asarray([r.pid for r in loaded.gallery]),
                                 np.asarray([r.camid for r in loaded.query[:2]]),
                                 np.asarray([r.camid for r in loaded.gallery]),
                                 num_queries=2, topk=3)
    assert len(figure.axes) == 8


def test_wrong_kind_and_missing_records_are_one_clear_error(packs, tmp_path):
    _, packed = packs["attributes"]
    with pytest.raises(InputError, match=r"index.json: holds a attributes dataset .*not a "
                                         r"reid one.*field 'kind'"):
        registry.load("shards", packed, kind="reid")
    # A pretraining read of a transfer pack still works (one split).
    assert len(registry.load("shards", packed).records) == 16
    # A path under the shard folder that is no record of it: the pipeline names it.
    missing = f"{packed.as_posix()}/release_data/no_such.jpg"
    with pytest.raises(InputError, match=r"no_such\.jpg.*no record"), \
            pipelines.named_decode_errors():
        list(pipelines.image_dataset([missing], SIZE, 1).as_numpy_iterator())
    with pytest.raises(KeyError, match="no record"):
        shards.read_image_bytes(missing)
    # Plain files next to no shard folder still read as files.
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(image)
    assert pipelines.image_dataset([str(image)], SIZE, 1).cardinality() == 1
    assert shards.shard_folder_of(image) is None
