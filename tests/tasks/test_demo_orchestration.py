"""`run_demo` wires its stages in order: progress lines, cache flags, results.json and the
table, with every stage replaced by a stand-in (the real demo runs in tests/cli/test_demo.py)."""

import json
import types

import pytest

from valpat_keras import demo
from valpat_keras.demo import stages
from valpat_keras.demo.budget import DemoBudget
from valpat_keras.demo.report import ablation_leads, results_markdown, summarize_transfer

pytestmark = pytest.mark.keras


@pytest.fixture
def fake_stages(monkeypatch, tmp_path):
    calls = []

    def make_data(root, budget, seed):
        calls.append(("make_data", seed))
        return types.SimpleNamespace(info=types.SimpleNamespace(counts={"pretrain_images": 20}))

    def pretraining_run(data, cache_dir, name, budget, seed, fresh, printer, verbose):
        run = cache_dir / name.replace("+", "_")
        run.mkdir(parents=True, exist_ok=True)
        (run / "history.json").write_text(json.dumps({"loss": [3.0, 2.5]}))
        (run / "pretrainer.keras").write_text("not copied")
        calls.append(("pretrain", name))
        return run, name == "ssl"

    def ablation_rows(data, runs, out, budget, seed):
        return {name: {"reid_mAP": 0.1 * i, "reid_rank1": 0.2, "probe_ma": 0.5,
                       "search_R1": None}
                for i, name in enumerate(["random", *runs])}

    def transfer(task, data, init, out, budget, seed, verbose):
        value = 0.6 if init != "random" else 0.3
        kept = {key: value for key in stages.TRANSFER_METRICS[task]}
        if task == "reid_unsupervised":
            kept["rounds"] = [[3, 0.5]]
        calls.append(("transfer", task, init == "random", seed))
        return kept

    monkeypatch.setattr(stages, "make_data", make_data)
    monkeypatch.setattr(stages, "pretraining_run", pretraining_run)
    monkeypatch.setattr(stages, "ablation_rows", ablation_rows)
    monkeypatch.setattr(stages, "transfer", transfer)
    monkeypatch.setattr(stages, "zero_shot", lambda data, run, budget: {"ma": 0.55})
    return calls


def test_stages_run_in_order_and_the_results_are_theirs(tmp_path, fake_stages):
    lines = []
    budget = DemoBudget.quick()
    results = demo.run_demo(tmp_path / "out", budget=budget, seed=1, printer=lines.append)
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 16 and progress[-1].startswith("[###############.] 16/16")
    assert [c[1] for c in fake_stages if c[0] == "pretrain"] == list(stages.PRETRAINING_RUNS)
    transfers = [c for c in fake_stages if c[0] == "transfer"]
    assert len(transfers) == len(stages.TRANSFERS) * 2 * len(budget.seeds)
    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    assert list(saved) == ["command", "budget", "seed", "backend", "environment", "synthped",
                           "pretraining", "transfer", "zero_shot", "unsupervised_runs",
                           "ablation", "figures", "seconds", "wall_seconds", "cached_runs"]
    assert saved["cached_runs"] == 1 and saved["pretraining"]["ssl"]["reused"]
    assert saved["pretraining"]["itc"]["final"] == {"loss": 2.5}
    assert saved["ablation"]["leads"] == ablation_leads(saved["ablation"]["rows"])
    per_seed = {"random": [{k: 0.3 for k in stages.TRANSFER_METRICS["attributes"]}],
                "valpat": [{k: 0.6 for k in stages.TRANSFER_METRICS["attributes"]}]}
    assert saved["transfer"]["attributes"] == json.loads(
        json.dumps(summarize_transfer("attributes", per_seed)))
    assert saved["unsupervised_runs"]["valpat"][0]["rounds"] == [[3, 0.5]]
    assert (out / "results.md").read_text() == results_markdown(results)
    # The full run is copied to OUT/pretrain without its .keras file.
    assert (out / "pretrain" / "history.json").is_file()
    assert not (out / "pretrain" / "pretrainer.keras").exists()
    assert saved["zero_shot"] == {"ma": 0.55} and saved["seed"] == 1
