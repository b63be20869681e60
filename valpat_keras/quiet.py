"""Quieter defaults for interactive use: the `valpat` command and the notebooks.

TensorFlow is imported on every backend (it runs the input pipelines) and greets each process
with C++ lines about oneDNN, CUDA drivers and CPU instructions; Keras reminds that tf.data
input is not reshuffled by ``fit``. None of it says anything about the run, and it buries the
lines that do. Call `quiet_frameworks` before Keras is imported.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings


def _install_filters() -> None:
    # Keras reminds that tf.data input is not reshuffled by fit: our pipelines shuffle.
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    # tqdm (through keras-hub) looks for ipywidgets; nothing here draws progress widgets.
    warnings.filterwarnings("ignore", message="IProgress not found")


def _import_tensorflow_quietly() -> None:
    # TensorFlow >= 2.20 writes its import-time C++ lines (oneDNN, "no CUDA drivers") before
    # absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot hide them. Only file
    # descriptor 2 is silenced, and only during the import: an import error is still raised.
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        try:
            import tensorflow  # noqa: F401
        except ImportError:  # a PyTorch- or JAX-only install: nothing to quiet
            pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _is_not_keras_step_retracing_notice(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("triggered tf.function retracing" in message
                and "TensorFlowTrainer.make_" in message)


def quiet_frameworks() -> None:
    """Hides TensorFlow's C++ start-up lines and Keras' input-pipeline reminders.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the environment already sets it (so a user can ask
    for the lines back), installs the warning filters, imports TensorFlow with standard
    error silenced and drops TensorFlow's retracing notice about Keras' own step functions
    (see the comment in the code); retracing of any other tf.function is still reported.
    Warnings and errors about the run itself are left alone.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _install_filters()
    _import_tensorflow_quietly()
    # TensorFlow counts traces per Python function (code object), not per model: Keras
    # builds each model's predict / train step from the same code, so evaluating many models
    # in one process, each traced once, reads to it as one function retraced in a loop
    # ("5 out of the last 13 calls ... triggered tf.function retracing" for 12 tiny models of
    # a few images each). Every embedding call pads to one batch shape
    # (`valpat_keras.models.embedding.predict_fixed_batches`), so a model is traced once and
    # reused: tests/evaluation/test_predict_reuse.py asserts it. Only Keras' step functions
    # are filtered, so a real retracing loop elsewhere still shows.
    logging.getLogger("tensorflow").addFilter(_is_not_keras_step_retracing_notice)
