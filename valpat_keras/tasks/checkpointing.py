"""Step-level, atomic training checkpoints and exact resume for any ``model.fit``.

`StepCheckpoint` is a callback that writes the whole training state every N steps (or every
10 minutes by default), at every epoch end and when training ends:

```
DIR/step_000000120.npz        model variables (seed generators included), optimizer
                              variables, the metric accumulators of the epoch in progress
                              and, under torch, torch's global random state
DIR/step_000000100.npz        the previous checkpoint, kept until the next one is complete
DIR/training_metadata.json    which checkpoints exist, latest first: global step, epoch,
                              batches done in that epoch, the per-epoch history so far
```

Each file is written to a temporary name and renamed into place (atomic on POSIX), the
weights before the metadata, so a kill during a save leaves the previous state intact. On
start the latest checkpoint is restored ("resuming at step N"); one that does not read (a
truncated or damaged file) is reported by name and the previous one is used instead.

`fit_resumable` is the exact resume: it restores, asks the caller for the input stream
from the restored step on (``make_data(step)``), finishes the interrupted epoch with the
batches it had left (its metrics continue from the checkpoint), then runs the remaining
epochs. An interrupted-then-resumed run then makes the same steps on the same batches as
an uninterrupted one, and its history holds every epoch.

Example:

```python
checkpoint = StepCheckpoint("run/checkpoints", every_steps=500)
history = fit_resumable(model, lambda step: make_stream(skip_batches=step), epochs=10,
                        steps_per_epoch=1000, checkpoint=checkpoint)
```
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from valpat_keras.errors import InputError

__all__ = ["METADATA_FILE", "CheckpointState", "EpochEndSave", "StepCheckpoint",
           "fit_resumable"]

#: The metadata file of a checkpoint folder (the name Keras' BackupAndRestore also used).
METADATA_FILE = "training_metadata.json"
_FORMAT = "valpat-step-checkpoint/1"
#: The time-based default interval when no step interval is given.
DEFAULT_EVERY_SECONDS = 600.0
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


@dataclasses.dataclass
class CheckpointState:
    """Where a restored checkpoint stands.

    Attributes:
        step: Batches trained in total (the global step).
        epoch: The epoch in progress (0-based; equal to the number of finished epochs).
        batch: Batches of ``epoch`` already trained (0: the epoch has not started).
        history: Per-epoch logs of the finished epochs (``History.history`` layout).
        path: The checkpoint file restored.
    """

    step: int
    epoch: int
    batch: int
    history: dict[str, list[float]]
    path: Path


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Writes ``path`` through a temporary file in the same folder, then renames it."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _json_normal(value: Any) -> Any:
    """``value`` as JSON would read it back (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value, default=str))


def _model_variables(model) -> list:
    """Model state (seed generators included) then optimizer state, deduplicated."""
    seen, variables = set(), []
    optimizer = getattr(model, "optimizer", None)
    for variable in list(model.variables) + list(optimizer.variables if optimizer else []):
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


