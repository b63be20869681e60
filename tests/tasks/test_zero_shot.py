"""Zero-shot attribute recognition: prompts, the pairwise softmax and evaluation from a run."""

import subprocess
import sys

import numpy as np
import pytest
from keras import ops
from PIL import Image

from valpat_keras.data.attribute_names import PA100K_ATTRIBUTES
from valpat_keras.data.records import AttributeDataset, AttributeRecord
from valpat_keras.data.synthped import describe, sample_identity
from valpat_keras.data.tokenizer import CaptionTokenizer
from valpat_keras.errors import InputError
from valpat_keras.evaluation import evaluate_attributes
from valpat_keras.models.embedding import encode_captions, encode_images
from valpat_keras.tasks.attributes import AttributesRunConfig, train_attributes
from valpat_keras.tasks.search import build_search_backbone
from valpat_keras.tasks.zero_shot import (
    PA100K_PROMPTS,
    evaluate_zero_shot,
    resolve_prompts,
    unknown_prompt_words,
    zero_shot_attributes,
)

pytestmark = pytest.mark.keras


@pytest.fixture(scope="module")
def backbone_and_tokenizer():
    # Built once per module: building the encoders dominates these tests' time.
    sentences = [t for pos, neg in resolve_prompts().values() for t in pos + neg]
    return build_search_backbone(sentences, image_size=(64, 32), embedding_dim=32,
                                 vocabulary_size=200, sequence_length=16)


def test_default_prompts_cover_pa100k_and_can_be_overridden():
    assert tuple(PA100K_PROMPTS) == PA100K_ATTRIBUTES
    prompts = resolve_prompts(prompts={"Hat": ("a red cap", ["no hat", "bare head"])})
    assert list(prompts) == list(PA100K_ATTRIBUTES)
    assert prompts["Hat"] == (["a red cap"], ["no hat", "bare head"])
    assert all(pos and neg for pos, neg in prompts.values())
    custom = resolve_prompts(["umbrella"], {"umbrella": ("with an umbrella", "no umbrella")})
    assert list(custom) == ["umbrella"]
    with pytest.raises(KeyError, match="umbrella"):
        resolve_prompts(["Hat", "umbrella"])


def test_default_prompts_speak_the_language_of_captions():
    # A tokenizer learnt from SynthPed captions, as pretraining learns it.
    rng = np.random.default_rng(0)
    captions = [c for uid in range(600) for view in ("front", "side", "back")
                for c in describe(sample_identity(rng, 0.5, uid), view, rng, 2)]
    tokenizer = CaptionTokenizer.from_captions(captions, vocabulary_size=2000)
    prompts = resolve_prompts()
    assert unknown_prompt_words(tokenizer, prompts) == []
    # "without a hat" is spelt with the positive's words; captions never say "without".
    for pos, neg in prompts.values():
        assert not {w for t in pos + neg for w in t.split()} & {"person", "without", "no"}
    bad = {"Hat": ("a person wearing a hat", "a person without a hat")}
    assert unknown_prompt_words(tokenizer, resolve_prompts(["Hat"], bad)) == ["person",
                                                                              "without"]


def test_probability_is_the_softmax_over_the_prompt_pair(backbone_and_tokenizer, tmp_path):
    backbone, tokenizer = backbone_and_tokenizer
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 64, 32, 3)).astype("float32")
    prompts = {"Hat": ("a person wearing a hat", "a person without a hat"),
               "Backpack": (["a backpack", "a rucksack"], "no backpack")}
    with pytest.warns(UserWarning, match="does not know"):
        probs = zero_shot_attributes(backbone, tokenizer, images, prompts=prompts,
                                     attribute_names=["Hat", "Backpack"])
    assert probs.shape == (3, 2) and probs.dtype == np.float32

    img = encode_images(backbone, images)
    hat = encode_captions(backbone, tokenizer, list(prompts["Hat"]))
    bag = encode_captions(backbone, tokenizer, ["a backpack", "a rucksack", "no backpack"])
    bag_pos = bag[:2].mean(0) / np.linalg.norm(bag[:2].mean(0))
    scale = float(ops.convert_to_numpy(backbone.logit_scale))
    for column, (pos, neg) in enumerate([(hat[0], hat[1]), (bag_pos, bag[2])]):
        logits = scale * np.stack([img @ pos, img @ neg], axis=1)
        want = np.exp(logits[:, 0]) / np.exp(logits).sum(1)
        np.testing.assert_allclose(probs[:, column], want, atol=1e-5)

    path = tmp_path / "p.png"
    Image.fromarray((images[0] * 255).round().astype("uint8")).save(path)
    with pytest.warns(UserWarning, match="does not know"):
        from_path = zero_shot_attributes(backbone, tokenizer, str(path), prompts=prompts,
                                         attribute_names=["Hat", "Backpack"])
    np.testing.assert_allclose(from_path[0], probs[0], atol=0.02)


def test_evaluate_zero_shot_reads_a_run_folder(backbone_and_tokenizer, tmp_path):
    backbone, tokenizer = backbone_and_tokenizer
    backbone.save_to_preset(str(tmp_path / "run" / "backbone"))
    tokenizer.save_to_preset(str(tmp_path / "run" / "backbone" / "tokenizer"))
    rng = np.random.default_rng(1)
    records = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(64, 32, 3), dtype=np.uint8)).save(path)
        records.append(AttributeRecord(str(path), rng.integers(0, 2, 26).astype(np.int8)))
    dataset = AttributeDataset("pa100k", str(tmp_path), records, [], records,
                               list(PA100K_ATTRIBUTES), eval_indices=[0, 7, 11])
    result = evaluate_zero_shot(dataset, tmp_path / "run")
    assert list(result["label_ma"]) == ["Female", "Hat", "Backpack"]
    # The numbers are those of the pairwise softmax scored against the evaluated labels.
    names = ["Female", "Hat", "Backpack"]
    probs = zero_shot_attributes(backbone, tokenizer, [r.path for r in records],
                                 attribute_names=names)
    want = evaluate_attributes(np.stack([r.attributes for r in records])[:, [0, 7, 11]], probs)
    for key in ("ma", "instance_acc", "instance_prec", "instance_recall", "instance_f1"):
        np.testing.assert_allclose(result[key], want[key], atol=1e-6)
    np.testing.assert_allclose(result["label_ma_array"], want["label_ma"], atol=1e-6)
    np.testing.assert_allclose([result["label_ma"][n] for n in names], want["label_ma"],
                               atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no pretrained backbone"):
        evaluate_zero_shot(dataset, tmp_path / "missing")


def test_train_attributes_checks_zero_shot_inputs_before_training(tmp_path):
    records = [AttributeRecord(str(tmp_path / "never_read.jpg"), np.array([1], np.int8))]
    dataset = AttributeDataset("manifest", str(tmp_path), records, [], records, ["umbrella"],
                               eval_indices=[0])
    with pytest.raises(InputError, match="needs init=RUN_DIR"):
        train_attributes(dataset, tmp_path / "out", AttributesRunConfig(zero_shot=True))
    with pytest.raises(KeyError, match="umbrella"):
        train_attributes(dataset, tmp_path / "out",
                         AttributesRunConfig(init=str(tmp_path), zero_shot=True))


def test_zero_shot_and_attributes_do_not_import_the_search_task():
    # The image and caption embedders come from valpat_keras.models.embedding.
    code = ("import sys, valpat_keras.tasks.attributes; "
            "print('valpat_keras.tasks.search' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
