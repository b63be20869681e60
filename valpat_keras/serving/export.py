"""Export a run folder's models for serving, through Keras' own ``Model.export``.

`export_run(run_dir, out_dir, format)` writes, for any run folder of the library, the models a
server needs, each a graph with the preprocessing inside:

| model | input | output |
|---|---|---|
| ``image`` | uint8 RGB ``(B, H, W, 3)``, any ``H, W`` | L2-normalised re-ID embedding (optionally flip-averaged) |
| ``image_text`` | uint8 RGB ``(B, H, W, 3)``, any ``H, W`` | L2-normalised image embedding of the image-text space |
| ``text`` | int32 token ids ``(B, L)`` (``vocabulary.txt`` beside) | L2-normalised sentence embedding of the same space |
| ``attributes`` | uint8 RGB ``(B, H, W, 3)``, any ``H, W`` | attribute probabilities ``(B, A)`` |

The spaces are those of `valpat_keras.serving.encoders` (the index's): the ``image`` space is
the feature the re-ID evaluation scores (a re-ID run's BNNeck embedding, else the pooled
encoder feature), the text space the pretrained / search backbone's shared space. Inside each
image graph, pixels are divided by 255 and resized to the encoder's size with the antialiased
bilinear filter of ``tf.image.resize(..., antialias=True)`` (what the training pipelines use),
written as two matrix products so that every format converts it. A ``manifest.json`` beside
the models (`valpat_keras.serving.manifest`) gives sizes, dimensions, the similarity, the
calibrated verification threshold and the attribute names and thresholds.

Formats and backends (Keras 3.15): ``saved_model`` on tensorflow and jax (torch needs
torch_xla); ``onnx`` on tensorflow (tf2onnx) and torch (torch.onnx); ``openvino`` on all three
(needs ``openvino``); ``litert`` on tensorflow (torch needs litert-torch). A run folder does
not depend on the backend it trained on, so any run exports on any backend
(``valpat --backend tensorflow export ...``). Images of any size are accepted except by
``litert`` and by ``openvino`` from torch, whose graphs take the encoder's size (the manifest
says which).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from valpat_keras.data.synthped import generate_arrays
from valpat_keras.errors import InputError
from valpat_keras.evaluation.verification import read_calibration
from valpat_keras.models.init import (
    BACKBONE_DIR,
    IMAGE_ENCODER_DIR,
    load_backbone,
    load_image_encoder,
)
from valpat_keras.models.loading import TASK_CONFIG_FILE, load_task, read_preset_json
from valpat_keras.saving import load_model
from valpat_keras.serving.encoders import DEFAULT_ATTRIBUTE_THRESHOLD, PRETRAINER_FILE
from valpat_keras.serving.manifest import build_manifest, write_manifest

#: ``--format`` -> (the ``Model.export`` format, the file suffix; "" is a folder).
FORMATS: dict[str, tuple[str, str]] = {
    "saved_model": ("tf_saved_model", ""), "onnx": ("onnx", ".onnx"),
    "openvino": ("openvino", ".xml"), "litert": ("litert", ".tflite")}
#: ``--what`` choices; ``text`` exports the sentence and the image embedder of the text space.
WHAT = ("image", "text", "attributes", "all")
#: Per format, the backends that export it here.
WORKING_BACKENDS = {"saved_model": "tensorflow or jax", "onnx": "tensorflow or torch",
                    "openvino": "tensorflow, jax or torch", "litert": "tensorflow"}
VOCABULARY_FILE = "vocabulary.txt"
TOKENIZER_DIR = "tokenizer"


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def _unsupported_reason(backend: str, fmt: str) -> str | None:
    """Why ``fmt`` cannot be exported on ``backend`` here, or None."""
    reasons = {
        ("torch", "saved_model"): "Keras exports a SavedModel from torch through torch_xla"
                                  + (", which is not installed" if _missing("torch_xla") else ""),
        ("jax", "onnx"): "Keras 3.15 converts JAX to ONNX with jax2onnx, whose graph of "
                         "this network does not run in onnxruntime (MaxPool) and which "
                         "needs a fixed image size",
        ("jax", "litert"): "Keras exports LiteRT from the tensorflow and torch backends only",
    }
    if backend == "torch" and fmt == "litert" and _missing("litert_torch"):
        return "Keras exports LiteRT from torch through litert-torch, which is not installed"
    if backend == "torch" and fmt == "saved_model" and not _missing("torch_xla"):
        return None
    return reasons.get((backend, fmt))


def check_format(fmt: str, backend: str | None = None) -> None:
    """Checks that ``fmt`` can be exported on ``backend`` (default: the current one).

    Raises:
        InputError: An unknown format, a format this backend cannot export (the message
            names the backend, the format and the backends that work), or a missing package.
    """
    backend = backend or keras.backend.backend()
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    reason = _unsupported_reason(backend, fmt)
    if reason:
        raise InputError(
            f"--format {fmt} cannot be exported on the {backend} backend: {reason}. A run "
            f"folder does not depend on the backend it trained on: export it on "
            f"{WORKING_BACKENDS[fmt]} instead, e.g. `valpat --backend "
            f"{WORKING_BACKENDS[fmt].split()[0].rstrip(',')} export RUN_DIR --format {fmt}`.")
    needed = {"openvino": "openvino", "onnx": "tf2onnx" if backend == "tensorflow" else "onnx"}
    package = needed.get(fmt)
    if package and _missing(package):
        raise InputError(f"--format {fmt} on the {backend} backend needs the {package} "
                         f"package: pip install {package} (or pip install 'valpat-keras[serve]')")


def fixed_image_size(fmt: str, backend: str | None = None) -> bool:
    """Whether the exported image graphs take the encoder's size only (no dynamic H, W)."""
    backend = backend or keras.backend.backend()
    return fmt == "litert" or (fmt == "openvino" and backend == "torch")


