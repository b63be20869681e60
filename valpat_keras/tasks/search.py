"""Transfer to text-based person search: find a person's images from a description.

`TextSearchModel` fine-tunes a `ValPatBackbone` (image encoder, text encoder, projections into
one space) with IRRA's objectives: image-text contrastive loss (ITC, CLIP-style symmetric
InfoNCE with the backbone's learnt logit scale), similarity-distribution matching (SDM, which
treats other pairs of the same identity in the batch as matches) and an optional identity
classification loss. Evaluation follows IRRA: every test caption queries every test image.
`PersonSearcher` is the query API: a sentence in, ranked gallery images out.
"""

from __future__ import annotations

import dataclasses
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import keras_hub
import numpy as np
from keras import ops

from valpat_keras.losses.contrastive import symmetric_info_nce
from valpat_keras.losses.search import identity_loss, sdm_loss

#: Default objective weights; the ID loss is on only when the model has a classifier.
DEFAULT_LOSS_WEIGHTS = {"itc": 1.0, "sdm": 1.0, "id": 1.0}


@keras.saving.register_keras_serializable(package="valpat_keras")
class TextSearchModel(keras_hub.models.Task):
    """Text-based person search model: a `ValPatBackbone` trained with ITC + SDM (+ ID).

    Inputs are ``{"images": (B, H, W, 3) float32 in [0, 1], "token_ids": (B, L) int32}`` and
    the targets are the person ids ``(B,)`` of the pairs (SDM and ID need them). Outputs the
    L2-normalised ``image_embedding`` and ``text_embedding`` (plus ``image_logits`` /
    ``text_logits`` of the identity classifier when ``num_classes`` is set). Each objective's
    loss and the ITC top-1 accuracy appear in the fit logs.

    Args:
        backbone: valpat_keras.models.ValPatBackbone.
        num_classes: int. Number of training identities for the ID loss (a linear classifier
            shared by both modalities, as in IRRA); ``0`` switches it off. Defaults to ``0``.
        loss_weights: Mapping[str, float] | None. Weights of ``"itc"``, ``"sdm"`` and ``"id"``;
            a missing key takes `DEFAULT_LOSS_WEIGHTS`, 0 switches an objective off.
        preprocessor: None. Inputs arrive tokenised (see `valpat_keras.data.pipelines`).
        **kwargs: Standard `keras_hub.models.Task` arguments (``name``, ``compile``).

    Example:

    ```python
    backbone, tokenizer = load_backbone("runs/pretrain")
    model = TextSearchModel(backbone, num_classes=dataset_num_train_ids)
    model.fit(pipeline_of_image_caption_pid_batches, epochs=10)
    searcher = PersonSearcher(model.backbone, tokenizer)
    searcher.search("a woman in a red coat with a black backpack", gallery_paths, k=10)
    ```
    """

    def __init__(self, backbone, num_classes: int = 0,
                 loss_weights: Mapping[str, float] | None = None, preprocessor=None, **kwargs):
        weights = {**DEFAULT_LOSS_WEIGHTS, **dict(loss_weights or {})}
        unknown = set(weights) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss_weights keys {sorted(unknown)}; use "
                             f"{sorted(DEFAULT_LOSS_WEIGHTS)}")
        num_classes = int(num_classes or 0)
        if not num_classes:
            weights["id"] = 0.0
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.classifier = (keras.layers.Dense(num_classes, name="id_classifier")
                           if num_classes else None)

        # === Functional Model ===
        inputs = {
            "images": keras.Input(shape=tuple(backbone.image_encoder.image_shape),
                                  name="images"),
            "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        }
        embeddings = backbone(inputs)
        outputs = {"image_embedding": embeddings["image_embedding"],
                   "text_embedding": embeddings["text_embedding"]}
        if self.classifier is not None:
            outputs["image_logits"] = self.classifier(embeddings["image_embedding"])
            outputs["text_logits"] = self.classifier(embeddings["text_embedding"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.loss_weights = {k: float(v) for k, v in weights.items()}
        # Running means of each active objective, so that they appear in the fit logs.
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("itc_loss", "itc_acc", "sdm_loss", "id_loss")
                         if self.loss_weights.get(name.split("_")[0], 0.0) > 0}

    def get_config(self):
        # The backbone is serialised by `Task.get_config`.
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "loss_weights": self.loss_weights})
        return config

    def compile(self, optimizer="auto", loss=None, **kwargs):
        """Configures training; the loss is always the weighted objectives of `compute_loss`.

        Args:
            optimizer: ``"auto"`` (AdamW, learning rate 1e-4, weight decay 4e-5) or any Keras
                optimizer.
            loss: Ignored (must be ``None``): the task computes its own loss.
            **kwargs: See `keras.Model.compile`.
        """
        if loss is not None:
            raise ValueError("TextSearchModel computes its own ITC/SDM/ID loss; compile it "
                             "without `loss`.")
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=4e-5)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Re-compiles a loaded model with its saved optimizer (and metrics)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """ITC + SDM (+ ID) on a batch of image-caption pairs with person ids ``y``."""
        image_emb = y_pred["image_embedding"]
        text_emb = y_pred["text_embedding"]
        scale = self.backbone.logit_scale
        total = ops.zeros((), "float32")
        weights = self.loss_weights
        if weights["itc"] > 0:
            itc, acc = symmetric_info_nce(image_emb, text_emb, scale)
            total = total + weights["itc"] * itc
            self.trackers["itc_loss"].update_state(itc)
            self.trackers["itc_acc"].update_state(acc)
        if (weights["sdm"] > 0 or weights["id"] > 0) and y is None:
            raise ValueError("TextSearchModel's SDM and ID losses need person ids: fit on "
                             "({'images', 'token_ids'}, pids) batches.")
        if weights["sdm"] > 0:
            sdm = sdm_loss(image_emb, text_emb, y, scale)
            total = total + weights["sdm"] * sdm
            self.trackers["sdm_loss"].update_state(sdm)
        if weights["id"] > 0:
            idl = identity_loss(y_pred["image_logits"], y_pred["text_logits"], y)
            total = total + weights["id"] * idl
            self.trackers["id_loss"].update_state(idl)
        for extra in self.losses:
            total = total + ops.cast(extra, "float32")
        return total


