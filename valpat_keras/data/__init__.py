"""Data: plain records, dataset loaders, the SynthPed generator and tf.data pipelines.

Nothing here imports the models. The submodules are imported on first use
(``valpat_keras.data.pipelines`` imports TensorFlow; the records, loaders and SynthPed do not).
"""

import importlib

__all__ = ["attribute_names", "augment", "errors", "loaders", "pipelines", "records",
           "registry", "sampler", "splits", "synthped", "tokenizer"]


def __getattr__(name: str):
    # PEP 562: `valpat_keras.data.pipelines` works without importing TensorFlow up front.
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