# --- The preprocessing inside the graph ----------------------------------------------------


def resize_weights(in_size, out_size: int):
    """``(out_size, in_size)`` weights of the antialiased bilinear (triangle) resize.

    The filter of ``tf.image.resize(antialias=True)``: pixel centres at ``i + 0.5``, a
    triangle of half-width ``max(in / out, 1)`` around each output centre, rows normalised
    to 1. ``in_size`` may be a dynamic (traced) size.
    """
    scale = ops.cast(in_size, "float32") / float(out_size)
    half_width = ops.maximum(scale, 1.0)
    # start/stop/step spelled out: converters (jax2onnx) patch arange with that signature.
    centres = (ops.cast(ops.arange(0, out_size, 1), "float32") + 0.5) * scale
    sources = ops.cast(ops.arange(0, in_size, 1), "float32") + 0.5
    weights = ops.maximum(0.0, 1.0 - ops.abs(sources[None, :] - centres[:, None]) / half_width)
    return weights / ops.sum(weights, axis=1, keepdims=True)


class ServingImages(keras.layers.Layer):
    """uint8 RGB images of any size to float32 in [0, 1] at ``image_size`` (the pipelines').

    Not registered for saving: it lives in exported graphs only.

    Args:
        image_size: ``(height, width)`` of the encoder.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, image_size: tuple[int, int], **kwargs):
        super().__init__(**kwargs)
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def call(self, images):
        x = ops.cast(images, "float32") / 255.0
        shape = ops.shape(x)
        rows = resize_weights(shape[1], self.image_size[0])
        cols = resize_weights(shape[2], self.image_size[1])
        x = ops.transpose(x, (0, 3, 1, 2))
        x = ops.matmul(ops.matmul(rows, x), ops.transpose(cols))
        return ops.clip(ops.transpose(x, (0, 2, 3, 1)), 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.image_size, 3)


def _l2_normalize(x):
    return x / ops.sqrt(ops.maximum(ops.sum(x * x, axis=-1, keepdims=True), 1e-12))


def serving_image_model(model: keras.Model, image_size: tuple[int, int], output: str = "embedding",
                        flip_average: bool = False, fixed_size: bool = False,
                        name: str = "image") -> keras.Model:
    """A model from uint8 images of any size to ``model``'s output, preprocessing inside.

    Args:
        model: Float32 images in [0, 1] at ``image_size`` -> ``(B, D)``.
        image_size: ``(height, width)`` of ``model``.
        output: ``"embedding"`` (L2-normalised) or ``"probabilities"`` (sigmoid of logits).
        flip_average: Average the embedding with that of the mirrored image first.
        fixed_size: Take ``image_size`` images only (formats without dynamic H, W).
        name: The model's name.
    """
    shape = (*image_size, 3) if fixed_size else (None, None, 3)
    images = keras.Input(shape=shape, dtype="uint8", name="images")
    x = ServingImages(image_size, name="to_encoder_input")(images)
    y = model(x)
    if output == "probabilities":
        return keras.Model(images, ops.sigmoid(y), name=name)
    if flip_average:
        y = (y + model(ops.flip(x, axis=2))) / 2.0
    return keras.Model(images, _l2_normalize(y), name=name)


def serving_text_model(backbone, sequence_length: int) -> keras.Model:
    """int32 token ids ``(B, sequence_length)`` -> L2-normalised text-space embeddings."""
    token_ids = keras.Input(shape=(int(sequence_length),), dtype="int32", name="token_ids")
    return keras.Model(token_ids, _l2_normalize(backbone.get_text_embeddings(token_ids)),
                       name="text")


def _image_text_model(backbone) -> keras.Model:
    images = keras.Input(shape=tuple(backbone.image_encoder.image_shape), name="images")
    return keras.Model(images, backbone.get_image_embeddings(images), name="image_text_embedder")


# --- What a run folder holds ---------------------------------------------------------------


@dataclasses.dataclass
class ExportSource:
    """The float models of one run folder (``None`` where the run has no such model).

    Attributes:
        run_dir: The run folder.
        kind: ``"pretraining"``, ``"search"``, ``"reid"`` or ``"attributes"``.
        image_size: ``(height, width)`` of the image encoder.
        image: Float images in [0, 1] -> the ``image`` space feature (not normalised).
        image_text: Float images -> image embeddings of the image-text space.
        backbone: The `ValPatBackbone` of the text space (pretraining and search runs).
        tokenizer: Its `CaptionTokenizer`.
        attribute_logits: Float images -> attribute logits.
        attribute_names: The attribute names.
        attribute_thresholds: Per attribute, the probability from which it is present.
        thresholds_source: ``"calibrated"`` or ``"default"`` (0.5 each).
    """

    run_dir: Path
    kind: str
    image_size: tuple[int, int]
    image: keras.Model
    image_text: keras.Model | None = None
    backbone: Any = None
    tokenizer: Any = None
    attribute_logits: keras.Model | None = None
    attribute_names: list[str] = dataclasses.field(default_factory=list)
    attribute_thresholds: list[float] = dataclasses.field(default_factory=list)
    thresholds_source: str = "default"


def _size_of(encoder) -> tuple[int, int]:
    return int(encoder.image_shape[0]), int(encoder.image_shape[1])


def _set_attributes(source: ExportSource, model, logits: keras.Model, count: int) -> None:
    names = getattr(model, "attribute_names", None)
    source.attribute_logits = logits
    source.attribute_names = list(names) if names else [f"attr_{i}" for i in range(count)]
    # Calibrated per-attribute thresholds when the recognizer has them (another part of the
    # library adds `attribute_thresholds`); 0.5 each otherwise.
    thresholds = getattr(model, "attribute_thresholds", None)
    if thresholds is not None and len(thresholds) == count:
        source.attribute_thresholds = [float(t) for t in thresholds]
        source.thresholds_source = "calibrated"
    else:
        source.attribute_thresholds = [DEFAULT_ATTRIBUTE_THRESHOLD] * count


def _pretraining_attributes(source: ExportSource) -> None:
    """The pretraining attribute head, when ``pretrainer.keras`` holds one."""
    path = source.run_dir / PRETRAINER_FILE
    if not path.is_file():
        return
    pretrainer = load_model(path, compile=False)
    if not getattr(pretrainer, "num_attributes", 0):
        return
    encoder = pretrainer.backbone.image_encoder
    images = keras.Input(shape=tuple(encoder.image_shape), name="images")
    logits = keras.Model(images, pretrainer.attribute_head(encoder(images)))
    _set_attributes(source, pretrainer, logits, pretrainer.num_attributes)


def _from_backbone(root: Path, kind: str) -> ExportSource:
    try:
        backbone, tokenizer = load_backbone(root)
    except FileNotFoundError:
        if not (root / IMAGE_ENCODER_DIR / "config.json").is_file():
            raise
        # A pretraining run without captions: its image encoder only.
        encoder = load_image_encoder(str(root))
        return ExportSource(root, kind, _size_of(encoder), image=encoder)
    encoder = backbone.image_encoder
    source = ExportSource(root, kind, _size_of(encoder), image=encoder,
                          image_text=_image_text_model(backbone), backbone=backbone,
                          tokenizer=tokenizer)
    if kind == "pretraining":
        _pretraining_attributes(source)
    return source


def _from_task(root: Path) -> ExportSource:
    task = load_task(root)
    size = _size_of(task.backbone)
    if hasattr(task, "embedding_model"):
        return ExportSource(root, "reid", size, image=task.embedding_model)
    if hasattr(task, "predict_probabilities"):
        source = ExportSource(root, "attributes", size, image=task.backbone)
        _set_attributes(source, task, task, task.num_attributes)
        return source
    raise InputError(f"{root}: the run's task {type(task).__name__} has no image embedding "
                     "or attribute output to export")


def load_export_source(run_dir: str | Path) -> ExportSource:
    """The models of a run folder (pretraining, search, re-ID or attributes run).

    Raises:
        InputError: The folder is none of these runs, or one of its files is corrupt.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such run folder; expected the --out folder of `valpat "
                         "pretrain`, `valpat reid`, `valpat attributes` or `valpat search`")
    if (root / TASK_CONFIG_FILE).is_file():
        config = read_preset_json(root, TASK_CONFIG_FILE)
        name = str(config.get("registered_name") or config.get("class_name") or "")
        return _from_backbone(root, "search") if name.endswith("TextSearchModel") \
            else _from_task(root)
    if (root / BACKBONE_DIR / "config.json").is_file() or \
            (root / IMAGE_ENCODER_DIR / "config.json").is_file():
        return _from_backbone(root, "pretraining")
    raise InputError(f"{root}: not a run folder; expected {TASK_CONFIG_FILE} (a re-ID, "
                     f"attributes or search run) or {BACKBONE_DIR}/config.json (a pretraining "
                     "run)")


