"""Data parallelism (`valpat_keras.distribute`) and the runtime options of every command.

The device tests run in one subprocess (this file run as a script) because
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` must be set before JAX starts: it
gives the process two CPU devices. They pin ``--backend jax`` and are not marked ``keras``
(the JAX pass of the suite runs them once). The subprocess runs `valpat pretrain` and
`valpat reid` on one device and with ``--distribute data --devices 2`` on the same global
batch, and the tests compare the history and metrics files the runs write.

The in-process tests (marked ``keras``) check the options, the errors off JAX and that a
run function restores the global dtype policy.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from valpat_keras.cli.main import main
from valpat_keras.distribute import (
    data_parallel,
    initialize_hosts,
    runs_with_runtime_settings,
    runtime_scope,
)
from valpat_keras.errors import InputError
from valpat_keras.runtime import add_runtime_arguments, check_runtime_settings, runtime_fields
from valpat_keras.tasks.attribute_training import AttributesRunConfig
from valpat_keras.tasks.pretrain_config import PretrainConfig
from valpat_keras.tasks.reid_training import ReIDRunConfig
from valpat_keras.tasks.search import SearchRunConfig

PRETRAIN = ["--batch-size", "8", "--image-size", "32x16", "--steps", "2", "--queue-size", "16",
            "--quiet"]
REID = ["--random-init", "--epochs", "1", "--image-size", "32x16", "--p", "4", "--k", "2",
        "--steps-per-epoch", "2", "--batch-size", "16"]
TWO_DEVICES = ["--distribute", "data", "--devices", "2"]


# --- The subprocess (two CPU devices) -------------------------------------------------------


def _layout_checks() -> dict:
    """How `RunDataParallel` places batches, and a prediction with an uneven last batch."""
    import tensorflow as tf

    with runtime_scope(distribute="data", devices=2) as distribution:
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss="mse")
        x = np.random.default_rng(0).random((7, 3)).astype("float32")
        model.fit(x[:4], np.zeros((4, 2)), batch_size=4, verbose=0)  # split over 2 devices
        layouts = {"even": distribution.get_data_layout((4, 3)).axes,
                   "uneven": distribution.get_data_layout((3, 3)).axes}
        # Plain DataParallel fails here: the last batch (3 rows) does not split in two.
        predicted = model.predict(tf.data.Dataset.from_tensor_slices(x).batch(4), verbose=0)
        layouts["after_uneven_dataset"] = distribution.get_data_layout((4, 3)).axes
        static = tf.data.Dataset.from_tensor_slices(x[:4]).batch(2, drop_remainder=True)
        distribution.distribute_dataset(static)  # as Keras does before reading a dataset
        layouts["static_dataset"] = distribution.get_data_layout((2, 3)).axes
        devices = len(model.trainable_variables[0].value.sharding.device_set)
    eager = keras.ops.convert_to_numpy(model(x))
    return {"layouts": {k: list(v) for k, v in layouts.items()}, "variable_devices": devices,
            "prediction_error": float(np.abs(predicted - eager).max()),
            "distribution_after": keras.distribution.distribution() is not None}


def _runs(out: Path) -> dict:
    """One-device and two-device runs of the same global batches, and the refusals."""
    statuses = {
        "pretrain_1": main(["--backend", "jax", "pretrain", "--out", str(out / "p1"),
                            "--synthped-preset", "tiny", *PRETRAIN]),
        "pretrain_2": main(["--backend", "jax", "pretrain", "--out", str(out / "p2"), "--data",
                            str(out / "p1" / "synthped"), *PRETRAIN, *TWO_DEVICES]),
        "pretrain_3_devices": main(["pretrain", "--out", str(out / "p3"), "--data",
                                    str(out / "p1" / "synthped"), *PRETRAIN, "--distribute",
                                    "data", "--devices", "3"]),
    }
    data = f"synthped:{out / 'synthped'}"
    statuses["reid_1"] = main(["reid", "--data", data, "--out", str(out / "r1"), *REID])
    statuses["reid_2"] = main(["reid", "--data", data, "--out", str(out / "r2"), *REID,
                               *TWO_DEVICES])
    statuses["reid_odd_batch"] = main(["reid", "--data", data, "--out", str(out / "r3"),
                                       *REID, "--p", "3", "--k", "1", *TWO_DEVICES])
    return statuses


def _worker(out: Path) -> None:
    results = {"devices": keras.distribution.list_devices(), "layout": _layout_checks(),
               "status": _runs(out)}
    (out / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def two_device_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distribute")
    # The script's folder (tests/) heads its sys.path: the repository root is added.
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True,
                          text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), done.stderr


def test_two_cpu_devices_split_batches_and_run_uneven_ones_replicated(two_device_runs):
    _, results, _ = two_device_runs
    assert results["devices"] == ["cpu:0", "cpu:1"]
    layout = results["layout"]
    # Batches of a dataset without a fixed batch size are replicated, until the next
    # dataset with one (a training stream) is read.
    assert layout["layouts"] == {"even": ["batch", None], "uneven": [None, None],
                                 "after_uneven_dataset": [None, None],
                                 "static_dataset": ["batch", None]}
    assert layout["variable_devices"] == 2  # variables replicated on both devices
    assert layout["prediction_error"] < 1e-5
    assert layout["distribution_after"] is False  # the scope restored "no distribution"


def test_pretrain_on_two_devices_gives_the_one_device_losses(two_device_runs):
    out, results, _ = two_device_runs
    assert results["status"]["pretrain_1"] == 0 and results["status"]["pretrain_2"] == 0
    one = json.loads((out / "p1" / "history.json").read_text())
    two = json.loads((out / "p2" / "history.json").read_text())
    assert set(one) == set(two) >= {"loss", "ssl_loss", "itc_loss", "attr_loss"}
    for key in one:  # MoCo queue and in-batch ITC negatives see the whole global batch
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_reid_on_two_devices_gives_the_one_device_losses_and_scores(two_device_runs):
    out, results, _ = two_device_runs
    assert results["status"]["reid_1"] == 0 and results["status"]["reid_2"] == 0
    one = json.loads((out / "r1" / "history.json").read_text())
    two = json.loads((out / "r2" / "history.json").read_text())
    assert len(one) == len(two) == 1 and {"loss", "triplet_loss", "val_mAP"} <= set(one[0])
    for key, value in one[0].items():  # P x K batches: the triplets span both devices
        np.testing.assert_allclose(two[0][key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    metrics = [json.loads((out / run / "metrics.json").read_text()) for run in ("r1", "r2")]
    for key in ("rank1", "mAP", "mINP"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-6), key


def test_distribute_refuses_missing_devices_and_uneven_global_batches(two_device_runs):
    _, results, stderr = two_device_runs
    assert results["status"]["pretrain_3_devices"] == 2
    assert "--devices 3: only 2 device(s) found (cpu:0, cpu:1)" in stderr
    assert results["status"]["reid_odd_batch"] == 2
    assert "P x K (--p x --k) 3 does not divide over 2 devices" in stderr


# --- In process -----------------------------------------------------------------------------


def test_runtime_settings_are_checked_by_field():
    check_runtime_settings("mixed_float16", "data", 2)
    for bad, field in [(("float64", None, None), "mixed_precision"),
                       ((None, "model", None), "distribute"),
                       ((None, "data", 0), "devices"),
                       ((None, None, 2), "needs distribute='data'")]:
        with pytest.raises(InputError, match=field):
            check_runtime_settings(*bad)
    with pytest.raises(InputError, match="devices"):
        PretrainConfig(devices=2)
    assert PretrainConfig(distribute="data", devices=2).cache_fields() == PretrainConfig(
    ).cache_fields()  # a run's device count does not change what it trains
    for config_class in (ReIDRunConfig, AttributesRunConfig, SearchRunConfig):
        config = config_class.from_dict({"mixed_precision": "mixed_bfloat16",
                                         "distribute": "data", "devices": 2})
        assert (config.mixed_precision, config.distribute, config.devices) == (
            "mixed_bfloat16", "data", 2)


def test_runtime_arguments_parse_into_run_config_fields():
    parser = argparse.ArgumentParser()
    add_runtime_arguments(parser)
    args = parser.parse_args(["--mixed-precision", "--distribute", "data", "--devices", "2"])
    assert runtime_fields(args) == {"mixed_precision": "mixed_bfloat16", "distribute": "data",
                                    "devices": 2}
    with pytest.raises(InputError, match="--devices 2 needs --distribute data"):
        runtime_fields(parser.parse_args(["--devices", "2"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--devices", "0"])


def test_multi_host_environment_must_be_complete():
    assert initialize_hosts({}) == 1  # one process: nothing to join
    with pytest.raises(InputError, match="JAX_NUM_PROCESSES or KERAS_DISTRIBUTION_NUM_PROC"):
        initialize_hosts({"JAX_COORDINATOR_ADDRESS": "localhost:1234", "JAX_PROCESS_ID": "0"})
    with pytest.raises(InputError, match="must be integers"):
        initialize_hosts({"JAX_COORDINATOR_ADDRESS": "localhost:1234",
                          "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"})


@pytest.mark.keras
@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_distribute_off_jax_is_an_input_error_naming_the_backend(backend, monkeypatch):
    if keras.backend.backend() == "jax":
        monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    elif keras.backend.backend() != backend:
        backend = keras.backend.backend()  # the real backend of this pass
    with pytest.raises(InputError, match=f"JAX backend only; this run uses {backend}.*"
                                         "tf.distribute strategies and torchrun"):
        data_parallel(2, batch_size=8)
    with pytest.raises(InputError, match=f"this run uses {backend}"), \
            runtime_scope(distribute="data"):
        pass


@pytest.mark.keras
def test_run_functions_set_the_policy_for_the_run_and_restore_it():
    seen = []

    @runs_with_runtime_settings(lambda config: config.batch_size)
    def run(dataset, out_dir, config=None):
        seen.append(keras.mixed_precision.dtype_policy().name)
        return "done"

    assert run(None, "out", AttributesRunConfig(mixed_precision="mixed_bfloat16")) == "done"
    assert run(None, "out", config=SearchRunConfig(mixed_precision="mixed_float16")) == "done"
    assert run(None, "out") == "done"  # no config: nothing set
    assert seen == ["mixed_bfloat16", "mixed_float16", "float32"]
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert keras.distribution.distribution() is None


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
