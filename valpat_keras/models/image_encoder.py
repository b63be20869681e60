"""The pedestrian image encoder: a keras-hub ResNet or ViT backbone plus pooling."""

from __future__ import annotations

import copy

import keras
import keras_hub

from valpat_keras.models.batch_norm import use_closed_form_batch_norm
from valpat_keras.models.fast_layers import use_fast_layers
from valpat_keras.models.pooling import TokenPooling, make_pooling_2d
from valpat_keras.models.serialization import deserialize_nested

#: ImageNet channel statistics; images enter the encoder in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: LUPerson's channel statistics, as its fast-reid fine-tuning configs give them
#: (``PIXEL_MEAN: [89.896, 79.200, 80.073]``, ``PIXEL_STD: [63.872, 64.305, 63.839]`` on
#: 0..255 pixels, e.g. LUPerson's ``configs/CMDM/mgn_R50_moco.yml``), brought to [0, 1].
LUP_MEAN = (89.896 / 255.0, 79.200 / 255.0, 80.073 / 255.0)
LUP_STD = (63.872 / 255.0, 64.305 / 255.0, 63.839 / 255.0)
#: Named pixel normalisations ``name -> (mean, std)`` of [0, 1] images. ``"preset"`` (the
#: statistics of an image preset's own converter) is resolved by
#: `valpat_keras.models.init.image_encoder_from_preset`.
PIXEL_NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "lup": (LUP_MEAN, LUP_STD),
}


