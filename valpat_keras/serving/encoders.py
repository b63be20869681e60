"""What a run folder can embed: images, sentences and attribute probabilities.

`load_run_encoders(run_dir)` reads any run folder of the library and returns a `RunEncoders`
whose functions map image paths (or sentences) to NumPy arrays, through the embedding code
the evaluations use, so that an index built from a run scores like the run's evaluation (and
its calibrated verification threshold applies):

| Run folder | ``image`` space | ``text`` space | ``attributes`` |
|---|---|---|---|
| pretraining (``backbone/`` + ``image_encoder/``) | pooled encoder feature, flip-averaged | the image-text shared space | the pretraining attribute head (``pretrainer.keras``), when trained with attributes |
| search (`TextSearchModel`) | pooled encoder feature, flip-averaged | the image-text shared space | - |
| re-ID (`ReIDModel`, `ClusterContrastReID`) | the task's retrieval embedding, flip-averaged | - | - |
| attributes (`AttributeRecognizer`) | pooled encoder feature, flip-averaged | - | the recognizer's probabilities |

The ``image`` space is what ``valpat evaluate`` / the re-ID evaluation score (flip-averaged,
L2-normalised); the ``text`` space embeds images and sentences with ``encode_images`` /
``encode_captions`` (no flip, as the text-search evaluation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from valpat_keras.errors import InputError
from valpat_keras.evaluation.features import extract_features
from valpat_keras.models.embedding import encode_captions, encode_images
from valpat_keras.models.init import BACKBONE_DIR, load_backbone
from valpat_keras.models.loading import TASK_CONFIG_FILE, load_task, read_preset_json
from valpat_keras.saving import load_model

#: The whole pretraining task (its attribute head) inside a pretraining run folder.
PRETRAINER_FILE = "pretrainer.keras"
#: The decision threshold of an attribute probability when the model has no calibrated one.
DEFAULT_ATTRIBUTE_THRESHOLD = 0.5

PathsToArray = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass
class RunEncoders:
    """The embedding functions of one run folder (``None`` where the run has no such space).

    Attributes:
        run_dir: The run folder, as given.
        kind: ``"pretraining"``, ``"search"``, ``"reid"`` or ``"attributes"``.
        image_size: ``(height, width)`` the images are resized to.
        embed_images: Image paths -> ``(N, D)`` L2-normalised features of the ``image`` space.
        embed_images_for_text: Image paths -> ``(N, D_text)`` image embeddings in the
            image-text shared space.
        embed_sentences: Sentences -> ``(N, D_text)`` embeddings in the same shared space.
        attribute_probabilities: Image paths -> ``(N, A)`` attribute probabilities.
        attribute_names: The ``A`` attribute names.
        attribute_thresholds: Per attribute, the probability from which it counts as present.
    """

    run_dir: str
    kind: str
    image_size: tuple[int, int]
    embed_images: PathsToArray | None = None
    embed_images_for_text: PathsToArray | None = None
    embed_sentences: PathsToArray | None = None
    attribute_probabilities: PathsToArray | None = None
    attribute_names: list[str] = dataclasses.field(default_factory=list)
    attribute_thresholds: list[float] = dataclasses.field(default_factory=list)

    @property
    def spaces(self) -> list[str]:
        """The query kinds this run answers: among ``"image"``, ``"text"``, ``"attributes"``."""
        available = {"image": self.embed_images, "text": self.embed_sentences,
                     "attributes": self.attribute_probabilities}
        return [name for name, function in available.items() if function is not None]


def _flip_averaged(model, image_size: tuple[int, int], batch_size: int) -> PathsToArray:
    """The evaluations' feature: flip-averaged, L2-normalised (`extract_features`)."""
    def embed(paths: Sequence[str]) -> np.ndarray:
        return extract_features(model, list(paths), image_size, batch_size, flip=True,
                                normalize=True, verbose=False).features
    return embed


def _encoder_size(encoder) -> tuple[int, int]:
    return tuple(int(v) for v in encoder.image_shape[:2])


def _attribute_names(names: Sequence[str] | None, count: int) -> list[str]:
    return list(names) if names else [f"attr_{i}" for i in range(count)]


