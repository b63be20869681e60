"""Per-attribute thresholds calibrated on validation, and mutually exclusive groups.

The NumPy parts are checked against brute force (every threshold on a fine grid); the run
function against the saved model: its thresholds are recomputed from its validation
probabilities, its ``calibrated`` test metrics from its own decisions.
"""

import keras
import numpy as np
import pytest
from PIL import Image

from valpat_keras.data.attribute_names import PA100K_ATTRIBUTES
from valpat_keras.data.records import AttributeDataset, AttributeRecord
from valpat_keras.evaluation import evaluate_attributes
from valpat_keras.evaluation.attribute_metrics import calibrate_attribute_thresholds
from valpat_keras.models import load_task
from valpat_keras.tasks.attribute_scores import decide_attributes, exclusive_groups_for
from valpat_keras.tasks.attributes import AttributesRunConfig, train_attributes


def _labels_and_probs(seed=0, n=150):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 4)) < [0.06, 0.3, 0.5, 0.85]).astype(np.int8)
    probs = np.clip(0.25 * labels + 0.75 * rng.random((n, 4)), 0, 1)
    labels[rng.random((n, 4)) < 0.05] = -1  # unknown: ignored
    return labels, np.round(probs, 2)  # rounded: tied probabilities


def _grid_best(labels, probs, score):
    grid = np.linspace(0, 1, 1001)
    return [max(score(labels[:, [j]], probs[:, [j]], t) for t in grid)
            for j in range(labels.shape[1])]


def _f1(labels, probs, threshold):
    return evaluate_attributes(labels, probs, threshold)["label_f1"][0]


def _ma(labels, probs, threshold):
    return evaluate_attributes(labels, probs, threshold)["label_ma"][0]


@pytest.mark.parametrize("criterion, score", [("balanced_accuracy", _ma), ("f1", _f1)])
def test_thresholds_maximise_the_criterion_on_the_calibration_labels(criterion, score):
    labels, probs = _labels_and_probs()
    thresholds = calibrate_attribute_thresholds(labels, probs, criterion)
    assert np.all((0 < thresholds) & (thresholds < 1))
    reached = [score(labels[:, [j]], probs[:, [j]], thresholds[j]) for j in range(4)]
    np.testing.assert_allclose(reached, _grid_best(labels, probs, score), atol=1e-12)
    if criterion == "balanced_accuracy":  # mA is the mean of the per-attribute terms
        calibrated = evaluate_attributes(labels, probs, thresholds)["ma"]
        assert calibrated >= evaluate_attributes(labels, probs)["ma"]


def test_attribute_without_both_classes_keeps_one_half():
    labels = np.array([[1, 0], [1, 1], [-1, 0]])
    probs = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.4]])
    thresholds = calibrate_attribute_thresholds(labels, probs)
    assert thresholds[0] == 0.5
    assert 0.4 < thresholds[1] < 0.7  # the cut between the negatives and the positive


def test_predictions_replace_the_threshold_in_the_metrics():
    labels, probs = _labels_and_probs(1)
    thresholds = np.array([0.3, 0.4, 0.5, 0.6])
    by_threshold = evaluate_attributes(labels, probs, thresholds)
    by_predictions = evaluate_attributes(labels, probs, predictions=probs > thresholds)
    for key in ("ma", "instance_f1", "instance_acc"):
        assert by_threshold[key] == by_predictions[key]


def test_exclusive_groups_choose_one_member():
    probs = np.array([[0.2, 0.3, 0.1, 0.9], [0.7, 0.8, 0.6, 0.1], [0.5, 0.45, 0.3, 0.2]])
    thresholds = np.array([0.5, 0.5, 0.5, 0.5])
    decided = decide_attributes(probs, thresholds, [[0, 1, 2]])
    np.testing.assert_array_equal(decided[:, :3].sum(axis=1), [1, 1, 1])
    # At 0.5 thresholds the plain argmax; outside the group the thresholds decide.
    np.testing.assert_array_equal(np.argmax(decided[:, :3], axis=1), [1, 1, 0])
    np.testing.assert_array_equal(decided[:, 3], probs[:, 3] > 0.5)
    np.testing.assert_array_equal(decide_attributes(probs, 0.5, None), probs > 0.5)
    # A member far above a low threshold beats a higher probability above a high one.
    decided = decide_attributes(probs, np.array([0.9, 0.95, 0.1, 0.5]), [[0, 1, 2]])
    np.testing.assert_array_equal(np.argmax(decided[:, :3], axis=1), [2, 2, 2])


