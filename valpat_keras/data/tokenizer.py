"""Caption tokenizer: lower-cased WordPiece ids framed as ``[CLS] ... [SEP]`` and padded with 0.

The vocabulary is learnt from the training captions with keras-hub's
``compute_word_piece_vocabulary`` and applied by `CaptionWordPieceTokenizer`, a keras-hub
``WordPieceTokenizer`` layer (tensorflow-text underneath), so the tokenizer runs inside
``tf.data.Dataset.map`` on every Keras backend and is saved with a task preset
(``tokenizer.json`` + ``assets/tokenizer/vocabulary.txt``, see
`valpat_keras.models.preprocessors.CaptionPreprocessor`).

`CaptionTokenizer` is the plain-Python adapter the pipelines and older callers use: the layer
plus the ``[CLS] ... [SEP]`` packer, returning ``tf.Tensor`` ids. It is saved as its own folder
(``vocabulary.txt`` + ``tokenizer_config.json``) and also reads the tokenizer of a keras-hub
preset folder.
"""

from __future__ import annotations

import collections
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from valpat_keras.data.errors import DatasetFormatError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
VOCABULARY_FILE = "vocabulary.txt"
CONFIG_FILE = "tokenizer_config.json"
#: Where keras-hub's preset saver puts a tokenizer's vocabulary, and the preprocessor config.
PRESET_VOCABULARY_FILE = f"assets/tokenizer/{VOCABULARY_FILE}"
PRESET_PREPROCESSOR_FILE = "preprocessor.json"

# (attribute name, token) pairs keras-hub's `_add_special_token` exposes as ``<name>`` and
# ``<name>_id``; start/end alias [CLS]/[SEP] as in keras-hub's BertTokenizer.
_SPECIAL_TOKEN_ATTRS = (("pad_token", PAD), ("unk_token", UNK), ("cls_token", CLS),
                        ("sep_token", SEP), ("mask_token", MASK), ("start_token", CLS),
                        ("end_token", SEP))

#: Keeps keras-hub (>= 0.32) on its TensorFlow path when called eagerly: its pure-Python
#: path may split text differently from tensorflow-text, whose ids the pipelines use.
TF_PATH_KWARGS = ({"_allow_python_workflow": False}
                  if hasattr(keras_hub.tokenizers.Tokenizer, "_use_tf_workflow") else {})


def check_vocabulary(vocabulary: Sequence[str]) -> None:
    """Raises a `ValueError` unless ``vocabulary`` starts with `SPECIAL_TOKENS` in order."""
    head = list(vocabulary[: len(SPECIAL_TOKENS)])
    if tuple(head) != SPECIAL_TOKENS:
        raise ValueError(f"vocabulary must start with {list(SPECIAL_TOKENS)} (in that order); "
                         f"got {head}")