def _pretraining_attributes(run_dir: Path, batch_size: int
                            ) -> tuple[PathsToArray | None, list[str]]:
    """The pretraining attribute head on the pooled feature, when the run trained one."""
    path = run_dir / PRETRAINER_FILE
    if not path.is_file():
        return None, []
    pretrainer = load_model(path, compile=False)
    if not pretrainer.num_attributes:
        return None, []
    encoder = pretrainer.backbone.image_encoder
    images = keras.Input(shape=tuple(encoder.image_shape), name="images")
    logits = pretrainer.attribute_head(encoder(images))
    model = keras.Model(images, keras.ops.sigmoid(logits), name="pretraining_attributes")
    size = _encoder_size(encoder)

    def probabilities(paths: Sequence[str]) -> np.ndarray:
        return extract_features(model, list(paths), size, batch_size, flip=False,
                                normalize=False, verbose=False).features
    return probabilities, _attribute_names(pretrainer.attribute_names,
                                           pretrainer.num_attributes)


def _from_backbone(run_dir: Path, kind: str, batch_size: int) -> RunEncoders:
    """A pretraining or search run: the ValPatBackbone and its caption tokenizer."""
    backbone, tokenizer = load_backbone(run_dir)
    size = _encoder_size(backbone.image_encoder)
    encoders = RunEncoders(
        str(run_dir), kind, size,
        embed_images=_flip_averaged(backbone.image_encoder, size, batch_size),
        embed_images_for_text=lambda paths: encode_images(backbone, list(paths), size,
                                                          batch_size),
        embed_sentences=lambda sentences: encode_captions(backbone, tokenizer,
                                                          list(sentences), batch_size))
    if kind == "pretraining":
        probabilities, names = _pretraining_attributes(run_dir, batch_size)
        encoders.attribute_probabilities = probabilities
        encoders.attribute_names = names
        encoders.attribute_thresholds = [DEFAULT_ATTRIBUTE_THRESHOLD] * len(names)
    return encoders


def _from_task(run_dir: Path, batch_size: int) -> RunEncoders:
    """A transfer run saved as one task preset (`load_task`): re-ID or attributes."""
    task = load_task(run_dir)
    size = _encoder_size(task.backbone)
    if hasattr(task, "embedding_model"):
        return RunEncoders(str(run_dir), "reid", size,
                           embed_images=_flip_averaged(task.embedding_model, size, batch_size))
    if hasattr(task, "predict_probabilities"):
        names = _attribute_names(task.attribute_names, task.num_attributes)
        return RunEncoders(
            str(run_dir), "attributes", size,
            embed_images=_flip_averaged(task.backbone, size, batch_size),
            attribute_probabilities=lambda paths: task.predict_probabilities(list(paths),
                                                                             batch_size),
            attribute_names=names,
            # Calibrated on validation by `train_attributes` (0.5 where none was).
            attribute_thresholds=[float(t) for t in task.attribute_thresholds])
    raise InputError(f"{run_dir}: the run's task {type(task).__name__} has no image "
                     "embedding or attribute output to index")


def load_run_encoders(run_dir: str | Path, batch_size: int = 64) -> RunEncoders:
    """The `RunEncoders` of a run folder (pretraining, search, re-ID or attributes run).

    Args:
        run_dir: The run folder (what ``valpat pretrain|reid|attributes|search --out`` wrote).
        batch_size: Images or sentences per forward pass.

    Raises:
        InputError: The folder is none of these runs, or one of its files is corrupt.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such run folder; expected the --out folder of "
                         "`valpat pretrain`, `valpat reid`, `valpat attributes` or "
                         "`valpat search`")
    if (root / TASK_CONFIG_FILE).is_file():
        config = read_preset_json(root, TASK_CONFIG_FILE)
        name = str(config.get("registered_name") or config.get("class_name") or "")
        if name.endswith("TextSearchModel"):
            return _from_backbone(root, "search", batch_size)
        return _from_task(root, batch_size)
    if (root / BACKBONE_DIR / "config.json").is_file():
        return _from_backbone(root, "pretraining", batch_size)
    raise InputError(f"{root}: not a run folder; expected {TASK_CONFIG_FILE} (a re-ID, "
                     f"attributes or search run) or {BACKBONE_DIR}/config.json (a pretraining "
                     "run)")
