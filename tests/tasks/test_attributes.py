"""AttributeRecognizer: loss, metric, a training step, prediction API and saving."""

import warnings
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from valpat_keras.data.records import AttributeDataset, AttributeRecord
from valpat_keras.errors import InputError
from valpat_keras.evaluation import evaluate_attributes
from valpat_keras.evaluation.features import extract_features
from valpat_keras.evaluation.linear_probe import fit_attribute_probe
from valpat_keras.models import build_image_encoder, load_task
from valpat_keras.optimizers import GroupedAdamW
from valpat_keras.tasks import attribute_training
from valpat_keras.tasks.attributes import (
    AttributeMeanAccuracy,
    AttributeRecognizer,
    AttributesRunConfig,
    init_head_from_linear_probe,
    train_attributes,
)

from .split_guard import Gate, RecordingList

pytestmark = pytest.mark.keras

NAMES = ["Female", "Hat", "Backpack", "Shorts", "boots"]


def _bce(labels, logits, ratios, smoothing=0.0):
    # Rethinking_of_PAR: DeepMAR weights of the hard labels, BCE against smoothed targets,
    # averaged over the known (0/1) entries.
    known = (labels == 0) | (labels == 1)
    pos = (labels == 1).astype(np.float64)
    weight = np.exp(pos * (1 - ratios) + (1 - pos) * ratios) * known
    target = pos * (1 - smoothing) + smoothing / 2
    prob = 1 / (1 + np.exp(-logits))
    bce = -(target * np.log(prob) + (1 - target) * np.log(1 - prob))
    return (weight * bce).sum() / known.sum()


@pytest.fixture(scope="module")
def encoder():
    # Built once per module (the slow part); each test wraps it in a new task model.
    return build_image_encoder("tiny", image_size=(64, 32))


def _model(encoder, **kwargs):
    return AttributeRecognizer(encoder, num_attributes=5, attribute_names=NAMES, **kwargs)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_loss_is_weighted_bce_with_masked_unknowns_and_smoothing(encoder, smoothing):
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 2, size=(6, 5)).astype("float32")
    logits = rng.normal(size=(6, 5)).astype("float32")
    ratios = np.array([0.1, 0.3, 0.5, 0.7, 0.9], "float32")
    model = _model(encoder, positive_ratios=ratios, label_smoothing=smoothing)
    got = float(ops.convert_to_numpy(model.compute_loss(y=labels, y_pred=logits)))
    np.testing.assert_allclose(got, _bce(labels, logits.astype(np.float64), ratios, smoothing),
                               rtol=1e-5)
    # An unknown label makes its logit irrelevant.
    changed = logits.copy()
    changed[labels == -1] += 5.0
    again = float(ops.convert_to_numpy(model.compute_loss(y=labels, y_pred=changed)))
    np.testing.assert_allclose(again, got, rtol=1e-6)


def test_mean_accuracy_metric_accumulates_like_evaluate_attributes():
    rng = np.random.default_rng(1)
    labels = rng.integers(-1, 2, size=(20, 5)).astype("float32")
    logits = rng.normal(size=(20, 5)).astype("float32")
    metric = AttributeMeanAccuracy(5, indices=[0, 2, 3])
    metric.update_state(labels[:7], logits[:7])
    metric.update_state(labels[7:], logits[7:])
    want = evaluate_attributes(labels[:, [0, 2, 3]], 1 / (1 + np.exp(-logits[:, [0, 2, 3]])))
    np.testing.assert_allclose(float(ops.convert_to_numpy(metric.result())), want["ma"],
                               rtol=1e-5)
    metric.reset_state()
    assert float(ops.convert_to_numpy(metric.result())) == 0.0


