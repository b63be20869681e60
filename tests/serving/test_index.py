"""`PersonIndex.build` on a tiny SynthPed gallery with tiny run folders of each kind.

The stored features are recomputed from the run's models on the decoded images (flip
averaging and normalisation written out here), and query rankings from brute-force cosine
similarities.
"""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

# The shared fixtures are imported by name, so their parameters shadow them (F811).
# ruff: noqa: F811
from index_fixtures import pretrain_index, serving_workspace  # noqa: F401

from valpat_keras.data.loaders._common import list_images
from valpat_keras.data.pipelines import image_dataset
from valpat_keras.errors import InputError
from valpat_keras.models import load_backbone
from valpat_keras.models.embedding import encode_captions
from valpat_keras.models.loading import load_task
from valpat_keras.saving import load_model
from valpat_keras.serving.index import SKIPPED_FILE, PersonIndex

pytestmark = pytest.mark.keras

SIZE = (64, 32)


def _images(paths):
    return np.concatenate(list(image_dataset(list(paths), SIZE, 64).as_numpy_iterator()))


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _flip_averaged(model, images):
    return _unit(model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0))


def test_a_pretraining_run_indexes_image_text_and_attribute_spaces(pretrain_index,
                                                                   serving_workspace):
    index, run = pretrain_index, serving_workspace["pretrain_run"]
    assert index.paths == [str(p) for p in list_images(serving_workspace["gallery"],
                                                       recursive=True)]
    images = _images(index.paths)
    backbone, _ = load_backbone(run)
    pretrainer = load_model(run / "pretrainer.keras", compile=False)
    features = pretrainer.backbone.image_encoder.predict(images, verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.sigmoid(
        pretrainer.attribute_head(features)))
    text_space = keras.ops.convert_to_numpy(backbone.get_image_embeddings(images))
    np.testing.assert_allclose(index.arrays["image"],
                               _flip_averaged(backbone.image_encoder, images), atol=1e-4)
    np.testing.assert_allclose(index.arrays["text"], text_space, atol=1e-4)
    np.testing.assert_allclose(index.arrays["attributes"], probabilities, atol=1e-4)
    for space in ("image", "text"):
        assert index.arrays[space].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(index.arrays[space], axis=1), 1, atol=1e-5)
    manifest = index.manifest
    assert manifest["query_kinds"] == ["image", "text", "attributes"]
    assert manifest["embedding_dim"] == 256 and manifest["spaces"]["text"]["dim"] == 32
    assert manifest["image_size"] == list(SIZE) and manifest["library_version"]
    assert len(index.attribute_names) == 26 and manifest["ann"] == ["faiss"]
    assert (index.folder / "faiss_image.index").is_file()
    assert manifest["verification"] is None and manifest["skipped"] == 0


def test_image_and_sentence_queries_rank_like_brute_force_cosine(pretrain_index,
                                                                  serving_workspace):
    index = pretrain_index
    backbone, tokenizer = load_backbone(serving_workspace["pretrain_run"])
    query_path = index.paths[3]
    query = _flip_averaged(backbone.image_encoder, _images([query_path]))[0]
    similarity = np.asarray(index.arrays["image"], np.float64) @ query
    result = index.query_image(query_path, k=5)
    assert [h.index for h in result.hits] == list(np.argsort(-similarity)[:5])
    assert result.hits[0].index == 3 and result.hits[0].score == pytest.approx(1, abs=1e-4)
    sentence = "a woman in a red coat with a backpack"
    text = encode_captions(backbone, tokenizer, [sentence])[0]
    similarity = np.asarray(index.arrays["text"], np.float64) @ text
    result = index.query_text(sentence, k=5)
    assert [h.index for h in result.hits] == list(np.argsort(-similarity)[:5])
    assert [h.text_similarity for h in result.hits] == pytest.approx(
        np.sort(similarity)[::-1][:5], abs=1e-5)
    with pytest.raises(InputError, match="no such file|missing"):
        index.query_image(serving_workspace["gallery"] / "absent.jpg")


