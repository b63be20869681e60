"""Evaluation: re-ID / text-search / attribute metrics, re-ranking, features, plots.

Metrics are pure NumPy functions of arrays, following the published protocols exactly.
Importing this package does not import Keras: `extract_features`, `FeatureSet`,
`ReIDEvaluator`, `ReIDEvaluationCallback` and the plot functions load on first access.
"""

from __future__ import annotations

import importlib

from valpat_keras.evaluation.attribute_metrics import evaluate_attributes
from valpat_keras.evaluation.distances import (
    iter_distance_blocks,
    l2_normalize,
    pairwise_distance,
)
from valpat_keras.evaluation.reid_metrics import (
    evaluate_reid,
    evaluate_reid_from_blocks,
    evaluate_reid_from_features,
)
from valpat_keras.evaluation.reranking import (
    iter_re_ranking_blocks,
    re_ranking,
    re_ranking_from_features,
)
from valpat_keras.evaluation.text_search_metrics import evaluate_text_search

_LAZY = {
    "FeatureSet": "features",
    "extract_features": "features",
    "ReIDEvaluator": "callbacks",
    "ReIDEvaluationCallback": "callbacks",
    "plot_ranked_results": "plots",
    "plot_cmc": "plots",
    "plot_attribute_bars": "plots",
    "plot_embedding_tsne": "plots",
    "plot_text_retrieval": "plots",
}

__all__ = [
    "FeatureSet",
    "ReIDEvaluationCallback",
    "ReIDEvaluator",
    "evaluate_attributes",
    "evaluate_reid",
    "evaluate_reid_from_blocks",
    "evaluate_reid_from_features",
    "evaluate_text_search",
    "extract_features",
    "iter_distance_blocks",
    "iter_re_ranking_blocks",
    "l2_normalize",
    "pairwise_distance",
    "plot_attribute_bars",
    "plot_cmc",
    "plot_embedding_tsne",
    "plot_ranked_results",
    "plot_text_retrieval",
    "re_ranking",
    "re_ranking_from_features",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
