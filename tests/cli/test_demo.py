"""`valpat demo --quick`: the smoke run's table, JSON and figures agree with the runs behind
them, the transfer numbers are those of the models the runs saved (recomputed a second way by
tests/metric_checks.py), and a second run takes its pretraining from the cache.

Unmarked: the demo runs once (in the JAX pass of scripts/test.sh), in a subprocess so this
process never imports Keras. The subprocess uses PyTorch: the quick run is a dozen two-step
trainings, and PyTorch's eager steps skip the per-model compilation that dominates them on
JAX; the notebooks cover JAX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from valpat_keras.demo import FIGURES, publish_results, results_markdown
from valpat_keras.demo.report import ablation_leads
from valpat_keras.demo.stages import PRETRAINING_RUNS, TRANSFER_METRICS, TRANSFERS


def _demo(out, *flags):
    done = subprocess.run(
        [sys.executable, "-m", "valpat_keras", "demo", "--quick", "--out", str(out),
         "--seed", "1", *flags],
        check=False, capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "torch"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    first = _demo(out)
    results = json.loads((out / "results.json").read_text())
    return out, first, results


def test_progress_lines_then_the_table(demo):
    _, done, _ = demo
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 16 and lines[-1].startswith("[###############.] 16/16")
    assert "| Supervised re-ID (Market layout) | mAP |" in done.stdout
    assert "clusters per round:" in done.stdout
    # No framework chatter between the stage lines.
    assert "retracing" not in done.stdout + done.stderr


def test_transfer_means_are_those_of_the_runs_metrics_files(demo):
    out, _, results = demo
    assert results["seed"] == 1 and results["backend"] == "torch"
    assert results["budget"]["synthped_preset"] == "tiny"
    for task in TRANSFERS:
        summary = results["transfer"][task]
        for init in ("random", "valpat"):
            for metric in TRANSFER_METRICS[task]:
                values = []
                for seed in results["budget"]["seeds"]:
                    saved = json.loads((out / "runs" / f"{task}_{init}_seed{seed}" /
                                        "metrics.json").read_text())
                    values.append(saved[metric])
                assert summary[init][metric]["values"] == pytest.approx(values), (task, metric)
                assert summary[init][metric]["mean"] == pytest.approx(np.mean(values))
        metric = summary["metric"]
        gain = summary["valpat"][metric]["mean"] - summary["random"][metric]["mean"]
        assert summary["gain"] == pytest.approx(gain)
        assert summary["clear"] == (gain > summary["spread"])


def test_transfer_metrics_are_those_of_the_saved_models(demo):
    # Every transfer's numbers recomputed from the model its run folder saved (in a torch
    # subprocess too): embeddings, dense distances and the dense metric functions of
    # tests/metric_checks.py, against what results.json reports for the first seed.
    out, _, results = demo
    seed = results["budget"]["seeds"][0]
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parents[1] / "metric_checks.py"), str(out),
         str(seed)], check=False, capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "torch"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")][-1]
    recomputed = json.loads(line[len("RESULT "):])
    index = results["budget"]["seeds"].index(seed)
    for task in TRANSFERS:
        for init in ("random", "valpat"):
            for metric in TRANSFER_METRICS[task]:
                reported = results["transfer"][task][init][metric]["values"][index]
                assert reported == pytest.approx(recomputed[task][init][metric], abs=1e-6), (
                    task, init, metric)


def test_model_selection_used_validation_and_clusters_are_reported(demo):
    out, _, results = demo
    seed = results["budget"]["seeds"][0]
    for task in ("reid_supervised", "reid_unsupervised"):
        saved = json.loads((out / "runs" / f"{task}_valpat_seed{seed}" / "metrics.json")
                           .read_text())
        history = json.loads((out / "runs" / f"{task}_valpat_seed{seed}" / "history.json")
                             .read_text())
        assert saved["num_val_ids"] >= 2
        # An epoch is chosen on validation whenever one trained (a cluster contrast round
        # with fewer than two clusters trains nothing, so nothing is evaluated).
        trained = any(not h.get("skipped") for h in history)
        assert saved["selection"] == ("validation" if trained else "last_epoch"), task
        if task == "reid_supervised":
            assert trained
        else:
            reported = results["unsupervised_runs"]["valpat"][0]["rounds"]
            assert [c for c, _ in reported] == [h["num_clusters"] for h in history]
            assert [e for _, e in reported] == pytest.approx([h["eps"] for h in history])


def test_ablation_rows_and_leads(demo):
    _, _, results = demo
    rows = results["ablation"]["rows"]
    assert set(rows) == {"random", *PRETRAINING_RUNS}
    assert results["ablation"]["leads"] == ablation_leads(rows)
    # Text search is scored in the frozen image-text space: only runs trained with itc.
    assert {name for name, row in rows.items() if row["search_R1"] is not None} == {
        name for name in PRETRAINING_RUNS if "itc" in name}


def test_report_figures_and_environment(demo, tmp_path):
    out, _, results = demo
    assert set(results["figures"]) == set(FIGURES)
    for name in FIGURES:
        assert (out / name).stat().st_size > 1000, name
    assert (out / "results.md").read_text() == results_markdown(results)
    env = results["environment"]
    assert env["cores"] == os.cpu_count() and "keras" in env["versions"]
    page = publish_results(out, tmp_path / "docs" / "results.md")
    text = page.read_text()
    assert "This page is generated" in text and "![loss_curves.png](results/loss_curves.png)" in text
    assert (tmp_path / "docs" / "results" / "loss_curves.png").is_file()


def test_second_run_reuses_the_cached_pretraining(demo):
    out, _, results = demo
    again = _demo(out)
    assert "reusing the cached pretraining run" in again.stdout
    second = json.loads((out / "results.json").read_text())
    assert second["cached_runs"] == len(PRETRAINING_RUNS) == 4
    assert second["pretraining"] == {
        name: {**run, "reused": True} for name, run in results["pretraining"].items()}
