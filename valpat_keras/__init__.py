"""valpat-keras: VAL-PAT pedestrian representation learning in Keras 3.

Pretrain an image encoder on person crops with captions and attribute labels
(self-supervised, image-text and attribute objectives), then transfer it to person
re-identification, pedestrian attribute recognition and text-based person search, with
one code path on the TensorFlow, PyTorch and JAX backends.

Importing the top-level package does not import Keras, so the backend can still be
chosen afterwards (`valpat --backend jax ...` or `KERAS_BACKEND`).
"""

__version__ = "0.1.0"

from valpat_keras.xla_flags import apply_xla_cpu_defaults as _apply_xla_cpu_defaults

# Before JAX starts a backend: XLA:CPU's convolutions on its multi-threaded kernels
# (`valpat_keras.xla_flags`; VALPAT_XLA_CPU_DEFAULTS=0 leaves XLA_FLAGS alone).
_apply_xla_cpu_defaults()

#: Subpackages (imported on use): ``datasets`` (loaders), ``data``, ``models``, ``losses``,
#: ``tasks`` (pretraining and transfers, with their run configs), ``evaluation``, ``demo``,
#: ``saving`` (load any saved model in a fresh process), ``serving``, ``cli``.
__all__ = ["PersonIndex", "__version__"]


def __getattr__(name: str):
    # `PersonIndex` is imported on first use: it imports Keras, which must wait for the backend.
    if name == "PersonIndex":
        from valpat_keras.serving.index import PersonIndex

        return PersonIndex
    raise AttributeError(f"module 'valpat_keras' has no attribute {name!r}")
