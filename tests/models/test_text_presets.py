"""Text towers and tokenizers from keras-hub presets (a tiny random BERT saved to a folder)."""

import keras
import numpy as np
import pytest
from tiny_presets import WORDS_ABSENT_FROM_SYNTHPED, save_tiny_bert_preset

from valpat_keras.data.synthped import SynthPedConfig, ensure_synthped
from valpat_keras.data.tokenizer import CaptionTokenizer, PresetCaptionTokenizer
from valpat_keras.datasets import load
from valpat_keras.errors import InputError
from valpat_keras.models import ValPatBackbone, build_image_encoder
from valpat_keras.models.preprocessors import ValPatPreprocessor
from valpat_keras.models.text_encoder import PresetTextEncoder, build_text_encoder, load_text_preset
from valpat_keras.tasks.zero_shot import resolve_prompts, unknown_prompt_words

pytestmark = pytest.mark.keras


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny_bert_preset(tmp_path_factory.mktemp("bert") / "preset")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_preset_tokenizer_knows_words_the_captions_never_use(bert_dir, tmp_path):
    info = ensure_synthped(tmp_path / "synthped", SynthPedConfig.preset("tiny"))
    records = load("luperson_ta", str(info.paths["pretrain_manifest"])).records
    captions = [c for r in records for c in r.captions]
    learnt = CaptionTokenizer.from_captions(captions, vocabulary_size=2000)
    encoder, tokenizer = load_text_preset(bert_dir, sequence_length=12)
    for word in WORDS_ABSENT_FROM_SYNTHPED:
        assert word not in " ".join(captions).lower()
        assert learnt.unknown_words([word]) == [word]  # spelt out or [UNK] by the learnt one
        ids = _numpy(tokenizer([f"a woman carries a {word}"]))[0].tolist()
        assert tokenizer.unk_id not in ids and tokenizer.vocabulary.index(word) in ids
    # BERT framing with the preset's own ids ([CLS] = 4, [SEP] = 5, [PAD] = 0 here).
    ids = _numpy(tokenizer(["A Man with an Umbrella", "zebra"]))
    assert ids.shape == (2, 12) and ids.dtype == np.int32
    assert ids[0, :7].tolist() == [4] + [tokenizer.vocabulary.index(w) for w in
                                          ("a", "man", "with", "an", "umbrella")] + [5]
    assert ids[1, :3].tolist() == [4, tokenizer.unk_id, 5] and not ids[1, 3:].any()
    assert tokenizer.unknown_words(["zebra", "umbrella"]) == ["zebra"]
    prompts = resolve_prompts(["Hat"], {"Hat": ("a man with a hat and an umbrella", "a man")})
    assert unknown_prompt_words(tokenizer, prompts) == []
    assert encoder.vocabulary_size == tokenizer.vocabulary_size


def test_preset_tokenizer_round_trips_through_its_folder(bert_dir, tmp_path):
    tokenizer = PresetCaptionTokenizer.from_source(bert_dir, sequence_length=10)
    tokenizer.save_to_preset(tmp_path / "tok")
    restored = CaptionTokenizer.from_preset(tmp_path / "tok")  # the one entry point
    assert isinstance(restored, PresetCaptionTokenizer) and restored.sequence_length == 10
    text = ["a red coat and a suitcase", "she wears glasses"]
    np.testing.assert_array_equal(_numpy(restored(text)), _numpy(tokenizer(text)))
    assert restored.detokenize(_numpy(tokenizer(text))) == text


def test_preset_text_encoder_pools_up_to_the_end_token(bert_dir):
    encoder, tokenizer = load_text_preset(bert_dir, sequence_length=12)
    assert encoder.pooling == "pooled" and encoder.feature_dim == 16
    short, long = (_numpy(PresetCaptionTokenizer(tokenizer.layer, n)(["a man in a red coat"]))
                   for n in (9, 12))
    # Padding after [SEP] is masked: more of it changes nothing.
    np.testing.assert_allclose(_numpy(encoder(short)), _numpy(encoder(long)), atol=1e-5)
    bert = encoder.backbone
    expected = bert({"token_ids": long, "segment_ids": np.zeros_like(long),
                     "padding_mask": (long != 0).astype("int32")})["pooled_output"]
    np.testing.assert_allclose(_numpy(encoder(long)), _numpy(expected), atol=1e-5)
    eos = PresetTextEncoder(bert, end_token_id=tokenizer.sep_id, pooling="eos")
    sequence = bert({"token_ids": long, "segment_ids": np.zeros_like(long),
                     "padding_mask": (long != 0).astype("int32")})["sequence_output"]
    end = int(np.argmax(long[0] == tokenizer.sep_id))
    np.testing.assert_allclose(_numpy(eos(long)), _numpy(sequence)[:, end], atol=1e-5)


def test_backbone_with_a_preset_text_tower_saves_its_tokenizer(bert_dir, tmp_path):
    text_encoder, tokenizer = load_text_preset(bert_dir, sequence_length=12)
    assert isinstance(build_text_encoder(str(bert_dir)), PresetTextEncoder)
    backbone = ValPatBackbone(build_image_encoder("tiny", image_size=(32, 16)), text_encoder,
                              embedding_dim=8)
    preprocessor = ValPatPreprocessor.for_backbone(backbone, tokenizer)
    backbone.save_to_preset(str(tmp_path / "bb"))
    preprocessor.save_to_preset(str(tmp_path / "bb"))
    restored = ValPatBackbone.from_preset(str(tmp_path / "bb"))
    restored_tokenizer = CaptionTokenizer.from_preset(tmp_path / "bb")
    ids = _numpy(restored_tokenizer(["a woman with a backpack"]))
    np.testing.assert_array_equal(ids, _numpy(tokenizer(["a woman with a backpack"])))
    np.testing.assert_allclose(_numpy(restored.get_text_embeddings(ids)),
                               _numpy(backbone.get_text_embeddings(ids)), atol=1e-5)


def test_bad_text_presets_are_named(bert_dir, tmp_path):
    with pytest.raises(InputError, match="no text preset found"):
        load_text_preset(tmp_path / "missing")
    build_image_encoder("tiny", image_size=(32, 16)).backbone.save_to_preset(
        str(tmp_path / "resnet"))
    with pytest.raises(InputError, match="resnet"):
        load_text_preset(tmp_path / "resnet")
    with pytest.raises(InputError, match="Unknown text encoder 'tinyy'"):
        build_text_encoder("tinyy")  # no download attempted
    with pytest.raises(InputError, match="Unknown text pooling"):
        load_text_preset(bert_dir, pooling="max")
