"""`valpat pretrain --text-preset DIR --image-preset DIR`: pretraining from local presets.

Tiny random keras-hub presets (`tiny_presets`) stand in for ``bert_base_en_uncased`` and
``resnet_50_imagenet``; they are loaded through the same ``from_preset`` calls a preset name
takes, so nothing is downloaded.
"""

import json
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from tiny_presets import (
    WORDS_ABSENT_FROM_SYNTHPED,
    save_tiny_bert_preset,
    save_tiny_resnet_preset,
)

from valpat_keras.cli.main import main
from valpat_keras.data.tokenizer import PresetCaptionTokenizer
from valpat_keras.models import IMAGENET_MEAN, IMAGENET_STD, load_backbone
from valpat_keras.models.text_encoder import PresetTextEncoder
from valpat_keras.tasks.zero_shot import zero_shot_attributes

pytestmark = pytest.mark.keras

PROMPT = "a woman carries an umbrella"

# Run in a fresh interpreter: the run folder alone must rebuild the preset text tower.
RELOAD = """
import sys, numpy as np, keras
from valpat_keras.models import load_backbone
backbone, tokenizer = load_backbone(sys.argv[1])
ids = keras.ops.convert_to_numpy(tokenizer([sys.argv[2]]))
emb = keras.ops.convert_to_numpy(backbone.get_text_embeddings(ids))
np.save(sys.argv[3], np.concatenate([ids.astype('float32'), emb], axis=1))
"""


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    bert = save_tiny_bert_preset(root / "bert")
    resnet = save_tiny_resnet_preset(root / "resnet")
    out = root / "run"
    status = main(["pretrain", "--out", str(out), "--synthped-preset", "tiny",
                   "--batch-size", "8", "--image-size", "64x32", "--steps", "2",
                   "--queue-size", "16", "--text-preset", str(bert),
                   "--image-preset", str(resnet), "--quiet"])
    assert status == 0
    return out, bert, resnet


def test_pretrain_from_local_presets_writes_a_reloadable_run(preset_run, tmp_path):
    out, bert, resnet = preset_run
    config = json.loads((out / "config.json").read_text())
    assert config["text_preset"] == str(bert) and config["image_preset"] == str(resnet)
    assert config["pixel_normalization"] == "preset"
    history = json.loads((out / "history.json").read_text())
    assert np.isfinite(history["itc_loss"]).all() and np.isfinite(history["loss"]).all()
    backbone, tokenizer = load_backbone(out)
    assert isinstance(tokenizer, PresetCaptionTokenizer)
    assert isinstance(backbone.text_encoder, PresetTextEncoder)
    # The preset's converter (ImageNet scale/offset on 0..255) as mean/std on [0, 1].
    normalization = backbone.image_encoder.normalization
    np.testing.assert_allclose(np.ravel(keras.ops.convert_to_numpy(normalization.mean)),
                               IMAGENET_MEAN, atol=1e-5)
    np.testing.assert_allclose(np.ravel(keras.ops.convert_to_numpy(normalization.variance)),
                               np.square(IMAGENET_STD), atol=1e-5)
    ids = keras.ops.convert_to_numpy(tokenizer([PROMPT]))
    expected = keras.ops.convert_to_numpy(backbone.get_text_embeddings(ids))
    pretrainer = keras.saving.load_model(str(out / "pretrainer.keras"))  # .keras round trip
    assert isinstance(pretrainer.backbone.text_encoder, PresetTextEncoder)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pretrainer.backbone.get_text_embeddings(ids)), expected,
        atol=1e-5)
    saved = tmp_path / "reloaded.npy"
    subprocess.run([sys.executable, "-c", RELOAD, str(out), PROMPT, str(saved)], check=True,
                   timeout=600)
    reloaded = np.load(saved)
    np.testing.assert_array_equal(reloaded[:, :ids.shape[1]], ids.astype("float32"))
    np.testing.assert_allclose(reloaded[:, ids.shape[1]:], expected, atol=1e-5)


def test_zero_shot_prompts_with_words_absent_from_the_captions_hit_no_unk(preset_run):
    out, _, _ = preset_run
    backbone, tokenizer = load_backbone(out)
    for word in WORDS_ABSENT_FROM_SYNTHPED:
        ids = keras.ops.convert_to_numpy(tokenizer([f"a man with a {word}"]))[0]
        assert tokenizer.unk_id not in ids.tolist(), word
    images = np.random.default_rng(0).random((2, 64, 32, 3)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probs = zero_shot_attributes(backbone, tokenizer, images, attribute_names=["Umbrella"],
                                     prompts={"Umbrella": (PROMPT, "a woman")})
    assert not [w for w in caught if "does not know" in str(w.message)]  # no unknown words
    assert probs.shape == (2, 1) and np.all((probs > 0) & (probs < 1))


def test_pretrain_rejects_a_missing_preset_folder(tmp_path, capsys):
    status = main(["pretrain", "--out", str(tmp_path / "run"), "--synthped-preset", "tiny",
                   "--batch-size", "8", "--steps", "1", "--text-preset",
                   str(tmp_path / "nope")])
    assert status == 2
    assert "no text preset found" in capsys.readouterr().err
