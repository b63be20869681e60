"""Learning-rate schedules shared by the tasks.

`WarmupLearningRate`: linear warm-up, then step or cosine decay (BoT's schedule). Registered
as ``valpat_keras>WarmupLearningRate`` (saved optimizers refer to that name; it used to live
in `valpat_keras.tasks.reid`, which still re-exports it). `REID_LEARNING_RATE`: the peak Adam
rate of BoT and Cluster Contrast, the re-ID tasks' ``compile(optimizer="auto")``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

__all__ = ["REID_LEARNING_RATE", "WarmupLearningRate"]

#: BoT's and Cluster Contrast's peak Adam learning rate.
REID_LEARNING_RATE = 3.5e-4


@keras.saving.register_keras_serializable(package="valpat_keras")
class WarmupLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then step or cosine decay, in optimizer steps.

    BoT warms up from ``0.1 * base`` to ``base`` over the first epochs and then divides the
    rate by 10 at fixed epochs; cosine decay is the common alternative.

    Args:
        base_learning_rate: Rate at the end of the warm-up.
        warmup_steps: Steps of linear warm-up (0 = none).
        total_steps: Steps of the whole run (cosine decays to ``min_ratio * base`` at the end).
        mode: ``"step"`` or ``"cosine"``.
        milestones: For ``"step"``: steps after which the rate is multiplied by ``gamma``.
        gamma: Step decay factor.
        warmup_factor: Warm-up starts at ``warmup_factor * base``.
        min_ratio: For ``"cosine"``: final rate as a fraction of the base rate.

    Example:

    ```python
    schedule = WarmupLearningRate(3.5e-4, warmup_steps=100, total_steps=1200,
                                  mode="step", milestones=(400, 700))
    optimizer = keras.optimizers.Adam(schedule)
    ```
    """

    def __init__(self, base_learning_rate: float, warmup_steps: int, total_steps: int,
                 mode: str = "step", milestones: Sequence[int] = (), gamma: float = 0.1,
                 warmup_factor: float = 0.1, min_ratio: float = 0.0):
        if mode not in ("step", "cosine"):
            raise ValueError(f"mode must be 'step' or 'cosine', got {mode!r}")
        self.base_learning_rate = float(base_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.mode = mode
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_factor = float(warmup_factor)
        self.min_ratio = float(min_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        base = self.base_learning_rate
        if self.mode == "step":
            decayed = ops.ones_like(step) * base
            for milestone in self.milestones:
                decayed = ops.where(step >= milestone, decayed * self.gamma, decayed)
        else:
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            decayed = base * (self.min_ratio + (1.0 - self.min_ratio) * cosine)
        if self.warmup_steps <= 0:
            return decayed
        alpha = ops.minimum(step / self.warmup_steps, 1.0)
        warmup = base * (self.warmup_factor + (1.0 - self.warmup_factor) * alpha)
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate, "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps, "mode": self.mode,
            "milestones": list(self.milestones), "gamma": self.gamma,
            "warmup_factor": self.warmup_factor, "min_ratio": self.min_ratio,
        }
