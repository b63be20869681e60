"""Runs on several devices and hosts through Keras' own distribution API, and mixed precision.

`runtime_scope` applies a run config's `valpat_keras.runtime` fields around one run and
restores the previous global state afterwards:

- ``mixed_precision``: `keras.mixed_precision.set_global_policy` (the losses cast to float32);
- ``distribute="data"``: `keras.distribution.set_distribution` with a `RunDataParallel` over
  ``devices`` devices (`keras.distribution.list_devices`). JAX only: under ``jit`` the train
  step is one global (GSPMD) computation over the whole batch, so the MoCo queue, the in-batch
  image-text negatives and the P x K batches see the global batch, and a 2-device run gives
  the loss of a 1-device run of the same batch. Several hosts (pretraining only, so far)
  join through `keras.distribution.initialize` (`jax.distributed.initialize`) from the
  environment (`initialize_hosts`: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``, or Keras' ``KERAS_DISTRIBUTION_*``).

On TensorFlow and PyTorch ``distribute`` raises an `InputError` that says so: a run uses one
device there (``tf.distribute`` and ``torchrun`` / DDP are not wired into valpat).

`runs_with_runtime_settings` wraps a run function (``train_reid``, ...) in `runtime_scope`.

Example::

    with runtime_scope("mixed_bfloat16", "data", devices=2, batch_size=64):
        model = build_task()          # variables are replicated over the two devices
        model.fit(train_ds)           # each batch is split over them
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import tensorflow as tf

from valpat_keras.errors import InputError
from valpat_keras.runtime import RUNTIME_FIELDS, check_runtime_settings

__all__ = ["HOST_ENVIRONMENT", "RunDataParallel", "data_parallel", "initialize_hosts",
           "runs_with_runtime_settings", "runtime_scope"]

#: Environment variables of a multi-host run: (JAX's name, Keras' name) per setting.
HOST_ENVIRONMENT: dict[str, tuple[str, str]] = {
    "coordinator_address": ("JAX_COORDINATOR_ADDRESS", "KERAS_DISTRIBUTION_JOB_ADDRESSES"),
    "num_processes": ("JAX_NUM_PROCESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES"),
    "process_id": ("JAX_PROCESS_ID", "KERAS_DISTRIBUTION_PROCESS_ID"),
}


def _static_batch(dataset) -> bool:
    """Whether every batch of a batched `tf.data.Dataset` has the same, known size."""
    specs = tf.nest.flatten(dataset.element_spec)
    return all(getattr(s, "shape", None) is not None and s.shape.rank
               and s.shape[0] is not None for s in specs)


class RunDataParallel(keras.distribution.DataParallel):
    """`keras.distribution.DataParallel` that also runs uneven batches (evaluation, prediction).

    Training streams have one static batch size (``drop_remainder``): each batch is split
    over the devices (and hosts: Keras' auto-sharding gives each process its slice of the
    global batch). A batch that does not split evenly, or any batch of a dataset without a
    static batch size (an evaluation set ending with a partial batch), is replicated on
    every device instead of split: the same result, computed once per device. Keras picks
    one layout per iterator from its first batch, so a dataset's batches are all split or
    all replicated; a dataset without a static batch size is read whole by every process.
    The choice follows the last dataset Keras prepared: in a ``fit`` with uneven
    ``validation_data`` the epochs after the first validation are replicated too (the same
    result, not faster). Arrays (not datasets) follow the last dataset's choice as well.
    """

    def __init__(self, devices: list[str]):
        super().__init__(devices=devices)
        # Set by `distribute_dataset`, which Keras calls for each dataset before reading it.
        self._replicate_batches = False

    def distribute_dataset(self, dataset):
        """Keras' per-process sharding for static batches; other datasets stay whole."""
        self._replicate_batches = not _static_batch(dataset)
        if self._replicate_batches:
            return dataset
        return super().distribute_dataset(dataset)

    def get_data_layout(self, data_shape):
        """Splits the batch axis over the devices when it divides evenly, else replicates."""
        local_devices = self.device_mesh.devices.size // self.num_processes
        if (self._replicate_batches or not len(data_shape) or data_shape[0] is None
                or data_shape[0] % local_devices):
            return keras.distribution.TensorLayout([None] * len(data_shape), self.device_mesh)
        return super().get_data_layout(data_shape)


