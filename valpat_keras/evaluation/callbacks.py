"""Re-ID evaluation as an object and as a Keras callback during ``fit``.

`ReIDEvaluator` is the one "extract query / gallery features, then score" of the package:
the validation callback, `valpat_keras.tasks.reid_training.evaluate_reid_model` (the final
test scores, ``valpat evaluate`` and the demo) all go through its `extract` and `score`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from valpat_keras.evaluation.distances import iter_distance_blocks
from valpat_keras.evaluation.features import FeatureSet, extract_features
from valpat_keras.evaluation.reid_metrics import evaluate_reid_from_blocks
from valpat_keras.evaluation.reranking import iter_re_ranking_blocks


class ReIDEvaluator:
    """Extracts query/gallery features with a model and computes CMC, mAP and mINP.

    Args:
        query: Query `ReIDRecord` list.
        gallery: Gallery `ReIDRecord` list.
        image_size: ``(height, width)`` of the model input.
        batch_size: Images per forward pass.
        metric: Distance for ranking: ``"cosine"``, ``"euclidean"`` or ``"sqeuclidean"``.
        rerank: Apply k-reciprocal re-ranking (memory-bounded sparse version).
        k1: Re-ranking ``k1``.
        k2: Re-ranking ``k2``.
        lambda_value: Re-ranking weight of the original distance.
        flip: Average embeddings with those of mirrored images.
        normalize: L2-normalise embeddings.
        max_rank: Length of the CMC curve.
        block_size: Queries per block when ranking.
        verbose: Show extraction progress bars.

    Example:
    >>> evaluator = ReIDEvaluator(ds.query, ds.gallery, image_size=(256, 128))  # doctest: +SKIP
    >>> evaluator.evaluate(task.embedding_model)["mAP"]  # doctest: +SKIP
    """

    def __init__(
        self,
        query: Sequence,
        gallery: Sequence,
        image_size: tuple[int, int] = (256, 128),
        batch_size: int = 64,
        metric: str = "cosine",
        rerank: bool = False,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        flip: bool = True,
        normalize: bool = True,
        max_rank: int = 50,
        block_size: int = 512,
        verbose: bool = False,
    ):
        if not query or not gallery:
            raise ValueError("ReIDEvaluator needs non-empty query and gallery record lists")
        self.query = list(query)
        self.gallery = list(gallery)
        self.image_size = tuple(image_size)
        self.batch_size = batch_size
        self.metric = metric
        self.rerank = rerank
        self.k1, self.k2, self.lambda_value = k1, k2, lambda_value
        self.flip = flip
        self.normalize = normalize
        self.max_rank = max_rank
        self.block_size = block_size
        self.verbose = verbose

    def extract(self, model: Callable) -> tuple[FeatureSet, FeatureSet]:
        """The query and gallery features of ``model`` (with this evaluator's flip / norm).

        Args:
            model: A Keras model mapping float32 [0, 1] images to ``(B, D)`` embeddings.
        """
        kwargs = {"image_size": self.image_size, "batch_size": self.batch_size,
                  "flip": self.flip, "normalize": self.normalize, "verbose": self.verbose}
        return (extract_features(model, self.query, **kwargs),
                extract_features(model, self.gallery, **kwargs))

    def score(self, query: FeatureSet, gallery: FeatureSet, rerank: bool | None = None) -> dict:
        """CMC, mAP and mINP of ranking ``gallery`` for every ``query`` feature.

        Args:
            query: Query features (from `extract`).
            gallery: Gallery features.
            rerank: k-reciprocal re-ranking; ``None`` uses the evaluator's ``rerank``.

        Returns:
            The dict of `evaluate_reid_from_blocks` (``rank1``, ``mAP``, ``mINP``, ``cmc``, ...).
        """
        rerank = self.rerank if rerank is None else rerank
        if rerank:
            blocks = iter_re_ranking_blocks(query.features, gallery.features, self.k1, self.k2,
                                            self.lambda_value, self.metric, self.block_size)
        else:
            blocks = iter_distance_blocks(query.features, gallery.features, self.metric,
                                          self.block_size)
        return evaluate_reid_from_blocks(blocks, query.pids, gallery.pids, query.camids,
                                         gallery.camids, self.max_rank)

    def evaluate(self, model: Callable) -> dict:
        """Ranks the gallery for every query with ``model``'s embeddings (`extract`, `score`).

        Args:
            model: A Keras model mapping float32 [0, 1] images to ``(B, D)`` embeddings.

        Returns:
            The dict of `evaluate_reid` (``rank1``, ``mAP``, ``mINP``, ``cmc``, ...).
        """
        return self.score(*self.extract(model))


class ReIDEvaluationCallback(keras.callbacks.Callback):
    """Evaluates re-ID every ``every_n_epochs`` epochs and writes the scores into the logs.

    ``rank1``, ``mAP`` and ``mINP`` are added to the epoch logs as ``{prefix}rank1`` etc.,
    so they appear in ``History`` (one entry per evaluated epoch) and can drive
    ``ModelCheckpoint`` or ``EarlyStopping`` when evaluated every epoch.

    Args:
        evaluator: The `ReIDEvaluator` with the query and gallery records.
        embedding_fn: Returns the model to extract with, called at each evaluation, e.g.
            ``lambda: task.embedding_model``; ``None`` uses the trained model itself.
        every_n_epochs: Evaluation period in epochs (the last epoch of a period).
        prefix: Prefix of the log keys.

    Example:
    >>> cb = ReIDEvaluationCallback(evaluator, lambda: task.embedding_model)  # doctest: +SKIP
    >>> task.fit(train_ds, epochs=10, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(
        self,
        evaluator: ReIDEvaluator,
        embedding_fn: Callable[[], Callable] | None = None,
        every_n_epochs: int = 1,
        prefix: str = "val_",
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.evaluator = evaluator
        self.embedding_fn = embedding_fn
        self.every_n_epochs = every_n_epochs
        self.prefix = prefix
        self.results: dict[int, dict] = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Evaluates on the scheduled epochs and records the scores in ``logs``."""
        if (epoch + 1) % self.every_n_epochs:
            return
        model = self.embedding_fn() if self.embedding_fn is not None else self.model
        result = self.evaluator.evaluate(model)
        self.results[epoch] = result
        if logs is not None:
            for key in ("rank1", "mAP", "mINP"):
                logs[self.prefix + key] = float(np.float64(result[key]))
