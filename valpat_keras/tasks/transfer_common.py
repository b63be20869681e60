"""Steps every supervised transfer run shares (attributes, text search): folder, schedule, fit.

A transfer run function reads as: check the inputs (`check_batch_size`), `start_run`, build
the task, cap the epochs (`cap_epochs`) and compile with a `cosine_schedule`, `fit_transfer`
(stops and raises on a non-finite loss, so nothing is written for a diverged run), evaluate
the test split once, then write the run folder (`write_history` next to the task's own files).
With a `run_checkpoint`, `fit_transfer` writes step checkpoints to ``OUT/checkpoints`` and a
killed run resumes exactly from the latest (the input pipeline given as ``step -> dataset``);
`remove_checkpoints` deletes them once the run folder is written.

Example:

```python
out = start_run("runs/par", seed=0)
train_ds, steps = cap_epochs(train_ds, steps_per_epoch=None, full_pass_steps=100)
model.compile(optimizer=keras.optimizers.AdamW(cosine_schedule(3e-4, 10, steps)))
history = fit_transfer(model, train_ds, epochs=10, steps_per_epoch=None)
write_history(out, history)
```
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import keras
import keras_hub

from valpat_keras import run_outputs
from valpat_keras.errors import InputError
from valpat_keras.models.loading import save_task
from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss
from valpat_keras.tasks.checkpointing import DEFAULT_EVERY_SECONDS, StepCheckpoint, fit_resumable
from valpat_keras.tasks.run_config import RunConfig

#: The file a transfer run writes its per-epoch fit logs to.
HISTORY_FILE = "history.json"
#: The folder of a run's step checkpoints while it is unfinished (`run_checkpoint`).
CHECKPOINT_DIR = "checkpoints"


def check_batch_size(batch_size) -> int:
    """``batch_size`` as an int.

    Raises:
        InputError: If it is below 1.
    """
    if int(batch_size) <= 0:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}")
    return int(batch_size)


def start_run(out_dir: str | Path, seed: int) -> Path:
    """Creates the run folder and seeds Python, NumPy and the backend (in that order).

    Returns:
        The run folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    return out


def elapsed_seconds(started: float) -> float:
    """Seconds since ``started`` (a `time.time` value), rounded to 0.1 s for the metrics."""
    return round(time.time() - started, 1)


def cap_epochs(train_ds, steps_per_epoch: int | None, full_pass_steps: int):
    """The training data and the steps of one epoch.

    Args:
        train_ds: The (finite) training `tf.data.Dataset`.
        steps_per_epoch: A cap on the steps per epoch, or None for one pass over the data.
        full_pass_steps: The batches of one pass.

    Returns:
        ``(dataset, steps)``: a capped epoch repeats the data (so it never runs dry),
        an uncapped one is one pass of ``full_pass_steps``.
    """
    if steps_per_epoch:
        return train_ds.repeat(), int(steps_per_epoch)
    return train_ds, int(full_pass_steps)


def cosine_schedule(learning_rate: float, epochs: int,
                    steps_per_epoch: int) -> keras.optimizers.schedules.CosineDecay:
    """Cosine decay from ``learning_rate`` to 1% of it over the whole run."""
    return keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, epochs * steps_per_epoch), alpha=0.01)


def fit_transfer(model: keras.Model, train_ds, epochs: int, steps_per_epoch: int | None,
                 verbose: int | str = "auto", validation_data=None, *,
                 checkpoint: StepCheckpoint | None = None) -> keras.callbacks.History:
    """``model.fit`` that raises `NonFiniteLossError` at the first NaN or infinite loss.

    Args:
        model: The compiled task.
        train_ds: Training batches (shuffled by the pipeline, not by ``fit``); with a
            ``checkpoint``, ``step -> dataset``: the endless input stream from global step
            ``step`` on (a pipeline's ``start_step``).
        epochs: Training epochs.
        steps_per_epoch: The cap given to `cap_epochs` (None: one pass per epoch); with a
            ``checkpoint``, the steps of an epoch (required).
        verbose: Keras ``fit`` verbosity.
        validation_data: Validation batches, or None. Only the fit logs see them.
        checkpoint: A `StepCheckpoint` (see `run_checkpoint`): the run resumes exactly from
            its latest checkpoint (`fit_resumable`) and writes them as it goes.

    Returns:
        The fit history (with a checkpoint: of every epoch, those before a resume too).
    """
    guard = TerminateOnNonFiniteLoss(raise_error=True)
    if checkpoint is None:
        return model.fit(train_ds, epochs=epochs, validation_data=validation_data,
                         shuffle=False, steps_per_epoch=steps_per_epoch, verbose=verbose,
                         callbacks=[guard])
    if not steps_per_epoch:
        raise ValueError("fit_transfer: a checkpointed run needs steps_per_epoch")
    return fit_resumable(model, train_ds, epochs=epochs, steps_per_epoch=int(steps_per_epoch),
                         checkpoint=checkpoint, callbacks=[guard], verbose=verbose,
                         validation_data=validation_data)


def run_checkpoint(out: str | Path, config: RunConfig, **facts) -> StepCheckpoint:
    """The `StepCheckpoint` of a transfer run in ``out/checkpoints``.

    Every ``config.checkpoint_every_steps`` steps (None: every 10 minutes) and at each
    epoch end. Signed with ``config``'s fields (but the interval, the verbosity and the
    device count, which may change on resume), ``facts`` (e.g. the data size) and the
    backend: checkpoints of a run with other settings are refused, naming the fields.
    """
    # The device count may change too: a run gives the same loss on 1 or N devices.
    settings = {k: v for k, v in config.to_dict().items()
                if k not in ("checkpoint_every_steps", "verbose", "distribute", "devices")}
    signature = {"config": settings, **facts, "backend": keras.backend.backend()}
    return StepCheckpoint(Path(out) / CHECKPOINT_DIR,
                          every_steps=config.checkpoint_every_steps,
                          every_seconds=DEFAULT_EVERY_SECONDS, signature=signature)


def remove_checkpoints(out: str | Path) -> None:
    """Deletes ``out/checkpoints`` once the run folder is written (a rerun starts afresh)."""
    shutil.rmtree(Path(out) / CHECKPOINT_DIR, ignore_errors=True)


def write_history(out: str | Path, history: keras.callbacks.History) -> Path:
    """Writes the per-epoch fit logs to ``out / history.json`` (`run_outputs.write_history`)."""
    return run_outputs.write_history(Path(out) / HISTORY_FILE, history.history)


def write_task_preset(model: keras_hub.models.Task, out: Path,
                      preprocessor: keras_hub.models.Preprocessor) -> Path:
    """Writes the trained task into its run folder as one keras-hub preset.

    The task gets ``preprocessor`` first when it has none (training ran on decoded
    pipelines), so ``load_task(run_dir)`` returns a task that takes raw images (and
    captions) as well as decoded ones.

    Args:
        model: The trained task.
        out: The run folder.
        preprocessor: The preprocessor of the task's inputs.

    Returns:
        The run folder.
    """
    if model.preprocessor is None:
        model.preprocessor = preprocessor
    return save_task(model, out)