@dataclasses.dataclass
class SearchGallery:
    """Gallery images indexed for search: their paths and L2-normalised embeddings.

    Attributes:
        paths: The image files (or ``None`` for features passed in directly).
        embeddings: ``(N, D)`` float32 unit vectors.
    """

    paths: list[str] | None
    embeddings: np.ndarray


@dataclasses.dataclass(frozen=True)
class SearchHit:
    """One search result.

    Attributes:
        rank: 1-based rank.
        index: Position of the image in the gallery.
        path: The image file (``None`` when the gallery was given as features).
        score: Cosine similarity between the query and the image.
    """

    rank: int
    index: int
    path: str | None
    score: float


class PersonSearcher:
    """Natural-language person search over a gallery of images.

    Args:
        backbone: A trained `ValPatBackbone` (e.g. ``TextSearchModel.backbone`` or
            `valpat_keras.models.init.load_backbone(run_dir)[0]`).
        tokenizer: Its `valpat_keras.data.tokenizer.CaptionTokenizer`.
        batch_size: Images or captions per forward pass.

    Example:

    ```python
    searcher = PersonSearcher.from_run_dir("runs/search")
    gallery = searcher.index(image_paths)          # embed once, search many times
    for hit in searcher.search("a woman in a red coat with a black backpack", gallery, k=10):
        print(hit.rank, hit.path, round(hit.score, 3))
    ```
    """

    def __init__(self, backbone, tokenizer, batch_size: int = 64):
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, batch_size: int = 64) -> PersonSearcher:
        """Loads the backbone and tokenizer of a `train_search` or pretraining run folder."""
        from valpat_keras.models.init import load_backbone

        backbone, tokenizer = load_backbone(run_dir)
        return cls(backbone, tokenizer, batch_size)

    def index(self, paths: Sequence[str | os.PathLike]) -> SearchGallery:
        """Embeds gallery images once so that many queries can be run against them."""
        paths = [str(p) for p in paths]
        return SearchGallery(paths, encode_images(self.backbone, paths,
                                                  batch_size=self.batch_size))

    def search(self, query: str | Sequence[str],
               gallery: SearchGallery | Sequence[str | os.PathLike] | np.ndarray,
               k: int = 10) -> list[SearchHit] | list[list[SearchHit]]:
        """Ranks gallery images by their similarity with a description.

        Args:
            query: A sentence, or a list of sentences.
            gallery: A `SearchGallery` from `index`, image paths or float32 images
                ``(N, H, W, 3)`` in [0, 1] (embedded now), or ``(N, D)`` image embeddings.
            k: Number of results per query.

        Returns:
            For one sentence, its ``k`` best `SearchHit` s, best first; for a list, one such
            list per sentence.
        """
        if isinstance(gallery, np.ndarray) and gallery.ndim == 2:
            gallery = SearchGallery(None, _l2_normalize(gallery.astype(np.float32)))
        elif isinstance(gallery, np.ndarray):
            gallery = SearchGallery(None, encode_images(self.backbone, gallery,
                                                        batch_size=self.batch_size))
        elif not isinstance(gallery, SearchGallery):
            gallery = self.index(gallery)
        single = isinstance(query, str)
        queries = [query] if single else list(query)
        text = encode_captions(self.backbone, self.tokenizer, queries, self.batch_size)
        similarity = text @ gallery.embeddings.T
        k = min(int(k), similarity.shape[1])
        results = []
        for row in similarity:
            top = np.argsort(-row, kind="stable")[:k]
            results.append([SearchHit(rank + 1, int(i),
                                      None if gallery.paths is None else gallery.paths[i],
                                      float(row[i])) for rank, i in enumerate(top)])
        return results[0] if single else results


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