def _global_rng_arrays() -> dict[str, np.ndarray]:
    """The backend's global random state that training draws from, as arrays.

    Under torch, Keras layers whose `SeedGenerator` has no explicit seed (``Dropout()``)
    draw from torch's global generator, which no model variable holds. TensorFlow and JAX
    draw from the seed generators' state variables (saved with the model).
    """
    if keras.backend.backend() != "torch":
        return {}
    import torch  # only under the torch backend (an optional dependency)

    arrays = {"rng_torch": torch.get_rng_state().numpy()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            arrays[f"rng_torch_cuda{index}"] = state.numpy()
    return arrays


def _set_global_rng(arrays: Mapping[str, np.ndarray]) -> None:
    """Restores what `_global_rng_arrays` saved (nothing for other backends)."""
    if keras.backend.backend() != "torch" or "rng_torch" not in arrays:
        return
    import torch  # only under the torch backend (an optional dependency)

    torch.set_rng_state(torch.from_numpy(np.array(arrays["rng_torch"], dtype=np.uint8)))
    cuda = sorted(k for k in arrays if k.startswith("rng_torch_cuda"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.from_numpy(np.array(arrays[k], dtype=np.uint8)) for k in cuda])


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the training state every N steps, atomically, and restores it on start.

    Saves after every ``every_steps`` batches (or, when None, after the first batch that
    ends ``every_seconds`` after the previous save), at each epoch end and at the end of
    training; never after a batch whose logged loss is not finite (the weights would be
    NaN). Keeps the latest two checkpoints. On ``on_train_begin`` (or an explicit
    `restore`) the latest readable checkpoint is loaded and "resuming at step N" printed.

    ``stateful`` lists further objects with ``get_resume_state()`` / ``set_resume_state()``
    (callbacks that keep counters or logs) whose JSON state is saved with each checkpoint
    and restored from it (`fit_resumable` fills it from its callbacks).

    Used alone, the callback restores the weights, optimizer, metrics and counters; the
    caller then starts ``fit`` at ``state.epoch`` with the input positioned at
    ``state.step``. `fit_resumable` does both (and finishes an interrupted epoch).

    Args:
        directory: The checkpoint folder (created).
        every_steps: Save every this many batches; None: time-based.
        every_seconds: The interval of the time-based default. Defaults to 600 (10 min).
        signature: JSON-able settings of the run, stored with each checkpoint; restoring
            from a run with other settings is an `InputError` naming the differing fields.
        verbose: Print when resuming or falling back.

    Attributes:
        history: Per-epoch logs of every finished epoch (restored ones included).
        step: Batches trained in total (restored ones included).
        state: The restored `CheckpointState`, or None.
    """

    def __init__(self, directory: str | Path, every_steps: int | None = None,
                 every_seconds: float = DEFAULT_EVERY_SECONDS,
                 signature: Mapping[str, Any] | None = None, verbose: bool = True):
        super().__init__()
        if every_steps is not None and int(every_steps) <= 0:
            raise InputError(f"every_steps must be a positive integer, got {every_steps}")
        if float(every_seconds) <= 0:
            raise InputError(f"every_seconds must be positive, got {every_seconds}")
        self.directory = Path(directory)
        self.every_steps = None if every_steps is None else int(every_steps)
        self.every_seconds = float(every_seconds)
        self.signature = None if signature is None else _json_normal(dict(signature))
        self.verbose = bool(verbose)
        self.history: dict[str, list[float]] = {}
        self.step, self.state = 0, None
        self._epoch, self._batch, self._saved_step = 0, 0, None
        self._restored, self._poisoned, self._pending_metrics = False, False, None
        self._legacy_noted, self._pending_rng = False, None
        self.stateful: list = []
        #: Leave the epoch-end save to an `EpochEndSave` placed after the other callbacks.
        self.defer_epoch_end = False
        #: Variables the model's ``variables`` do not list but training changes (a state
        #: layer outside the forward graph is not tracked under torch), saved as well.
        self.extra_variables: list = []
        self._last_save = time.monotonic()

    @property
    def metadata_path(self) -> Path:
        """The folder's ``training_metadata.json``."""
        return self.directory / METADATA_FILE

    # --- metadata -------------------------------------------------------------------------

    def _entries(self) -> list[dict]:
        """The checkpoints listed in the metadata file, latest first ([] if none)."""
        path = self.metadata_path
        if not path.is_file():
            return []
        try:
            payload = json.loads(path.read_text())
            if not isinstance(payload, dict):
                raise TypeError("not a JSON object")
            if payload.get("format") != _FORMAT:
                # An older Keras BackupAndRestore folder: its state cannot be resumed here.
                if not self._legacy_noted:
                    print(f"{path}: checkpoints of an older format (no step checkpoints); "
                          "starting over.")
                self._legacy_noted = True
                return []
            entries = [dict(e) for e in payload["checkpoints"]]
            for entry in entries:
                int(entry["step"]), int(entry["epoch"]), int(entry["batch"]), str(entry["file"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: corrupt checkpoint metadata ({err}); expected the JSON "
                             "written by an interrupted run. Delete the checkpoints folder to "
                             "start over.") from None
        self._check_signature(payload.get("signature"))
        return entries

    def _check_signature(self, stored: Any) -> None:
        if self.signature is None or stored is None or stored == self.signature:
            return
        keys = sorted(set(stored) | set(self.signature))
        diff = [f"{k}: {stored.get(k)!r} then, {self.signature.get(k)!r} now" for k in keys
                if stored.get(k) != self.signature.get(k)]
        raise InputError(f"{self.metadata_path}: the checkpoints were written by a run with "
                         f"other settings ({'; '.join(diff)}). Use the same settings to "
                         "resume, or delete the checkpoints folder to start over.")

    # --- restore --------------------------------------------------------------------------

    def restore(self, model=None) -> CheckpointState | None:
        """Loads the latest readable checkpoint into ``model`` (the callback's if None).

        Returns:
            The restored `CheckpointState`, or None when the folder holds no checkpoint.

        Raises:
            InputError: A corrupt metadata file, no readable checkpoint among those listed,
                or a checkpoint of a different model (variable count or shapes).
        """
        model = model if model is not None else self.model
        self._restored = True
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # Its slots exist only once built; the checkpoint holds them.
            optimizer.build(model.trainable_variables)
        entries = self._entries()
        for position, entry in enumerate(entries):
            path = self.directory / entry["file"]
            try:
                arrays = self._read_arrays(path)
            except _READ_ERRORS as err:
                later = entries[position + 1:]
                fallback = (f"falling back to the previous one, {later[0]['file']} (step "
                            f"{later[0]['step']})" if later else "no earlier checkpoint")
                print(f"Checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
                      f"{fallback}.")
                continue
            self._assign(model, arrays, path)
            return self._resume_from(entry, path, arrays)
        if entries:
            raise InputError(f"{self.directory}: none of the checkpoints "
                             f"({', '.join(e['file'] for e in entries)}) can be read. Delete "
                             "the checkpoints folder to start over.")
        return None

    @staticmethod
    def _read_arrays(path: Path) -> dict[str, np.ndarray]:
        # Reads every member (zip CRCs checked) before anything is assigned.
        with np.load(path, allow_pickle=False) as archive:
            return {name: np.array(archive[name]) for name in archive.files}

    def _assign(self, model, arrays: Mapping[str, np.ndarray], path: Path) -> None:
        variables = _model_variables(model)
        stored = sorted(k for k in arrays if k.startswith("v"))
        if len(stored) != len(variables):
            raise InputError(f"{path}: holds {len(stored)} variables, the model has "
                             f"{len(variables)}; it was written by a different model. Delete "
                             "the checkpoints folder to start over.")
        for name, variable in zip(stored, variables):
            if tuple(arrays[name].shape) != tuple(variable.shape):
                raise InputError(f"{path}: variable {variable.path} has shape "
                                 f"{tuple(arrays[name].shape)} there, {tuple(variable.shape)} "
                                 "in the model; it was written by a different model.")
        extra = sorted(k for k in arrays if k.startswith("x"))
        if len(extra) != len(self.extra_variables) or any(
                tuple(arrays[k].shape) != tuple(v.shape)
                for k, v in zip(extra, self.extra_variables)):
            raise InputError(f"{path}: its extra state ({len(extra)} arrays) does not match "
                             f"the run's ({len(self.extra_variables)} variables); it was "
                             "written by a different model.")
        for name, variable in zip(stored, variables):
            variable.assign(arrays[name])
        for name, variable in zip(extra, self.extra_variables):
            variable.assign(arrays[name])
        # Set at the first batch (`on_train_batch_begin`): fit's own start may draw from it.
        self._pending_rng = {k: v for k, v in arrays.items() if k.startswith("rng_")}

    def _resume_from(self, entry: dict, path: Path, arrays: Mapping[str, np.ndarray]
                     ) -> CheckpointState:
        history = {k: [math.nan if v is None else float(v) for v in vs]
                   for k, vs in entry.get("history", {}).items()}
        self.state = CheckpointState(int(entry["step"]), int(entry["epoch"]),
                                     int(entry["batch"]), history, path)
        self.step, self._saved_step = self.state.step, self.state.step
        self._epoch, self._batch = self.state.epoch, self.state.batch
        self.history = {k: list(v) for k, v in history.items()}
        if self.state.batch:
            self._pending_metrics = [arrays[k] for k in sorted(arrays) if k.startswith("m")]
        for callback, saved in zip(self.stateful, entry.get("callbacks", [])):
            callback.set_resume_state(saved)
        if self.verbose:
            print(f"resuming at step {self.state.step} (epoch {self.state.epoch + 1}, "
                  f"{self.state.batch} batch(es) of it done) from {path}")
        return self.state

    # --- save -----------------------------------------------------------------------------

    def save(self, model=None) -> Path | None:
        """Writes a checkpoint of the current state now (None: nothing new, or NaN seen)."""
        model = model if model is not None else self.model
        if self._poisoned or self._saved_step == self.step:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        entries = self._entries()
        path = self.directory / f"step_{self.step:09d}.npz"
        arrays = {f"v{i:06d}": keras.ops.convert_to_numpy(v.value)
                  for i, v in enumerate(_model_variables(model))}
        arrays.update({f"m{i:06d}": keras.ops.convert_to_numpy(v.value)
                       for i, v in enumerate(model.metrics_variables)})
        arrays.update({f"x{i:06d}": keras.ops.convert_to_numpy(v.value)
                       for i, v in enumerate(self.extra_variables)})
        arrays.update(_global_rng_arrays())
        _write_atomic(path, lambda handle: np.savez(handle, **arrays))
        entry = {"file": path.name, "step": self.step, "epoch": self._epoch,
                 "batch": self._batch, "time": time.time(),
                 "history": {k: [_finite_or_none(v) for v in vs]
                             for k, vs in self.history.items()},
                 "callbacks": [_json_normal(c.get_resume_state()) for c in self.stateful]}
        kept = [entry] + [e for e in entries if e["file"] != path.name][:1]
        payload = {"format": _FORMAT, "signature": self.signature, "checkpoints": kept}
        text = json.dumps(payload, indent=1, allow_nan=False).encode()
        _write_atomic(self.metadata_path, lambda handle: handle.write(text))
        self._remove_unlisted({e["file"] for e in kept})
        self._saved_step, self._last_save = self.step, time.monotonic()
        return path

    def _remove_unlisted(self, keep: set[str]) -> None:
        """Deletes older checkpoints and temporary files a killed save left behind."""
        for path in self.directory.iterdir():
            stale = path.name.startswith(".") and ".tmp" in path.name
            old = path.name.startswith("step_") and path.suffix == ".npz"
            if (stale or old) and path.name not in keep:
                path.unlink(missing_ok=True)

    @property
    def position(self) -> tuple[int, int, int]:
        """``(step, epoch, batch)``: the global step, the epoch in progress, its batches done."""
        return self.step, self._epoch, self._batch

    def skip_epoch(self, epoch: int) -> None:
        """Counts ``epoch`` as done without training or saving (a round with nothing to fit)."""
        self._epoch, self._batch = int(epoch) + 1, 0

    # --- callback hooks -------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        if not self._restored:
            self.restore(self.model)
        self._last_save = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        if self._pending_metrics is not None and epoch == self._epoch:
            # After fit's reset_metrics: the interrupted epoch's running means continue.
            for variable, value in zip(self.model.metrics_variables, self._pending_metrics):
                variable.assign(value)
        else:
            self._epoch, self._batch = epoch, 0
        self._pending_metrics = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._pending_rng is not None:
            _set_global_rng(self._pending_rng)
            self._pending_rng = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self._batch += 1
        losses = [v for k, v in (logs or {}).items()
                  if (k == "loss" or k.endswith("_loss")) and v is not None]
        if not all(math.isfinite(float(v)) for v in losses):
            self._poisoned = True
            return
        due = (self.step % self.every_steps == 0 if self.every_steps
               else time.monotonic() - self._last_save >= self.every_seconds)
        if due:
            self.save(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if not self.defer_epoch_end:
            self.end_epoch(epoch, logs)

    def end_epoch(self, epoch, logs=None) -> None:
        """Records the epoch's logs and saves (``on_epoch_end``, or `EpochEndSave`)."""
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self._epoch, self._batch = epoch + 1, 0
        self.save(self.model)

    def on_train_end(self, logs=None):
        self.save(self.model)
        # The next fit (`fit_resumable` runs two after a mid-epoch resume) continues the
        # random stream from here, whatever its start draws.
        self._pending_rng = _global_rng_arrays() or None


class EpochEndSave(keras.callbacks.Callback):
    """The epoch-end save of a `StepCheckpoint`, run after the callbacks placed before it.

    The epoch-end checkpoint then holds what those callbacks add at the epoch's end: the
    logs they write into (validation scores), the state they keep (an epoch log, the best
    epoch). `fit_resumable` places one last.

    Args:
        checkpoint: The `StepCheckpoint` (its own ``on_epoch_end`` is switched off).
    """

    def __init__(self, checkpoint: StepCheckpoint):
        super().__init__()
        self.checkpoint = checkpoint
        checkpoint.defer_epoch_end = True

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoint.end_epoch(epoch, logs)


def _build_compiled_metrics(model, make_data: Callable[[int], Any]) -> None:
    """Creates the variables of ``compile(metrics=...)``, which Keras makes at the first step.

    Only then do they exist for a checkpoint's metric accumulators to be restored into
    (and line up with those saved). Built symbolically from the input's ``element_spec``,
    as ``fit`` itself does (`Trainer._symbolic_build`, a private Keras API).
    """
    compiled = getattr(model, "_compile_metrics", None)
    if compiled is None or compiled.built:
        return
    spec = getattr(make_data(0), "element_spec", None)
    if spec is None:
        return
    batch = keras.tree.map_structure(
        lambda s: keras.KerasTensor(tuple(s.shape), s.dtype.name), spec)
    model._symbolic_build(data_batch=batch)


def _merged_history(checkpoint: StepCheckpoint, model, params: dict | None
                    ) -> keras.callbacks.History:
    history = keras.callbacks.History()
    history.set_model(model)
    history.set_params(params or {})
    history.history = {k: list(v) for k, v in checkpoint.history.items()}
    history.epoch = list(range(max((len(v) for v in history.history.values()), default=0)))
    return history


def fit_resumable(model, make_data: Callable[[int], Any], *, epochs: int,
                  steps_per_epoch: int, checkpoint: StepCheckpoint,
                  callbacks: Sequence[keras.callbacks.Callback] = (), verbose: Any = "auto",
                  total_steps: int | None = None, restore: bool = True,
                  validation_data: Any = None) -> keras.callbacks.History:
    """``model.fit`` that resumes exactly from ``checkpoint`` and returns every epoch's logs.

    Args:
        model: A compiled model.
        make_data: ``step -> dataset``: the training input from global step ``step`` on
            (batch ``step`` first; at least the batches the run has left).
        epochs: Epochs of the whole run.
        steps_per_epoch: Batches per epoch.
        checkpoint: The `StepCheckpoint` (restored here, then passed to ``fit``).
        callbacks: Further callbacks (e.g. a NaN guard, a step limit). Those with
            ``get_resume_state() -> JSON-able`` and ``set_resume_state(state)`` (e.g. a
            best-epoch keeper, an epoch log) have their state saved with each checkpoint
            and restored with it.
        verbose: ``fit`` verbosity.
        total_steps: Batches of the whole run when less than ``epochs * steps_per_epoch``
            (a callback is expected to stop there; a restored run already there does not fit).
        restore: Restore the checkpoint first. False: continue from where ``checkpoint``
            stands (`StepCheckpoint.position`: restored, or advanced by an earlier fit), for
            a loop of fits (cluster contrast's rounds) restored once before the loop; its
            ``stateful`` list is then left as the caller set it.
        validation_data: Passed to ``fit`` (its logs join the history).

    The checkpoint's epoch-end save runs after ``callbacks`` (`EpochEndSave`), so it holds
    what they add at the epoch's end (validation scores in the logs, their resume state).

    Returns:
        A `keras.callbacks.History` with the logs of every epoch, restored ones included.
    """
    if restore:
        checkpoint.stateful = [c for c in callbacks if hasattr(c, "get_resume_state")
                               and hasattr(c, "set_resume_state")]
        _build_compiled_metrics(model, make_data)
        checkpoint.restore(model)
    step, epoch, batch = checkpoint.position
    limit = int(total_steps) if total_steps is not None else epochs * steps_per_epoch
    callbacks = [checkpoint, *callbacks, EpochEndSave(checkpoint)]
    params = None
    if batch and step < limit:
        print(f"finishing epoch {epoch + 1}/{epochs}: its last {steps_per_epoch - batch} "
              "batch(es)")
        fitted = model.fit(make_data(step), initial_epoch=epoch, epochs=epoch + 1,
                           steps_per_epoch=steps_per_epoch - batch, callbacks=callbacks,
                           verbose=verbose, shuffle=False, validation_data=validation_data)
        params, epoch, step = fitted.params, epoch + 1, checkpoint.step
        if model.stop_training:
            return _merged_history(checkpoint, model, params)
    if epoch < epochs and step < limit:
        fitted = model.fit(make_data(step), initial_epoch=epoch, epochs=epochs,
                           steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                           verbose=verbose, shuffle=False, validation_data=validation_data)
        params = fitted.params
    return _merged_history(checkpoint, model, params)
