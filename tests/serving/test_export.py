"""`valpat export`: exported models read back with their runtime equal the Keras models.

Every test builds or exports under the current ``KERAS_BACKEND`` (CI runs jax, tensorflow
and torch). A format the backend cannot export must fail with one message naming the
backend, the format and the backends that work; that message is tested where it applies.
"""

import json

import keras
import numpy as np
import pytest
import serving_fixtures
import tensorflow as tf
from serving_fixtures import ATTRIBUTE_NAMES, IMAGE_SIZE, SEQUENCE_LENGTH, THRESHOLD, uint8_images

from valpat_keras import __version__
from valpat_keras.cli.export import format_summary
from valpat_keras.cli.main import main
from valpat_keras.errors import InputError
from valpat_keras.models.loading import load_task
from valpat_keras.serving import export as serving_export
from valpat_keras.serving.manifest import read_manifest

pytestmark = pytest.mark.keras

# The tiny run folders (session fixtures shared with other serving tests).
pretrain_run = serving_fixtures.pretrain_run
reid_run = serving_fixtures.reid_run
attributes_run = serving_fixtures.attributes_run

BACKEND = keras.backend.backend()
#: The tested formats (openvino and litert need extra runtimes; see tutorials/export.md).
FORMATS = ("saved_model", "onnx")
#: A format every backend exports: the one the single-format tests use.
WORKING_FORMAT = "onnx" if BACKEND == "torch" else "saved_model"


def _supported(fmt: str) -> bool:
    return serving_export._unsupported_reason(BACKEND, fmt) is None


def _inputs(name: str) -> list[np.ndarray]:
    """Inputs of two shapes: the encoder's size and another (the graphs resize inside)."""
    if name == "text":
        ids = np.random.default_rng(0).integers(5, 40, (3, SEQUENCE_LENGTH)).astype("int32")
        ids[:, 0], ids[:, -1] = 2, 0
        return [ids]
    return [uint8_images(2, *IMAGE_SIZE), uint8_images(3, 45, 20, seed=1)]


def _assert_parity(run_dir, out, manifest: dict, fmt: str, flip_average: bool = False):
    """Each exported model, run by its runtime, equals the Keras serving model (<= 1e-4)."""
    source = serving_export.load_export_source(run_dir)
    models = serving_export.serving_models(source, list(manifest["models"]),
                                           flip_average=flip_average)
    for name, model in models.items():
        entry = manifest["models"][name]
        runner = serving_export.load_exported(out / entry["file"], fmt)
        for x in _inputs(name):
            expected = np.asarray(model.predict(x, verbose=0))
            if entry["input"]["shape"][0] == 1:  # a fixed batch of one (torch ONNX text)
                got = np.concatenate([runner(row[None]) for row in x])
            else:
                got = np.asarray(runner(x))
            assert got.shape == expected.shape, name
            np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"{fmt} {name}")


def test_serving_resize_is_tf_image_resize_with_antialias():
    layer = serving_export.ServingImages(IMAGE_SIZE)
    for height, width in ((IMAGE_SIZE[0], IMAGE_SIZE[1]), (75, 31), (20, 9)):
        images = uint8_images(2, height, width, seed=height)
        expected = tf.image.resize(tf.cast(images, tf.float32) / 255.0, IMAGE_SIZE,
                                   antialias=True).numpy()
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(images)),
                                   np.clip(expected, 0, 1), atol=2e-6)


