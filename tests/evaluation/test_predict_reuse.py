"""One compiled predict step per model, reused by every embedding / feature-extraction call.

Calls `encode_images`, `encode_captions` and `extract_features` several times with numbers of
inputs that are not multiples of the batch size and checks (a) the outputs equal an eager
forward pass of the same model and (b) the model's predict step was traced for one input
shape only: on TensorFlow the tf.function's own tracing count is 1 (what its "triggered
tf.function retracing" notice counts), on JAX the Python step ran once (jit runs it only when
it traces), and on PyTorch (no tracing: the step runs on every batch) every batch reached it
at the one padded shape, through the same reused predict function.
"""

import logging

import keras
import numpy as np
import pytest
from PIL import Image

from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.evaluation import extract_features
from valpat_keras.models import ValPatBackbone, build_image_encoder, build_text_encoder
from valpat_keras.models.embedding import backbone_embedders, encode_captions, encode_images
from valpat_keras.quiet import _is_not_keras_step_retracing_notice

pytestmark = pytest.mark.keras

SIZE = (32, 16)
BATCH = 4
CAPTIONS = ["a man in a red coat", "a woman with a blue bag", "a child in green shorts",
            "a man with a black backpack", "a woman in a white dress"]


def _record_predict_steps(model: keras.Model) -> list[tuple]:
    """The input shape of each run of ``model.predict_step`` (patched before first use)."""
    shapes = []
    step = model.predict_step

    def recording_step(*args):  # (data) on TensorFlow / PyTorch, (state, data) on JAX
        data = args[-1]
        x = data[0] if isinstance(data, (tuple, list)) else data
        shapes.append(tuple(int(d) for d in x.shape))
        return step(*args)

    model.predict_step = recording_step
    return shapes


def _assert_one_compiled_shape(model: keras.Model, shapes: list[tuple], batches: int,
                               function_ids: set[int]) -> None:
    """The predict step of ``model`` saw one shape and was traced once where it is traced."""
    backend = keras.backend.backend()
    assert len(set(shapes)) == 1, shapes
    assert shapes[0][0] == BATCH
    assert len(function_ids) == 1  # the same predict function on every call
    if backend == "tensorflow":
        assert model.predict_function.experimental_get_tracing_count() == 1
        assert len(shapes) == 1
    elif backend == "jax":
        assert len(shapes) == 1
    else:  # torch runs the step eagerly on every (padded) batch
        assert len(shapes) == batches


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    return ValPatBackbone(build_image_encoder("tiny", image_size=SIZE),
                          build_text_encoder("tiny", vocabulary_size=64, sequence_length=8),
                          embedding_dim=16)


def test_encode_images_traces_one_predict_step(backbone, tmp_path):
    embedder = backbone_embedders(backbone)[0]
    shapes = _record_predict_steps(embedder)
    rng = np.random.default_rng(0)
    images = rng.random((7, *SIZE, 3), dtype=np.float32)
    paths = []
    for i, image in enumerate(images[:5]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((image * 255).round().astype(np.uint8)).save(paths[-1])
    function_ids = set()
    outputs = []
    for count in (3, 7, 5):  # 1, 2 and 2 batches, each with a short last batch
        outputs.append(encode_images(backbone, images[:count], batch_size=BATCH))
        function_ids.add(id(embedder.predict_function))
    from_paths = encode_images(backbone, paths, batch_size=BATCH)
    function_ids.add(id(embedder.predict_function))
    eager = keras.ops.convert_to_numpy(embedder(images, training=False))
    eager /= np.linalg.norm(eager, axis=1, keepdims=True)
    for got in outputs:
        np.testing.assert_allclose(got, eager[:len(got)], atol=1e-5)
    decoded = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in paths])
    want = keras.ops.convert_to_numpy(embedder(decoded, training=False))
    np.testing.assert_allclose(from_paths, want / np.linalg.norm(want, axis=1, keepdims=True),
                               atol=1e-4)
    _assert_one_compiled_shape(embedder, shapes, 1 + 2 + 2 + 2, function_ids)


def test_encode_captions_traces_one_predict_step(backbone):
    tokenizer = CaptionTokenizer.from_captions(CAPTIONS, vocabulary_size=64, sequence_length=8)
    embedder = backbone_embedders(backbone)[1]
    shapes = _record_predict_steps(embedder)
    function_ids = set()
    outputs = []
    for count in (2, 5, 3):
        outputs.append(encode_captions(backbone, tokenizer, CAPTIONS[:count], batch_size=BATCH))
        function_ids.add(id(embedder.predict_function))
    token_ids = np.asarray(tokenizer(CAPTIONS))
    eager = keras.ops.convert_to_numpy(embedder(token_ids, training=False))
    eager /= np.linalg.norm(eager, axis=1, keepdims=True)
    for got in outputs:
        np.testing.assert_allclose(got, eager[:len(got)], atol=1e-5)
    _assert_one_compiled_shape(embedder, shapes, 1 + 2 + 1, function_ids)


def test_extract_features_traces_one_predict_step(tmp_path):
    inputs = keras.Input((*SIZE, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs * 2.0))
    shapes = _record_predict_steps(model)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (6, *SIZE, 3), dtype=np.uint8)
    paths = []
    for i, image in enumerate(pixels):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    function_ids = set()
    for count in (6, 3, 5):  # with flip: 2 calls per batch
        got = extract_features(model, paths[:count], SIZE, batch_size=BATCH, flip=True,
                               normalize=False, verbose=False).features
        function_ids.add(id(model.predict_function))
        # Averaging a per-channel mean over a mirrored image changes nothing: 2 x mean colour.
        want = 2 * pixels[:count].astype(np.float32).mean(axis=(1, 2)) / 255
        np.testing.assert_allclose(got, want, atol=1e-5)
    _assert_one_compiled_shape(model, shapes, 2 * (2 + 1 + 2), function_ids)


def test_quiet_filter_drops_only_keras_step_retracing_notices():
    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("tensorflow", logging.WARNING, __file__, 0, message, None, None)

    keras_step = ("5 out of the last 13 calls to <function TensorFlowTrainer."
                  "make_predict_function.<locals>.one_step_on_data_distributed at 0x1> "
                  "triggered tf.function retracing.")
    user_function = ("5 out of the last 5 calls to <function my_step at 0x2> triggered "
                     "tf.function retracing.")
    assert not _is_not_keras_step_retracing_notice(record(keras_step))
    assert _is_not_keras_step_retracing_notice(record(user_function))
    assert _is_not_keras_step_retracing_notice(record("TensorFlowTrainer.make_train_function"))
