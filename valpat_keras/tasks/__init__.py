"""Tasks: VAL-PAT pretraining and the transfers (re-ID, attributes, text search, zero-shot).

Every task follows `valpat_keras.tasks.base` (the compile / loss / tracker contract) and every
run function takes its data, an output folder and one run config (`PretrainConfig`,
`ReIDRunConfig`, `AttributesRunConfig`, `SearchRunConfig`), read as a few named steps:
load data -> build task -> fit -> evaluate -> write the run folder.

The names below are imported on first use (PEP 562), so ``import valpat_keras.tasks`` does
not import Keras and the backend can still be chosen; the task modules themselves import
Keras: set ``KERAS_BACKEND`` before touching a task or run function.
"""

from valpat_keras.lazy import lazy_exports

#: Public name -> the module that defines it.
_EXPORTS = {
    "TaskContract": "base", "ValPatTask": "base", "EmbeddingMixin": "base",
    "RunConfig": "run_config", "resolve_run_config": "run_config",
    "PretrainConfig": "pretrain_config", "pretrain": "pretraining",
    "ValPatPretrainer": "pretrainer", "cached_pretrain": "pretrain_cache",
    "ReIDModel": "reid", "FreezeBackbone": "reid",
    "ReIDRunConfig": "reid_training", "ReIDTrainingConfig": "reid_training",
    "train_reid": "reid_training", "evaluate_reid_model": "reid_training",
    "evaluate_reid_encoder": "reid_training", "ReIDEvaluationConfig": "reid_training",
    "load_reid_embedding": "reid_training",
    "ClusterContrastReID": "unsupervised_reid", "ClusterMemory": "unsupervised_reid",
    "AttributeRecognizer": "attribute_recognizer",
    "AttributeMeanAccuracy": "attribute_recognizer",
    "AttributesRunConfig": "attribute_training", "train_attributes": "attribute_training",
    "init_head_from_linear_probe": "attribute_head_init",
    "TextSearchModel": "search", "SearchRunConfig": "search", "train_search": "search",
    "PersonSearcher": "search", "evaluate_search": "search",
    "zero_shot_attributes": "zero_shot", "evaluate_zero_shot": "zero_shot",
}

__all__ = [
    "AttributeMeanAccuracy",
    "AttributeRecognizer",
    "AttributesRunConfig",
    "ClusterContrastReID",
    "ClusterMemory",
    "EmbeddingMixin",
    "FreezeBackbone",
    "PersonSearcher",
    "PretrainConfig",
    "ReIDEvaluationConfig",
    "ReIDModel",
    "ReIDRunConfig",
    "ReIDTrainingConfig",
    "RunConfig",
    "SearchRunConfig",
    "TaskContract",
    "TextSearchModel",
    "ValPatPretrainer",
    "ValPatTask",
    "cached_pretrain",
    "evaluate_reid_encoder",
    "evaluate_reid_model",
    "evaluate_search",
    "evaluate_zero_shot",
    "init_head_from_linear_probe",
    "load_reid_embedding",
    "pretrain",
    "resolve_run_config",
    "train_attributes",
    "train_reid",
    "train_search",
    "zero_shot_attributes",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
