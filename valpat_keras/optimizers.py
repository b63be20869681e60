"""AdamW with a learning-rate multiplier per group of variables (discriminative fine-tuning).

Transfer recipes give a pretrained backbone a smaller learning rate than the new head (the
Rethinking_of_PAR strong baseline uses 0.01 for the backbone and 0.1 for the classifier;
ULMFiT calls it discriminative fine-tuning): a full learning rate on a small labelled set
overwrites what pretraining learned before the head has settled. PyTorch does this with
parameter groups; Keras 3 optimizers have one learning rate, so `GroupedAdamW` scales it per
variable inside the update step, through the optimizer's own (backend-specific) update
path, on every backend.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="valpat_keras")
class GroupedAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate (and decoupled weight decay) is scaled per variable.

    Multipliers are attached to variables with `set_multiplier` (`AttributeRecognizer`
    does it for its head in ``configure_optimizer``, which ``compile`` calls); every other
    variable uses the plain learning rate. A multiplier of 0 freezes a variable's values
    (its moments still accumulate). Which variables are grouped is runtime state, not
    config: the Task that owns the variables sets it again when a saved model is
    re-compiled.

    Args:
        learning_rate: float | schedule. The base learning rate (that of ungrouped
            variables).
        **kwargs: `keras.optimizers.AdamW` arguments (``weight_decay``, ``beta_1``, ...).

    Example:

    ```python
    optimizer = GroupedAdamW(3e-4, weight_decay=5e-4)
    optimizer.set_multiplier(model.backbone.trainable_variables, 0.1)
    model.compile(optimizer=optimizer)
    ```
    """

    def __init__(self, learning_rate=0.001, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._multipliers: dict[int, float] = {}

    def set_multiplier(self, variables: Iterable, multiplier: float) -> None:
        """Scales the learning rate of ``variables`` by ``multiplier`` (replaces earlier ones).

        Args:
            variables: Keras variables (e.g. ``model.backbone.trainable_variables``).
            multiplier: float >= 0.
        """
        multiplier = float(multiplier)
        if multiplier < 0:
            raise ValueError(f"learning-rate multiplier must be >= 0, got {multiplier}")
        for variable in variables:
            self._multipliers[id(variable)] = multiplier

    def multiplier(self, variable) -> float:
        """The learning-rate multiplier of ``variable`` (1.0 unless set)."""
        return self._multipliers.get(id(variable), 1.0)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Each group goes through the backend's own update path (TF's distributed update,
        # torch's per-variable loop, JAX's stateless scope) with a scaled learning rate.
        groups: dict[float, tuple[list, list]] = {}
        for grad, variable in zip(grads, trainable_variables):
            group = groups.setdefault(self.multiplier(variable), ([], []))
            group[0].append(grad)
            group[1].append(variable)
        for multiplier, (group_grads, group_vars) in groups.items():
            scaled = learning_rate if multiplier == 1.0 else learning_rate * multiplier
            super()._backend_update_step(group_grads, group_vars, scaled)

    def _apply_weight_decay(self, variables):
        # Decoupled decay is lr * wd per step, so a group's multiplier scales it too (as a
        # PyTorch parameter group's learning rate does).
        if self.weight_decay is None:
            return
        if not any(id(v) in self._multipliers for v in variables):
            return super()._apply_weight_decay(variables)
        learning_rate = self._get_current_learning_rate()
        for variable in variables:
            if self._use_weight_decay(variable):
                rate = ops.cast(learning_rate * self.multiplier(variable), variable.dtype)
                decay = ops.cast(self.weight_decay, variable.dtype)
                variable.assign(variable - variable * decay * rate)
