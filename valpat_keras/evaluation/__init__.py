"""Evaluation: re-ID / text-search / attribute metrics, re-ranking, features, plots.

Metrics are pure NumPy functions of arrays, following the published protocols exactly.
Importing this package does not import Keras: `extract_features`, `FeatureSet`,
`ReIDEvaluator`, `ReIDEvaluationCallback` and the plot functions load on first access.
"""

from __future__ import annotations

from valpat_keras.evaluation.attribute_metrics import (
    calibrate_attribute_thresholds,
    evaluate_attributes,
)
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
from valpat_keras.evaluation.verification import (
    RocCurve,
    calibrate_threshold,
    equal_error_rate,
    read_calibration,
    roc_from_scores,
    tpr_at_fpr,
    verification_metrics,
    verification_pairs,
    verification_roc,
    write_calibration,
)
from valpat_keras.lazy import lazy_exports

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
    "RocCurve",
    "calibrate_attribute_thresholds",
    "calibrate_threshold",
    "equal_error_rate",
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
    "read_calibration",
    "roc_from_scores",
    "tpr_at_fpr",
    "verification_metrics",
    "verification_pairs",
    "verification_roc",
    "write_calibration",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
