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

`PresetCaptionTokenizer` is the same adapter over the tokenizer of a pretrained keras-hub
text model (``BertTokenizer``, ``DistilBertTokenizer``, ``RobertaTokenizer``,
``CLIPTokenizer``, ...): the model's own vocabulary, start / end / padding ids and
normalisation, so words absent from the pedestrian captions still get their pretrained
pieces instead of ``[UNK]``. It is saved as the keras-hub tokenizer preset files
(``tokenizer.json`` + ``assets/tokenizer/``) plus ``tokenizer_config.json``, and
`CaptionTokenizer.from_preset` reads either kind of folder.
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


def packer_token_ids(tokenizer: keras_hub.tokenizers.Tokenizer) -> tuple[int, int, int]:
    """``(start, end, pad)`` ids of a tokenizer layer: ``[CLS]``/``<s>``, ``[SEP]``/``</s>``, pad.

    WordPiece tokenizers name them ``cls`` / ``sep`` (BERT, DistilBERT and ours), byte-pair
    ones ``start`` / ``end`` (RoBERTa, CLIP); a tokenizer without a pad token pads with 0.

    Raises:
        ValueError: The tokenizer has no start or no end token.
    """
    def first_id(*names):
        for name in names:
            value = getattr(tokenizer, name, None)
            if value is not None:
                return int(value)
        return None

    start = first_id("cls_token_id", "start_token_id")
    end = first_id("sep_token_id", "end_token_id")
    if start is None or end is None:
        raise ValueError(f"{type(tokenizer).__name__} has no start/end token (cls/sep or "
                         "start/end); a caption tokenizer frames every caption with both")
    pad = first_id("pad_token_id")
    return start, end, 0 if pad is None else pad


