"""How a new attribute head starts: the prior bias, or a linear probe of the encoder (LP-FT).

`HEAD_INITS` are the choices `train_attributes` offers; the prior bias is set by the
`AttributeRecognizer` itself, the linear probe by `init_head_from_linear_probe`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from valpat_keras.evaluation.features import extract_features
from valpat_keras.evaluation.linear_probe import fit_attribute_probe
from valpat_keras.tasks.attribute_recognizer import AttributeRecognizer

#: How `train_attributes` starts the head: the prior bias, or a linear probe (LP-FT).
HEAD_INITS = ("auto", "prior", "linear_probe")


def init_head_from_linear_probe(model: AttributeRecognizer, paths: Sequence[str],
                                labels: np.ndarray, image_size: tuple[int, int],
                                batch_size: int = 64, c: float = 0.1) -> None:
    """Starts the head at a linear probe of the frozen encoder's features (LP-FT).

    Fine-tuning a pretrained encoder under a head that starts from scratch distorts the
    features before the head has learnt to read them (Kumar et al. 2022, "Fine-Tuning can
    Distort Pretrained Features"); a linear probe first, then fine-tuning, keeps what the
    encoder knows. The probe (`fit_attribute_probe`, balanced when the loss is) is fit on
    the un-augmented training images; the logit batch norm is set to the identity on their
    logits (``gamma`` the logits' std, ``beta`` and the moving mean their mean), so the
    recognizer starts out predicting what the probe predicts.

    Args:
        model: The recognizer whose head is set.
        paths: Training image paths.
        labels: ``(N, A)`` training labels.
        image_size: ``(height, width)``.
        batch_size: Images per forward pass.
        c: The probe's inverse regularisation strength.
    """
    features = extract_features(model.backbone, list(paths), image_size, batch_size,
                                flip=False, normalize=False, verbose=False).features
    weights, bias = fit_attribute_probe(features, labels, c,
                                        balanced=model.loss_weighting == "balanced")
    model.head.dense.kernel.assign(weights)
    model.head.dense.bias.assign(bias)
    norm = model.head.norm
    if norm is not None:
        logits = features @ weights + bias
        mean, var = logits.mean(axis=0), logits.var(axis=0)
        norm.moving_mean.assign(mean)
        norm.moving_variance.assign(var)
        norm.gamma.assign(np.sqrt(var + norm.epsilon))
        norm.beta.assign(mean)