@keras.saving.register_keras_serializable(package="valpat_keras")
class CaptionWordPieceTokenizer(keras_hub.tokenizers.WordPieceTokenizer):
    """The caption WordPiece tokenizer as a keras-hub `Tokenizer` layer.

    Lower-cases, strips accents, splits on whitespace and punctuation and cuts words into
    WordPieces (unknown words become ``[UNK]``). Outputs ragged int32 pieces; framing and
    padding are the packer's job (`caption_packer`). It always runs keras-hub's TensorFlow
    path (tensorflow-text), eagerly too, so its ids are those of the ``tf.data`` pipelines.
    Saved by keras-hub's preset saver as ``tokenizer.json`` plus
    ``assets/tokenizer/vocabulary.txt``.

    Args:
        vocabulary: list[str] | str | None. Tokens (the first five ``[PAD]``, ``[UNK]``,
            ``[CLS]``, ``[SEP]``, ``[MASK]``, in that order) or a vocabulary file; ``None``
            until a preset loads its assets.
        lowercase: bool. Lower-case the text. Defaults to ``True``.
        strip_accents: bool. Strip accents. Defaults to ``True``.
        oov_token: str. Token of unknown words. Defaults to ``"[UNK]"``.
        dtype: str. Output id dtype. Defaults to ``"int32"``.
        **kwargs: Other `keras_hub.tokenizers.WordPieceTokenizer` arguments.

    Example:
    ```python
    tokenizer = CaptionWordPieceTokenizer.from_captions(
        ["A woman in a red coat.", "A man with a black backpack."], vocabulary_size=200)
    pieces = tokenizer(["a woman with a backpack"])  # ragged int32
    ```
    """

    def __init__(self, vocabulary=None, lowercase: bool = True, strip_accents: bool = True,
                 oov_token: str = UNK, dtype="int32", **kwargs):
        for name, token in _SPECIAL_TOKEN_ATTRS:
            self._add_special_token(token, name)
        super().__init__(vocabulary=vocabulary, lowercase=lowercase,
                         strip_accents=strip_accents, oov_token=oov_token, dtype=dtype,
                         **{**TF_PATH_KWARGS, **kwargs})

    def set_vocabulary(self, vocabulary):
        """Sets the vocabulary (a list of tokens or a file), checking the special tokens."""
        super().set_vocabulary(vocabulary)
        if self.vocabulary is not None:
            check_vocabulary(self.vocabulary)

    @classmethod
    def from_captions(cls, captions: Sequence[str], vocabulary_size: int = 2000, **kwargs
                      ) -> CaptionWordPieceTokenizer:
        """Learns a WordPiece vocabulary from training captions.

        Args:
            captions: Training captions (a list of str).
            vocabulary_size: Upper bound on the vocabulary size, special tokens included (the
                learnt vocabulary is smaller when the captions have fewer distinct pieces).
            **kwargs: Other constructor arguments.

        Returns:
            A tokenizer whose vocabulary contains the words of ``captions``.
        """
        return cls(vocabulary=learn_vocabulary(captions, vocabulary_size), **kwargs)


def learn_vocabulary(captions: Sequence[str], vocabulary_size: int) -> list[str]:
    """The WordPiece vocabulary of ``captions`` (special tokens first), at most this size."""
    captions = [str(c) for c in captions]
    if not captions:
        raise ValueError("from_captions needs at least one caption")
    # A Python list would be read as file names: hand the captions over as a dataset.
    data = tf.data.Dataset.from_tensor_slices(tf.constant(captions, tf.string)).batch(1024)
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        data, vocabulary_size=vocabulary_size, lowercase=True, strip_accents=True,
        reserved_tokens=list(SPECIAL_TOKENS))
    return _add_whole_words(list(vocabulary), captions, vocabulary_size)


def caption_packer(tokenizer: CaptionWordPieceTokenizer, sequence_length: int
                   ) -> keras_hub.layers.StartEndPacker:
    """The ``[CLS] pieces [SEP]`` + ``[PAD]`` packer (truncation keeps ``[SEP]``)."""
    return keras_hub.layers.StartEndPacker(
        sequence_length=int(sequence_length), start_value=tokenizer.cls_token_id,
        end_value=tokenizer.sep_token_id, pad_value=tokenizer.pad_token_id,
        return_padding_mask=False, name="packer", **TF_PATH_KWARGS)