def _wanted(what: str, source: ExportSource) -> list[str]:
    """The models to export for ``--what``; an `InputError` when the run has none of them."""
    available = {"image": source.image is not None, "image_text": source.image_text is not None,
                 "text": source.backbone is not None and source.tokenizer is not None,
                 "attributes": source.attribute_logits is not None}
    if what not in WHAT:
        raise InputError(f"--what {what!r}: expected one of {', '.join(WHAT)}")
    asked = {"image": ["image"], "text": ["text", "image_text"],
             "attributes": ["attributes"], "all": list(available)}[what]
    names = [name for name in asked if available[name]]
    if what != "all" and len(names) < len(asked):
        has = [name for name, ok in available.items() if ok]
        raise InputError(f"--what {what}: the {source.kind} run {source.run_dir} has no "
                         f"{what} model (it has: {', '.join(has)})")
    return names


def serving_models(source: ExportSource, names: list[str], fixed_size: bool = False,
                   flip_average: bool = False) -> dict[str, keras.Model]:
    """The serving Keras models (preprocessing inside) of ``names``, called once (built)."""
    size = source.image_size
    builders: dict[str, Callable[[], keras.Model]] = {
        "image": lambda: serving_image_model(source.image, size, flip_average=flip_average,
                                             fixed_size=fixed_size, name="image"),
        "image_text": lambda: serving_image_model(source.image_text, size,
                                                  fixed_size=fixed_size, name="image_text"),
        "attributes": lambda: serving_image_model(source.attribute_logits, size,
                                                  output="probabilities",
                                                  fixed_size=fixed_size, name="attributes"),
        "text": lambda: serving_text_model(source.backbone, source.tokenizer.sequence_length),
    }
    models = {name: builders[name]() for name in names}
    for name, model in models.items():
        # Model.export needs a model that has been called (ONNX checks it).
        model(_example_input(name, source))
    return models


