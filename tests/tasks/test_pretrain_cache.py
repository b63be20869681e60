"""The cache of pretraining runs: a finished run is reused, a changed setting or --fresh
retrains, the key follows the `PretrainConfig` (not how it was spelled), and the data
fingerprint ignores where the same data was written."""

import json
import shutil

import numpy as np
import pytest

from valpat_keras.data.records import PretrainDataset, PretrainRecord
from valpat_keras.tasks import pretrain_cache
from valpat_keras.tasks.pretrain_config import DISPLAY_ONLY, KEYED_WHEN_SET, PretrainConfig

pytestmark = pytest.mark.keras


def _dataset(root, sizes=(10, 20)):
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i, size in enumerate(sizes):
        path = root / f"{i}.jpg"
        path.write_bytes(b"x" * size)
        records.append(PretrainRecord(str(path), (f"caption {i}",), np.array([1, 0], np.int8)))
    return PretrainDataset(name="luperson_ta", root=str(root), records=records,
                           attribute_names=["a", "b"])


@pytest.fixture
def calls(monkeypatch):
    made = []

    def fake_pretrain(dataset, out_dir, config):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "history.json").write_text(json.dumps({"loss": [1.0]}))
        made.append((str(out_dir), config))

    from valpat_keras.tasks import pretraining

    monkeypatch.setattr(pretraining, "pretrain", fake_pretrain)
    return made


def test_a_finished_run_is_reused_and_fresh_retrains(tmp_path, calls):
    data = _dataset(tmp_path / "data")
    config = PretrainConfig(steps=5, seed=0)
    run, reused = pretrain_cache.cached_pretrain(data, tmp_path / "cache", config,
                                                 printer=lambda line: None)
    assert not reused and len(calls) == 1 and calls[0][1] == config
    key = json.loads((run / pretrain_cache.KEY_FILE).read_text())
    expected = config.to_dict()
    for name in DISPLAY_ONLY:
        del expected[name]
    # Preset fields count only once set, so runs cached before they existed keep their key.
    for name in KEYED_WHEN_SET:
        assert expected.pop(name) is None
    # The stride counts only when it resolves to another than the one older runs used.
    assert expected.pop("last_stride") is None
    assert key["identity"]["arguments"] == expected
    # The same settings, spelled otherwise (verbosity does not count): the cached run.
    again, reused = pretrain_cache.cached_pretrain(data, tmp_path / "cache",
                                                   PretrainConfig(steps=5, verbose=0),
                                                   printer=lambda line: None)
    assert (again, reused) == (run, True) and len(calls) == 1
    other, reused = pretrain_cache.cached_pretrain(data, tmp_path / "cache",
                                                   config.replace(seed=1),
                                                   printer=lambda line: None)
    assert other != run and not reused and len(calls) == 2
    _, reused = pretrain_cache.cached_pretrain(data, tmp_path / "cache", config, fresh=True,
                                               printer=lambda line: None)
    assert not reused and len(calls) == 3


def test_old_keyword_call_warns_and_finds_the_same_run(tmp_path, calls):
    data = _dataset(tmp_path / "data")
    config = PretrainConfig(encoder_config="tiny", steps=5, image_size=(64, 32), seed=0)
    run, _ = pretrain_cache.cached_pretrain(data, tmp_path / "cache", config,
                                            printer=lambda line: None)
    with pytest.warns(DeprecationWarning, match="cached_pretrain"):
        again, reused = pretrain_cache.cached_pretrain(
            data, tmp_path / "cache", config="tiny", steps=5, image_size=[64, 32],
            printer=lambda line: None)
    assert (again, reused) == (run, True) and len(calls) == 1


def test_an_unfinished_run_is_not_reused(tmp_path, calls):
    data = _dataset(tmp_path / "data")
    config = PretrainConfig(steps=5)
    run, _ = pretrain_cache.cached_pretrain(data, tmp_path / "cache", config,
                                            printer=lambda line: None)
    (run / pretrain_cache.KEY_FILE).unlink()  # as if killed before pretrain returned
    _, reused = pretrain_cache.cached_pretrain(data, tmp_path / "cache", config,
                                               printer=lambda line: None)
    assert not reused and len(calls) == 2


def test_fingerprint_follows_content_not_location(tmp_path):
    first = _dataset(tmp_path / "one")
    moved = tmp_path / "two"
    shutil.copytree(tmp_path / "one", moved)
    copy = PretrainDataset(name=first.name, root=str(moved), attribute_names=["a", "b"],
                           records=[PretrainRecord(r.path.replace("/one/", "/two/"), r.captions,
                                                   r.attributes) for r in first.records])
    assert pretrain_cache.dataset_fingerprint(first) == pretrain_cache.dataset_fingerprint(copy)
    changed = _dataset(tmp_path / "three", sizes=(10, 21))
    assert pretrain_cache.dataset_fingerprint(changed) != pretrain_cache.dataset_fingerprint(first)
