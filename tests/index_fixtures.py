"""A tiny SynthPed gallery and tiny run folders of every kind, for the index / query tests.

Imported by tests/serving/test_index.py and tests/cli/test_index_query_cli.py (a conftest
would reach only one of the two folders). Random weights in the real layouts: a pretraining
run (``backbone/``, ``image_encoder/`` and ``pretrainer.keras`` with an attribute head over
SynthPed's 26 names), a re-ID run and an attributes run (task presets, as
`write_task_preset` writes them), and a second pretraining layout whose shared space is 16-d
instead of 32 (an index "from another model").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from valpat_keras.data.synthped import SynthPedConfig, write_synthped

IMAGE_SIZE = (64, 32)


def _attribute_names(synthped: Path) -> list[str]:
    header = (synthped / "pretrain" / "manifest.jsonl").read_text().splitlines()[0]
    return json.loads(header)["attribute_names"]


def _captions(synthped: Path) -> list[str]:
    lines = (synthped / "pretrain" / "manifest.jsonl").read_text().splitlines()[1:]
    return [caption for line in lines for caption in json.loads(line)["captions"]]


def _pretraining_run(out: Path, captions, names, embedding_dim: int, with_head: bool) -> Path:
    from valpat_keras.run_outputs import write_pretraining_run
    from valpat_keras.tasks.pretrainer import ValPatPretrainer
    from valpat_keras.tasks.search import build_search_backbone

    backbone, tokenizer = build_search_backbone(
        captions, image_size=IMAGE_SIZE, embedding_dim=embedding_dim, vocabulary_size=300,
        sequence_length=24)
    out.mkdir(parents=True)
    if not with_head:
        backbone.save_to_preset(str(out / "backbone"))
        tokenizer.save_to_preset(str(out / "backbone" / "tokenizer"))
        return out
    pretrainer = ValPatPretrainer(backbone, num_attributes=len(names), attribute_names=names,
                                  ssl_dim=16, ssl_hidden_dim=32, queue_size=16)
    write_pretraining_run(out, pretrainer, tokenizer, {"loss": [1.0, 0.5]})
    return out


def _task_runs(root: Path, names) -> tuple[Path, Path]:
    from valpat_keras.models import build_image_encoder
    from valpat_keras.models.preprocessors import ImagePreprocessor
    from valpat_keras.tasks.attribute_recognizer import AttributeRecognizer
    from valpat_keras.tasks.reid import ReIDModel
    from valpat_keras.tasks.transfer_common import write_task_preset

    reid_encoder = build_image_encoder("tiny", image_size=IMAGE_SIZE)
    reid = ReIDModel(reid_encoder, num_classes=4)
    write_task_preset(reid, root / "reid_run", ImagePreprocessor.for_encoder(reid_encoder))
    attribute_encoder = build_image_encoder("tiny", image_size=IMAGE_SIZE)
    recognizer = AttributeRecognizer(attribute_encoder, num_attributes=len(names),
                                     attribute_names=names)
    write_task_preset(recognizer, root / "attributes_run",
                      ImagePreprocessor.for_encoder(attribute_encoder))
    return root / "reid_run", root / "attributes_run"


@pytest.fixture(scope="session")
def serving_workspace(tmp_path_factory) -> dict[str, Path]:
    """Paths: ``synthped``, ``gallery`` (Market-1501 test images), and the run folders."""
    root = tmp_path_factory.mktemp("serving")
    synthped = root / "synthped"
    write_synthped(synthped, SynthPedConfig.preset("tiny"))
    names, captions = _attribute_names(synthped), _captions(synthped)
    reid_run, attributes_run = _task_runs(root, names)
    return {
        "synthped": synthped,
        "gallery": synthped / "Market-1501-v15.09.15" / "bounding_box_test",
        "pretrain_run": _pretraining_run(root / "pretrain_run", captions, names, 32, True),
        "other_run": _pretraining_run(root / "other_run", captions, names, 16, False),
        "reid_run": reid_run,
        "attributes_run": attributes_run,
    }


@pytest.fixture(scope="session")
def pretrain_index(serving_workspace, tmp_path_factory):
    """An index of the gallery built from the pretraining run (all three spaces, faiss)."""
    from valpat_keras.serving.index import PersonIndex

    out = tmp_path_factory.mktemp("indexes") / "pretrain_index"
    return PersonIndex.build(serving_workspace["gallery"], serving_workspace["pretrain_run"],
                             out, batch_size=8, ann="faiss", verbose=False)
