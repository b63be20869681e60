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

__all__ = [
    "batch_mean_accuracy", "cross_entropy_with_accuracy", "info_nce", "positive_ratios",
    "prior_logits", "symmetric_info_nce", "weighted_bce",
]
