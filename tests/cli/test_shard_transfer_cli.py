"""`valpat reid / attributes / search / evaluate --data shards:SHARDS` end to end (tiny).

Each command runs on a packed tiny SynthPed layout and on the folder it was packed from,
with the same seed: the run folders' ``metrics.json`` must be the same (run folders and
data roots aside), since the shards hold the folder's bytes and records in the same order.
"""

import json
from pathlib import Path

import pytest

from valpat_keras.cli.main import main
from valpat_keras.data.synthped import SynthPedConfig, write_synthped

pytestmark = pytest.mark.trains_once

TINY = ["--random-init", "--image-size", "32x16", "--epochs", "1", "--steps-per-epoch", "2",
        "--seed", "5"]
LAYOUTS = {"reid": "market1501", "attributes": "pa100k", "search": "cuhk_pedes"}


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    """A tiny SynthPed set and its three transfer layouts packed with `valpat pack`."""
    root = tmp_path_factory.mktemp("shard_cli")
    write_synthped(root / "synthped", SynthPedConfig.preset("tiny"))
    for command, layout in LAYOUTS.items():
        assert main(["pack", f"{layout}:{root / 'synthped'}", "--out",
                     str(root / f"{command}_pack"), "--num-shards", "3"]) == 0
    return root


def _metrics(out: Path, *roots: Path) -> dict:
    """``metrics.json`` with the run folder and data roots (which differ by design) masked."""
    text = (out / "metrics.json").read_text()
    for name, root in (("OUT", out), *(("DATA", r) for r in roots)):
        text = text.replace(str(root), name)
    return json.loads(text)


def _run_both(root: Path, command: str, *extra: str) -> tuple[dict, dict]:
    folder = root / "synthped"
    shard_folder = root / f"{command if command != 'evaluate' else 'reid'}_pack"
    layout = LAYOUTS.get(command, "market1501")
    runs = {}
    for name, data in (("folder", f"{layout}:{folder}"), ("shards", f"shards:{shard_folder}")):
        out = root / f"{command}_{name}"
        assert main([command, "--data", data, "--out", str(out), *extra]) == 0, name
        runs[name] = _metrics(out, folder, shard_folder)
    return runs["folder"], runs["shards"]


def test_reid_and_evaluate_on_shards_give_the_folder_metrics(packed):
    folder, shards = _run_both(packed, "reid", *TINY, "--p", "4", "--k", "4")
    assert shards == folder and {"rank1", "mAP", "num_train_images"} <= set(shards)
    # The ranked-results figure reads the query / gallery images from the shards.
    assert (packed / "reid_shards" / "ranked_results.png").is_file()
    folder, shards = _run_both(packed, "evaluate", "--init",
                               str(packed / "reid_folder" / "image_encoder"),
                               "--image-size", "32x16", "--batch-size", "8")
    # `valpat evaluate` records its --data; all else must be the same.
    assert (folder.pop("data"), shards.pop("data")) == ("market1501:DATA", "shards:DATA")
    assert shards == folder and shards["mAP"] == pytest.approx(
        json.loads((packed / "evaluate_folder" / "metrics.json").read_text())["mAP"])


@pytest.mark.parametrize(("command", "score"), [("attributes", "ma"), ("search", "R1")])
def test_attributes_and_search_train_on_shards(packed, command, score):
    # The batches equal the folder's (tests/data/test_shard_transfers.py); one tiny run each.
    out = packed / f"{command}_shards"
    assert main([command, "--data", f"shards:{packed / f'{command}_pack'}", "--out", str(out),
                 *TINY, "--batch-size", "8"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # The tiny SynthPed split sizes, under the packed dataset's name.
    assert metrics["dataset"] == LAYOUTS[command] and metrics["num_train"] == 16
    assert 0.0 <= metrics[score] <= 1.0
    assert str(packed / "synthped") not in json.dumps(metrics)  # nothing read from the folder


def test_a_pack_of_another_kind_is_one_error_line(packed, capsys):
    status = main(["reid", "--data", f"shards:{packed / 'attributes_pack'}", "--out",
                   str(packed / "bad"), *TINY])
    assert status == 2
    err = capsys.readouterr().err
    assert "holds a attributes dataset" in err and "Traceback" not in err
