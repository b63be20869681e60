"""keras-hub ViTs at person aspect ratios: resized position grids and overlapping patches.

A ViT preset trained at 224x224 has a square grid of position embeddings (14x14 for 16-pixel
patches). Person re-ID runs at 256x128 or 384x128, so TransReID (He et al. 2021) and PASS
(Zhu et al. 2022) resize the grid of patch position embeddings with bicubic interpolation and
keep the class token's embedding, and optionally embed overlapping patches (TransReID's
stride 12 with 16-pixel patches: a 21x10 grid at 256x128) for finer local features.

`load_vit_at_size` does both for a keras-hub `ViTBackbone` preset (a name or a folder):
every other weight is copied unchanged. With an overlapping stride the backbone is a
`StridedViTBackbone` (a `ViTBackbone` whose patch convolution has ``strides < patch_size``).
`interpolate_position_embedding` is the NumPy resize on its own, equal to PyTorch's
``F.interpolate(mode="bicubic", align_corners=False)`` (no antialiasing), as DeiT's and
TransReID's resizing code calls it.
"""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
from keras_hub.src.models.backbone import Backbone
from keras_hub.src.models.vit.vit_layers import ViTEncoder, ViTPatchingAndEmbedding

from valpat_keras.errors import InputError

__all__ = ["StridedViTBackbone", "StridedViTPatchingAndEmbedding",
           "interpolate_position_embedding", "load_vit_at_size", "resize_vit"]