def test_unreadable_images_are_counted_listed_and_left_out(serving_workspace, tmp_path):
    folder = tmp_path / "crops"
    (folder / "sub").mkdir(parents=True)
    sources = list_images(serving_workspace["gallery"])[:4]
    for source in sources[:2]:
        shutil.copy(source, folder / source.name)
    for source in sources[2:]:
        shutil.copy(source, folder / "sub" / source.name)  # found recursively
    broken = folder / "broken.jpg"
    broken.write_bytes(sources[0].read_bytes()[:200])
    (folder / "notes.txt").write_text("not an image")
    run = serving_workspace["reid_run"]
    index = PersonIndex.build(folder, run, tmp_path / "idx", batch_size=8, verbose=False)
    assert len(index) == 4 and str(broken) not in index.paths
    skipped = json.loads((tmp_path / "idx" / SKIPPED_FILE).read_text())
    assert index.manifest["skipped"] == skipped["count"] == 1
    assert skipped["images"][0]["path"] == str(broken)
    assert index.query_kinds == ["image"] and index.manifest["run_kind"] == "reid"
    task = load_task(run)
    np.testing.assert_allclose(index.arrays["image"],
                               _flip_averaged(task.embedding_model, _images(index.paths)),
                               atol=1e-4)


def test_a_manifest_and_spaces_from_other_runs(serving_workspace, pretrain_index, tmp_path):
    gallery = serving_workspace["gallery"]
    names = [p.name for p in list_images(gallery)][:6]
    manifest = gallery / "gallery.csv"
    manifest.write_text("path,pid\n" + "".join(f"{n},0\n" for n in names))
    try:
        index = PersonIndex.build(manifest, serving_workspace["reid_run"], tmp_path / "idx",
                                  text_from=serving_workspace["pretrain_run"],
                                  attributes_from=serving_workspace["attributes_run"],
                                  batch_size=8, verbose=False)
    finally:
        manifest.unlink()
    assert index.paths == [str(gallery / n) for n in names]
    assert index.query_kinds == ["image", "text", "attributes"]
    rows = [pretrain_index.paths.index(p) for p in index.paths]
    np.testing.assert_allclose(index.arrays["text"], pretrain_index.arrays["text"][rows],
                               atol=1e-5)
    recognizer = load_task(serving_workspace["attributes_run"])
    np.testing.assert_allclose(index.arrays["attributes"],
                               recognizer.predict_probabilities(index.paths), atol=1e-5)
    assert index.manifest["spaces"]["text"]["run_dir"] == str(serving_workspace["pretrain_run"])
    with pytest.raises(InputError, match="--text-from .*reid run has no text space"):
        PersonIndex.build(gallery, serving_workspace["pretrain_run"], tmp_path / "bad",
                          text_from=serving_workspace["reid_run"], verbose=False)


def test_the_calibrated_threshold_is_kept_and_decides_the_verdict(serving_workspace,
                                                                   tmp_path):
    from valpat_keras.evaluation.verification import write_calibration

    run = tmp_path / "reid_run"
    shutil.copytree(serving_workspace["reid_run"], run)
    calibration = {"threshold": 0.999, "similarity": "cosine", "target_fpr": 1e-3,
                   "split": "validation"}
    write_calibration(run, calibration)
    paths = list_images(serving_workspace["gallery"])[:5]
    index = PersonIndex.build(paths, run, tmp_path / "idx", verbose=False)
    assert index.manifest["verification"]["threshold"] == 0.999
    same = index.query_image(paths[0], k=3)
    assert same.verdict == "match" and same.threshold_source == "calibration"
    assert [h.match for h in same.hits] == [h.image_similarity >= 0.999 for h in same.hits]
    assert index.query_image(paths[0], k=3, threshold=1.0 + 1e-3).verdict == "no match"