def test_fit_learns_a_visible_attribute_and_predicts_by_name(encoder, tmp_path):
    # Attribute 1 ("Hat") is on iff the top of the image is bright; others random / unknown.
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 0.3, size=(16, 64, 32, 3)).astype("float32")
    labels = rng.integers(-1, 2, size=(16, 5)).astype("float32")
    labels[:, 1] = np.arange(16) % 2
    images[labels[:, 1] == 1, :16] += 0.7
    keras.utils.set_random_seed(0)
    model = _model(encoder, positive_ratios=[0.5] * 5, eval_indices=[1])
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images, labels, batch_size=8, epochs=4, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["ma"][-1] > 0.5

    path = tmp_path / "person.png"
    Image.fromarray((images[1] * 255).astype("uint8")).save(path)
    from_file = model.predict_attributes(str(path))
    from_array = model.predict_attributes(images[1])
    assert list(from_file[0]) == NAMES
    assert all(0.0 <= p <= 1.0 for p in from_file[0].values())
    np.testing.assert_allclose(from_file[0]["Hat"], from_array[0]["Hat"], atol=0.02)

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded, AttributeRecognizer)
    assert loaded.attribute_names == NAMES and loaded.eval_indices == [1]
    np.testing.assert_allclose(loaded.predict_probabilities(images[:4]),
                               model.predict_probabilities(images[:4]), atol=1e-5)


def test_bad_arguments_are_reported(encoder):
    with pytest.raises(ValueError, match="positive_ratios has 2 entries for 5"):
        AttributeRecognizer(encoder, 5, positive_ratios=[0.5, 0.5])
    with pytest.raises(ValueError, match="head_lr_multiplier must be >= 0, got -1"):
        AttributeRecognizer(encoder, 5, head_lr_multiplier=-1)
    model = AttributeRecognizer(encoder, 5)
    with pytest.raises(ValueError, match="without `loss`"):
        model.compile(loss="binary_crossentropy")


@pytest.mark.parametrize("batch_norm", [True, False])
def test_head_starts_at_the_prior_logit_that_minimises_the_weighted_bce(encoder, batch_norm):
    ratios = np.array([0.02, 0.2, 0.5, 0.8, 0.0], "float32")
    model = _model(encoder, positive_ratios=ratios, head_batch_norm=batch_norm)
    head = model.get_layer("attribute_head")
    bias = head.norm.beta if batch_norm else head.dense.bias
    prior = ops.convert_to_numpy(bias).astype(np.float64)
    # A rare attribute starts far below 0.5 (a zero bias would flag half of every batch).
    assert prior[0] < -2.5 and prior[4] < -5.0 and abs(prior[2]) < 1e-6
    # Each prior is the constant logit with the smallest loss on labels with those ratios.
    labels = (np.arange(1000)[:, None] < np.round(ratios * 1000)[None, :]).astype("float32")
    for j in range(4):
        def loss(z, j=j):
            logits = np.full((1000, 1), z)
            return _bce(labels[:, j:j + 1], logits, ratios[j:j + 1].astype(np.float64))
        assert loss(prior[j]) < min(loss(prior[j] - 0.05), loss(prior[j] + 0.05))


def test_default_optimizer_gives_the_head_its_multiplier_also_after_loading(encoder, tmp_path):
    model = _model(encoder, positive_ratios=[0.3] * 5, head_lr_multiplier=4.0)
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(size=(4, 64, 32, 3)).astype("float32"),
              rng.integers(0, 2, size=(4, 5)).astype("float32"), epochs=1, verbose=0)

    def multipliers(m):
        assert isinstance(m.optimizer, GroupedAdamW)
        head = {m.optimizer.multiplier(v) for v in m.head.trainable_variables}
        body = {m.optimizer.multiplier(v) for v in m.backbone.trainable_variables}
        return head, body

    assert multipliers(model) == ({4.0}, {1.0})
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.head_lr_multiplier == 4.0
    assert multipliers(loaded) == ({4.0}, {1.0})


