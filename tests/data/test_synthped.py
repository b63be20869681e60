"""SynthPed: determinism, label/caption agreement and the on-disk formats (pure NumPy)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from valpat_keras.cli.main import main as cli_main
from valpat_keras.data.attribute_names import PA100K_ATTRIBUTES
from valpat_keras.data.synthped import (
    ATTRIBUTE_WORDS,
    VIEWS,
    SynthPedConfig,
    SynthPedInfo,
    attribute_vector,
    describe,
    generate_arrays,
    sample_identity,
    write_synthped,
)

A = {name: i for i, name in enumerate(PA100K_ATTRIBUTES)}
MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-6])s[1-6]_\d{6}_\d{2}\.jpg$")


def _mentions(caption: str, words: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", caption, re.IGNORECASE) for w in words)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SynthPedInfo:
    out = tmp_path_factory.mktemp("synthped")
    return write_synthped(out, SynthPedConfig.preset("tiny", seed=0))


def test_same_seed_same_bytes_and_other_seed_differs(tiny, tmp_path):
    first = _tree(Path(tiny.root))
    # Writing again over its own output replaces it with the same bytes.
    write_synthped(tiny.root, SynthPedConfig.preset("tiny", seed=0))
    second = _tree(Path(tiny.root))
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    other = _tree(Path(write_synthped(tmp_path / "other",
                                      SynthPedConfig.preset("tiny", seed=1)).root))
    manifest = "pretrain/manifest.jsonl"
    assert other[manifest] != first[manifest]
    assert other["pretrain/images/000001.jpg"] != first["pretrain/images/000001.jpg"]


def test_in_memory_arrays_are_deterministic():
    a = generate_arrays(3, 4, seed=5, height=64, width=32)
    b = generate_arrays(3, 4, seed=5, height=64, width=32)
    c = generate_arrays(3, 4, seed=6, height=64, width=32)
    assert a["images"].shape == (12, 64, 32, 3) and a["images"].dtype == np.uint8
    assert a["attributes"].shape == (12, 26) and a["attributes"].dtype == np.int8
    np.testing.assert_array_equal(a["images"], b["images"])
    assert a["captions"] == b["captions"]
    assert not np.array_equal(a["images"], c["images"])
    assert set(a["pids"].tolist()) == {0, 1, 2} and a["camids"].max() < 6


def test_labels_and_captions_agree():
    rng = np.random.default_rng(0)
    for uid in range(150):
        person = sample_identity(rng, difficulty=float(uid % 3) / 2, uid=uid)
        for view in VIEWS:
            feet = bool(uid % 4)
            labels = attribute_vector(person, view, feet_visible=feet)
            assert labels.dtype == np.int8 and labels.shape == (26,)
            assert set(np.unique(labels)) <= {0, 1}
            assert labels[[A["Front"], A["Side"], A["Back"]]].sum() == 1
            assert labels[A[view.capitalize()]] == 1
            assert labels[[A["AgeOver60"], A["Age18-60"], A["AgeLess18"]]].sum() == 1
            assert labels[[A["Trousers"], A["Shorts"], A["Skirt&Dress"]]].sum() == 1
            assert labels[[A["ShortSleeve"], A["LongSleeve"]]].sum() == 1
            if view == "back":
                assert labels[A["Glasses"]] == 0 and labels[A["UpperLogo"]] == 0
            if view == "front":
                assert labels[A["Backpack"]] == 0
            for caption in describe(person, view, rng, 3, feet_visible=feet):
                for name, words in ATTRIBUTE_WORDS.items():
                    assert _mentions(caption, words) == bool(labels[A[name]]), (name, caption)
                assert _mentions(caption, ("she", "her", "woman", "girl", "lady", "female")) == \
                    bool(labels[A["Female"]]), caption
                if not feet:
                    assert not _mentions(caption, ("shoes", "sneakers", "boots")), caption


def test_difficulty_shrinks_the_coarse_vocabulary():
    def coarse(difficulty):
        rng = np.random.default_rng(1)
        people = [sample_identity(rng, difficulty, uid=i) for i in range(200)]
        keys = {(p.upper_color, p.lower_color, p.upper_type, p.lower_type, p.upper_pattern)
                for p in people}
        return len(keys), len({(p.upper_rgb, p.lower_rgb, p.stripe_period) for p in people})

    easy, easy_fine = coarse(0.0)
    hard, hard_fine = coarse(1.0)
    assert hard < easy / 2
    # Fine detail still tells every identity apart.
    assert easy_fine == hard_fine == 200


def _identity_labels(difficulty, n, seed=0):
    rng = np.random.default_rng(seed)
    people = [sample_identity(rng, difficulty, uid=i) for i in range(n)]
    return np.stack([np.max([attribute_vector(p, v) for v in VIEWS], axis=0) for p in people])


@pytest.mark.parametrize("difficulty", [0.5, 1.0])
def test_every_pa100k_attribute_has_positives_at_any_difficulty(difficulty):
    # A shrunk vocabulary once left AgeOver60, ShoulderBag, UpperSplice, LowerPattern,
    # LongCoat and Skirt&Dress without a single positive at the default difficulty.
    rate = _identity_labels(difficulty, 1000).mean(axis=0)
    assert rate.min() > 0.01, dict(zip(PA100K_ATTRIBUTES, rate.round(3)))


def test_attribute_split_is_stratified_by_identity():
    from valpat_keras.data.synthped.writers import _stratified_split3

    labels = _identity_labels(0.5, 300, seed=3)
    splits = _stratified_split3(labels, np.random.default_rng(0))
    assert [len(s) for s in splits] == [240, 30, 30]
    assert sorted(np.concatenate(splits).tolist()) == list(range(300))
    for members in splits:
        positives = labels[members].sum(axis=0)
        # Every attribute that varies has positives and negatives in every split.
        varies = labels.min(axis=0) < labels.max(axis=0)
        assert (positives[varies] > 0).all() and (positives[varies] < len(members)).all()
    again = _stratified_split3(labels, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(splits, again))


def test_identity_sets_are_disjoint(tiny):
    uids = tiny.identity_uids
    all_uids = [u for members in uids.values() for u in members]
    assert len(all_uids) == len(set(all_uids))
    summary = json.loads((Path(tiny.root) / "synthped.json").read_text())
    assert summary["config"]["seed"] == 0 and summary["counts"] == tiny.counts
    assert not set(summary["market_pids"]["train"]) & set(summary["market_pids"]["test"])
    assert SynthPedInfo.load(tiny.root).counts == tiny.counts


def test_pretrain_manifest_schema(tiny):
    manifest = Path(tiny.paths["pretrain_manifest"])
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert lines[0] == {"format": "valpat-pretrain-v1", "attribute_names": list(PA100K_ATTRIBUTES)}
    assert len(lines) - 1 == tiny.counts["pretrain_images"]
    for entry in lines[1:]:
        assert set(entry) == {"image", "captions", "attributes"}
        assert (manifest.parent / entry["image"]).is_file()
        assert len(entry["captions"]) == tiny.config.captions_per_image
        labels = entry["attributes"]
        assert len(labels) == 26 and set(labels) <= {0, 1}
        for caption in entry["captions"]:
            assert _mentions(caption, ATTRIBUTE_WORDS["Backpack"]) == bool(labels[A["Backpack"]])


def test_market_layout(tiny):
    root = Path(tiny.paths["market1501"])
    assert root.name == "Market-1501-v15.09.15"
    parsed = {}
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        files = sorted(p.name for p in (root / folder).glob("*.jpg"))
        assert files
        for name in files:
            assert MARKET_NAME.match(name), name
        parsed[folder] = [tuple(int(v) for v in re.search(r"([-\d]+)_c(\d)", n).groups())
                          for n in files]
    train_pids = {p for p, _ in parsed["bounding_box_train"]}
    query = parsed["query"]
    gallery = parsed["bounding_box_test"]
    gallery_pids = {p for p, _ in gallery}
    assert -1 in gallery_pids and 0 in gallery_pids
    assert min(train_pids) >= 1 and min(p for p, _ in query) >= 1
    assert max(train_pids | gallery_pids) <= 1501
    assert not train_pids & gallery_pids
    assert len(train_pids) == tiny.config.reid_train_identities
    for pid, cam in query:
        assert any(g == pid and c != cam for g, c in gallery), (pid, cam)
    # At most one query image per identity and camera, as in Market-1501.
    assert len(query) == len(set(query))


def test_pa100k_mat(tiny):
    root = Path(tiny.paths["pa100k"])
    mat = scipy.io.loadmat(root / "annotation" / "annotation.mat")
    keys = {k for k in mat if not k.startswith("__")}
    assert keys == {"attributes", "train_images_name", "val_images_name", "test_images_name",
                    "train_label", "val_label", "test_label"}
    assert mat["attributes"].shape == (26, 1)
    assert [str(mat["attributes"][i][0][0]) for i in range(26)] == list(PA100K_ATTRIBUTES)
    names = []
    for split in ("train", "val", "test"):
        cell, labels = mat[f"{split}_images_name"], mat[f"{split}_label"]
        assert cell.shape == (tiny.counts[f"pa100k_{split}_images"], 1)
        assert labels.shape == (cell.shape[0], 26) and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1}
        names += [str(cell[i][0][0]) for i in range(cell.shape[0])]
    assert names == [f"{i:06d}.jpg" for i in range(1, len(names) + 1)]
    assert all((root / "release_data" / "release_data" / n).is_file() for n in names)


def test_cuhk_pedes_json(tiny):
    root = Path(tiny.paths["cuhk_pedes"])
    entries = json.loads((root / "reid_raw.json").read_text())
    ids = {"train": set(), "val": set(), "test": set()}
    for entry in entries:
        assert set(entry) == {"split", "captions", "file_path", "processed_tokens", "id"}
        assert entry["split"] in ids and isinstance(entry["id"], int)
        assert (root / "imgs" / entry["file_path"]).is_file()
        assert "/" in entry["file_path"]
        assert len(entry["processed_tokens"]) == len(entry["captions"]) >= 1
        assert all(t == t.lower() for tokens in entry["processed_tokens"] for t in tokens)
        ids[entry["split"]].add(entry["id"])
    assert ids["train"] == set(range(1, len(ids["train"]) + 1))
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert ids["val"] and ids["test"]


def test_config_presets_and_validation():
    small = SynthPedConfig.preset("small", seed=4)
    assert (small.height, small.width, small.seed) == (128, 64, 4)
    assert SynthPedConfig.preset("default").height == 256
    with pytest.raises(ValueError, match="unknown SynthPed preset"):
        SynthPedConfig.preset("huge")
    with pytest.raises(ValueError, match="difficulty"):
        SynthPedConfig.preset("tiny", difficulty=1.5).validate()
    with pytest.raises(ValueError, match="1501"):
        SynthPedConfig.preset("tiny", reid_train_identities=1000,
                              reid_test_identities=600).validate()


def test_refuses_to_overwrite_foreign_folders(tmp_path):
    (tmp_path / "Market-1501-v15.09.15").mkdir()
    with pytest.raises(FileExistsError, match="synthped.json"):
        write_synthped(tmp_path, SynthPedConfig.preset("tiny"))
    assert (tmp_path / "Market-1501-v15.09.15").is_dir()


def test_cli_writes_datasets_and_figure(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["synthped", str(out), "--preset", "tiny", "--seed", "2",
                     "--difficulty", "0.9"]) == 0
    printed = capsys.readouterr().out
    assert "Market-1501-v15.09.15" in printed and "synthped_grid.png" in printed
    grid = out / "synthped_grid.png"
    assert grid.is_file() and grid.read_bytes()[:4] == b"\x89PNG"
    info = SynthPedInfo.load(out)
    assert info.config.difficulty == 0.9 and info.config.seed == 2
