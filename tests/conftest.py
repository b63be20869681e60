"""Shared pytest set-up.

Tests that touch Keras carry the ``keras`` marker: the test script runs the whole suite on
one backend and the marked tests on all three (KERAS_BACKEND=jax, tensorflow, torch).
Backend-agnostic end-to-end trainings carry ``trains_once`` instead: the script runs them once,
in the PyTorch pass (eager tiny trainings, no per-model compilation).

Many tests build identical tiny models. JAX caches ``jit`` results per function object, so
every new model instance compiles its train step again (10-20 s on 2 cores); the persistent
compilation cache is keyed by the compiled program instead, so identical models after the
first hit it. It lives in a per-session temporary folder (or ``$VALPAT_JAX_CACHE_DIR``),
exported so that test subprocesses share it. The image-check cache (``VALPAT_CACHE``) is a
per-session temporary folder too. The tests folder is put on ``sys.path`` so that test
modules import the shared helpers (``harness``, ``metric_checks``).
"""

import os
import sys
import tempfile

# The shared helpers tests/harness.py (serialization harness) and tests/metric_checks.py
# (metrics recomputed from saved runs) import as `harness` / `metric_checks` from any test;
# appended, so that nothing installed is shadowed by a tests/ folder name.
sys.path.append(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The image-check cache of the tests stays out of the user's ~/.cache.
os.environ.setdefault("VALPAT_CACHE", tempfile.mkdtemp(prefix="valpat_cache_"))
os.environ.setdefault("KERAS_BACKEND", "jax")

if os.environ["KERAS_BACKEND"] == "jax":
    import jax

    os.environ.setdefault("VALPAT_JAX_CACHE_DIR", tempfile.mkdtemp(prefix="valpat_jax_cache_"))
    jax.config.update("jax_compilation_cache_dir", os.environ["VALPAT_JAX_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