def test_known_groups_are_found_by_name():
    groups = exclusive_groups_for(PA100K_ATTRIBUTES)
    names = [[PA100K_ATTRIBUTES[i] for i in g] for g in groups]
    assert sorted(map(sorted, names)) == [["Age18-60", "AgeLess18", "AgeOver60"],
                                          ["Back", "Front", "Side"]]
    rap_v2 = ["Female", "AgeLess16", "Age17-30", "Age31-45", "Age46-60", "BodyFat"]
    assert exclusive_groups_for(rap_v2) == [[1, 2, 3, 4]]  # not RAP v1's three bins too
    assert exclusive_groups_for(["Female", "Hat"]) == [] == exclusive_groups_for(None)


def _toy_dataset(root, seed=2):
    """PA-100K names: the two exclusive groups apply; Female is visible (bright images)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(20):
        labels = (rng.random(len(PA100K_ATTRIBUTES)) < 0.4).astype(np.int8)
        labels[1:4] = np.eye(3, dtype=np.int8)[i % 3]  # one age bin
        labels[4:7] = np.eye(3, dtype=np.int8)[(i // 3) % 3]  # one viewpoint
        image = rng.integers(0, 120, size=(32, 16, 3)) + 120 * labels[0]
        path = root / f"{i}.png"
        Image.fromarray(image.astype(np.uint8)).save(path)
        records.append(AttributeRecord(str(path), labels))
    return AttributeDataset("toy", str(root), records[:8], records[8:14], records[14:],
                            list(PA100K_ATTRIBUTES), eval_indices=list(range(10)))


@pytest.mark.keras
def test_run_calibrates_on_validation_and_saves_the_rules(tmp_path):
    dataset = _toy_dataset(tmp_path)
    config = AttributesRunConfig(epochs=1, batch_size=4, image_size=(32, 16), augment=False,
                                 steps_per_epoch=2, verbose=0)
    metrics = train_attributes(dataset, tmp_path / "run", config)
    saved = keras.saving.load_model(tmp_path / "run" / "attribute_recognizer.keras")
    # The thresholds are those of the validation probabilities, never of test.
    val_probs = saved.predict_probabilities([r.path for r in dataset.val], batch_size=4)
    val_labels = np.stack([r.attributes for r in dataset.val])
    np.testing.assert_allclose(saved.attribute_thresholds,
                               calibrate_attribute_thresholds(val_labels, val_probs),
                               atol=1e-6)
    assert [sorted(g) for g in saved.exclusive_groups] == [[1, 2, 3], [4, 5, 6]]
    # The calibrated test metrics are those of the saved model's decisions.
    keep = dataset.eval_indices
    probs = saved.predict_probabilities([r.path for r in dataset.test], batch_size=4)
    labels = np.stack([r.attributes for r in dataset.test])[:, keep]
    decided = saved.decide(probs)
    assert np.all(decided[:, 1:4].sum(axis=1) == 1) and np.all(decided[:, 4:7].sum(axis=1) == 1)
    want = evaluate_attributes(labels, probs[:, keep], predictions=decided[:, keep])
    calibrated = metrics["calibrated"]
    for key in ("ma", "instance_f1"):
        assert calibrated[key] == pytest.approx(want[key], abs=1e-6)
        assert metrics["side_by_side"][key] == {"threshold_0.5": metrics[key],
                                                "calibrated": calibrated[key]}
    assert metrics["ma"] == pytest.approx(evaluate_attributes(labels, probs[:, keep])["ma"],
                                          abs=1e-6)
    assert calibrated["calibration"] == {"split": "val", "criterion": "balanced_accuracy",
                                         "num_images": 6}
    assert calibrated["thresholds"]["Female"] == pytest.approx(
        saved.attribute_thresholds[0], abs=1e-9)
    # The preset of the run folder decides the same way.
    np.testing.assert_array_equal(load_task(tmp_path / "run").decide(probs), decided)
    np.testing.assert_array_equal(saved.predict_labels([r.path for r in dataset.test],
                                                       batch_size=4), decided)
