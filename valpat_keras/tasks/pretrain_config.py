"""`PretrainConfig`: every setting of a VAL-PAT pretraining run (what `pretrain` takes).

This module imports no Keras, so a command can build the config while it parses its
arguments, before the backend is chosen. `valpat_keras.tasks.pretraining` re-exports it.

Example:

```python
config = PretrainConfig(encoder_config="tiny", steps=600, batch_size=32, image_size=(64, 32))
pretrain(data, "runs/pretrain", config)
PretrainConfig.from_file("recipes/pretrain_r50.yaml")  # the same fields in a file
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from valpat_keras.errors import InputError
from valpat_keras.runtime import check_runtime_settings
from valpat_keras.tasks.run_config import RunConfig

#: Named pretraining configurations: encoder sizes, head widths and default sizes.
PRETRAIN_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"image": "tiny", "text": "tiny", "embedding_dim": 128, "ssl_dim": 128,
             "ssl_hidden_dim": 512, "queue_size": 4096, "image_size": (128, 64)},
    "resnet50": {"image": "resnet50", "text": "base", "embedding_dim": 256, "ssl_dim": 256,
                 "ssl_hidden_dim": 2048, "queue_size": 65536, "image_size": (256, 128)},
    "vit": {"image": "vit_small", "text": "base", "embedding_dim": 256, "ssl_dim": 256,
            "ssl_hidden_dim": 2048, "queue_size": 65536, "image_size": (256, 128)},
}

#: Keywords of the old `pretrain` signature that are named differently here.
RENAMED: dict[str, str] = {"config": "encoder_config"}

#: Fields that change how a run is shown or checkpointed, not what it trains (left out of the
#: cache key: a resumed run equals an uninterrupted one whatever the checkpoint interval).
#: The device count is one of them: a 2-device run gives the loss of a 1-device one.
DISPLAY_ONLY: tuple[str, ...] = ("verbose", "checkpoint_every_steps", "distribute", "devices")

#: Fields added after runs were cached: left out of the cache key while at their default
#: (None), so the cached runs of earlier versions keep their keys.
KEYED_WHEN_SET: tuple[str, ...] = ("text_preset", "image_preset", "pixel_normalization")

#: ``last_stride`` when None: the stride of the last ResNet stage in pretraining. 1 (BoT's)
#: although the standard 2 is faster: at the demo's budget, frozen re-ID mAP and probe mA on
#: validation data fall well below stride 1's when pretraining at 2
#: (benchmarks/pretrain_stride.py; tutorials/benchmarks.md, "Pretraining stride"). Transfers
#: rebuild the encoder at `valpat_keras.models.init.TRANSFER_LAST_STRIDE` either way.
DEFAULT_PRETRAIN_LAST_STRIDE = 1

#: Runs cached before ``last_stride`` existed pretrained at this stride: a config resolving to
#: it keeps their key.
UNKEYED_LAST_STRIDE = 1

#: ``pixel_normalization`` values (None: ``"preset"`` with an image preset, else ``"imagenet"``).
PIXEL_NORMALIZATIONS: tuple[str, ...] = ("imagenet", "lup", "preset")


@dataclasses.dataclass
class PretrainConfig(RunConfig):
    """The settings of one pretraining run; checked when built (`InputError` if invalid).

    Attributes:
        encoder_config: ``"tiny"``, ``"resnet50"`` or ``"vit"``: the encoders' and heads'
            sizes (see `PRETRAIN_CONFIGS`; the old ``config=`` keyword of `pretrain`, named
            as in the transfers' run configs).
        objectives: Objectives to train among ``ssl``, ``itc``, ``attr``; ones the data
            cannot support (no captions / attributes) are switched off with a warning.
        loss_weights: Weight per objective (default 1; 0 switches it off).
        epochs: Passes over the data (default 1 when ``steps`` is not given either).
        steps: Optimiser steps instead of epochs (exact; logged in epochs of one pass).
        batch_size: Images per step; must divide the queue size.
        image_size: (height, width); the encoder config's default when None.
        seed: Seed of SynthPed, shuffling, augmentation and weight initialisation.
        queue_size: MoCo queue length; None: the encoder config's, capped at a quarter of the
            images (`default_queue_size`); 0: in-batch negatives only.
        learning_rate: AdamW learning rate.
        mixed_precision: None, ``"mixed_bfloat16"`` or ``"mixed_float16"`` (global policy
            during the run; losses stay float32).
        momentum: Key encoder EMA momentum; None picks it from the run length
            (`default_momentum`: 0.99 for a few hundred steps, up to 0.999).
        momentum_schedule: Raise the momentum to 1 along a half cosine over the run.
        vocabulary_size: Upper bound of the WordPiece vocabulary.
        sequence_length: Caption length in tokens.
        augment: The two views' augmentation: ``"reid"`` (crop and flip:
            `reid_ssl_view_augment`, which keeps clothing colour), ``"moco_v2"`` or
            True (MoCo v2's, with hue, saturation, grayscale and blur), False (plain resized
            images).
        synthped_preset: SynthPed size generated when no data is given.
        verbose: Keras ``fit`` verbosity (1: progress bar with ETA).
        checkpoint_every_steps: Write a step checkpoint (``RUN_DIR/checkpoints/``, for
            resuming) every this many optimiser steps; None: every 10 minutes. Checkpoints
            are also written at each epoch end and at the end of training. A resumed run
            equals an uninterrupted one whatever the interval.
        distribute: None, or ``"data"``: data parallelism over ``devices`` devices
            (`valpat_keras.distribute`, JAX only); ``batch_size`` is the global batch.
        devices: Devices ``distribute="data"`` uses (None: all, on every host).
        text_preset: A keras-hub preset name or preset folder of a pretrained text tower
            (``BertBackbone``, DistilBERT, RoBERTa, CLIP text) used with its own tokenizer
            instead of the small transformer on a vocabulary learnt from the captions
            (``vocabulary_size`` is then unused; ``sequence_length`` must fit the preset's
            position table). None: the learnt vocabulary (the SynthPed default).
        image_preset: A keras-hub ResNet / ViT preset name (``"resnet_50_imagenet"``) or
            preset folder whose weights the image tower starts from (the encoder config still
            sizes the heads and the queue). None: random initialisation.
        pixel_normalization: ``"imagenet"``, ``"lup"`` (LUPerson's mean/std) or ``"preset"``
            (the image preset's converter); None: ``"preset"`` with an image preset, else
            ``"imagenet"``.
        last_stride: Stride of the last ResNet stage while pretraining (1 or 2; None:
            `DEFAULT_PRETRAIN_LAST_STRIDE`, 1, as measured on validation data; 2 is the
            standard ResNet's, faster). Transfers rebuild the encoder at last stride 1 (BoT's)
            with the same weights. Ignored by ViT encoders.
    """

    encoder_config: str = "tiny"
    objectives: tuple[str, ...] = ("ssl", "itc", "attr")
    loss_weights: dict[str, float] | None = None
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 32
    image_size: tuple[int, int] | None = None
    seed: int = 0
    queue_size: int | None = None
    learning_rate: float = 1e-3
    mixed_precision: str | None = None
    momentum: float | None = None
    momentum_schedule: bool = False
    vocabulary_size: int = 2000
    sequence_length: int = 32
    augment: bool | str = "reid"
    synthped_preset: str = "small"
    verbose: int | str = 1
    checkpoint_every_steps: int | None = None
    distribute: str | None = None
    devices: int | None = None
    text_preset: str | None = None
    image_preset: str | None = None
    pixel_normalization: str | None = None
    last_stride: int | None = None

    def __post_init__(self):
        for name in ("text_preset", "image_preset"):
            if getattr(self, name) is not None:  # a Path from Python callers
                setattr(self, name, str(getattr(self, name)))
        self.objectives = tuple(self.objectives)
        if self.image_size is not None:
            self.image_size = tuple(int(v) for v in self.image_size)
        if self.loss_weights is not None:
            self.loss_weights = {str(k): float(v) for k, v in dict(self.loss_weights).items()}
        self.validate()

    def validate(self) -> None:
        """Checks the settings that need no data.

        Raises:
            InputError: Unknown encoder config, both epochs and steps, a non-positive size or a
                queue that the batch size does not divide.
        """
        if self.encoder_config not in PRETRAIN_CONFIGS:
            raise InputError(f"Unknown pretraining config {self.encoder_config!r}; choose one of "
                             f"{sorted(PRETRAIN_CONFIGS)}")
        if self.epochs is not None and self.steps is not None:
            raise InputError("Give epochs or steps, not both.")
        for name in ("batch_size", "epochs", "steps", "checkpoint_every_steps"):
            value = getattr(self, name)
            if value is not None and int(value) <= 0:
                raise InputError(f"{name} must be a positive integer, got {value}")
        if self.queue_size is not None and int(self.queue_size) % int(self.batch_size):
            raise InputError(f"The queue size ({self.queue_size}) must be a multiple of the "
                             f"batch size ({self.batch_size}): the queue is filled one batch "
                             "at a time.")
        check_runtime_settings(self.mixed_precision, self.distribute, self.devices)
        if self.last_stride not in (None, 1, 2):
            raise InputError(f"last_stride must be 1 or 2 (the last ResNet stage's stride), "
                             f"got {self.last_stride!r}")
        self._validate_presets()

    def _validate_presets(self) -> None:
        if self.pixel_normalization not in (None, *PIXEL_NORMALIZATIONS):
            raise InputError(f"Unknown pixel_normalization {self.pixel_normalization!r}; "
                             f"choose one of {list(PIXEL_NORMALIZATIONS)}")
        if self.pixel_normalization == "preset" and not self.image_preset:
            raise InputError("pixel_normalization 'preset' takes the statistics of an image "
                             "preset: give image_preset (--image-preset) too, or choose "
                             "'imagenet' or 'lup'")

    @property
    def resolved_pixel_normalization(self) -> str:
        """``pixel_normalization``, or ``"preset"`` with an image preset, else ``"imagenet"``."""
        if self.pixel_normalization:
            return self.pixel_normalization
        return "preset" if self.image_preset else "imagenet"

    @property
    def resolved_last_stride(self) -> int:
        """``last_stride``, or `DEFAULT_PRETRAIN_LAST_STRIDE`."""
        return DEFAULT_PRETRAIN_LAST_STRIDE if self.last_stride is None else int(self.last_stride)

    @property
    def preset(self) -> dict[str, Any]:
        """The `PRETRAIN_CONFIGS` entry of ``encoder_config``."""
        return PRETRAIN_CONFIGS[self.encoder_config]

    @property
    def resolved_image_size(self) -> tuple[int, int]:
        """``image_size``, or the encoder config's default."""
        return tuple(self.image_size or self.preset["image_size"])

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> PretrainConfig:
        """A config from keyword arguments of the old `pretrain` signature (no warning).

        Args:
            arguments: E.g. ``{"config": "tiny", "steps": 600}`` (``config`` is ``encoder_config``).
        """
        return cls.from_dict({RENAMED.get(k, k): v for k, v in arguments.items()})

    def cache_fields(self) -> dict[str, Any]:
        """`to_dict` without the display-only fields: what a cached run is keyed by.

        The fields of `KEYED_WHEN_SET` count only once set, so a default run keeps the key
        it had before they existed. The last stride counts by its resolved value, and only
        when it is not the stride every earlier run pretrained at (`UNKEYED_LAST_STRIDE`).
        """
        fields = {k: v for k, v in self.to_dict().items() if k not in DISPLAY_ONLY
                  and not (k in KEYED_WHEN_SET and v is None)}
        fields.pop("last_stride", None)
        if self.resolved_last_stride != UNKEYED_LAST_STRIDE:
            fields["last_stride"] = self.resolved_last_stride
        return fields