def _host_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The multi-host settings found in ``environ`` (JAX's names first)."""
    found = {}
    for setting, names in HOST_ENVIRONMENT.items():
        for name in names:
            if environ.get(name):
                found[setting] = environ[name]
                break
    return found


def initialize_hosts(environ: Mapping[str, str] | None = None) -> int:
    """Joins a multi-host JAX run described by environment variables; returns the processes.

    Nothing is done when none of `HOST_ENVIRONMENT` is set (one process) or when JAX's
    distributed runtime is already up. Must run before the first JAX computation.

    Args:
        environ: The environment (default ``os.environ``).

    Raises:
        InputError: Only some of the three settings given, or a non-integer count / id.
    """
    settings = _host_settings(os.environ if environ is None else environ)
    if not settings:
        return 1
    missing = [" or ".join(HOST_ENVIRONMENT[s]) for s in HOST_ENVIRONMENT if s not in settings]
    if missing:
        raise InputError(f"multi-host run: {', '.join(missing)} not set; a multi-host run "
                         "needs the coordinator address, the process count and this "
                         "process's id (see tutorials/distributed.md)")
    try:
        count, index = int(settings["num_processes"]), int(settings["process_id"])
    except ValueError:
        raise InputError(f"multi-host run: the process count and id must be integers, got "
                         f"{settings['num_processes']!r} and {settings['process_id']!r}") from None
    # Deferred: jax exists only where the JAX backend is installed.
    import jax

    if not jax.distributed.is_initialized():
        keras.distribution.initialize(settings["coordinator_address"], count, index)
    return jax.process_count()


def _check_backend() -> None:
    backend = keras.backend.backend()
    if backend != "jax":
        raise InputError(
            f"--distribute data (distribute='data') runs on the JAX backend only; this run "
            f"uses {backend}. Use `valpat --backend jax ...` (or KERAS_BACKEND=jax). On "
            f"{backend} valpat trains on one device: tf.distribute strategies and torchrun "
            "(DistributedDataParallel) are not wired in.")


def data_parallel(devices: int | None, batch_size: int | None,
                  batch_name: str = "batch_size", multi_host: bool = True) -> RunDataParallel:
    """The `RunDataParallel` of a run: its devices checked against the global batch.

    Args:
        devices: How many devices (the first of `keras.distribution.list_devices`); None:
            all of them (on every host).
        batch_size: The run's global batch (None: not checked).
        batch_name: How the batch size is named in messages (e.g. ``"P x K"``).
        multi_host: Whether the run may span several hosts (False: refused there).

    Raises:
        InputError: Not the JAX backend, more devices than there are, a subset of the devices
            on several hosts, several hosts for a run that needs one, or a batch the devices
            do not divide.
    """
    _check_backend()
    processes = initialize_hosts()
    if processes > 1 and not multi_host:
        raise InputError(f"this run spans {processes} hosts, but only pretraining runs on "
                         "several hosts: the transfers evaluate inside the run, which is not "
                         "multi-host yet. Use --distribute data on one host's devices.")
    available = keras.distribution.list_devices()
    count = len(available) if devices is None else int(devices)
    if count > len(available):
        raise InputError(f"--devices {count}: only {len(available)} device(s) found "
                         f"({', '.join(available)})")
    if processes > 1 and count != len(available):
        raise InputError(f"--devices {count}: a run on {processes} hosts uses all their "
                         f"{len(available)} devices; leave --devices out")
    if batch_size is not None and int(batch_size) % count:
        raise InputError(
            f"{batch_name} {batch_size} does not divide over {count} devices (--distribute "
            f"data splits each global batch evenly); use a multiple of {count}, e.g. "
            f"{(int(batch_size) // count + 1) * count}, or other --devices")
    return RunDataParallel(available[:count])


@contextlib.contextmanager
def runtime_scope(mixed_precision: str | None = None, distribute: str | None = None,
                  devices: int | None = None, *, batch_size: int | None = None,
                  batch_name: str = "batch_size",
                  multi_host: bool = True) -> Iterator[RunDataParallel | None]:
    """Sets the dtype policy and the distribution of one run; restores the previous ones.

    Build the model inside (its variables take the distribution's layout). Without
    ``distribute`` the global distribution is left as it is.

    Args:
        mixed_precision: A `valpat_keras.runtime.MIXED_PRECISION_CHOICES` policy, or None.
        distribute: ``"data"`` or None.
        devices: Devices for ``"data"`` (None: all).
        batch_size: The global batch (checked against the devices).
        batch_name: How the batch size is named in messages.
        multi_host: Whether the run may span several hosts.

    Yields:
        The distribution, or None.

    Raises:
        InputError: Bad settings (see `check_runtime_settings`, `data_parallel`).
    """
    check_runtime_settings(mixed_precision, distribute, devices)
    distribution = (data_parallel(devices, batch_size, batch_name, multi_host)
                    if distribute == "data" else None)
    previous_policy = keras.mixed_precision.dtype_policy()
    previous_distribution = keras.distribution.distribution()
    if mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision)
    if distribution is not None:
        keras.distribution.set_distribution(distribution)
    try:
        yield distribution
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if distribution is not None:
            keras.distribution.set_distribution(previous_distribution)


def runs_with_runtime_settings(batch_size_of: Callable[[Any], int],
                               batch_name: str = "batch_size",
                               multi_host: bool = False) -> Callable:
    """Decorates a run function ``f(dataset, out_dir, config, ...)`` with `runtime_scope`.

    The settings are the `valpat_keras.runtime.RUNTIME_FIELDS` of its ``config`` argument
    (none when ``config`` is not a run config, e.g. a deprecated keyword call).

    Args:
        batch_size_of: The global batch of a config (e.g. ``lambda c: c.p * c.k``).
        batch_name: How the batch size is named in messages.
        multi_host: Whether the run may span several hosts (the transfers: not yet).
    """
    def decorate(run: Callable) -> Callable:
        signature = inspect.signature(run)

        @functools.wraps(run)
        def run_with_settings(*args, **kwargs):
            config = signature.bind_partial(*args, **kwargs).arguments.get("config")
            settings = {name: getattr(config, name, None) for name in RUNTIME_FIELDS}
            batch = batch_size_of(config) if settings["distribute"] else None
            with runtime_scope(**settings, batch_size=batch, batch_name=batch_name,
                               multi_host=multi_host):
                return run(*args, **kwargs)
        return run_with_settings
    return decorate
