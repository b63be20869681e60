"""CaptionTokenizer: vocabulary from captions, [CLS] ... [SEP] framing, save/load round trip."""

import numpy as np
import pytest
import tensorflow as tf

from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.tokenizer import CaptionTokenizer, CaptionWordPieceTokenizer

pytestmark = pytest.mark.keras

CAPTIONS = [
    "A woman in a red coat carries a black backpack.",
    "The man wears blue jeans and white sneakers.",
    "A young girl with long hair holds an umbrella.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return CaptionTokenizer.from_captions(CAPTIONS, vocabulary_size=300, sequence_length=12)


def test_vocabulary_has_special_tokens_and_caption_words(tokenizer):
    assert tokenizer.vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokenizer.pad_id == 0
    for word in ("woman", "backpack", "sneakers", "umbrella", "red"):
        assert word in tokenizer.vocabulary
    assert tokenizer.vocabulary_size == len(tokenizer.vocabulary) <= 300


def test_ids_are_framed_padded_and_truncated(tokenizer):
    ids = tokenizer(["A WOMAN in red", CAPTIONS[0] + " " + CAPTIONS[1]]).numpy()
    assert ids.dtype == np.int32 and ids.shape == (2, 12)
    short, long = ids
    woman = tokenizer.vocabulary.index("woman")
    assert list(short[:6]) == [tokenizer.cls_id, tokenizer.vocabulary.index("a"), woman,
                               tokenizer.vocabulary.index("in"),
                               tokenizer.vocabulary.index("red"), tokenizer.sep_id]
    assert (short[6:] == 0).all()
    assert long[0] == tokenizer.cls_id and long[-1] == tokenizer.sep_id and (long != 0).all()
    assert tokenizer("@").numpy()[1] == tokenizer.unk_id
    assert tokenizer("a woman").shape == (12,)


def test_usable_inside_tf_data_map(tokenizer):
    eager = tokenizer(CAPTIONS).numpy()
    mapped = tf.data.Dataset.from_tensor_slices(CAPTIONS).batch(2).map(tokenizer)
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in mapped]), eager)


def test_save_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_to_preset(tmp_path / "tok")
    loaded = CaptionTokenizer.from_preset(tmp_path / "tok")
    assert loaded.get_config() == tokenizer.get_config()
    np.testing.assert_array_equal(loaded(CAPTIONS).numpy(), tokenizer(CAPTIONS).numpy())


def test_load_missing_folder_names_the_file(tmp_path):
    with pytest.raises(DatasetFormatError, match="vocabulary.txt"):
        CaptionTokenizer.from_preset(tmp_path)


HAND_VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "woman", "in", "red",
                   "##s", ".", ",", "cafe"]


def test_folder_of_an_earlier_version_loads_with_the_same_ids(tmp_path):
    # The layout earlier versions wrote: vocabulary.txt + tokenizer_config.json.
    (tmp_path / "vocabulary.txt").write_text("\n".join(HAND_VOCABULARY) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(
        '{"class_name": "CaptionTokenizer", "config": {"sequence_length": 10}}',
        encoding="utf-8")
    loaded = CaptionTokenizer.from_preset(tmp_path)
    ids = loaded(["A woman, in REDS.", "Café in Paris"]).numpy()
    np.testing.assert_array_equal(ids, [[2, 5, 6, 11, 7, 8, 9, 10, 3, 0],
                                        [2, 12, 7, 1, 3, 0, 0, 0, 0, 0]])
    assert loaded.detokenize(ids) == ["a woman , in reds .", "cafe in [UNK]"]


def test_tokenizer_layer_special_tokens_and_vocabulary_check():
    layer = CaptionWordPieceTokenizer(vocabulary=HAND_VOCABULARY)
    assert (layer.pad_token_id, layer.unk_token_id, layer.cls_token_id, layer.sep_token_id,
            layer.mask_token_id) == (0, 1, 2, 3, 4)
    assert layer.vocabulary_size() == len(HAND_VOCABULARY)
    pieces = layer(["a woman in reds"])
    assert [list(row) for row in pieces] == [[5, 6, 7, 8, 9]]
    with pytest.raises(ValueError, match="must start with"):
        CaptionWordPieceTokenizer(vocabulary=["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"])
    with pytest.raises(ValueError, match="must start with"):
        CaptionTokenizer(HAND_VOCABULARY[1:] + ["[PAD]"])
