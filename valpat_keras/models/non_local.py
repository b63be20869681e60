"""Non-local blocks (Wang et al. 2018) inside a keras-hub ResNet, as AGW places them.

AGW (Ye et al. 2021, "Deep Learning for Person Re-identification: A Survey and Outlook")
adds non-local attention after the last 2 residual blocks of stage 2 and the last 3 of
stage 3 of a ResNet-50 (``non_layers=[0, 2, 3, 0]`` in the reference code
mangye16/ReID-Survey modeling/backbones/resnet_nl.py, and fast-reid's
``nl_layers_per_stage['50x']`` in fastreid/modeling/backbones/resnet.py). Each block's
output batch norm starts at zero scale and shift, so the inserted block is the identity at
initialisation and a pretrained encoder is unchanged until training moves it.
"""

from __future__ import annotations

import keras
from keras import ops

from valpat_keras.models.resnet_parts import block_output, resnet_segment

#: Non-local blocks per ResNet stage in AGW's ResNet-50 (stage 1 to 4).
AGW_NON_LOCAL_BLOCKS = (0, 2, 3, 0)


@keras.saving.register_keras_serializable(package="valpat_keras")
class NonLocalBlock(keras.layers.Layer):
    """The embedded-dot-product non-local block with a residual connection, channels last.

    ``z = x + BN(W(softmax-free attention))``: 1x1 projections theta, phi and g to
    ``inter_channels``, the affinity ``theta(x) phi(x)^T / N`` over the ``N = H W``
    positions, ``y = affinity g(x)``, a 1x1 projection back to the input channels and a
    batch norm whose scale and shift start at zero (the block starts as the identity).

    Args:
        inter_channels: Channels of theta / phi / g. AGW's reference code and fast-reid
            compute ``reduc_ratio // reduc_ratio``, i.e. 1 (the default here, to reproduce
            them); the non-local paper uses half the input channels.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Example:

    ```python
    block = NonLocalBlock()
    block(np.random.rand(2, 16, 8, 512).astype("float32")).shape   # (2, 16, 8, 512)
    ```
    """

    def __init__(self, inter_channels: int = 1, **kwargs):
        super().__init__(**kwargs)
        # === Layers ===
        def projection(units, name):
            # A 1x1 convolution with bias (PyTorch's Conv2d default) as a Dense on channels.
            return keras.layers.Dense(units, dtype=self.dtype_policy, name=name)

        self.theta = projection(inter_channels, "theta")
        self.phi = projection(inter_channels, "phi")
        self.g = projection(inter_channels, "g")
        self.projection = None
        self.batch_norm = keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, gamma_initializer="zeros", dtype=self.dtype_policy,
            name="batch_norm")
        # === Config ===
        self.inter_channels = int(inter_channels)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        for layer in (self.theta, self.phi, self.g):
            layer.build(input_shape)
        self.projection = keras.layers.Dense(channels, dtype=self.dtype_policy, name="w")
        self.projection.build((*input_shape[:-1], self.inter_channels))
        self.batch_norm.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        height, width = ops.shape(inputs)[1], ops.shape(inputs)[2]
        positions = height * width

        def flat(layer):
            return ops.reshape(layer(inputs), (-1, positions, self.inter_channels))

        affinity = ops.matmul(flat(self.theta), ops.transpose(flat(self.phi), (0, 2, 1)))
        affinity = affinity / ops.cast(positions, affinity.dtype)
        attended = ops.reshape(ops.matmul(affinity, flat(self.g)),
                               (-1, height, width, self.inter_channels))
        return inputs + self.batch_norm(self.projection(attended), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"inter_channels": self.inter_channels})
        return config


def non_local_positions(stackwise_num_blocks, counts=AGW_NON_LOCAL_BLOCKS) -> list[tuple]:
    """The ``(stack, block)`` residual blocks followed by a non-local block.

    As AGW: the last ``counts[s]`` blocks of stage ``s`` (``layers[s] - (i + 1)``).
    ``counts`` longer than the stages is cut; a count above a stage's blocks is clipped.

    Args:
        stackwise_num_blocks: Residual blocks per stage of the ResNet.
        counts: Non-local blocks per stage.

    Returns:
        The positions in network order.
    """
    positions = []
    for stack, (blocks, count) in enumerate(zip(stackwise_num_blocks, counts)):
        first = blocks - min(int(count), blocks)
        positions.extend((stack, block) for block in range(first, blocks))
    return positions


def split_at_blocks(backbone: keras.Model, positions) -> list[keras.Model]:
    """The backbone as consecutive segments ending after each of ``positions``.

    Returns ``len(positions) + 1`` models on the backbone's own layers: the first from the
    input, the last up to the output; calling them in turn is the backbone.
    """
    cuts = [block_output(backbone, stack, block) for stack, block in positions]
    starts, ends = [None, *cuts], [*cuts, None]
    if cuts and cuts[-1] is backbone.output:
        starts, ends = starts[:-1], ends[:-1]  # a block after the very last residual block
    return [resnet_segment(backbone, start, end, name=f"segment{index}")
            for index, (start, end) in enumerate(zip(starts, ends))]
