"""Task tests build several identical tiny models; let JAX reuse their compiled steps.

JAX caches ``jit`` results per function object, so every new model instance compiles its
train step again (10-20 s on 2 cores). The persistent compilation cache is keyed by the
compiled program instead, so identical models after the first hit it. Only for the JAX
backend, in a per-session temporary folder (or ``$VALPAT_JAX_CACHE_DIR``).
"""

import os
import tempfile

if os.environ.get("KERAS_BACKEND", "jax") == "jax":
    import jax

    # Exported so that JAX test subprocesses (tests/tasks/pretrainer_worker.py) share it.
    os.environ.setdefault("VALPAT_JAX_CACHE_DIR", tempfile.mkdtemp(prefix="valpat_jax_cache_"))
    jax.config.update("jax_compilation_cache_dir", os.environ["VALPAT_JAX_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