def pixel_statistics(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a named normalisation (`PIXEL_NORMALIZATIONS`).

    Raises:
        ValueError: Unknown name.
    """
    if name not in PIXEL_NORMALIZATIONS:
        raise ValueError(f"Unknown pixel normalisation {name!r}; choose one of "
                         f"{sorted(PIXEL_NORMALIZATIONS)}")
    return PIXEL_NORMALIZATIONS[name]


def _resnet_config(num_filters: tuple[int, ...], num_blocks: tuple[int, ...],
                   block_type: str) -> dict:
    """A ResNet entry of `IMAGE_ENCODER_CONFIGS`: a 7x7 stem of 64 filters, stride 1 then 2s."""
    return {
        "family": "resnet",
        "input_conv_filters": [64],
        "input_conv_kernel_sizes": [7],
        "stackwise_num_filters": list(num_filters),
        "stackwise_num_blocks": list(num_blocks),
        "stackwise_num_strides": [1] + [2] * (len(num_filters) - 1),
        "block_type": block_type,
        "use_pre_activation": False,
    }


#: Named encoder configurations: ``family`` picks the keras-hub backbone class, the rest are
#: its constructor arguments (image shape and last stride are set by `build_image_encoder`).
IMAGE_ENCODER_CONFIGS: dict[str, dict] = {
    # The CPU test / demo size: one basic block per stage, 64/128/256 filters.
    "tiny": _resnet_config((64, 128, 256), (1, 1, 1), "basic_block"),
    "resnet18": _resnet_config((64, 128, 256, 512), (2, 2, 2, 2), "basic_block"),
    # The paper's encoder.
    "resnet50": _resnet_config((64, 128, 256, 512), (3, 4, 6, 3), "bottleneck_block"),
    "vit_tiny": {
        "family": "vit", "patch_size": 16, "num_layers": 12, "num_heads": 3,
        "hidden_dim": 192, "mlp_dim": 768,
    },
    "vit_small": {
        "family": "vit", "patch_size": 16, "num_layers": 12, "num_heads": 6,
        "hidden_dim": 384, "mlp_dim": 1536,
    },
}


@keras.saving.register_keras_serializable(package="valpat_keras")
class ImageEncoder(keras_hub.models.Backbone):
    """Pedestrian image encoder: images in [0, 1] to one feature vector per image.

    Wraps a keras-hub `ResNetBackbone` (feature map, pooled with GeM or average pooling)
    or `ViTBackbone` (tokens, pooled with the class token or the mean of patch tokens).
    Mean/std normalisation (ImageNet's unless ``pixel_mean`` / ``pixel_std`` say otherwise)
    happens inside, so pipelines feed float32 images in [0, 1] of shape (B, H, W, 3). This is the network VAL-PAT pretrains and the transfer
    tasks (re-ID, attributes, search) fine-tune.

    Args:
        backbone: keras_hub.models.ResNetBackbone | keras_hub.models.ViTBackbone. The
            network; its ``image_shape`` fixes the input shape.
        pooling: str. ``"gem"`` or ``"avg"`` for a ResNet; ``"token"`` (class token) or
            ``"avg"`` (mean of the patch tokens) for a ViT. Defaults to ``"gem"``.
        gem_p: float. Initial GeM exponent (learned). Defaults to ``3.0``.
        pixel_mean: tuple[float, float, float] | None. Channel means of [0, 1] images;
            None: ImageNet's (`IMAGENET_MEAN`). `PIXEL_NORMALIZATIONS` has LUPerson's.
        pixel_std: tuple[float, float, float] | None. Channel standard deviations; None:
            ImageNet's (`IMAGENET_STD`).
        dtype: str | keras.DTypePolicy | None. Compute dtype policy.
        **kwargs: Standard `keras.Model` arguments (e.g. ``name``).

    Example:

    ```python
    encoder = build_image_encoder("tiny", image_size=(64, 32))
    features = encoder(np.random.rand(2, 64, 32, 3).astype("float32"))  # (2, 256)
    encoder.save_to_preset("/tmp/enc")
    encoder = ImageEncoder.from_preset("/tmp/enc")
    ```
    """

    def __init__(self, backbone, pooling: str = "gem", gem_p: float = 3.0, pixel_mean=None,
                 pixel_std=None, dtype=None, **kwargs):
        is_vit = isinstance(backbone, keras_hub.models.ViTBackbone)
        if is_vit and pooling not in ("token", "avg"):
            raise ValueError(
                f"A ViT image encoder pools with 'token' (class token) or 'avg' (mean of the "
                f"patch tokens), got pooling={pooling!r}")
        # === Layers ===
        # Same layers and weights, a closed-form BatchNorm backward (faster training steps,
        # see valpat_keras/models/batch_norm.py) and, under torch, convolutions and pooling
        # without Keras' NCHW copies (valpat_keras/models/fast_layers.py).
        use_closed_form_batch_norm(backbone)
        use_fast_layers(backbone)
        self.backbone = backbone
        pixel_mean = tuple(float(m) for m in (pixel_mean or IMAGENET_MEAN))
        pixel_std = tuple(float(s) for s in (pixel_std or IMAGENET_STD))
        variance = [s * s for s in pixel_std]
        self.normalization = keras.layers.Normalization(
            mean=list(pixel_mean), variance=variance, dtype=dtype,
            name="imagenet_normalization")
        if is_vit:
            self.pooling_layer = TokenPooling(
                mode="cls" if pooling == "token" else "mean", skip_first=pooling == "avg",
                dtype=dtype, name="pooling")
        else:
            self.pooling_layer = make_pooling_2d(pooling, p=gem_p)

        # === Functional Model ===
        image_shape = tuple(backbone.image_shape)
        images = keras.Input(shape=image_shape, name="images")
        x = self.normalization(images)
        x = self.backbone(x)
        features = self.pooling_layer(x)
        super().__init__(inputs=images, outputs=features, dtype=dtype, **kwargs)

        # === Config ===
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.pixel_mean = pixel_mean
        self.pixel_std = pixel_std
        self.image_shape = image_shape
        self.feature_dim = int(features.shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": keras.layers.serialize(self.backbone),
            "pooling": self.pooling,
            "gem_p": self.gem_p,
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**deserialize_nested(config, ("backbone",), custom_objects))


def build_image_encoder(config: str = "tiny", image_size: tuple[int, int] = (256, 128),
                        pooling: str | None = "gem", last_stride: int = 1,
                        dtype=None, name: str = "image_encoder",
                        pixel_normalization: str = "imagenet") -> ImageEncoder:
    """Builds a randomly initialised `ImageEncoder` from a named configuration.

    Args:
        config: A key of `IMAGE_ENCODER_CONFIGS` (``"tiny"``, ``"resnet18"``,
            ``"resnet50"``, ``"vit_tiny"``, ``"vit_small"``).
        image_size: (height, width) of the input images.
        pooling: ``"gem"`` / ``"avg"`` (ResNet) or ``"token"`` / ``"avg"`` (ViT). ``"gem"``
            (the default) or ``None`` on a ViT means ``"token"``, the class token, since
            GeM needs non-negative activations which transformer tokens are not.
        last_stride: Stride of the last ResNet stage. 1 (BoT) doubles the final feature map
            for re-ID; 2 is the ImageNet ResNet. Ignored by ViT (patches have one stride).
        dtype: Compute dtype policy (``None``: the global policy).
        name: Model name.
        pixel_normalization: A key of `PIXEL_NORMALIZATIONS` (``"imagenet"``, ``"lup"``).

    Returns:
        The encoder; ``encoder.feature_dim`` is the length of its output vectors.

    Raises:
        ValueError: Unknown configuration name, pooling or pixel normalisation.
    """
    pixel_mean, pixel_std = pixel_statistics(pixel_normalization)
    if config not in IMAGE_ENCODER_CONFIGS:
        raise ValueError(f"Unknown image encoder config {config!r}; "
                         f"choose one of {sorted(IMAGE_ENCODER_CONFIGS)}")
    kwargs = copy.deepcopy(IMAGE_ENCODER_CONFIGS[config])
    family = kwargs.pop("family")
    image_shape = (int(image_size[0]), int(image_size[1]), 3)
    if family == "vit":
        backbone = keras_hub.models.ViTBackbone(image_shape=image_shape, dtype=dtype, **kwargs)
        pooling = "token" if pooling in (None, "gem") else pooling
    else:
        kwargs["stackwise_num_strides"][-1] = int(last_stride)
        backbone = keras_hub.models.ResNetBackbone(image_shape=image_shape, dtype=dtype, **kwargs)
        pooling = pooling or "gem"
    return ImageEncoder(backbone, pooling=pooling, pixel_mean=pixel_mean, pixel_std=pixel_std,
                        dtype=dtype, name=name)
