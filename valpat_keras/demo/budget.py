"""The sizes and training budgets of a `valpat demo` run."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from valpat_keras.data.synthped import SynthPedConfig
from valpat_keras.tasks.pretrain_config import PretrainConfig

#: The weighting `benchmarks/loss_weights.py` chose on validation data at the demo's budget.
CHOSEN_LOSS_WEIGHTS: dict[str, float] = {"ssl": 0.1, "itc": 1.0, "attr": 3.0}


@dataclasses.dataclass
class DemoBudget:
    """The sizes and training budgets of one demo run.

    `DemoBudget.full()` is the default run (under 20 minutes on a 2-core CPU, measured in
    ``tutorials/results.md``), `DemoBudget.quick()` the smoke version CI runs. Every
    training stage is capped in steps, so the run time does not grow with the data. The
    sizes were chosen from measurements on SynthPed (see ``tutorials/design.md``): 64x32
    pixels train three times faster than 128x64 and keep every gain, and the attribute set
    holds 1,500 identities so that its validation and test splits (150 identities each)
    measure mA to about a point instead of to several.

    Attributes:
        synthped_preset: SynthPed size preset (``"tiny"``, ``"small"``, ``"default"``).
        attribute_identities: Identities of the PA-100K-layout set (None: the preset's).
        attribute_images_per_identity: Images per attribute identity (None: the preset's).
        image_size: ``(height, width)`` of the model inputs (SynthPed renders at this size).
        config: Image encoder configuration (see `IMAGE_ENCODER_CONFIGS`).
        batch_size: Pretraining, attribute and search batch size.
        pretrain_steps: Optimiser steps of every pretraining run (the main one and each
            ablation run, so the ablation compares objectives at the same budget).
        loss_weights: Weight of each objective in every run that trains two or more (None:
            1 each). The default was chosen on validation splits by
            ``benchmarks/loss_weights.py``: at equal weights the image-image loss, the largest
            term, dominates the gradient while teaching the encoder little about identity on
            SynthPed (see ``tutorials/design.md``).
        seeds: Fine-tuning seeds of every transfer (mean and spread are reported).
        reid_epochs: Supervised re-ID epochs.
        reid_steps: Supervised re-ID steps per epoch.
        p: Identities per re-ID batch.
        k: Images per identity in a re-ID batch.
        unsupervised_epochs: Cluster Contrast rounds (re-cluster, then train).
        unsupervised_steps: Cluster Contrast steps per round.
        unsupervised_eps: DBSCAN radius, or ``"auto"`` (read off each round's distances).
        attribute_epochs: Attribute fine-tuning epochs.
        attribute_steps: Attribute steps per epoch.
        search_epochs: Text search epochs.
        search_steps: Text search steps per epoch.
        ablation: Pretrain with each objective alone too and compare the encoders.
    """

    synthped_preset: str = "small"
    attribute_identities: int | None = 1500
    attribute_images_per_identity: int | None = 2
    image_size: tuple[int, int] = (64, 32)
    config: str = "tiny"
    batch_size: int = 32
    pretrain_steps: int = 600
    loss_weights: dict[str, float] | None = dataclasses.field(
        default_factory=lambda: dict(CHOSEN_LOSS_WEIGHTS))
    seeds: tuple[int, ...] = (0, 1, 2)
    reid_epochs: int = 6
    reid_steps: int = 20
    p: int = 8
    k: int = 4
    unsupervised_epochs: int = 3
    unsupervised_steps: int = 15
    unsupervised_eps: float | str = "auto"
    attribute_epochs: int = 4
    attribute_steps: int = 25
    search_epochs: int = 4
    search_steps: int = 15
    ablation: bool = True

    @classmethod
    def full(cls) -> DemoBudget:
        """The default run: SynthPed ``small`` at 64x32, three fine-tuning seeds."""
        return cls()

    @classmethod
    def quick(cls) -> DemoBudget:
        """The smoke run: SynthPed ``tiny``, two steps per stage, one seed (a minute or two,
        mostly compiling the train steps)."""
        return cls(synthped_preset="tiny", attribute_identities=None,
                   attribute_images_per_identity=None, batch_size=8, pretrain_steps=2,
                   seeds=(0,), reid_epochs=1, reid_steps=2, p=4, k=2, unsupervised_epochs=1,
                   unsupervised_steps=2, attribute_epochs=1, attribute_steps=2,
                   search_epochs=1, search_steps=2)

    def synthped_config(self, seed: int):
        """The `SynthPedConfig` of this budget and seed."""
        overrides = {"seed": seed, "height": self.image_size[0], "width": self.image_size[1]}
        if self.attribute_identities is not None:
            overrides["attribute_identities"] = int(self.attribute_identities)
        if self.attribute_images_per_identity is not None:
            overrides["attribute_images_per_identity"] = int(self.attribute_images_per_identity)
        return SynthPedConfig.preset(self.synthped_preset, **overrides)

    def pretrain_config(self, objectives: Sequence[str], seed: int,
                        loss_weights: Mapping[str, float] | None = None,
                        verbose: int = 0) -> PretrainConfig:
        """The `PretrainConfig` of one pretraining run at this budget.

        Args:
            objectives: The objectives trained.
            seed: The pretraining seed.
            loss_weights: Weight per objective (None: 1 each).
            verbose: Keras ``fit`` verbosity.
        """
        return PretrainConfig(encoder_config=self.config, objectives=tuple(objectives),
                              loss_weights=None if loss_weights is None else dict(loss_weights),
                              steps=self.pretrain_steps, batch_size=self.batch_size,
                              image_size=tuple(self.image_size), seed=seed, verbose=verbose)

    def to_dict(self) -> dict[str, Any]:
        """The budget as a JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}