#: Per backbone, its image and caption embedding models (see `_embedders`).
_EMBEDDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _embedders(backbone) -> tuple[keras.Model, keras.Model]:
    """Image and caption embedding models sharing the backbone's layers (built once each).

    As models they run through ``predict``, which is compiled on every backend (jit on JAX,
    a tf.function on TensorFlow), instead of op by op.
    """
    if backbone not in _EMBEDDERS:
        images = keras.Input(shape=tuple(backbone.image_encoder.image_shape), name="images")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        _EMBEDDERS[backbone] = (
            keras.Model(images, backbone.get_image_embeddings(images), name="image_embedder"),
            keras.Model(token_ids, backbone.get_text_embeddings(token_ids),
                        name="text_embedder"))
    return _EMBEDDERS[backbone]


def encode_images(backbone, images_or_paths, image_size: tuple[int, int] | None = None,
                  batch_size: int = 64) -> np.ndarray:
    """L2-normalised image embeddings ``(N, D)`` of image files or an image array.

    Args:
        backbone: A `ValPatBackbone`.
        images_or_paths: Image paths (decoded by `valpat_keras.data.pipelines.image_dataset`)
            or float32 images in [0, 1] ``(N, H, W, 3)``.
        image_size: ``(H, W)`` to decode paths to (default: the image encoder's input size).
        batch_size: Images per forward pass.
    """
    if len(images_or_paths) == 0:
        return np.zeros((0, backbone.embedding_dim), np.float32)
    embedder = _embedders(backbone)[0]
    if isinstance(images_or_paths, (list, tuple)) and isinstance(
            images_or_paths[0], (str, os.PathLike)):
        from valpat_keras.data.pipelines import image_dataset

        size = tuple(image_size or backbone.image_encoder.image_shape[:2])
        embeddings = embedder.predict(
            image_dataset([str(p) for p in images_or_paths], size, batch_size), verbose=0)
    else:
        embeddings = embedder.predict(np.asarray(images_or_paths, dtype="float32"),
                                      batch_size=batch_size, verbose=0)
    return _l2_normalize(np.asarray(embeddings, dtype=np.float32))


def encode_captions(backbone, tokenizer, captions: Sequence[str],
                    batch_size: int = 64) -> np.ndarray:
    """L2-normalised caption embeddings ``(N, D)``.

    Args:
        backbone: A `ValPatBackbone`.
        tokenizer: Its `CaptionTokenizer`.
        captions: The sentences.
        batch_size: Captions per forward pass.
    """
    from valpat_keras.data.pipelines import caption_dataset

    if not len(captions):
        return np.zeros((0, backbone.embedding_dim), np.float32)
    embeddings = _embedders(backbone)[1].predict(
        caption_dataset(list(captions), tokenizer, batch_size), verbose=0)
    return _l2_normalize(np.asarray(embeddings, dtype=np.float32))


def evaluate_search(backbone, tokenizer, records, batch_size: int = 64,
                    image_to_text: bool = False) -> dict:
    """IRRA's text-to-image evaluation: every caption of ``records`` queries all their images.

    Args:
        backbone: A `ValPatBackbone`.
        tokenizer: Its `CaptionTokenizer`.
        records: The test `TextRecord` s (images are the gallery, captions the queries).
        batch_size: Items per forward pass.
        image_to_text: Also rank captions for each image (reported under ``"i2t"``).

    Returns:
        `valpat_keras.evaluation.evaluate_text_search`'s dict (``R1``, ``R5``, ``R10``,
        ``mAP``, ``mINP`` as fractions, ``cmc``, ``num_queries``), plus ``similarity`` (the
        caption x image matrix), ``captions`` and ``i2t`` when asked.
    """
    from valpat_keras.evaluation.text_search_metrics import evaluate_text_search

    if not records:
        raise ValueError("evaluate_search: no test records")
    captions = [c for r in records for c in r.captions]
    q_pids = np.asarray([r.pid for r in records for _ in r.captions], np.int64)
    g_pids = np.asarray([r.pid for r in records], np.int64)
    images = encode_images(backbone, [r.path for r in records], batch_size=batch_size)
    text = encode_captions(backbone, tokenizer, captions, batch_size)
    similarity = text @ images.T
    out = evaluate_text_search(similarity, q_pids, g_pids)
    if image_to_text:
        i2t = evaluate_text_search(similarity.T, g_pids, q_pids)
        out["i2t"] = {k: i2t[k] for k in ("R1", "R5", "R10", "mAP", "mINP")}
    out["similarity"] = similarity
    out["captions"] = captions
    return out


