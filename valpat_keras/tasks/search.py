"""Transfer to text-based person search: find a person's images from a description.

`TextSearchModel` fine-tunes a `ValPatBackbone` (image encoder, text encoder, projections into
one space) with IRRA's objectives: image-text contrastive loss (ITC, CLIP-style symmetric
InfoNCE with the backbone's learnt logit scale), similarity-distribution matching (SDM, which
treats other pairs of the same identity in the batch as matches) and an optional identity
classification loss. Evaluation follows IRRA: every test caption queries every test image.
`PersonSearcher` is the query API: a sentence in, ranked gallery images out. `train_search`
runs a whole transfer from one `SearchRunConfig`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from valpat_keras.data.pipelines import text_image_dataset
from valpat_keras.data.records import pids_of
from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.distribute import runs_with_runtime_settings
from valpat_keras.errors import InputError
from valpat_keras.evaluation.distances import l2_normalize
from valpat_keras.evaluation.plots import plot_text_retrieval
from valpat_keras.evaluation.text_search_metrics import evaluate_text_search
from valpat_keras.losses.contrastive import symmetric_info_nce
from valpat_keras.losses.search import identity_loss, sdm_loss
from valpat_keras.models.backbone import ValPatBackbone
from valpat_keras.models.embedding import encode_captions, encode_images
from valpat_keras.models.image_encoder import IMAGE_ENCODER_CONFIGS, build_image_encoder
from valpat_keras.models.init import (
    BACKBONE_DIR,
    TOKENIZER_DIR,
    TRANSFER_LAST_STRIDE,
    load_backbone,
)
from valpat_keras.models.preprocessors import ValPatPreprocessor
from valpat_keras.models.text_encoder import build_text_encoder
from valpat_keras.run_outputs import write_json
from valpat_keras.tasks.base import ValPatTask
from valpat_keras.tasks.checkpointing import StepCheckpoint
from valpat_keras.tasks.run_config import (
    RunConfig,
    legacy_string_keyword,
    resolve_run_config,
)
from valpat_keras.tasks.transfer_common import (
    cap_epochs,
    check_batch_size,
    cosine_schedule,
    elapsed_seconds,
    fit_transfer,
    remove_checkpoints,
    run_checkpoint,
    start_run,
    write_history,
    write_task_preset,
)

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "PersonSearcher",
    "SearchGallery",
    "SearchHit",
    "SearchRunConfig",
    "TextSearchModel",
    "build_search_backbone",
    "encode_captions",  # re-exported from valpat_keras.models.embedding (old import path)
    "encode_images",  # re-exported from valpat_keras.models.embedding (old import path)
    "evaluate_search",
    "train_search",
]

#: Default objective weights; the ID loss is on only when the model has a classifier.
DEFAULT_LOSS_WEIGHTS = {"itc": 1.0, "sdm": 1.0, "id": 1.0}
#: The running means of the fit logs, each on when its objective's weight is > 0.
TRACKER_NAMES = ("itc_loss", "itc_acc", "sdm_loss", "id_loss")
#: The retrieval numbers of `evaluate_search` that go into ``metrics.json``.
METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mINP")


@keras.saving.register_keras_serializable(package="valpat_keras")
class TextSearchModel(ValPatTask):
    """Text-based person search model: a `ValPatBackbone` trained with ITC + SDM (+ ID).

    Inputs are ``{"images": (B, H, W, 3) float32 in [0, 1], "token_ids": (B, L) int32}`` and
    the targets are the person ids ``(B,)`` of the pairs (SDM and ID need them). Outputs the
    L2-normalised ``image_embedding`` and ``text_embedding`` (plus ``image_logits`` /
    ``text_logits`` of the identity classifier when ``num_classes`` is set). Each objective's
    loss and the ITC top-1 accuracy appear in the fit logs. ``compile(optimizer="auto")`` is
    AdamW (learning rate 1e-4, weight decay 4e-5); the loss is always the weighted objectives
    (`task_loss`) plus the layers' regularisation losses.

    Args:
        backbone: valpat_keras.models.ValPatBackbone.
        num_classes: int. Number of training identities for the ID loss (a linear classifier
            shared by both modalities, as in IRRA); ``0`` switches it off. Defaults to ``0``.
        loss_weights: Mapping[str, float] | None. Weights of ``"itc"``, ``"sdm"`` and ``"id"``;
            a missing key takes `DEFAULT_LOSS_WEIGHTS`, 0 switches an objective off.
        preprocessor: A `ValPatPreprocessor` (raw images and captions to the model's inputs)
            or ``None`` (inputs arrive tokenised, see `valpat_keras.data.pipelines`); the
            run function attaches one before saving the run folder as a preset.
        **kwargs: Standard `keras_hub.models.Task` arguments (``name``, ``compile``).

    Example:

    ```python
    backbone, tokenizer = load_backbone("runs/pretrain")
    model = TextSearchModel(backbone, num_classes=dataset_num_train_ids)
    model.compile()  # AdamW(1e-4, weight_decay=4e-5)
    model.fit(pipeline_of_image_caption_pid_batches, epochs=10)
    searcher = PersonSearcher(model.backbone, tokenizer)
    searcher.search("a woman in a red coat with a black backpack", gallery_paths, k=10)
    ```
    """

    backbone_cls = ValPatBackbone
    preprocessor_cls = ValPatPreprocessor

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
        self.make_trackers(name for name in TRACKER_NAMES
                           if self.loss_weights[name.split("_")[0]] > 0)

    def get_config(self):
        # The backbone is serialised by `Task.get_config`.
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "loss_weights": self.loss_weights})
        return config

    def default_optimizer(self) -> keras.optimizers.Optimizer:
        """AdamW with learning rate 1e-4 and weight decay 4e-5 (IRRA's fine-tuning recipe)."""
        return keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=4e-5)

    def task_loss(self, x, y, y_pred, training: bool):
        """ITC + SDM (+ ID) on a batch of image-caption pairs with person ids ``y``."""
        image_emb = y_pred["image_embedding"]
        text_emb = y_pred["text_embedding"]
        scale = self.backbone.logit_scale
        weights = self.loss_weights
        total = keras.ops.zeros((), "float32")
        if weights["itc"] > 0:
            itc, acc = symmetric_info_nce(image_emb, text_emb, scale)
            total = total + weights["itc"] * itc
            self.track("itc_loss", itc)
            self.track("itc_acc", acc)
        if (weights["sdm"] > 0 or weights["id"] > 0) and y is None:
            raise ValueError("TextSearchModel's SDM and ID losses need person ids: fit on "
                             "({'images', 'token_ids'}, pids) batches.")
        if weights["sdm"] > 0:
            sdm = sdm_loss(image_emb, text_emb, y, scale)
            total = total + weights["sdm"] * sdm
            self.track("sdm_loss", sdm)
        if weights["id"] > 0:
            idl = identity_loss(y_pred["image_logits"], y_pred["text_logits"], y)
            total = total + weights["id"] * idl
            self.track("id_loss", idl)
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
            gallery = SearchGallery(None, l2_normalize(gallery.astype(np.float32)))
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


def _caption_pids(records) -> np.ndarray:
    """The person id of every caption of ``records``, in caption order (``int64``)."""
    return np.repeat(pids_of(records), [len(r.captions) for r in records])


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
    if not records:
        raise ValueError("evaluate_search: no test records")
    captions = [c for r in records for c in r.captions]
    q_pids = _caption_pids(records)
    g_pids = pids_of(records)
    images = encode_images(backbone, [r.path for r in records], batch_size=batch_size)
    text = encode_captions(backbone, tokenizer, captions, batch_size)
    similarity = text @ images.T
    out = evaluate_text_search(similarity, q_pids, g_pids)
    if image_to_text:
        i2t = evaluate_text_search(similarity.T, g_pids, q_pids)
        out["i2t"] = {k: i2t[k] for k in METRIC_KEYS}
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
    tokenizer = CaptionTokenizer.from_captions(list(train_captions), vocabulary_size,
                                               sequence_length)
    backbone = ValPatBackbone(
        build_image_encoder(config, image_size=image_size),
        build_text_encoder(text_config, vocabulary_size=tokenizer.vocabulary_size,
                           sequence_length=tokenizer.sequence_length),
        embedding_dim=embedding_dim)
    return backbone, tokenizer


@dataclasses.dataclass
class SearchRunConfig(RunConfig):
    """Every setting of a `train_search` run (the data and the output folder aside).

    Loadable from a JSON / YAML recipe (`RunConfig.from_file`); ``valpat search`` builds one
    from its flags.

    Attributes:
        init: ``"random"`` (new encoders, tokenizer learnt from the training captions) or a
            pretraining run folder (its `ValPatBackbone` and tokenizer, via
            `valpat_keras.models.init.load_backbone`).
        encoder_config: Image encoder configuration for random init (``"tiny"``,
            ``"resnet50"``, ...; the ``config=`` keyword of the old `train_search`).
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
        checkpoint_every_steps: Write a step checkpoint to ``OUT/checkpoints`` every this
            many steps; None: every 10 minutes (and at each epoch end). A run folder with
            checkpoints resumes from the latest ("resuming at step N"); they are deleted
            once the run folder is written.
        mixed_precision: None, ``"mixed_bfloat16"`` or ``"mixed_float16"``: the global
            dtype policy during the run (losses in float32; `valpat_keras.distribute`).
        distribute: None, or ``"data"``: data parallelism over ``devices`` devices (JAX
            only); ``batch_size`` is the global batch, split over the devices.
        devices: Devices ``distribute="data"`` uses (None: all, on every host).
    """

    init: str = "random"
    encoder_config: str = "tiny"
    text_config: str = "tiny"
    epochs: int = 10
    batch_size: int = 32
    image_size: tuple[int, int] | None = None
    learning_rate: float = 1e-4
    weight_decay: float = 4e-5
    loss_weights: dict[str, float] | None = None
    embedding_dim: int = 256
    vocabulary_size: int = 2000
    sequence_length: int = 32
    augment: bool = True
    seed: int = 0
    steps_per_epoch: int | None = None
    image_to_text: bool = True
    verbose: int | str = "auto"
    checkpoint_every_steps: int | None = None
    mixed_precision: str | None = None
    distribute: str | None = None
    devices: int | None = None


@runs_with_runtime_settings(lambda config: config.batch_size)
def train_search(dataset, out_dir: str | Path, config: SearchRunConfig | None = None,
                 **legacy) -> dict:
    """Fine-tunes a `TextSearchModel` on a `TextDataset` and evaluates it IRRA-style.

    Trains on ``train`` (one caption sampled per image per epoch; ITC + SDM + ID losses) and
    keeps the last epoch, then ranks every ``test`` image for every ``test`` caption (``val``
    when test is empty); that split is read once, in this final evaluation.

    Writes into ``out_dir``: ``metrics.json`` (``R1``, ``R5``, ``R10``, ``mAP``, ``mINP`` as
    fractions, and ``i2t`` image-to-text numbers), ``history.json`` (per-epoch losses),
    ``retrieval_examples.png`` (captions with their top-5 images) and the fine-tuned backbone
    in the layout of a pretraining run (``backbone/`` preset + ``backbone/tokenizer/``), so
    ``PersonSearcher.from_run_dir(out_dir)`` loads it.

    Args:
        dataset: A `TextDataset` (e.g. ``datasets.load("cuhk_pedes", root)``).
        out_dir: Output folder (created).
        config: The run's settings (default: ``SearchRunConfig()``). A string is the old
            ``config=`` keyword, the image encoder configuration
            (`SearchRunConfig.encoder_config`), and is deprecated.
        **legacy: Deprecated: the old keyword arguments (``init=``, ``epochs=``, ...), i.e.
            `SearchRunConfig` fields; they override ``config`` and warn
            (`DeprecationWarning`). Removed in the next release.

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        InputError: Bad input (no train or test records, an image size the pretrained
            backbone cannot take, a batch size below 1, an unknown setting).
        NonFiniteLossError: A loss became NaN or infinite; training stops at that batch
            and nothing is written.

    Example:

    ```python
    data = datasets.load("cuhk_pedes", "/data/CUHK-PEDES")
    metrics = train_search(data, "runs/search", SearchRunConfig(init="runs/pretrain",
                                                                epochs=60))
    hits = PersonSearcher.from_run_dir("runs/search").search("a man in a blue shirt",
                                                            [r.path for r in data.test])
    ```
    """
    if isinstance(config, str):  # The old `config="tiny"`, or the old third positional `init`.
        legacy = {legacy_string_keyword(config, legacy, IMAGE_ENCODER_CONFIGS): config, **legacy}
        config = None
    config = resolve_run_config(SearchRunConfig, config, legacy, "train_search",
                                renamed={"config": "encoder_config"})
    eval_records = _evaluation_split(dataset)
    check_batch_size(config.batch_size)
    out = start_run(out_dir, config.seed)
    started = time.time()
    backbone, tokenizer, image_size = _search_backbone(dataset.train, config)
    batch_size = min(int(config.batch_size), len(dataset.train))
    model = _build_task(backbone, dataset.train, config.loss_weights)
    history = _fit(model, tokenizer, dataset.train, image_size, batch_size, config,
                   run_checkpoint(out, config, num_train=len(dataset.train)))
    result = evaluate_search(backbone, tokenizer, eval_records, batch_size=batch_size,
                             image_to_text=config.image_to_text)
    metrics = _search_metrics(result, dataset, eval_records, config, started)
    _write_run_folder(out, metrics, history, result, eval_records, backbone, tokenizer)
    write_task_preset(model, out, ValPatPreprocessor.for_backbone(backbone, tokenizer))
    remove_checkpoints(out)  # only now: a kill while writing resumes at the last step
    return metrics


def _evaluation_split(dataset) -> list:
    """The split evaluated at the end (``test``, else ``val``); checks there is data.

    Only sizes are looked at here: the records are read in the final evaluation.
    """
    eval_records = dataset.test or dataset.val
    if not dataset.train or not eval_records:
        raise InputError(f"{dataset.name} ({dataset.root}): text search needs train and test "
                         f"(or val) records (got {len(dataset.train)} train, "
                         f"{len(dataset.test)} test)")
    return eval_records


def _search_backbone(train, config: SearchRunConfig):
    """``(backbone, tokenizer, image_size)``: new from the training captions, or ``init``'s.

    Raises:
        InputError: If ``config.image_size`` differs from a pretrained backbone's.
    """
    if config.init == "random":
        image_size = tuple(config.image_size or (256, 128))
        backbone, tokenizer = build_search_backbone(
            [c for r in train for c in r.captions], config.encoder_config,
            config.text_config, image_size, config.embedding_dim, config.vocabulary_size,
            config.sequence_length)
    else:
        backbone, tokenizer = load_backbone(config.init, last_stride=TRANSFER_LAST_STRIDE)
        native = tuple(backbone.image_encoder.image_shape[:2])
        if config.image_size is not None and tuple(config.image_size) != native:
            raise InputError(f"the pretrained backbone in {config.init} takes images of "
                             f"{native}; got image_size={tuple(config.image_size)}. "
                             f"Fine-tune at {native}.")
        image_size = native
    return backbone, tokenizer, (int(image_size[0]), int(image_size[1]))


def _build_task(backbone, train, loss_weights: Mapping[str, float] | None) -> TextSearchModel:
    """The `TextSearchModel` of a run: an ID classifier over the training ids when ID is on."""
    weights = {**DEFAULT_LOSS_WEIGHTS, **dict(loss_weights or {})}
    num_classes = int(pids_of(train).max()) + 1 if weights["id"] > 0 else 0
    return TextSearchModel(backbone, num_classes=num_classes, loss_weights=weights,
                           name="text_search")


def _fit(model: TextSearchModel, tokenizer, train, image_size: tuple[int, int],
         batch_size: int, config: SearchRunConfig,
         checkpoint: StepCheckpoint | None = None) -> keras.callbacks.History:
    """Compiles (AdamW, cosine decay over the run) and fits on the training pairs.

    With a ``checkpoint`` the run resumes exactly from its latest step checkpoint (the
    input continues at the next batch: `text_image_dataset` ``start_step``).
    """
    def pairs(start_step: int | None):
        train_ds = text_image_dataset(train, tokenizer, image_size=image_size,
                                      batch_size=batch_size, seed=config.seed,
                                      augment=config.augment, start_step=start_step)
        return train_ds.map(lambda b: ({"images": b["images"], "token_ids": b["token_ids"]},
                                       b["pids"]))

    full_pass = len(train) // batch_size
    if checkpoint is None:
        train_ds, steps = cap_epochs(pairs(None), config.steps_per_epoch, full_pass)
        fit_steps = config.steps_per_epoch
    else:
        train_ds, steps = pairs, int(config.steps_per_epoch or full_pass)
        fit_steps = steps
    model.compile(optimizer=keras.optimizers.AdamW(
        cosine_schedule(config.learning_rate, config.epochs, steps),
        weight_decay=config.weight_decay))
    return fit_transfer(model, train_ds, config.epochs, fit_steps, verbose=config.verbose,
                        checkpoint=checkpoint)


def _search_metrics(result: dict, dataset, eval_records, config: SearchRunConfig,
                    started: float) -> dict:
    """The ``metrics.json`` payload: retrieval numbers (as fractions) and the run's facts."""
    metrics = {k: float(result[k]) for k in METRIC_KEYS}
    if config.image_to_text:
        metrics["i2t"] = result["i2t"]
    metrics.update({"dataset": dataset.name, "init": str(config.init),
                    "epochs": int(config.epochs), "num_train": len(dataset.train),
                    "num_test_images": len(eval_records),
                    "num_test_captions": int(result["num_queries"]),
                    "seconds": elapsed_seconds(started)})
    return metrics


def _write_run_folder(out: Path, metrics: dict, history: keras.callbacks.History,
                      result: dict, eval_records, backbone, tokenizer) -> None:
    """Writes metrics, history, the retrieval figure and the backbone + tokenizer preset."""
    write_json(out / "metrics.json", metrics)
    write_history(out, history)
    plot_text_retrieval(result["captions"], [r.path for r in eval_records],
                        result["similarity"], q_pids=_caption_pids(eval_records),
                        g_pids=pids_of(eval_records),
                        path=str(out / "retrieval_examples.png"))
    backbone.save_to_preset(str(out / BACKBONE_DIR))
    tokenizer.save_to_preset(str(out / BACKBONE_DIR / TOKENIZER_DIR))
