"""`valpat evaluate` on a tiny SynthPed Market-1501 tree.

The scores the command writes are recomputed from the encoder it was given
(tests/metric_checks.py: embeddings, one dense distance matrix, `evaluate_reid`); the
verification scores from the same embeddings, the pairs built by a double loop and
scikit-learn's ``roc_curve`` / ``roc_auc_score``.
"""

import json
import shutil

import keras
import numpy as np
import pytest
from metric_checks import REID_KEYS, assert_reid_metrics_equal, embed, reid_metrics
from sklearn.metrics import roc_auc_score, roc_curve

from valpat_keras.cli.main import main
from valpat_keras.data import registry
from valpat_keras.data.splits import split_reid_validation
from valpat_keras.data.synthped import SynthPedConfig, write_synthped
from valpat_keras.models import ImageEncoder, build_image_encoder

SIZE = (64, 32)


@pytest.fixture(scope="module")
def synthped_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthped")
    write_synthped(root, SynthPedConfig.preset("tiny", seed=3))
    return root


@pytest.fixture(scope="module")
def encoder_preset(tmp_path_factory):
    """A random encoder saved as a preset folder (an ``--init`` the command accepts)."""
    keras.utils.set_random_seed(5)
    preset = tmp_path_factory.mktemp("encoder") / "image_encoder"
    build_image_encoder("tiny", image_size=SIZE).save_to_preset(str(preset))
    return preset


def test_evaluate_writes_the_scores_of_the_given_encoder(synthped_root, encoder_preset,
                                                         tmp_path, capsys):
    out = tmp_path / "eval"
    status = main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(out),
                   "--init", str(encoder_preset), "--image-size", "64x32", "--batch-size", "16",
                   "--rerank"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = reid_metrics(ImageEncoder.from_preset(str(encoder_preset)),
                            registry.load("market1501", synthped_root), SIZE, rerank=True)
    assert_reid_metrics_equal(metrics, expected)
    assert_reid_metrics_equal(metrics["rerank"], expected["rerank"])
    # Re-ranking changes the ranking of a random encoder: the two entries are not one copy.
    assert [metrics[k] for k in REID_KEYS] != [metrics["rerank"][k] for k in REID_KEYS]
    assert (out / "ranked_results.png").stat().st_size > 0
    assert (out / "cmc.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert f"{100 * metrics['mAP']:.1f}" in table and "re-ranked" in table


def test_evaluate_random_encoder_reports_its_own_cmc(synthped_root, tmp_path, capsys):
    out = tmp_path / "eval"
    status = main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(out),
                   "--image-size", "64x32", "--batch-size", "16"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # The headline ranks are points of the saved CMC curve, which never decreases.
    cmc = metrics["cmc"]
    assert [metrics["rank1"], metrics["rank5"], metrics["rank10"]] == [cmc[0], cmc[4], cmc[9]]
    assert cmc == sorted(cmc) and "rerank" not in metrics
    queries = registry.load("market1501", synthped_root).query
    assert metrics["num_valid_queries"] == len(queries)
    assert metrics["init"] == "random"
    assert "mAP" in capsys.readouterr().out


def test_evaluate_rejects_non_reid_data(synthped_root, tmp_path, capsys):
    status = main(["evaluate", "--data", f"pa100k:{synthped_root}", "--out", str(tmp_path)])
    assert status == 2
    assert "attributes dataset" in capsys.readouterr().err


def test_evaluate_names_missing_encoder(synthped_root, tmp_path, capsys):
    status = main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(tmp_path),
                   "--init", str(tmp_path / "no_such_run")])
    assert status == 2
    assert "no_such_run" in capsys.readouterr().err


def _pairs(model, query, gallery):
    """Cosine scores and labels of every query-gallery pair but same pid and same camera."""
    qf = embed(model, [r.path for r in query], SIZE)
    gf = embed(model, [r.path for r in gallery], SIZE)
    scores, labels = [], []
    for i, q in enumerate(query):
        for j, g in enumerate(gallery):
            if q.pid == g.pid and q.camid == g.camid:
                continue
            scores.append(float(qf[i] @ gf[j]))
            labels.append(q.pid == g.pid)
    return np.array(scores), np.array(labels)


def _sklearn_threshold(scores, labels, target_fpr):
    """The highest threshold reaching the largest TPR with FPR <= target (scikit-learn)."""
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    best = tpr[fpr <= target_fpr].max()
    return thresholds[np.flatnonzero(tpr == best)[0]]


@pytest.mark.keras
def test_evaluate_reports_verification_calibrated_on_validation(synthped_root, encoder_preset,
                                                                tmp_path, capsys):
    out = tmp_path / "eval"
    status = main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(out),
                   "--init", str(encoder_preset), "--image-size", "64x32", "--batch-size", "16",
                   "--target-fpr", "0.05"])
    assert status == 0
    verification = json.loads((out / "metrics.json").read_text())["verification"]
    data = registry.load("market1501", synthped_root)
    encoder = ImageEncoder.from_preset(str(encoder_preset))
    scores, labels = _pairs(encoder, data.query, data.gallery)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    for target, key in ((1e-2, "tpr@fpr=1e-02"), (1e-3, "tpr@fpr=1e-03")):
        assert verification[key] == pytest.approx(tpr[fpr <= target].max(), abs=1e-6)
    assert verification["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-5)
    assert verification["num_positive_pairs"] == labels.sum()
    assert verification["num_negative_pairs"] == (~labels).sum()
    # The threshold comes from identities held out of train (seed 0), never from test.
    _, val_query, val_gallery = split_reid_validation(data.train, 0.1, 0)
    val_scores, val_labels = _pairs(encoder, val_query, val_gallery)
    threshold = verification["threshold"]
    assert threshold == pytest.approx(_sklearn_threshold(val_scores, val_labels, 0.05),
                                      abs=1e-5)
    assert verification["calibration"]["target_fpr"] == 0.05
    assert "validation split" in verification["calibration"]["source"]
    assert verification["tpr_at_threshold"] == pytest.approx(
        np.mean(scores[labels] >= threshold), abs=1e-3)
    assert verification["fpr_at_threshold"] == pytest.approx(
        np.mean(scores[~labels] >= threshold), abs=1e-3)
    table = capsys.readouterr().out
    assert "TPR@1e-02" in table and f"{threshold:.4f}" in table

    # A run folder's own verification.json is used as it is.
    run = tmp_path / "run"
    shutil.copytree(encoder_preset, run)
    (run / "verification.json").write_text(json.dumps(
        {"threshold": 0.25, "similarity": "cosine", "target_fpr": 0.001,
         "split": "validation"}))
    assert main(["evaluate", "--data", f"market1501:{synthped_root}", "--out", str(out),
                 "--init", str(run), "--image-size", "64x32", "--batch-size", "16"]) == 0
    verification = json.loads((out / "metrics.json").read_text())["verification"]
    assert verification["threshold"] == 0.25
    assert verification["calibration"]["source"].endswith("verification.json")
    assert verification["fpr_at_threshold"] == pytest.approx(
        np.mean(scores[~labels] >= 0.25), abs=1e-3)
