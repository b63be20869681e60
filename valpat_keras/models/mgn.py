"""The pieces of MGN, the Multiple Granularity Network (Wang et al. 2018), on a keras-hub ResNet.

As fast-reid builds it (fastreid/modeling/meta_arch/mgn.py, configs/Base-MGN.yml): the
ResNet is shared up to the first block of stage 3 (``layer3[0]``, the paper's
res_conv4_1); three branches each own a copy of the rest of stage 3 and of stage 4: a
global branch (the encoder's own layers, at the encoder's last stride) and two part
branches at last stride 1, whose feature maps are cut into 2 and 3 horizontal stripes.
Eight `EmbeddingHead` s (one per branch map and per stripe) pool, reduce to 256 dimensions
and batch-normalise; the retrieval embedding is their concatenation (8 x 256 = 2048).

Here the stage before the last plays stage 3 and the last stage plays stage 4, so any
ResNet configuration with two stages or more works (``"tiny"`` in the tests).
"""

from __future__ import annotations

import math

import keras

from valpat_keras.models.batch_norm import use_closed_form_batch_norm
from valpat_keras.models.fast_layers import use_fast_layers
from valpat_keras.models.reid_head import BNNeck
from valpat_keras.models.resnet_parts import (
    block_output,
    copy_layer_weights,
    require_resnet,
    resnet_segment,
)

#: The branches and stripes of MGN, in fast-reid's order of the concatenated embedding
#: (b1, b2, b3, b21, b22, b31, b32, b33; fastreid/modeling/meta_arch/mgn.py ``pred_feat``).
MGN_HEAD_NAMES = ("b1", "b2", "b3", "b21", "b22", "b31", "b32", "b33")
#: Stripes of the two part branches (2 and 3, ``torch.chunk(b2_feat, 2, dim=2)`` / ``3``).
MGN_PART_STRIPES = (2, 3)


def stripe_bounds(height: int, parts: int) -> list[tuple[int, int]]:
    """The row ranges ``[start, stop)`` of ``parts`` horizontal stripes of a feature map.

    ``torch.chunk`` semantics, as fast-reid's MGN splits: stripes of ``ceil(height /
    parts)`` rows, the last one shorter (height 16 in 3: rows 0-6, 6-12, 12-16). Where
    chunking would give fewer than ``parts`` stripes (height 4 in 3: two chunks of 2, which
    fast-reid cannot unpack), the bins of adaptive pooling are used instead (``floor(i h /
    n)`` to ``ceil((i + 1) h / n)``, overlapping), so every height from 1 up works.

    Args:
        height: Rows of the feature map.
        parts: Number of stripes.

    Returns:
        ``parts`` (start, stop) pairs, each non-empty.
    """
    size = math.ceil(height / parts)
    chunks = [(i * size, min((i + 1) * size, height)) for i in range(parts)
              if i * size < height]
    if len(chunks) == parts:
        return chunks
    return [(i * height // parts, math.ceil((i + 1) * height / parts)) for i in range(parts)]


def mgn_split_point(backbone: keras.Model):
    """Where MGN's branches leave the shared trunk: the output of the stage-3 first block."""
    return block_output(backbone, len(backbone.stackwise_num_blocks) - 2, 0)


def build_part_branch(backbone: keras.Model, name: str) -> keras.Model:
    """A copy of the backbone after `mgn_split_point`, with its last stage at stride 1.

    The copy is cut from a new `ResNetBackbone` of the same configuration (last stride 1,
    fast-reid's ``res_p_conv5``) and starts from the backbone's weights (fast-reid:
    ``deepcopy`` of the rest of stage 3 and ``load_state_dict`` of stage 4).

    Args:
        backbone: The encoder's `ResNetBackbone`.
        name: Model name of the branch.

    Returns:
        A model from the split-point feature map to the branch's feature map.
    """
    config = backbone.get_config()
    config["stackwise_num_strides"] = [*config["stackwise_num_strides"][:-1], 1]
    config["name"] = f"{name}_resnet"
    copy = type(backbone).from_config(config)
    use_closed_form_batch_norm(copy)
    use_fast_layers(copy)
    branch = resnet_segment(copy, mgn_split_point(copy), None, name=name)
    copy_layer_weights(backbone, branch)
    return branch


def build_mgn_trunk(encoder) -> tuple[keras.Model, keras.Model]:
    """The shared trunk and the global branch of MGN, both on the encoder's own layers.

    Args:
        encoder: A ResNet `ImageEncoder`.

    Returns:
        ``(trunk, global_branch)``: normalised images to the split-point map, and that map
        to the global branch's feature map (the rest of the encoder's backbone).

    Raises:
        InputError: The encoder is not a ResNet of two stages or more.
    """
    backbone = require_resnet(encoder, "MGN")
    split = mgn_split_point(backbone)
    return (resnet_segment(backbone, None, split, name="mgn_trunk"),
            resnet_segment(backbone, split, None, name="mgn_global_branch"))


@keras.saving.register_keras_serializable(package="valpat_keras")
class EmbeddingHead(keras.layers.Layer):
    """A pooled feature to a reduced, batch-normalised embedding and identity logits.

    fast-reid's ``EmbeddingHead`` after its pooling (fastreid/modeling/heads/
    embedding_head.py): a bias-free 1x1 convolution to ``embedding_dim`` (a `Dense` on the
    pooled vector; Kaiming fan-out initialisation), a BN neck with a frozen zero shift
    (`BNNeck`) and a bias-free linear classifier (normal, std 0.01). Returns
    ``(embedding, logits)``; the embedding is the one after the neck (``NECK_FEAT: after``
    in fast-reid's MGN configs).

    Args:
        embedding_dim: Reduced dimension (MGN: 256); 0 keeps the pooled dimension.
        num_classes: Number of training identities.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Example:

    ```python
    head = EmbeddingHead(256, num_classes=751)
    embedding, logits = head(pooled)          # (B, 256), (B, 751)
    ```
    """

    def __init__(self, embedding_dim: int = 256, num_classes: int = 1, **kwargs):
        super().__init__(**kwargs)
        # === Layers ===
        self.reduction = None
        if embedding_dim > 0:
            self.reduction = keras.layers.Dense(
                embedding_dim, use_bias=False, dtype=self.dtype_policy, name="reduction",
                kernel_initializer=keras.initializers.VarianceScaling(
                    2.0, mode="fan_out", distribution="untruncated_normal"))
        self.neck = BNNeck(dtype=self.dtype_policy, name="bnneck")
        self.classifier = keras.layers.Dense(
            num_classes, use_bias=False, dtype=self.dtype_policy, name="classifier",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
        # === Config ===
        self.embedding_dim = int(embedding_dim)
        self.num_classes = int(num_classes)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.reduction is not None:
            self.reduction.build(shape)
            shape = (*shape[:-1], self.embedding_dim)
        self.neck.build(shape)
        self.classifier.build(shape)
        self.built = True

    def call(self, pooled, training=None):
        features = pooled if self.reduction is None else self.reduction(pooled)
        embedding = self.neck(features, training=training)
        return embedding, self.classifier(embedding)

    def compute_output_shape(self, input_shape):
        dim = self.embedding_dim or input_shape[-1]
        return (input_shape[0], dim), (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({"embedding_dim": self.embedding_dim, "num_classes": self.num_classes})
        return config
