"""The caption encoder: a small keras-hub transformer over WordPiece token ids, or a
pretrained keras-hub text backbone (BERT, DistilBERT, RoBERTa, CLIP text) from a preset.

`build_text_encoder("tiny", vocabulary_size, sequence_length)` is the transformer trained from
scratch on the vocabulary learnt from the captions (the SynthPed default);
`load_text_preset("bert_base_en_uncased")` (a keras-hub preset name or a local preset folder)
returns a `PresetTextEncoder` with the model's own tokenizer as a
`valpat_keras.data.tokenizer.PresetCaptionTokenizer`, and `build_text_encoder(PRESET)` its
encoder alone.
"""

from __future__ import annotations

from pathlib import Path

import keras
import keras_hub
from keras import ops

from valpat_keras.data.tokenizer import PresetCaptionTokenizer
from valpat_keras.errors import InputError
from valpat_keras.models.pooling import TokenPooling
from valpat_keras.models.serialization import deserialize_nested

#: Named text encoder sizes (the vocabulary size comes from the tokenizer).
TEXT_ENCODER_CONFIGS: dict[str, dict] = {
    "tiny": {"num_layers": 2, "num_heads": 4, "hidden_dim": 128, "intermediate_dim": 256},
    "base": {"num_layers": 6, "num_heads": 8, "hidden_dim": 512, "intermediate_dim": 2048},
}


@keras.saving.register_keras_serializable(package="valpat_keras")
class TextEncoder(keras_hub.models.Backbone):
    """Caption encoder: int32 token ids (B, L), 0 = padding, to one vector per caption.

    Token and position embeddings, ``num_layers`` keras-hub `TransformerEncoder` blocks
    that ignore padding, a final layer norm and pooling (the ``[CLS]`` position the
    `CaptionTokenizer` puts first, or the mean over non-padding tokens).

    Args:
        vocabulary_size: int. Size of the tokenizer's vocabulary.
        sequence_length: int. Longest sequence (size of the position table).
        num_layers: int. Transformer blocks. Defaults to ``2``.
        num_heads: int. Attention heads. Defaults to ``4``.
        hidden_dim: int. Width; the output dimension. Defaults to ``128``.
        intermediate_dim: int. Feed-forward width. Defaults to ``256``.
        dropout: float. Dropout rate. Defaults to ``0.0``.
        pooling: str. ``"cls"`` or ``"mean"``. Defaults to ``"cls"``.
        dtype: str | keras.DTypePolicy | None. Compute dtype policy.
        **kwargs: Standard `keras.Model` arguments (e.g. ``name``).

    Example:

    ```python
    encoder = build_text_encoder("tiny", vocabulary_size=2000, sequence_length=32)
    features = encoder(np.array([[2, 15, 27, 3, 0, 0]], "int32"))  # (1, 128)
    ```
    """

    def __init__(self, vocabulary_size: int, sequence_length: int, num_layers: int = 2,
                 num_heads: int = 4, hidden_dim: int = 128, intermediate_dim: int = 256,
                 dropout: float = 0.0, pooling: str = "cls", dtype=None, **kwargs):
        # === Layers ===
        self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size, sequence_length=sequence_length,
            embedding_dim=hidden_dim, dtype=dtype, name="token_and_position_embedding")
        self.transformer_layers = [
            keras_hub.layers.TransformerEncoder(
                intermediate_dim=intermediate_dim, num_heads=num_heads, dropout=dropout,
                dtype=dtype, name=f"transformer_layer_{i}")
            for i in range(num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=dtype, name="final_layernorm")
        self.pooling_layer = TokenPooling(mode=pooling, dtype=dtype, name="pooling")

        # === Functional Model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = ops.not_equal(token_ids, 0)
        x = self.embedding(token_ids)
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        x = self.final_norm(x)
        features = self.pooling_layer(x, mask=padding_mask)
        super().__init__(inputs=token_ids, outputs=features, dtype=dtype, **kwargs)

        # === Config ===
        self.vocabulary_size = int(vocabulary_size)
        self.sequence_length = int(sequence_length)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.pooling = pooling
        self.feature_dim = int(hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "pooling": self.pooling,
        })
        return config


#: Pooling of a `PresetTextEncoder`: ``"pooled"`` BERT's ``pooled_output`` (tanh dense on
#: ``[CLS]``), ``"cls"`` the first token, ``"eos"`` the (first) end token, ``"mean"`` the mean
#: over the tokens up to the end token.
PRESET_POOLINGS = ("pooled", "cls", "eos", "mean")


def default_preset_pooling(backbone: keras_hub.models.Backbone) -> str:
    """``"pooled"`` for a backbone with a ``pooled_output`` (BERT), ``"eos"`` for CLIP's text
    encoder (its causal attention summarises at the end token), else ``"cls"``."""
    if isinstance(backbone.output, dict) and "pooled_output" in backbone.output:
        return "pooled"
    if isinstance(backbone, keras_hub.models.CLIPTextEncoder):
        return "eos"
    return "cls"