def build_search_backbone(train_captions: Sequence[str], config: str = "tiny",
                          text_config: str = "tiny", image_size: tuple[int, int] = (256, 128),
                          embedding_dim: int = 256, vocabulary_size: int = 2000,
                          sequence_length: int = 32):
    """A randomly initialised `ValPatBackbone` and a tokenizer learnt from the captions.

    Args:
        train_captions: The training captions (the WordPiece vocabulary is learnt on them).
        config: Image encoder configuration (see `IMAGE_ENCODER_CONFIGS`).
        text_config: Text encoder configuration (see `TEXT_ENCODER_CONFIGS`).
        image_size: ``(H, W)`` of the inputs.
        embedding_dim: Width of the shared image-text space.
        vocabulary_size: Upper bound on the vocabulary size.
        sequence_length: Token ids per caption.

    Returns:
        ``(backbone, tokenizer)``.
    """
    from valpat_keras.data.tokenizer import CaptionTokenizer
    from valpat_keras.models import ValPatBackbone, build_image_encoder, build_text_encoder

    tokenizer = CaptionTokenizer.from_captions(list(train_captions), vocabulary_size,
                                               sequence_length)
    backbone = ValPatBackbone(
        build_image_encoder(config, image_size=image_size),
        build_text_encoder(text_config, vocabulary_size=tokenizer.vocabulary_size,
                           sequence_length=tokenizer.sequence_length),
        embedding_dim=embedding_dim)
    return backbone, tokenizer