def test_train_attributes_reads_the_test_split_only_after_training(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    records = []
    for i in range(16):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(64, 32, 3), dtype=np.uint8)).save(path)
        records.append(AttributeRecord(str(path), rng.integers(0, 2, 5).astype(np.int8)))
    gate = Gate()
    test = RecordingList(records[12:], gate)
    dataset = AttributeDataset("toy", str(tmp_path), records[:8], records[8:12], test, NAMES,
                               eval_indices=[0, 1, 2])
    gate.open_after_call(monkeypatch, AttributeRecognizer, "fit")
    config = AttributesRunConfig(epochs=1, batch_size=4, image_size=(64, 32), augment=False,
                                 steps_per_epoch=2, verbose=0)
    metrics = train_attributes(dataset, tmp_path / "run", config)
    assert gate.calls == 1
    assert test.reads and test.early_reads() == []
    assert metrics["num_test"] == 4 and metrics["head_init"] == "prior"
    # The validation split is what fit sees.
    history = (tmp_path / "run" / "history.json").read_text()
    assert '"val_loss"' in history
    # The reported metrics are those of the saved model on the test split.
    saved = keras.saving.load_model(tmp_path / "run" / "attribute_recognizer.keras")
    probs = saved.predict_probabilities([r.path for r in records[12:]], batch_size=4)
    labels = np.stack([r.attributes for r in records[12:]])[:, [0, 1, 2]]
    want = evaluate_attributes(labels, probs[:, [0, 1, 2]])
    for key in ("ma", "instance_acc", "instance_prec", "instance_recall", "instance_f1"):
        np.testing.assert_allclose(metrics[key], want[key], atol=1e-6)
    np.testing.assert_allclose([metrics["label_ma"][n] for n in NAMES[:3]], want["label_ma"],
                               atol=1e-6)
    # The run folder is also one preset of the same model.
    preset = load_task(tmp_path / "run")
    assert isinstance(preset, AttributeRecognizer) and preset.attribute_names == list(NAMES)
    np.testing.assert_allclose(
        preset.predict_probabilities([r.path for r in records[12:]], batch_size=4), probs,
        atol=1e-5)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_linear_probe_head_init_predicts_what_the_probe_predicts(encoder, tmp_path, batch_norm):
    rng = np.random.default_rng(5)
    paths = []
    for i in range(24):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    labels = rng.integers(0, 2, size=(24, 5)).astype("float32")
    model = _model(encoder, positive_ratios=[0.5] * 5, head_batch_norm=batch_norm,
                   loss_weighting="balanced")
    init_head_from_linear_probe(model, paths, labels, (64, 32), batch_size=8)

    features = extract_features(encoder, paths, (64, 32), 8, flip=False, normalize=False,
                                verbose=False).features
    weights, bias = fit_attribute_probe(features, labels, 0.1, balanced=True)
    expected = 1 / (1 + np.exp(-(features @ weights + bias)))
    # Inference uses the moving statistics, set to the identity on the training logits.
    np.testing.assert_allclose(model.predict_probabilities(paths, batch_size=8), expected,
                               atol=2e-3)


def test_train_attributes_rejects_an_unknown_head_init(tmp_path):
    data = SimpleNamespace(name="pa100k", root="/nowhere", train=[object()], test=[object()])
    with pytest.raises(InputError, match="head_init must be one of"):
        train_attributes(data, tmp_path, AttributesRunConfig(head_init="probe"))
    with pytest.raises(InputError, match="batch_size must be a positive integer, got 0"):
        train_attributes(data, tmp_path, AttributesRunConfig(batch_size=0))


class _Resolved(Exception):
    """Raised in place of the input check, carrying the config `train_attributes` resolved."""


@pytest.fixture
def resolve(monkeypatch, tmp_path):
    """Calls `train_attributes` up to its input check; returns the config it resolved."""
    def check_inputs(dataset, config):
        raise _Resolved(config)

    monkeypatch.setattr(attribute_training, "_check_inputs", check_inputs)
    data = SimpleNamespace(name="toy", root="/nowhere", train=[], test=[])

    def run(*args, **kwargs):
        with pytest.raises(_Resolved) as stopped:
            train_attributes(data, tmp_path, *args, **kwargs)
        return stopped.value.args[0]

    return run