@keras.saving.register_keras_serializable(package="valpat_keras")
class PresetTextEncoder(keras_hub.models.Backbone):
    """Caption encoder over a pretrained keras-hub text backbone: token ids (B, L) to (B, D).

    Takes the same single input as `TextEncoder`, the ids of the backbone's own tokenizer
    framed ``start ... end pad ...`` (`valpat_keras.data.tokenizer.PresetCaptionTokenizer`),
    and builds what the backbone asks for: ``padding_mask`` (the tokens up to and including
    the first end token, so padding needs no particular id: CLIP pads with 0, RoBERTa with
    1), ``segment_ids`` (zeros). The pooled vector feeds the projection into the shared
    space, as `TextEncoder`'s does.

    Args:
        backbone: keras_hub.models.Backbone. A text backbone whose inputs are among
            ``token_ids``, ``padding_mask``, ``segment_ids`` (``BertBackbone``,
            ``DistilBertBackbone``, ``RobertaBackbone``, ``CLIPTextEncoder``, ...).
        end_token_id: int. The tokenizer's end id (``[SEP]``, ``</s>``, end of text).
        pooling: str | None. One of `PRESET_POOLINGS`; None: `default_preset_pooling`.
        dtype: str | keras.DTypePolicy | None. Compute dtype policy of the pooling.
        **kwargs: Standard `keras.Model` arguments (e.g. ``name``).

    Example:

    ```python
    encoder, tokenizer = load_text_preset("bert_tiny_en_uncased", sequence_length=32)
    features = encoder(tokenizer(["a woman with an umbrella"]))  # (1, hidden_dim)
    ```
    """

    def __init__(self, backbone, end_token_id: int, pooling: str | None = None, dtype=None,
                 **kwargs):
        pooling = pooling or default_preset_pooling(backbone)
        _check_text_backbone(backbone, pooling)
        # === Layers ===
        self.backbone = backbone
        self.pooling_layer = TokenPooling(mode="mean" if pooling == "mean" else "cls",
                                          dtype=dtype, name="pooling")

        # === Functional Model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        is_end = ops.cast(ops.equal(token_ids, int(end_token_id)), "int32")
        # Tokens before the first end token, and that end token itself.
        padding_mask = ops.equal(ops.cumsum(is_end, axis=1) - is_end, 0)
        features = self._pool(self._backbone_outputs(token_ids, padding_mask), pooling,
                              token_ids, padding_mask, is_end)
        super().__init__(inputs=token_ids, outputs=features, dtype=dtype, **kwargs)

        # === Config ===
        self.end_token_id = int(end_token_id)
        self.pooling = pooling
        self.feature_dim = int(features.shape[-1])
        self.vocabulary_size = int(backbone.vocabulary_size)
        self.sequence_length = int(getattr(backbone, "max_sequence_length", 0) or 0) or None

    def _backbone_outputs(self, token_ids, padding_mask):
        values = {"token_ids": token_ids, "padding_mask": ops.cast(padding_mask, "int32"),
                  "segment_ids": ops.zeros_like(token_ids)}
        names = [tensor.name.split(":")[0] for tensor in self.backbone.inputs]
        return self.backbone({name: values[name] for name in names})

    def _pool(self, outputs, pooling, token_ids, padding_mask, is_end):
        if pooling == "pooled":
            return outputs["pooled_output"]
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        if pooling == "eos":
            # argmax gives the first end token; pad ids after it are never picked.
            index = ops.argmax(is_end, axis=-1)[:, None, None]
            return ops.squeeze(ops.take_along_axis(sequence, index, axis=1), axis=1)
        return self.pooling_layer(sequence, mask=padding_mask)

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": keras.layers.serialize(self.backbone),
            "end_token_id": self.end_token_id,
            "pooling": self.pooling,
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**deserialize_nested(config, ("backbone",), custom_objects))


def _check_text_backbone(backbone, pooling: str) -> None:
    """Raises `InputError` for a backbone `PresetTextEncoder` cannot feed or pool."""
    if pooling not in PRESET_POOLINGS:
        raise InputError(f"Unknown text pooling {pooling!r}; choose one of {PRESET_POOLINGS}")
    names = {tensor.name.split(":")[0] for tensor in getattr(backbone, "inputs", None) or []}
    if "token_ids" not in names or names - {"token_ids", "padding_mask", "segment_ids"}:
        raise InputError(
            f"{type(backbone).__name__} is no text backbone a caption encoder can use: its "
            f"inputs are {sorted(names)}, expected token_ids (+ padding_mask, segment_ids), "
            "as BertBackbone, DistilBertBackbone, RobertaBackbone or CLIPTextEncoder take")
    pooled = isinstance(backbone.output, dict) and "pooled_output" in backbone.output
    if pooling == "pooled" and not pooled:
        raise InputError(f"{type(backbone).__name__} has no pooled_output; use pooling "
                         "'cls', 'eos' or 'mean'")