def test_flip_averaged_image_model_is_the_evaluation_feature(reid_run):
    source = serving_export.load_export_source(reid_run)
    model = serving_export.serving_models(source, ["image"], flip_average=True)["image"]
    images = uint8_images(3, *IMAGE_SIZE)
    embedder = load_task(reid_run).embedding_model
    floats = images.astype("float32") / 255.0
    feature = (np.asarray(embedder.predict(floats, verbose=0))
               + np.asarray(embedder.predict(floats[:, :, ::-1].copy(), verbose=0))) / 2
    expected = feature / np.linalg.norm(feature, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(model.predict(images, verbose=0)), expected,
                               atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_pretraining_run_exports_and_reads_back_equal(fmt, pretrain_run, tmp_path):
    if not _supported(fmt):
        with pytest.raises(InputError) as error:
            serving_export.export_run(pretrain_run, tmp_path, fmt)
        message = str(error.value)
        assert f"--format {fmt}" in message and f"the {BACKEND} backend" in message
        assert serving_export.WORKING_BACKENDS[fmt] in message
        return
    # Everything once (SavedModel); the two text-space models for ONNX (CI time).
    what = "all" if fmt == "saved_model" else "text"
    manifest = serving_export.export_run(pretrain_run, tmp_path, fmt, what=what)
    assert manifest == read_manifest(tmp_path)
    expected = {"image_text", "text"} | ({"image"} if what == "all" else set())
    assert set(manifest["models"]) == expected
    assert manifest["verification_threshold"] == THRESHOLD
    assert manifest["similarity"] == "cosine" and manifest["image_size"] == list(IMAGE_SIZE)
    assert manifest["library_version"] == __version__ and manifest["format"] == fmt
    assert manifest["training_backend"] == "jax" and manifest["export_backend"] == BACKEND
    models = manifest["models"]
    if what == "all":
        assert models["image"]["embedding_dim"] == 256  # the tiny encoder's pooled feature
    assert models["image_text"]["embedding_dim"] == models["text"]["embedding_dim"] == 16
    assert models["image_text"]["input"]["shape"] == [None, None, None, 3]
    vocabulary = (tmp_path / "vocabulary.txt").read_text().splitlines()
    assert models["text"]["sequence_length"] == SEQUENCE_LENGTH and vocabulary[:2] == [
        "[PAD]", "[UNK]"]
    _assert_parity(pretrain_run, tmp_path, manifest, fmt)


def test_attributes_run_exports_probabilities_names_and_thresholds(attributes_run, tmp_path):
    manifest = serving_export.export_run(attributes_run, tmp_path, WORKING_FORMAT,
                                         what="attributes")
    entry = manifest["models"]["attributes"]
    assert entry["names"] == ATTRIBUTE_NAMES
    calibrated = getattr(load_task(attributes_run), "attribute_thresholds", None)
    expected = [0.5] * 3 if calibrated is None else [float(t) for t in calibrated]
    assert entry["thresholds"] == pytest.approx(expected)
    assert manifest["verification_threshold"] is None
    _assert_parity(attributes_run, tmp_path, manifest, WORKING_FORMAT)


def test_cli_exports_a_reid_run_and_refuses_what_it_lacks(reid_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(reid_run), "--format", WORKING_FORMAT, "--out", str(out),
                 "--what", "image", "--flip-average"]) == 0
    printed = capsys.readouterr().out
    assert "manifest.json" in printed and "verification threshold: none" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_kind"] == "reid" and manifest["models"]["image"]["flip_average"]
    _assert_parity(reid_run, out, manifest, WORKING_FORMAT, flip_average=True)
    assert main(["export", str(reid_run), "--format", WORKING_FORMAT, "--out", str(out),
                 "--what", "text"]) == 2
    assert "has no text model" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--format", WORKING_FORMAT, "--out",
                 str(out)]) == 2
    assert "no such run folder" in capsys.readouterr().err


@pytest.mark.parametrize(("backend", "fmt"), [("torch", "saved_model"), ("jax", "onnx"),
                                              ("jax", "litert")])
def test_unsupported_backend_and_format_name_what_works(backend, fmt):
    if serving_export._unsupported_reason(backend, fmt) is None:
        # torch_xla installed: torch exports SavedModels after all.
        assert (backend, fmt) == ("torch", "saved_model")
        return
    with pytest.raises(InputError) as error:
        serving_export.check_format(fmt, backend)
    message = str(error.value)
    assert f"--format {fmt} cannot be exported on the {backend} backend" in message
    assert serving_export.WORKING_BACKENDS[fmt] in message and "--backend" in message


def test_int8_report_scores_the_quantised_models(pretrain_run, tmp_path):
    source = serving_export.load_export_source(pretrain_run)
    names = ["image_text", "text"]
    quantized = serving_export.serving_models(source, names)
    reference = serving_export.serving_models(serving_export.load_export_source(pretrain_run),
                                              names)
    report = serving_export.quantize_int8(quantized, reference, IMAGE_SIZE)
    scores = report["image_text"]
    # The projection is int8 now: outputs move, a little.
    assert report["quantized_layers"]["image_text"] >= 1 and scores["quantized_layers"] >= 1
    assert report["quantized_layers"]["text"] >= 1
    assert 0.99 < scores["mean_cosine"] < 1.0 and scores["min_cosine"] <= scores["mean_cosine"]
    assert 0.0 <= scores["rank1_int8"] <= 1.0 and 0.0 <= scores["rank1_float"] <= 1.0
    images = uint8_images(2, *IMAGE_SIZE)
    new = np.asarray(quantized["image_text"].predict(images, verbose=0))
    old = np.asarray(reference["image_text"].predict(images, verbose=0))
    assert 0 < np.abs(new - old).max() < 0.1
    # The CLI prints it from the manifest.
    manifest = {"run_kind": "pretraining", "run_dir": "r", "format": "onnx",
                "export_backend": BACKEND, "image_size": [32, 16], "models": {},
                "verification_threshold": None, "int8": report}
    assert f"mean_cosine {scores['mean_cosine']:.4f}" in format_summary(manifest, tmp_path)
