"""Callbacks every training task shares: the guard against a non-finite loss.

Example:

```python
guard = TerminateOnNonFiniteLoss(raise_error=True)
model.fit(train_ds, epochs=10, callbacks=[guard])   # raises NonFiniteLossError on NaN/inf
```
"""

from __future__ import annotations

import math

import keras

from valpat_keras.errors import NonFiniteLossError


def _finite(value) -> bool:
    return math.isfinite(float(value))


class TerminateOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite loss and says where and which loss term.

    Every logged ``loss`` and ``*_loss`` is checked after each batch. At the first
    non-finite one it sets ``model.stop_training``, keeps the explanation in ``message``
    and, with ``raise_error``, raises a `NonFiniteLossError` out of ``fit`` at once, so that
    nothing after ``fit`` (evaluation, metrics files, the next clustering round) runs on a
    diverged model. Without ``raise_error`` (Keras's `TerminateOnNaN` convention) the epoch
    ends and the caller reads ``message``.

    Args:
        raise_error: bool. Raise `NonFiniteLossError` instead of only stopping. Defaults to
            ``False``.

    Attributes:
        message: None, or the explanation of the first non-finite loss.
    """

    def __init__(self, raise_error: bool = False):
        super().__init__()
        self.raise_error = bool(raise_error)
        self.message = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        losses = {k: v for k, v in (logs or {}).items()
                  if (k == "loss" or k.endswith("_loss")) and v is not None}
        bad = [k for k, v in losses.items() if not _finite(v)]
        if not bad:
            return
        terms = [k for k in bad if k != "loss"] or ["loss"]
        value = float(losses.get("loss", losses[bad[0]]))
        self.message = (
            f"training stopped: the loss became {value} at epoch {self._epoch + 1}, batch "
            f"{batch + 1} (non-finite: {', '.join(terms)}). Try a lower learning rate, "
            "mixed_bfloat16 instead of mixed_float16, or check the data.")
        self.model.stop_training = True
        if self.raise_error:
            raise NonFiniteLossError(self.message)
        print("\n" + self.message)
