"""`valpat demo --quick`: the smoke run writes the results table, its JSON and the figures.

Unmarked: the demo runs once (in the JAX pass of scripts/test.sh), in a subprocess so this
process never imports Keras. The subprocess uses PyTorch: the quick run is a dozen two-step
trainings, and PyTorch's eager steps skip the per-model compilation that dominates them on
JAX (about a quarter less CPU time here); the notebooks cover JAX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from valpat_keras.demo import ABLATION_OBJECTIVES, FIGURES, results_markdown


def test_demo_quick_writes_results_and_figures(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "valpat_keras", "demo", "--quick", "--out", str(out),
         "--seed", "1"],
        check=False, capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "torch"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # A progress line per stage, then the table.
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 15 and lines[-1].startswith("[##############.] 15/15")
    assert "| Supervised re-ID (Market layout) | mAP |" in done.stdout

    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"budget", "seed", "backend", "synthped", "pretraining",
                            "transfer", "ablation", "figures", "seconds"}
    assert results["seed"] == 1 and results["budget"]["synthped_preset"] == "tiny"
    assert results["backend"] == "torch"
    transfer = results["transfer"]
    for task, keys in [("reid_supervised", {"mAP", "rank1"}),
                       ("reid_unsupervised", {"mAP", "rank1"}),
                       ("attributes", {"ma", "instance_f1"}), ("text_search", {"R1", "mAP"})]:
        for init in ("random", "valpat"):
            assert keys <= set(transfer[task][init]), (task, init)
            assert all(0.0 <= transfer[task][init][k] <= 1.0 for k in keys), (task, init)
    assert 0.0 <= transfer["attributes"]["zero_shot"]["ma"] <= 1.0
    assert set(results["ablation"]) == {"random", *ABLATION_OBJECTIVES}
    for row in results["ablation"].values():
        assert 0.0 <= row["reid_mAP"] <= 1.0 and 0.0 <= row["reid_rank1"] <= 1.0
        assert row["attribute_ma"] is None  # the quick run leaves the ablation fine-tune out
    assert {"ssl_loss", "itc_loss", "attr_loss"} <= set(results["pretraining"]["final"])

    assert set(results["figures"]) == set(FIGURES)
    for name in FIGURES:
        assert (out / name).stat().st_size > 1000, name
    markdown = (out / "results.md").read_text()
    assert markdown == results_markdown(results)
    assert "| ssl + itc + attr |" in markdown and "Zero-shot attributes" in markdown
