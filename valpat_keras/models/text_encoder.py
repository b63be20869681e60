"""The caption encoder: a small keras-hub transformer over WordPiece token ids."""

from __future__ import annotations

import keras
import keras_hub
from keras import ops

from valpat_keras.models.pooling import TokenPooling

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


def build_text_encoder(config: str = "tiny", vocabulary_size: int = 2000,
                       sequence_length: int = 32, pooling: str = "cls", dtype=None,
                       name: str = "text_encoder") -> TextEncoder:
    """Builds a randomly initialised `TextEncoder` from a named size.

    Args:
        config: A key of `TEXT_ENCODER_CONFIGS` (``"tiny"``, ``"base"``).
        vocabulary_size: The tokenizer's vocabulary size (``tokenizer.vocabulary_size``).
        sequence_length: The tokenizer's sequence length.
        pooling: ``"cls"`` or ``"mean"``.
        dtype: Compute dtype policy (``None``: the global policy).
        name: Model name.

    Returns:
        The encoder; ``encoder.feature_dim`` is its output width.

    Raises:
        ValueError: Unknown configuration name.
    """
    if config not in TEXT_ENCODER_CONFIGS:
        raise ValueError(f"Unknown text encoder config {config!r}; "
                         f"choose one of {sorted(TEXT_ENCODER_CONFIGS)}")
    return TextEncoder(vocabulary_size=vocabulary_size, sequence_length=sequence_length,
                       pooling=pooling, dtype=dtype, name=name, **TEXT_ENCODER_CONFIGS[config])