class CaptionTokenizer:
    """Turns captions into ``int32`` token ids of shape ``(B, sequence_length)``.

    Captions are lower-cased, accents stripped, split on whitespace and punctuation and cut
    into WordPieces. Each row is ``[CLS] pieces [SEP]`` followed by ``[PAD]`` (id 0); longer
    captions are truncated so that ``[SEP]`` is always kept. A plain-Python adapter over the
    `CaptionWordPieceTokenizer` layer (``.layer``) and its packer: ``vocabulary_size`` is a
    plain attribute and the output is always a ``tf.Tensor`` usable in ``tf.data`` pipelines.
    Inside a model preset the same ids come from
    `valpat_keras.models.preprocessors.CaptionPreprocessor`.

    Args:
        vocabulary: The WordPiece vocabulary, a list of tokens whose first five entries are
            ``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]`` (in that order).
        sequence_length: Length of every output row, including ``[CLS]`` and ``[SEP]``.

    Example:
    ```python
    tok = CaptionTokenizer.from_captions(
        ["A woman in a red coat.", "A man with a black backpack."], vocabulary_size=200)
    ids = tok(["a woman with a backpack"])  # int32 tf.Tensor, shape (1, 32)
    tok.save_to_preset("runs/tokenizer")
    same = CaptionTokenizer.from_preset("runs/tokenizer")
    ```
    """

    def __init__(self, vocabulary: Sequence[str], sequence_length: int = 32):
        vocabulary = [str(t) for t in vocabulary]
        check_vocabulary(vocabulary)
        if sequence_length < 3:
            raise ValueError(f"sequence_length must be at least 3 ([CLS] x [SEP]); got "
                             f"{sequence_length}")
        self.layer = CaptionWordPieceTokenizer(vocabulary=vocabulary)
        self.vocabulary = self.layer.vocabulary
        self.sequence_length = int(sequence_length)
        self.pad_id = self.layer.pad_token_id
        self.unk_id = self.layer.unk_token_id
        self.cls_id = self.layer.cls_token_id
        self.sep_id = self.layer.sep_token_id
        self.mask_id = self.layer.mask_token_id
        self._packer = caption_packer(self.layer, self.sequence_length)
        # A tf.function keeps keras-hub from converting eager outputs to backend tensors.
        self._eager_fn = tf.function(self._tokenize, input_signature=[
            tf.TensorSpec([None], tf.string)])

    @property
    def vocabulary_size(self) -> int:
        """Number of tokens in the vocabulary, special tokens included."""
        return len(self.vocabulary)

    def _tokenize(self, captions: tf.Tensor) -> tf.Tensor:
        return tf.cast(self._packer(self.layer.tokenize(captions)), tf.int32)

    def __call__(self, captions: str | Sequence[str] | np.ndarray | tf.Tensor) -> tf.Tensor:
        """Tokenizes captions.

        Args:
            captions: One caption (``str`` or scalar string tensor) or a batch of them (list,
                NumPy array or 1-D string tensor). Works eagerly and inside ``tf.data.map``.

        Returns:
            ``int32`` ``tf.Tensor`` of shape ``(sequence_length,)`` for one caption, else
            ``(B, sequence_length)``.
        """
        captions = tf.convert_to_tensor(captions, dtype=tf.string)
        scalar = captions.shape.rank == 0
        batch = tf.reshape(captions, [-1])
        ids = self._eager_fn(batch) if tf.executing_eagerly() else self._tokenize(batch)
        ids = tf.ensure_shape(ids, [None, self.sequence_length])
        return ids[0] if scalar else ids

    def detokenize(self, ids: np.ndarray | tf.Tensor) -> list[str]:
        """Turns id rows back into text, dropping special tokens (for inspection only).

        Args:
            ids: ``(B, L)`` or ``(L,)`` token ids.

        Returns:
            One string per row; WordPieces are re-joined (``"back ##pack"`` -> ``"backpack"``).
        """
        rows = np.atleast_2d(np.asarray(ids))
        special = {self.pad_id, self.cls_id, self.sep_id, self.mask_id}
        texts = []
        for row in rows:
            tokens = [self.vocabulary[i] for i in row.tolist() if i not in special]
            texts.append(" ".join(tokens).replace(" ##", ""))
        return texts

    @classmethod
    def from_captions(cls, captions: Sequence[str], vocabulary_size: int = 2000,
                      sequence_length: int = 32) -> CaptionTokenizer:
        """Learns a WordPiece vocabulary from training captions.

        Args:
            captions: Training captions (a list of str).
            vocabulary_size: Upper bound on the vocabulary size, special tokens included (the
                learnt vocabulary is smaller when the captions have fewer distinct pieces).
            sequence_length: Length of every output row.

        Returns:
            A `CaptionTokenizer` whose vocabulary contains the words of ``captions``.
        """
        return cls(learn_vocabulary(captions, vocabulary_size), sequence_length=sequence_length)

    @classmethod
    def from_layer(cls, layer: CaptionWordPieceTokenizer, sequence_length: int
                   ) -> CaptionTokenizer:
        """The adapter over a tokenizer layer's vocabulary (e.g. a preprocessor's)."""
        return cls(layer.get_vocabulary(), sequence_length=sequence_length)

    def get_config(self) -> dict:
        """The constructor arguments except the vocabulary (saved as ``vocabulary.txt``)."""
        return {"sequence_length": self.sequence_length}

    @classmethod
    def from_config(cls, config: dict, vocabulary: Sequence[str]) -> CaptionTokenizer:
        """Rebuilds a tokenizer from `get_config` output and its vocabulary."""
        return cls(vocabulary, **config)

    def save_to_preset(self, preset_dir: str | Path) -> None:
        """Writes ``vocabulary.txt`` (one token a line) and ``tokenizer_config.json``.

        Args:
            preset_dir: Folder to write into (created if missing), e.g. next to the model.
        """
        folder = Path(preset_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / VOCABULARY_FILE).write_text("\n".join(self.vocabulary) + "\n",
                                              encoding="utf-8")
        config = {"class_name": type(self).__name__, "config": self.get_config()}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_preset(cls, preset_dir: str | Path) -> CaptionTokenizer:
        """Loads a tokenizer written by `save_to_preset`, or the one of a keras-hub preset.

        Args:
            preset_dir: The folder holding ``vocabulary.txt`` and ``tokenizer_config.json``,
                or a model preset folder holding ``preprocessor.json`` (with a
                ``sequence_length``) and ``assets/tokenizer/vocabulary.txt`` (written by a
                task or backbone ``save_to_preset`` with a caption preprocessor).

        Raises:
            DatasetFormatError: When a file is missing or unreadable.
        """
        folder = Path(preset_dir)
        if not (folder / CONFIG_FILE).is_file() and (folder / PRESET_VOCABULARY_FILE).is_file():
            vocab_path, config_path = folder / PRESET_VOCABULARY_FILE, \
                folder / PRESET_PREPROCESSOR_FILE
        else:
            vocab_path, config_path = folder / VOCABULARY_FILE, folder / CONFIG_FILE
        for path in (vocab_path, config_path):
            if not path.is_file():
                raise DatasetFormatError(path, "file not found",
                                         "a folder written by CaptionTokenizer.save_to_preset")
        config = _read_sequence_length(config_path)
        vocabulary = vocab_path.read_text(encoding="utf-8").splitlines()
        try:
            return cls.from_config(config, vocabulary)
        except ValueError as err:
            raise DatasetFormatError(vocab_path, str(err), field="vocabulary") from None

    save = save_to_preset
    load = from_preset