#: Keys' cubic convolution parameter of PyTorch's (and OpenCV's) bicubic resize.
BICUBIC_A = -0.75


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys' kernel at distances ``t+1, t, 1-t, 2-t``: the four taps' weights, ``(n, 4)``."""
    a = BICUBIC_A
    x = np.stack([t + 1.0, t, 1.0 - t, 2.0 - t], axis=-1)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1.0, near, far)


def bicubic_resize_matrix(old: int, new: int) -> np.ndarray:
    """The ``(new, old)`` matrix of a 1-D bicubic resize (half-pixel centres, edges clamped)."""
    scale = old / new
    source = (np.arange(new) + 0.5) * scale - 0.5  # not clamped at 0, as PyTorch's cubic mode
    first = np.floor(source).astype(np.int64)
    weights = _cubic_weights(source - first)
    taps = np.clip(first[:, None] + np.arange(-1, 3)[None], 0, old - 1)
    matrix = np.zeros((new, old))
    np.add.at(matrix, (np.repeat(np.arange(new), 4), taps.ravel()), weights.ravel())
    return matrix


def interpolate_position_embedding(weights: np.ndarray, old_grid: tuple[int, int],
                                   new_grid: tuple[int, int], num_prefix_tokens: int = 1
                                   ) -> np.ndarray:
    """Resizes the patch position embeddings to a new grid, bicubically; keeps prefix tokens.

    Args:
        weights: ``(num_prefix_tokens + old_h * old_w, dim)`` position embeddings (the
            class token's first, then the patches row by row), or the same with a leading
            batch axis of 1.
        old_grid: ``(old_h, old_w)`` patches of the trained grid.
        new_grid: ``(new_h, new_w)`` patches wanted.
        num_prefix_tokens: Embeddings before the patches kept as they are (1: the class token).

    Returns:
        ``(num_prefix_tokens + new_h * new_w, dim)`` embeddings (with the leading axis if
        given), in the input's dtype, computed in float64.
    """
    weights = np.asarray(weights)
    batched = weights.ndim == 3
    table = weights[0] if batched else weights
    old_h, old_w = old_grid
    new_h, new_w = new_grid
    if table.ndim != 2 or table.shape[0] != num_prefix_tokens + old_h * old_w:
        raise InputError(f"interpolate_position_embedding: expected {num_prefix_tokens} + "
                         f"{old_h} x {old_w} embeddings, got an array of shape {weights.shape}")
    grid = table[num_prefix_tokens:].astype(np.float64).reshape(old_h, old_w, -1)
    rows, cols = bicubic_resize_matrix(old_h, new_h), bicubic_resize_matrix(old_w, new_w)
    resized = np.einsum("hy,yxd,wx->hwd", rows, grid, cols).reshape(new_h * new_w, -1)
    out = np.concatenate([table[:num_prefix_tokens], resized.astype(table.dtype)], axis=0)
    return out[None] if batched else out


@keras.saving.register_keras_serializable(package="valpat_keras")
class StridedViTPatchingAndEmbedding(ViTPatchingAndEmbedding):
    """keras-hub's ViT patch embedding with a convolution stride of its own (overlapping).

    The grid has ``(size - patch) // stride + 1`` patches along each side (pixels beyond the
    last full patch are not seen, as in TransReID). Weights have the same shapes and names
    as `ViTPatchingAndEmbedding`'s, only the number of positions differs.

    Args:
        image_size: ``(height, width)``.
        patch_size: ``(ph, pw)``.
        hidden_dim: Embedding size.
        patch_stride: ``(sh, sw)`` convolution strides.
        **kwargs: `ViTPatchingAndEmbedding`'s other arguments.
    """

    def __init__(self, image_size, patch_size, hidden_dim, patch_stride, **kwargs):
        super().__init__(image_size, patch_size, hidden_dim, **kwargs)
        self.patch_stride = tuple(patch_stride)
        self.grid_size = strided_grid(image_size, patch_size, self.patch_stride)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_positions = self.num_patches + (1 if self.use_class_token else 0)

    def build(self, input_shape):
        super().build(input_shape)
        # The same convolution with the overlapping stride (its kernel shape is unchanged).
        self.patch_embedding.strides = self.patch_stride

    def get_config(self):
        config = super().get_config()
        config.update({"patch_stride": self.patch_stride, "use_patch_bias": self.use_patch_bias,
                       "data_format": self.data_format})
        for derived in ("num_patches", "num_positions"):
            config.pop(derived, None)
        return config


def strided_grid(image_size, patch_size, patch_stride) -> tuple[int, int]:
    """Patches per side of a valid convolution: ``(size - patch) // stride + 1``."""
    return tuple((s - p) // t + 1 for s, p, t in zip(image_size, patch_size, patch_stride))


@keras.saving.register_keras_serializable(package="valpat_keras")
class StridedViTBackbone(keras_hub.models.ViTBackbone):
    """A `ViTBackbone` embedding overlapping patches (``patch_stride < patch_size``).

    Args:
        image_shape: ``(height, width, channels)`` (channels last).
        patch_size: ``int`` or ``(ph, pw)``.
        patch_stride: ``int`` or ``(sh, sw)``.
        **kwargs: `ViTBackbone`'s other arguments (``num_layers``, ``num_heads``,
            ``hidden_dim``, ``mlp_dim``, ...).
    """

    def __init__(self, image_shape, patch_size, patch_stride, num_layers, num_heads,
                 hidden_dim, mlp_dim, dropout_rate=0.0, attention_dropout=0.0,
                 layer_norm_epsilon=1e-6, use_mha_bias=True, use_mlp_bias=True,
                 use_class_token=True, use_patch_bias=True, dtype=None, **kwargs):
        patch_size = _pair(patch_size)
        patch_stride = _pair(patch_stride)
        inputs = keras.layers.Input(shape=image_shape, name="images")
        x = StridedViTPatchingAndEmbedding(
            image_size=tuple(image_shape[:2]), patch_size=patch_size, hidden_dim=hidden_dim,
            patch_stride=patch_stride, num_channels=image_shape[-1],
            use_class_token=use_class_token, use_patch_bias=use_patch_bias, dtype=dtype,
            name="vit_patching_and_embedding")(inputs)
        outputs = ViTEncoder(
            num_layers=num_layers, num_heads=num_heads, hidden_dim=hidden_dim,
            mlp_dim=mlp_dim, dropout_rate=dropout_rate, attention_dropout=attention_dropout,
            layer_norm_epsilon=layer_norm_epsilon, use_mha_bias=use_mha_bias,
            use_mlp_bias=use_mlp_bias, dtype=dtype, name="vit_encoder")(x)
        # ViTBackbone's own __init__ builds the non-overlapping layer: build the graph here.
        Backbone.__init__(self, inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.image_shape, self.patch_size, self.patch_stride = image_shape, patch_size, \
            patch_stride
        self.num_layers, self.num_heads, self.hidden_dim = num_layers, num_heads, hidden_dim
        self.mlp_dim, self.dropout_rate = mlp_dim, dropout_rate
        self.attention_dropout, self.layer_norm_epsilon = attention_dropout, layer_norm_epsilon
        self.use_mha_bias, self.use_mlp_bias = use_mha_bias, use_mlp_bias
        self.use_class_token, self.use_patch_bias = use_class_token, use_patch_bias
        self.data_format = "channels_last"

    def get_config(self):
        return {**super().get_config(), "patch_stride": self.patch_stride}


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)


def load_vit_at_size(preset: str, image_size: tuple[int, int], patch_stride: int | None = None
                     ) -> keras_hub.models.ViTBackbone:
    """A keras-hub ViT preset at another input size, e.g. 256x128 for person re-ID.

    Args:
        preset: A keras-hub preset name (``"vit_base_patch16_224_imagenet"``) or a folder
            written by ``save_to_preset``, holding a `ViTBackbone`.
        image_size: ``(height, width)`` of the input images.
        patch_stride: Stride of the patch convolution; smaller than the patch size makes
            overlapping patches (TransReID: 12 with 16-pixel patches). None: the patch size.

    Returns:
        The backbone at ``image_size`` with the preset's weights: position embeddings of the
        patches resized bicubically to the new grid, the class token's kept, all else copied.

    Example:

    ```python
    backbone = load_vit_at_size("vit_base_patch16_224_imagenet", (256, 128), patch_stride=12)
    tokens = backbone(images)  # (batch, 1 + 21 * 10, 768)
    ```
    """
    source = keras_hub.models.Backbone.from_preset(preset)
    if not isinstance(source, keras_hub.models.ViTBackbone):
        raise InputError(f"load_vit_at_size: preset {preset!r} holds a "
                         f"{type(source).__name__}, expected a ViTBackbone")
    return resize_vit(source, image_size, patch_stride)


def resize_vit(source: keras_hub.models.ViTBackbone, image_size: tuple[int, int],
               patch_stride: int | None = None) -> keras_hub.models.ViTBackbone:
    """`load_vit_at_size` on a backbone in memory (the source is left unchanged)."""
    height, width = (int(v) for v in image_size)
    patch = _pair(source.patch_size)
    stride = patch if patch_stride is None else _pair(patch_stride)
    if getattr(source, "data_format", "channels_last") != "channels_last":
        raise InputError("load_vit_at_size: only channels_last ViTs are supported")
    if height < patch[0] or width < patch[1] or min(stride) < 1 or any(
            s > p for s, p in zip(stride, patch)):
        raise InputError(f"load_vit_at_size: image_size {image_size} and patch_stride "
                         f"{patch_stride} must give at least one patch of {patch} with a "
                         f"stride between 1 and the patch size")
    if stride == patch and (height % patch[0] or width % patch[1]):
        raise InputError(f"load_vit_at_size: image_size {image_size} must be a multiple of "
                         f"the patch size {patch} (or give a patch_stride)")
    config = source.get_config()
    config["image_shape"] = (height, width, source.image_shape[-1])
    config.pop("data_format", None)
    if stride == patch:
        target = keras_hub.models.ViTBackbone.from_config(config)
    else:
        target = StridedViTBackbone.from_config({**config, "patch_stride": stride})
    _copy_weights(source, target, strided_grid(source.image_shape[:2], patch, patch),
                  strided_grid((height, width), patch, stride))
    return target


def _copy_weights(source, target, old_grid, new_grid) -> None:
    """Copies every weight, resizing the patches' position embeddings to ``new_grid``."""
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        target_layer = target.get_layer(layer.name)
        if layer.name == "vit_patching_and_embedding":
            prefix = 1 if source.use_class_token else 0
            position = layer.position_embedding.embeddings
            index = next(i for i, w in enumerate(layer.weights) if w.path == position.path)
            weights[index] = interpolate_position_embedding(weights[index], old_grid,
                                                            new_grid, prefix)
        target_layer.set_weights(weights)
