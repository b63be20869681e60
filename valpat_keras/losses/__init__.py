"""Losses (keras.ops only, float32 arithmetic): contrastive and attribute objectives."""

from valpat_keras.losses.attribute import (
    batch_mean_accuracy,
    positive_ratios,
    prior_logits,
    weighted_bce,
)
from valpat_keras.losses.contrastive import (
    cross_entropy_with_accuracy,
    info_nce,
    symmetric_info_nce,
)
from valpat_keras.losses.normalization import l2_normalize

__all__ = [
    "batch_mean_accuracy", "cross_entropy_with_accuracy", "info_nce", "l2_normalize",
    "positive_ratios",
    "prior_logits", "symmetric_info_nce", "weighted_bce",
]