def _load_preset_part(load, preset: str, what: str):
    """``load(preset)``, with any failure as an `InputError` naming the preset and ``what``."""
    try:
        return load(preset)
    except InputError:
        raise
    except Exception as error:  # network, unknown name, no such file in the preset
        raise InputError(
            f"Could not load the {what} of the text preset {preset!r} ({error}). Expected a "
            f"keras-hub preset name that is cached or downloadable (e.g. "
            f"'bert_base_en_uncased') or a preset folder with config.json, model.weights.h5 "
            f"and tokenizer.json (written by backbone.save_to_preset and "
            f"tokenizer.save_to_preset).") from error


def load_text_preset(preset: str | Path, sequence_length: int = 32, pooling: str | None = None,
                     name: str = "text_encoder"
                     ) -> tuple[PresetTextEncoder, PresetCaptionTokenizer]:
    """A pretrained text tower and its own tokenizer from a keras-hub preset.

    Args:
        preset: A keras-hub preset name (``"bert_base_en_uncased"``, ``"roberta_base_en"``,
            ...; downloaded or cached) or a local preset folder (``config.json`` +
            ``model.weights.h5`` + ``tokenizer.json`` and ``assets/tokenizer/``), loaded
            through the same ``from_preset`` calls.
        sequence_length: Caption length in tokens, capped at the backbone's
            ``max_sequence_length``.
        pooling: One of `PRESET_POOLINGS`; None: `default_preset_pooling`.
        name: Model name.

    Returns:
        ``(encoder, tokenizer)``: a `PresetTextEncoder` and a `PresetCaptionTokenizer`.

    Raises:
        InputError: A path that does not exist, a preset that cannot be loaded, or a backbone
            that is no text backbone (the message names the preset).
    """
    preset = _checked_preset(preset)
    backbone = _load_preset_part(keras_hub.models.Backbone.from_preset, preset, "backbone")
    limit = int(getattr(backbone, "max_sequence_length", 0) or sequence_length)
    tokenizer = load_text_tokenizer(preset, min(int(sequence_length), limit))
    encoder = PresetTextEncoder(backbone, end_token_id=tokenizer.sep_id, pooling=pooling,
                                name=name)
    return encoder, tokenizer


def _checked_preset(preset: str | Path) -> str:
    """``preset`` as a string; an `InputError` for a path that holds no preset."""
    preset = str(preset)
    looks_like_path = "/" in preset or "\\" in preset or preset.startswith(".")
    if looks_like_path and "://" not in preset and not (Path(preset) / "config.json").is_file():
        raise InputError(f"{preset}: no text preset found; expected a folder with config.json "
                         "(backbone.save_to_preset) and tokenizer.json "
                         "(tokenizer.save_to_preset), or a keras-hub preset name")
    if not looks_like_path and preset not in keras_hub.models.Backbone.presets \
            and not Path(preset).is_dir():
        # Caught before any download attempt: most likely a misspelt size or preset name.
        raise InputError(f"Unknown text encoder {preset!r}: not a size "
                         f"({sorted(TEXT_ENCODER_CONFIGS)}), a keras-hub preset name (e.g. "
                         "'bert_base_en_uncased') or a preset folder")
    return preset


def load_text_tokenizer(preset: str | Path, sequence_length: int = 32
                        ) -> PresetCaptionTokenizer:
    """The tokenizer of a text preset alone (no weights loaded), as `load_text_preset` gives it.

    Raises:
        InputError: A path that holds no preset, or a preset without a tokenizer.
    """
    preset = _checked_preset(preset)
    return _load_preset_part(lambda p: PresetCaptionTokenizer.from_source(p, sequence_length),
                             preset, "tokenizer")


def is_text_encoder_config(config: str) -> bool:
    """Whether ``config`` names a `TEXT_ENCODER_CONFIGS` size (else it is taken as a preset)."""
    return config in TEXT_ENCODER_CONFIGS


def build_text_encoder(config: str = "tiny", vocabulary_size: int = 2000,
                       sequence_length: int = 32, pooling: str | None = None, dtype=None,
                       name: str = "text_encoder") -> TextEncoder | PresetTextEncoder:
    """Builds the caption encoder: a named size (random init) or a pretrained preset.

    Args:
        config: A key of `TEXT_ENCODER_CONFIGS` (``"tiny"``, ``"base"``), or a keras-hub
            preset name / preset folder of a BERT-family or CLIP text backbone (see
            `load_text_preset`, which also returns the preset's tokenizer that its ids must
            come from).
        vocabulary_size: The tokenizer's vocabulary size (``tokenizer.vocabulary_size``);
            a preset has its own.
        sequence_length: The tokenizer's sequence length.
        pooling: ``"cls"`` (the default) or ``"mean"`` for a named size; one of
            `PRESET_POOLINGS` for a preset (None: `default_preset_pooling`).
        dtype: Compute dtype policy (``None``: the global policy).
        name: Model name.

    Returns:
        The encoder; ``encoder.feature_dim`` is its output width.

    Raises:
        InputError: A preset that cannot be loaded (a `ValueError`).
    """
    if not is_text_encoder_config(config):
        return load_text_preset(config, sequence_length, pooling=pooling, name=name)[0]
    return TextEncoder(vocabulary_size=vocabulary_size, sequence_length=sequence_length,
                       pooling=pooling or "cls", dtype=dtype, name=name,
                       **TEXT_ENCODER_CONFIGS[config])