def test_old_keyword_call_warns_and_resolves_to_the_same_config(resolve):
    with pytest.warns(DeprecationWarning, match=r"train_attributes\(config=, init=, epochs=, "
                                                r"head_lr_multiplier=\.\.\.\) is deprecated"):
        config = resolve(init="runs/pretrain", config="resnet18", epochs=3,
                         head_lr_multiplier=0.0)
    assert config == AttributesRunConfig(init="runs/pretrain", encoder_config="resnet18",
                                         epochs=3, head_lr_multiplier=0.0)
    # A string as the third argument is the old encoder configuration.
    with pytest.warns(DeprecationWarning, match=r"train_attributes\(config=\.\.\.\)"):
        assert resolve("vit_tiny") == AttributesRunConfig(encoder_config="vit_tiny")
    # Keywords override a given config's fields; a config alone does not warn.
    with pytest.warns(DeprecationWarning, match="seed="):
        assert resolve(AttributesRunConfig(epochs=5), seed=7) == AttributesRunConfig(
            epochs=5, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve(AttributesRunConfig(epochs=5)) == AttributesRunConfig(epochs=5)
        assert resolve() == AttributesRunConfig()
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['epoch'\]"):
        train_attributes(SimpleNamespace(), "unused", epoch=3)


def test_run_config_round_trips_through_json_and_yaml(tmp_path):
    config = AttributesRunConfig(init="runs/pretrain", image_size=(128, 64), epochs=3,
                                 freeze_batch_norm=False, zero_shot=True,
                                 zero_shot_prompts={"Hat": ["a cap", "a man"]})
    assert AttributesRunConfig.from_file(config.save(tmp_path / "run.json")) == config
    (tmp_path / "run.yaml").write_text("init: runs/pretrain\nimage_size: [128, 64]\nepochs: 3\n"
                                       "freeze_batch_norm: false\nzero_shot: true\n"
                                       "zero_shot_prompts: {Hat: [a cap, a man]}\n")
    assert AttributesRunConfig.from_file(tmp_path / "run.yaml") == config
    with pytest.raises(InputError, match=r"unknown AttributesRunConfig field\(s\) \['config'\]"):
        AttributesRunConfig.from_dict({"config": "tiny"})


def test_compile_defaults_and_a_given_loss(encoder):
    model = _model(encoder, head_lr_multiplier=3.0, eval_indices=[0, 2])
    assert model.compiled and type(model.optimizer) is GroupedAdamW
    assert model.optimizer.get_config()["weight_decay"] == pytest.approx(5e-4)
    assert float(ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(3e-4)
    assert {model.optimizer.multiplier(v) for v in model.head.trainable_variables} == {3.0}
    assert {model.optimizer.multiplier(v) for v in model.backbone.trainable_variables} == {1.0}
    (metric,) = model.default_metrics()
    assert isinstance(metric, AttributeMeanAccuracy) and metric.indices == [0, 2]
    with pytest.raises(ValueError, match=r"AttributeRecognizer computes its own loss.*'mse'"):
        model.compile(loss="mse")
    assert not _model(encoder, compile=False).compiled


def test_frozen_batch_norm_stays_frozen_after_loading(tmp_path):
    model = AttributeRecognizer(build_image_encoder("tiny", image_size=(64, 32)), 5,
                                freeze_backbone_batch_norm=True)
    norms = [v.path for v in model.non_trainable_variables if "gamma" in v.path]
    assert norms  # the batch-norm scales are no longer trained
    model.save(tmp_path / "frozen.keras")
    loaded = keras.saving.load_model(tmp_path / "frozen.keras")
    assert loaded.freeze_backbone_batch_norm
    assert len(loaded.trainable_variables) == len(model.trainable_variables)
    assert sorted(v.path for v in loaded.non_trainable_variables if "gamma" in v.path) == \
        sorted(norms)