def _example_input(name: str, source: ExportSource) -> np.ndarray:
    if name == "text":
        return np.zeros((1, source.tokenizer.sequence_length), np.int32)
    return np.zeros((1, *source.image_size, 3), np.uint8)


# --- Export --------------------------------------------------------------------------------


def _constants_as_numpy(model: keras.Model) -> None:
    """Stores Normalization statistics as NumPy arrays, so TF graphs embed them as constants.

    They are eager tensors otherwise, which tf2onnx turns into extra graph inputs.
    """
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Normalization) and layer.mean is not None:
            layer.mean = keras.ops.convert_to_numpy(layer.mean)
            layer.variance = keras.ops.convert_to_numpy(layer.variance)


def input_signature(model: keras.Model, fmt: str) -> list | None:
    """The ``input_signature`` to export ``model`` with; None: the model's own (dynamic).

    torch.onnx traces the sizes a layer normalisation reads as graph values when any axis
    is dynamic and then fails, so the text model (a transformer) exports from torch with a
    fixed batch of 1.
    """
    spec = model.inputs[0]
    if keras.backend.backend() == "torch" and fmt == "onnx" and spec.dtype == "int32":
        return [keras.InputSpec(shape=(1, *spec.shape[1:]), dtype="int32", name="token_ids")]
    return None