def train_search(dataset, out_dir: str | Path, init: str = "random", config: str = "tiny",
                 text_config: str = "tiny", epochs: int = 10, batch_size: int = 32,
                 image_size: tuple[int, int] | None = None, learning_rate: float = 1e-4,
                 weight_decay: float = 4e-5, loss_weights: Mapping[str, float] | None = None,
                 embedding_dim: int = 256, vocabulary_size: int = 2000,
                 sequence_length: int = 32, augment: bool = True, seed: int = 0,
                 steps_per_epoch: int | None = None, image_to_text: bool = True,
                 verbose: int | str = "auto") -> dict:
    """Fine-tunes a `TextSearchModel` on a `TextDataset` and evaluates it IRRA-style.

    Trains on ``train`` (one caption sampled per image per epoch; ITC + SDM + ID losses),
    then ranks every ``test`` image for every ``test`` caption (``val`` when test is empty).

    Writes into ``out_dir``: ``metrics.json`` (``R1``, ``R5``, ``R10``, ``mAP``, ``mINP`` as
    fractions, and ``i2t`` image-to-text numbers), ``history.json`` (per-epoch losses),
    ``retrieval_examples.png`` (captions with their top-5 images) and the fine-tuned backbone
    in the layout of a pretraining run (``backbone/`` preset + ``backbone/tokenizer/``), so
    ``PersonSearcher.from_run_dir(out_dir)`` loads it.

    Args:
        dataset: A `TextDataset` (e.g. ``datasets.load("cuhk_pedes", root)``).
        out_dir: Output folder (created).
        init: ``"random"`` (new encoders, tokenizer learnt from the training captions) or a
            pretraining run folder (its `ValPatBackbone` and tokenizer, via
            `valpat_keras.models.init.load_backbone`).
        config: Image encoder configuration for random init.
        text_config: Text encoder configuration for random init.
        epochs: Training epochs.
        batch_size: Image-caption pairs per batch (lowered to the training set size if
            larger).
        image_size: ``(H, W)``; default (256, 128) for random init and the pretrained
            backbone's size otherwise (which it must equal).
        learning_rate: Peak learning rate (cosine decay over the run).
        weight_decay: AdamW weight decay.
        loss_weights: Weights of ``"itc"``, ``"sdm"``, ``"id"`` (see `TextSearchModel`).
        embedding_dim: Shared space width for random init.
        vocabulary_size: Tokenizer vocabulary bound for random init.
        sequence_length: Token ids per caption for random init.
        augment: Apply the training augmentation to the images.
        seed: Seed of weights, shuffling, augmentation and caption sampling.
        steps_per_epoch: Cap on the steps per epoch (default: one pass).
        image_to_text: Also report image-to-text retrieval.
        verbose: Keras ``fit`` verbosity.

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        InputError: Bad input (no train or test records, an image size the pretrained
            backbone cannot take, a batch size below 1).
        NonFiniteLossError: A loss became NaN or infinite; training stops at that batch
            and nothing is written.

    Example:

    ```python
    data = datasets.load("cuhk_pedes", "/data/CUHK-PEDES")
    metrics = train_search(data, "runs/search", init="runs/pretrain", epochs=60)
    hits = PersonSearcher.from_run_dir("runs/search").search("a man in a blue shirt",
                                                            [r.path for r in data.test])
    ```
    """
    from valpat_keras.data.pipelines import text_image_dataset
    from valpat_keras.errors import InputError
    from valpat_keras.evaluation import plot_text_retrieval
    from valpat_keras.models.init import BACKBONE_DIR, TOKENIZER_DIR, load_backbone
    from valpat_keras.run_outputs import write_json
    from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss

    eval_records = dataset.test or dataset.val
    if not dataset.train or not eval_records:
        raise InputError(f"{dataset.name} ({dataset.root}): text search needs train and test "
                         f"(or val) records (got {len(dataset.train)} train, "
                         f"{len(dataset.test)} test)")
    if int(batch_size) <= 0:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    started = time.time()

    if init == "random":
        image_size = tuple(image_size or (256, 128))
        backbone, tokenizer = build_search_backbone(
            [c for r in dataset.train for c in r.captions], config, text_config, image_size,
            embedding_dim, vocabulary_size, sequence_length)
    else:
        backbone, tokenizer = load_backbone(init)
        native = tuple(backbone.image_encoder.image_shape[:2])
        if image_size is not None and tuple(image_size) != native:
            raise InputError(f"the pretrained backbone in {init} takes images of {native}; "
                             f"got image_size={tuple(image_size)}. Fine-tune at {native}.")
        image_size = native
    image_size = (int(image_size[0]), int(image_size[1]))

    pids = np.asarray([r.pid for r in dataset.train])
    weights = {**DEFAULT_LOSS_WEIGHTS, **dict(loss_weights or {})}
    num_classes = int(pids.max()) + 1 if weights["id"] > 0 else 0
    model = TextSearchModel(backbone, num_classes=num_classes, loss_weights=weights,
                            name="text_search")
    batch_size = min(int(batch_size), len(dataset.train))
    train_ds = text_image_dataset(dataset.train, tokenizer, image_size=image_size,
                                  batch_size=batch_size, seed=seed, augment=augment)
    train_ds = train_ds.map(lambda b: ({"images": b["images"], "token_ids": b["token_ids"]},
                                       b["pids"]))
    steps = steps_per_epoch or len(dataset.train) // batch_size
    if steps_per_epoch:
        train_ds = train_ds.repeat()
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, epochs * steps), alpha=0.01)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay))
    history = model.fit(train_ds, epochs=epochs, shuffle=False,
                        steps_per_epoch=steps if steps_per_epoch else None, verbose=verbose,
                        callbacks=[TerminateOnNonFiniteLoss(raise_error=True)])

    result = evaluate_search(backbone, tokenizer, eval_records, batch_size=batch_size,
                             image_to_text=image_to_text)
    metrics = {k: float(result[k]) for k in ("R1", "R5", "R10", "mAP", "mINP")}
    if image_to_text:
        metrics["i2t"] = result["i2t"]
    metrics.update({"dataset": dataset.name, "init": str(init), "epochs": int(epochs),
                    "num_train": len(dataset.train), "num_test_images": len(eval_records),
                    "num_test_captions": int(result["num_queries"]),
                    "seconds": round(time.time() - started, 1)})

    write_json(out / "metrics.json", metrics)
    write_json(out / "history.json",
               {k: [float(v) for v in vals] for k, vals in history.history.items()})
    q_pids = np.asarray([r.pid for r in eval_records for _ in r.captions])
    plot_text_retrieval(result["captions"], [r.path for r in eval_records],
                        result["similarity"], q_pids=q_pids,
                        g_pids=np.asarray([r.pid for r in eval_records]),
                        path=str(out / "retrieval_examples.png"))
    backbone.save_to_preset(str(out / BACKBONE_DIR))
    tokenizer.save_to_preset(str(out / BACKBONE_DIR / TOKENIZER_DIR))
    return metrics