def caption_packer(tokenizer: keras_hub.tokenizers.Tokenizer, sequence_length: int
                   ) -> keras_hub.layers.StartEndPacker:
    """The ``[CLS] pieces [SEP]`` + ``[PAD]`` packer (truncation keeps ``[SEP]``).

    For a preset tokenizer its own start / end / pad ids (`packer_token_ids`).
    """
    start, end, pad = packer_token_ids(tokenizer)
    return keras_hub.layers.StartEndPacker(
        sequence_length=int(sequence_length), start_value=start, end_value=end,
        pad_value=pad, return_padding_mask=False, name="packer", **TF_PATH_KWARGS)


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
        self._build_packer()

    def _build_packer(self) -> None:
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

    def unknown_words(self, words: Sequence[str]) -> list[str]:
        """The words (lower case) that are no whole word of the learnt vocabulary.

        The vocabulary comes from the pretraining captions, so such a word was rare or absent
        there and is spelt out in pieces the text encoder has hardly seen (or ``[UNK]``).
        """
        known = set(self.vocabulary)
        return sorted({w.lower() for w in words} - known)

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
                task or backbone ``save_to_preset`` with a caption preprocessor). A folder
                holding a keras-hub model's tokenizer (written by
                `PresetCaptionTokenizer.save_to_preset`, or a preprocessor around one) gives
                a `PresetCaptionTokenizer`.

        Raises:
            DatasetFormatError: When a file is missing or unreadable.
        """
        folder = Path(preset_dir)
        if _holds_preset_tokenizer(folder):
            return PresetCaptionTokenizer.from_preset(folder)
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


#: ``tokenizer.json``: the keras-hub tokenizer layer of a preset (its assets beside it).
PRESET_TOKENIZER_FILE = "tokenizer.json"


class PresetCaptionTokenizer(CaptionTokenizer):
    """`CaptionTokenizer`'s interface over a pretrained keras-hub model's tokenizer layer.

    Rows are the model's ``start pieces end`` followed by its padding id (``[CLS] ... [SEP]
    [PAD]`` for BERT and DistilBERT, ``<s> ... </s> <pad>`` for RoBERTa, CLIP's start and
    end of text padded with 0), truncated so that the end token is kept, as the model's own
    preprocessor packs a single sentence. The pipelines, zero-shot prompts and search
    queries use it as they use the learnt-vocabulary tokenizer: ``__call__`` gives int32
    ``tf.Tensor`` ids in ``tf.data`` too; ``vocabulary``, ``vocabulary_size``,
    ``sequence_length``, ``pad_id``, ``cls_id`` (start), ``sep_id`` (end), ``unk_id``.

    Args:
        layer: keras_hub.tokenizers.Tokenizer. E.g. ``BertTokenizer.from_preset(...)``.
        sequence_length: int. Length of every row, start and end included. Defaults to ``32``.

    Example:
    ```python
    tok = PresetCaptionTokenizer.from_source("bert_tiny_en_uncased", sequence_length=32)
    ids = tok(["a woman with an umbrella"])  # int32 (1, 32), no [UNK]
    tok.save_to_preset("runs/tokenizer")
    same = CaptionTokenizer.from_preset("runs/tokenizer")  # a PresetCaptionTokenizer
    ```
    """

    def __init__(self, layer: keras_hub.tokenizers.Tokenizer, sequence_length: int = 32):
        if int(sequence_length) < 3:
            raise ValueError(f"sequence_length must be at least 3 (start x end); got "
                             f"{sequence_length}")
        if hasattr(layer, "_allow_python_workflow"):
            # Eager calls on keras-hub's TensorFlow path: the ids of the tf.data pipelines.
            layer._allow_python_workflow = False
        self.layer = layer
        self.vocabulary = [str(t) for t in layer.get_vocabulary()]
        self.sequence_length = int(sequence_length)
        self.cls_id, self.sep_id, self.pad_id = packer_token_ids(layer)
        self.unk_id = _unknown_token_id(layer)
        self.mask_id = getattr(layer, "mask_token_id", None)
        self._build_packer()

    def unknown_words(self, words: Sequence[str]) -> list[str]:
        """The words (lower case) the pretrained tokenizer maps to its unknown token.

        A pretrained text tower knows word pieces, so only an unknown-token id is a loss;
        byte-pair tokenizers (RoBERTa, CLIP) have none and return ``[]``.
        """
        words = sorted({w.lower() for w in words})
        if self.unk_id is None or not words:
            return []
        rows = self(words).numpy()
        return [w for w, row in zip(words, rows) if self.unk_id in row.tolist()]

    def detokenize(self, ids: np.ndarray | tf.Tensor) -> list[str]:
        """Turns id rows back into text with the layer's own detokenizer (specials dropped)."""
        rows = np.atleast_2d(np.asarray(ids))
        special = {self.pad_id, self.cls_id, self.sep_id, self.mask_id}
        texts = []
        for row in rows:
            kept = tf.constant([[i for i in row.tolist() if i not in special]], tf.int32)
            text = self.layer.detokenize(kept)
            texts.append(_as_text(np.asarray(text).reshape(-1)[0]))
        return texts

    @classmethod
    def from_source(cls, preset: str | Path, sequence_length: int = 32
                    ) -> PresetCaptionTokenizer:
        """The tokenizer of a keras-hub model preset: a name (``"bert_base_en_uncased"``,
        downloaded or cached) or a local preset folder (``config.json`` + ``tokenizer.json``).
        """
        layer = keras_hub.tokenizers.Tokenizer.from_preset(str(preset))
        return cls(layer, sequence_length=sequence_length)

    def get_config(self) -> dict:
        """The constructor arguments except the layer (saved as its preset files)."""
        return {"sequence_length": self.sequence_length}

    def save_to_preset(self, preset_dir: str | Path) -> None:
        """Writes the layer's ``tokenizer.json`` + ``assets/tokenizer/`` and
        ``tokenizer_config.json`` (class name and sequence length).

        Args:
            preset_dir: Folder to write into (created if missing).
        """
        folder = Path(preset_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.layer.save_to_preset(str(folder))
        config = {"class_name": type(self).__name__, "config": self.get_config()}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_preset(cls, preset_dir: str | Path) -> PresetCaptionTokenizer:
        """Loads a folder written by `save_to_preset`, or a model preset folder whose
        ``tokenizer.json`` is a keras-hub model tokenizer (the sequence length then comes
        from its ``preprocessor.json``).

        Raises:
            DatasetFormatError: A file is missing or unreadable (the message names it).
        """
        folder = Path(preset_dir)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            config_path = folder / PRESET_PREPROCESSOR_FILE
        if not config_path.is_file():
            raise DatasetFormatError(config_path, "file not found",
                                     "a folder written by PresetCaptionTokenizer.save_to_preset")
        config = _read_sequence_length(config_path)
        return cls(_load_tokenizer_layer(folder), **config)

    save = save_to_preset
    load = from_preset


def _unknown_token_id(layer) -> int | None:
    """The id of the unknown token (WordPiece ``oov_token`` or ``unk_token``), or None."""
    token = getattr(layer, "oov_token", None) or getattr(layer, "unk_token", None)
    if token is None:
        return None
    value = layer.token_to_id(token)
    return None if value is None else int(value)


def _as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _tokenizer_class_name(folder: Path) -> str | None:
    """The class named by ``folder/tokenizer.json`` (None when absent or unreadable)."""
    try:
        config = json.loads((folder / PRESET_TOKENIZER_FILE).read_text(encoding="utf-8"))
        return str(config.get("class_name"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _holds_preset_tokenizer(folder: Path) -> bool:
    """Whether ``folder`` holds a keras-hub model tokenizer rather than a learnt vocabulary."""
    if (folder / CONFIG_FILE).is_file():
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return False  # reported by the caller's own read
        return isinstance(config, dict) and config.get("class_name") == \
            PresetCaptionTokenizer.__name__
    name = _tokenizer_class_name(folder)
    return name is not None and name != CaptionWordPieceTokenizer.__name__


def _load_tokenizer_layer(folder: Path) -> keras_hub.tokenizers.Tokenizer:
    """The keras-hub tokenizer layer of ``folder/tokenizer.json`` with its assets loaded."""
    path = folder / PRESET_TOKENIZER_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        layer = keras.saving.deserialize_keras_object(config)
        layer.load_preset_assets(str(folder))
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found (or its assets/tokenizer/ files)",
                                 "a keras-hub tokenizer preset (tokenizer.save_to_preset)"
                                 ) from None
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise DatasetFormatError(path, f"unreadable tokenizer ({err})",
                                 "a keras-hub tokenizer preset (tokenizer.save_to_preset)"
                                 ) from None
    return layer


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