def export_model(model: keras.Model, path: str | Path, fmt: str) -> Path:
    """``model.export`` to ``path`` in ``fmt`` (a `FORMATS` key); returns the path."""
    check_format(fmt)
    if keras.backend.backend() == "tensorflow":
        _constants_as_numpy(model)
    keras_format, _ = FORMATS[fmt]
    model.export(str(path), format=keras_format, verbose=False,
                 input_signature=input_signature(model, fmt))
    return Path(path)


def _shape_entry(model: keras.Model, fmt: str) -> list[int | None]:
    signature = input_signature(model, fmt)
    shape = signature[0].shape if signature else (None, *model.inputs[0].shape[1:])
    return [None if d is None else int(d) for d in shape]


def _tokenizer_entry(tokenizer: Any) -> dict[str, Any]:
    """How the text model's token ids are made: the tokenizer class, folder and special ids."""
    return {"class": type(tokenizer).__name__, "folder": TOKENIZER_DIR,
            "layout": "start id, token ids, end id, then padding",
            "start_id": int(tokenizer.cls_id), "end_id": int(tokenizer.sep_id),
            "pad_id": int(tokenizer.pad_id)}


def _model_entry(name: str, model: keras.Model, file: str, fmt: str, source: ExportSource,
                 flip_average: bool) -> dict[str, Any]:
    """The manifest entry of one exported model."""
    width = int(model.outputs[0].shape[-1])
    if name == "text":
        return {"file": file, "input": {"name": "token_ids", "dtype": "int32",
                                        "shape": _shape_entry(model, fmt)},
                "output": "L2-normalised sentence embeddings (B, D)", "embedding_dim": width,
                "sequence_length": int(source.tokenizer.sequence_length),
                "vocabulary": VOCABULARY_FILE, "tokenizer": _tokenizer_entry(source.tokenizer)}
    entry = {"file": file, "input": {"name": "images", "dtype": "uint8", "range": [0, 255],
                                     "layout": "RGB, (batch, height, width, 3)",
                                     "shape": _shape_entry(model, fmt)}}
    if name == "attributes":
        return {**entry, "output": "attribute probabilities (B, A)",
                "names": source.attribute_names, "thresholds": source.attribute_thresholds,
                "thresholds_source": source.thresholds_source}
    return {**entry, "output": "L2-normalised embeddings (B, D)", "embedding_dim": width,
            "space": "image" if name == "image" else "image-text",
            "flip_average": bool(flip_average and name == "image")}


