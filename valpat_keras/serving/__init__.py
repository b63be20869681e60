"""Using a trained model on your own images: exports for serving and one person index.

- `export_run` (`valpat export`): a run folder's image embedder, text embedder and attribute
  recognizer as SavedModel / ONNX / OpenVINO / LiteRT through Keras' ``Model.export``, with
  the preprocessing inside the graph and a ``manifest.json`` (`read_manifest`).
- `PersonIndex` (`valpat index`, `valpat query`): a gallery embedded once, answering image,
  sentence and attribute queries (`valpat_keras.serving.index`, `valpat_keras.serving.query`).

The names below are imported on first use (PEP 562), so ``import valpat_keras.serving``
does not import Keras and the backend can still be chosen.
"""

from valpat_keras.lazy import lazy_exports

#: Public name -> the module that defines it.
_EXPORTS = {
    "export_run": "export", "load_export_source": "export", "load_exported": "export",
    "serving_image_model": "export", "serving_text_model": "export", "check_format": "export",
    "build_manifest": "manifest", "read_manifest": "manifest", "write_manifest": "manifest",
    "PersonIndex": "index",
    "QueryHit": "query", "QueryResult": "query", "parse_attribute_query": "query",
    "RunEncoders": "encoders", "load_run_encoders": "encoders",
}

__all__ = [
    "PersonIndex",
    "QueryHit",
    "QueryResult",
    "RunEncoders",
    "build_manifest",
    "check_format",
    "export_run",
    "load_export_source",
    "load_exported",
    "load_run_encoders",
    "parse_attribute_query",
    "read_manifest",
    "serving_image_model",
    "serving_text_model",
    "write_manifest",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
