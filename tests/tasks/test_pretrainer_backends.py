"""The pretrainer across backends, each in its own subprocess (not marked `keras`: run once).

PyTorch (quickest to build) writes the initial weights, fixed batches and a `.keras` file;
as soon as they exist, TensorFlow and JAX (with two virtual CPU devices) start and load them. From the same weights and batches,
three SGD steps must give the same losses everywhere (relative 1e-4, the chaotic third step 5e-3; see the
test) and the same MoCo state transitions (EMA, queue, counters; exact), the `.keras` file must give the same
embeddings under every backend, and JAX `DataParallel` over two devices must match one device.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("pretrainer_worker.py")


def _spawn(backend: str, mode: str, folder: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                            + " --xla_force_host_platform_device_count=2").strip()
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(folder), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(process: subprocess.Popen, backend: str) -> None:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, f"{backend} worker failed:\n{output[-4000:]}"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrainer_backends")
    workers = {"torch": _spawn("torch", "init", folder)}
    deadline = time.monotonic() + 300
    while not (folder / "READY").exists():
        if workers["torch"].poll() is not None or time.monotonic() > deadline:
            _wait(workers["torch"], "torch")
            pytest.fail("the torch worker finished without writing the initial weights")
        time.sleep(0.5)
    workers["jax"] = _spawn("jax", "check", folder, "--data-parallel")
    workers["tensorflow"] = _spawn("tensorflow", "check", folder)
    for backend, process in workers.items():
        _wait(process, backend)
    return {b: json.loads((folder / f"results_{b}.json").read_text())
            for b in ("tensorflow", "jax", "torch")}


def test_three_sgd_steps_give_the_same_losses_on_every_backend(results):
    reference = results["torch"]["steps"]
    assert len(reference) == 3 and reference[0]["loss"] != reference[2]["loss"]
    for backend in ("jax", "tensorflow"):
        for step, (got, want) in enumerate(zip(results[backend]["steps"], reference)):
            for key in ("loss", "ssl_loss", "itc_loss", "attr_loss"):
                # Step 3 is float32 chaos, not a semantic difference: on ONE backend a 1e-7
                # relative nudge of the first images moves its losses by up to ~6e-4 (the ssl
                # gradients of step 2 change by %), so only 5e-3 is honest there; the MoCo
                # update order itself is checked exactly in the next test.
                rel = 5e-3 if step == 2 else 1e-4
                assert got[key] == pytest.approx(want[key], rel=rel), (backend, step, key)


def test_moco_state_transitions_are_the_same_on_every_backend(results):
    batch, queue_size = 8, 16  # pretrain_helpers.BATCH and the tiny pretrainer's queue
    for backend in ("tensorflow", "jax", "torch"):
        for step, got in enumerate(results[backend]["steps"]):
            # EMA from the query weights before this step's SGD update, one counter tick,
            # this step's keys written at the old pointer, the pointer advanced (wrapping).
            assert got["ema_error"] < 1e-6, (backend, step)
            assert got["ema_step"] == step + 1, (backend, step)
            start = step * batch % queue_size
            assert got["queue_rows"] == list(range(start, start + batch)), (backend, step)
            assert got["pointer"] == (start + batch) % queue_size, (backend, step)


def test_keras_file_saved_under_torch_gives_same_embeddings_elsewhere(results):
    for key in ("image_embedding", "text_embedding"):
        want = np.asarray(results["torch"][key])
        for backend in ("jax", "tensorflow"):
            np.testing.assert_allclose(np.asarray(results[backend][key]), want, atol=1e-5)


def test_jax_data_parallel_over_two_devices_matches_one_device(results):
    jax_results = results["jax"]
    assert jax_results["num_devices"] == 2
    for step, (got, want) in enumerate(zip(jax_results["data_parallel_steps"],
                                           jax_results["steps"])):
        # Same tolerance as across backends (the third step is the sensitive one).
        assert got["loss"] == pytest.approx(want["loss"], rel=5e-3 if step == 2 else 1e-4)