def training_backend(run_dir: str | Path) -> str | None:
    """The backend a run trained on, when its ``metrics.json`` or run config records it."""
    for name in ("metrics.json", "run_config.json", "config.json"):
        path = Path(run_dir) / name
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("backend")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return value
    return None


def export_run(run_dir: str | Path, out_dir: str | Path, fmt: str = "saved_model",
               what: str = "all", flip_average: bool = False, int8: bool = False
               ) -> dict[str, Any]:
    """Exports a run folder's models into ``out_dir`` with their ``manifest.json``.

    Args:
        run_dir: A pretraining, re-ID, attributes or search run folder.
        out_dir: The export folder (created; files of the same names are replaced).
        fmt: ``saved_model``, ``onnx``, ``openvino`` or ``litert``.
        what: ``image``, ``text`` (the sentence and the image embedder of the text space),
            ``attributes`` or ``all`` (every model the run has).
        flip_average: The ``image`` embedder averages each image with its mirror.
        int8: Quantise the weights to int8 (``Model.quantize("int8")``) and report the
            change of the outputs on a small SynthPed set (`int8_report`).

    Returns:
        The manifest written.

    Raises:
        InputError: A bad run folder, ``what`` or format, or a format this backend cannot
            export (the message says which backends can).
    """
    check_format(fmt)
    source = load_export_source(run_dir)
    names = _wanted(what, source)
    fixed = fixed_image_size(fmt)
    models = serving_models(source, names, fixed, flip_average)
    report = None
    if int8:
        float_models = serving_models(load_export_source(run_dir), names, fixed, flip_average)
        report = quantize_int8(models, float_models, source.image_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, model in models.items():
        file = name + FORMATS[fmt][1]
        _remove(out / file)
        export_model(model, out / file, fmt)
        entries[name] = _model_entry(name, model, file, fmt, source, flip_average)
    if "text" in models:
        (out / VOCABULARY_FILE).write_text("\n".join(source.tokenizer.vocabulary) + "\n",
                                           encoding="utf-8")
        # The tokenizer itself, so that a byte-pair vocabulary (RoBERTa, CLIP) is usable too:
        # `CaptionTokenizer.from_preset(out / "tokenizer")`.
        source.tokenizer.save_to_preset(out / TOKENIZER_DIR)
    manifest = build_manifest(
        format=fmt, export_backend=keras.backend.backend(), keras_version=keras.__version__,
        run_dir=str(run_dir), run_kind=source.kind, image_size=source.image_size,
        flip_average=flip_average, training_backend=training_backend(run_dir),
        calibration=read_calibration(source.run_dir), models=entries, int8=report)
    write_manifest(out, manifest)
    return manifest


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if path.suffix == ".xml":
        path.with_suffix(".bin").unlink(missing_ok=True)


# --- int8 ----------------------------------------------------------------------------------

#: The SynthPed set the int8 report scores on: identities x images each.
INT8_CHECK_IDENTITIES = 8
INT8_CHECK_IMAGES_PER_IDENTITY = 4


def _rank1(features: np.ndarray, pids: np.ndarray) -> float:
    """Leave-one-out rank-1: the share of images whose nearest other image is the same id."""
    similarity = features @ features.T
    np.fill_diagonal(similarity, -np.inf)
    return float(np.mean(pids[np.argmax(similarity, axis=1)] == pids))


def int8_report(quantized: dict[str, keras.Model], reference: dict[str, keras.Model],
                image_size: tuple[int, int]) -> dict[str, Any]:
    """How much int8 weights change each image model's outputs, on a small SynthPed set.

    Embeddings: mean and minimum cosine between the float and int8 embedding of each image,
    and the leave-one-out rank-1 of both; attributes: the largest probability change.
    The text model is scored on zero (padding) token ids only, so it is left out.
    """
    data = generate_arrays(INT8_CHECK_IDENTITIES, INT8_CHECK_IMAGES_PER_IDENTITY, seed=0,
                           height=image_size[0], width=image_size[1])
    images, pids = data["images"], np.asarray(data["pids"])
    report: dict[str, Any] = {"images": len(images), "data": "SynthPed generate_arrays("
                              f"{INT8_CHECK_IDENTITIES}, {INT8_CHECK_IMAGES_PER_IDENTITY})"}
    for name, model in quantized.items():
        if name == "text":
            continue
        new = np.asarray(model.predict(images, verbose=0), np.float64)
        old = np.asarray(reference[name].predict(images, verbose=0), np.float64)
        if name == "attributes":
            report[name] = {"max_probability_change": float(np.abs(new - old).max())}
            continue
        cosine = np.sum(new * old, axis=1)
        report[name] = {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
                        "rank1_float": _rank1(old, pids), "rank1_int8": _rank1(new, pids)}
    return report


def quantize_int8(models: dict[str, keras.Model], reference: dict[str, keras.Model],
                  image_size: tuple[int, int]) -> dict[str, Any]:
    """Quantises ``models`` in place (``Model.quantize("int8")``) and returns `int8_report`.

    ``reference`` are the same models built from a second load (quantising changes the
    layers, which the float models would otherwise share). Keras quantises Dense,
    EinsumDense and Embedding layers; the report counts them per model
    (``quantized_layers``).
    """
    counts = {}
    for name, model in models.items():
        with warnings.catch_warnings():
            # One warning per layer kind Keras cannot quantise (convolutions, pooling, ...).
            warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
            model.quantize("int8")
        counts[name] = sum(getattr(layer, "quantization_mode", None) == "int8"
                           for layer in model._flatten_layers())
    report = int8_report(models, reference, image_size)
    for name, count in counts.items():
        if isinstance(report.get(name), dict):
            report[name]["quantized_layers"] = int(count)
    report["quantized_layers"] = counts
    return report


# --- Reading exports back ------------------------------------------------------------------


def load_exported(path: str | Path, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """A NumPy function running an exported model with its format's runtime.

    TensorFlow (``tf.saved_model.load``) for ``saved_model``, onnxruntime for ``onnx``,
    OpenVINO for ``openvino``, the LiteRT / TFLite interpreter for ``litert``. The runtimes
    are imported here: each is an optional dependency of one format.
    """
    path = str(path)
    if fmt == "saved_model":
        import tensorflow as tf  # optional runtime of one format

        # Keep the loaded object alive: its variables die with it, not with `serve`.
        loaded = tf.saved_model.load(path)
        return lambda x: loaded.serve(tf.constant(x)).numpy()
    if fmt == "onnx":
        import onnxruntime  # optional runtime of one format

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        return lambda x: session.run(None, {input_name: x})[0]
    if fmt == "openvino":
        import openvino  # optional runtime of one format

        # f32: the CPU plugin otherwise infers in bf16 where the CPU has it (~1e-3 off).
        compiled = openvino.Core().compile_model(path, "CPU",
                                                 {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: np.asarray(compiled(x)[compiled.outputs[0]])
    if fmt == "litert":
        return _litert_runner(path)
    raise InputError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _litert_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
    try:
        from ai_edge_litert.interpreter import Interpreter  # optional runtime of one format
    except ImportError:
        import tensorflow as tf  # optional runtime of one format

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=path)

    def run(x: np.ndarray) -> np.ndarray:
        source = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(source["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return run
