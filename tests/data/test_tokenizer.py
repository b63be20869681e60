"""CaptionTokenizer: vocabulary from captions, [CLS] ... [SEP] framing, save/load round trip."""

import numpy as np
import pytest
import tensorflow as tf

from valpat_keras.data.errors import DatasetFormatError
from valpat_keras.data.tokenizer import CaptionTokenizer

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