def _read_sequence_length(config_path: Path) -> dict:
    """``{"sequence_length": N}`` from a ``tokenizer_config.json`` or ``preprocessor.json``."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))["config"]
        return {"sequence_length": int(config["sequence_length"])}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DatasetFormatError(config_path, f"unreadable config ({err})",
                                 '{"class_name": ..., "config": {"sequence_length": N}}',
                                 field="config") from None


def _normalized_words(caption: str) -> list[str]:
    """Lower-cased, accent-stripped words and punctuation marks, as WordPiece splits them."""
    text = unicodedata.normalize("NFD", caption.lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    return re.findall(r"\w+|[^\w\s]", text)


def _add_whole_words(vocabulary: list[str], captions: Sequence[str],
                     vocabulary_size: int) -> list[str]:
    """Appends frequent whole words the learner left out, while the size budget allows.

    The WordPiece learner ignores words seen fewer than 10 times, so a small caption set would
    otherwise be spelt out letter by letter; appending keeps existing ids unchanged.
    """
    known = set(vocabulary)
    counts = collections.Counter(w for c in captions for w in _normalized_words(c))
    missing = sorted((w for w in counts if w not in known), key=lambda w: (-counts[w], w))
    return vocabulary + missing[: max(0, vocabulary_size - len(vocabulary))]
