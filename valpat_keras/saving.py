"""Loading saved valpat-keras models in a fresh process: every serializable class registered.

Keras finds a custom class of a ``.keras`` file or preset only once the module that defines
it (``register_keras_serializable(package="valpat_keras")``) has been imported, and importing
`valpat_keras` or `valpat_keras.tasks` deliberately imports no Keras (the backend is chosen
later). `register_all` imports every such module; `load_model` does that, then loads. (This module
imports Keras: set ``KERAS_BACKEND`` first.)

Example:

```python
import os
os.environ["KERAS_BACKEND"] = "jax"
from valpat_keras.saving import load_model

model = load_model("runs/reid/reid_model.keras")   # ReIDModel, no other import needed
```
"""

from __future__ import annotations

import importlib
from pathlib import Path

import keras

#: Every module that registers classes with Keras (tests/test_serialization.py checks this
#: list against the source tree).
SERIALIZABLE_MODULES = (
    "valpat_keras.data.tokenizer",
    "valpat_keras.models.backbone",
    "valpat_keras.models.batch_norm",
    "valpat_keras.models.fast_layers",
    "valpat_keras.models.gradient_gate",
    "valpat_keras.models.heads",
    "valpat_keras.models.image_encoder",
    "valpat_keras.models.mgn",
    "valpat_keras.models.non_local",
    "valpat_keras.models.pooling",
    "valpat_keras.models.preprocessors",
    "valpat_keras.models.reid_head",
    "valpat_keras.models.text_encoder",
    "valpat_keras.models.vit_resize",
    "valpat_keras.optimizers",
    "valpat_keras.schedules",
    "valpat_keras.tasks.attribute_recognizer",
    "valpat_keras.tasks.pretrainer",
    "valpat_keras.tasks.reid",
    "valpat_keras.tasks.search",
    "valpat_keras.tasks.unsupervised_reid",
)


def register_all() -> None:
    """Imports every module in `SERIALIZABLE_MODULES` (imports Keras: set the backend first)."""
    for module in SERIALIZABLE_MODULES:
        importlib.import_module(module)


def load_model(path: str | Path, **kwargs):
    """`keras.saving.load_model` with every valpat-keras class registered first.

    Args:
        path: A ``.keras`` file written by any valpat-keras task or run.
        **kwargs: Passed to `keras.saving.load_model` (e.g. ``compile=False``).
    """
    register_all()
    return keras.saving.load_model(path, **kwargs)
