"""Subprocess worker of the cross-backend pretrainer tests (run as a script, one backend each).

``python pretrainer_worker.py init DIR``: builds a tiny pretrainer, saves its initial weights,
a `.keras` file and fixed batches into DIR, writes DIR/READY, then runs ``check``.
``python pretrainer_worker.py check DIR``: loads the initial weights, makes three SGD steps on
the fixed batches and writes the per-step losses; loads the `.keras` file and writes the
embeddings it gives. With ``--data-parallel`` (JAX) it also repeats the three steps under
`keras.distribution.DataParallel` over every device.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from pretrain_helpers import fixed_batches, tiny_pretrainer


def _three_steps(folder: Path) -> list[dict]:
    import keras

    model = tiny_pretrainer()
    model.load_weights(str(folder / "init.weights.h5"))
    # A small rate: differences between backends' kernels grow with every large step.
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    batches = np.load(folder / "batches.npz")
    steps = []
    for i in range(3):
        batch = {k.split("/", 1)[1]: batches[k] for k in batches.files if k.startswith(f"{i}/")}
        before = _moco_state(model)
        logs = model.train_on_batch(batch, return_dict=True)
        steps.append({k: float(v) for k, v in logs.items()} | _moco_checks(model, before))
    return steps


def _moco_state(model) -> dict:
    import keras

    def numpy(v):
        return keras.ops.convert_to_numpy(v.value)

    return {"query": [numpy(q) for q, _ in model._ema_pairs],
            "key": [numpy(k) for _, k in model._ema_pairs], "queue": numpy(model.queue),
            "pointer": int(numpy(model.queue_pointer)), "ema_step": int(numpy(model.ema_step))}


def _moco_checks(model, before: dict) -> dict:
    """The MoCo state transition of one step, exact up to float32 rounding on every backend.

    The step losses are chaotic in float32 (see the test), so the order of the EMA, the
    optimizer update and the enqueue is checked here directly instead.
    """
    after = _moco_state(model)
    m = model.momentum
    # The key encoder moves towards the query weights of *before* this step's update.
    ema_error = max(float(np.max(np.abs(k1 - (m * k0 + (1 - m) * q0))) / (np.max(np.abs(k1)) + 1e-12))
                    for k0, k1, q0 in zip(before["key"], after["key"], before["query"]))
    changed = np.flatnonzero(np.any(after["queue"] != before["queue"], axis=1))
    return {"ema_error": ema_error, "queue_rows": changed.tolist(), "pointer": after["pointer"],
            "ema_step": after["ema_step"]}


def main(mode: str, folder: str, data_parallel: bool = False) -> None:
    import keras

    folder = Path(folder)
    backend = keras.backend.backend()
    if mode == "init":
        keras.utils.set_random_seed(0)  # the same initial draw in every run: repeatable
        model = tiny_pretrainer()
        model.save_weights(str(folder / "init.weights.h5"))
        model.save(str(folder / "pretrainer.keras"))
        batches = fixed_batches(3, seed=7)
        np.savez(folder / "batches.npz",
                 **{f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()})
        (folder / "READY").touch()
    elif backend == "jax" and os.environ.get("VALPAT_JAX_CACHE_DIR"):
        import jax

        # Reuse what the parent test session compiled (same tiny model builds).
        jax.config.update("jax_compilation_cache_dir", os.environ["VALPAT_JAX_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    results = {"steps": _three_steps(folder)}
    loaded = keras.saving.load_model(str(folder / "pretrainer.keras"))
    batch = np.load(folder / "batches.npz")
    results["image_embedding"] = keras.ops.convert_to_numpy(
        loaded.backbone.get_image_embeddings(batch["0/view1"])).tolist()
    results["text_embedding"] = keras.ops.convert_to_numpy(
        loaded.backbone.get_text_embeddings(batch["0/token_ids"])).tolist()
    if data_parallel:
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        results["num_devices"] = len(devices)
        results["data_parallel_steps"] = _three_steps(folder)
    (folder / f"results_{backend}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main(sys.argv[1], sys.argv[2], data_parallel="--data-parallel" in sys.argv)
