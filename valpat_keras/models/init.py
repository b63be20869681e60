"""Where transfer tasks get their encoders: random, a pretraining run, a preset folder or name."""

from __future__ import annotations

from pathlib import Path

import keras_hub

from valpat_keras.data.tokenizer import (
    PRESET_TOKENIZER_FILE,
    PRESET_VOCABULARY_FILE,
    CaptionTokenizer,
)
from valpat_keras.errors import InputError
from valpat_keras.models.backbone import ValPatBackbone
from valpat_keras.models.image_encoder import ImageEncoder, build_image_encoder, pixel_statistics
from valpat_keras.models.loading import check_preset_files, read_preset_json
from valpat_keras.models.vit_resize import resize_vit

#: The last ResNet stage's stride in every transfer (BoT's). Pretraining may run at the
#: standard stride 2 (`PretrainConfig.last_stride`); the convolution weights are the same at
#: either stride, so a transfer rebuilds such an encoder with a 2x larger final feature map.
TRANSFER_LAST_STRIDE = 1

#: Sub-folders of a pretraining run directory (written by `valpat pretrain --out RUN_DIR`).
IMAGE_ENCODER_DIR = "image_encoder"
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"  # inside BACKBONE_DIR


def _looks_like_path(init: str) -> bool:
    return "/" in init or "\\" in init or init.startswith(".") or Path(init).exists()


def _resize_encoder(encoder: ImageEncoder, image_size: tuple[int, int],
                    pooling: str | None, last_stride: int | None = None) -> ImageEncoder:
    """Rebuilds ``encoder`` for another input size / pooling / last ResNet stride (None: the
    encoder's), keeping the backbone weights."""
    is_vit = isinstance(encoder.backbone, keras_hub.models.ViTBackbone)
    if is_vit and pooling in (None, "gem"):
        pooling = "token"
    pooling = pooling or encoder.pooling
    image_shape = (int(image_size[0]), int(image_size[1]), 3)
    backbone_config = encoder.backbone.get_config()
    strides = list(backbone_config.get("stackwise_num_strides") or [])
    restride = not is_vit and last_stride is not None and strides[-1] != int(last_stride)
    if tuple(encoder.image_shape) == image_shape and pooling == encoder.pooling \
            and not restride:
        return encoder
    if is_vit and tuple(encoder.image_shape) != image_shape:
        raise InputError(
            f"This ViT image encoder was built for images of {encoder.image_shape[:2]}; its "
            f"position embeddings cannot be reused for {image_shape[:2]}. Pass "
            f"image_size={tuple(encoder.image_shape[:2])}.")
    backbone_config["image_shape"] = image_shape
    if restride:
        backbone_config["stackwise_num_strides"] = strides[:-1] + [int(last_stride)]
    backbone = type(encoder.backbone).from_config(backbone_config)
    backbone.set_weights(encoder.backbone.get_weights())
    return ImageEncoder(backbone, pooling=pooling, gem_p=encoder.gem_p,
                        pixel_mean=encoder.pixel_mean, pixel_std=encoder.pixel_std,
                        dtype=encoder.dtype_policy, name=encoder.name)


def load_image_encoder(init: str = "random", config: str = "tiny",
                       image_size: tuple[int, int] = (256, 128),
                       pooling: str | None = "gem",
                       last_stride: int | None = None) -> ImageEncoder:
    """Returns the image encoder a transfer task starts from.

    Args:
        init: Where the weights come from:

            - ``"random"``: a fresh `build_image_encoder(config, image_size, pooling)`.
            - a pretraining run directory (contains ``image_encoder/``, the keras-hub preset
              `valpat pretrain` writes);
            - a preset directory written by ``ImageEncoder.save_to_preset`` (contains
              ``config.json``);
            - a keras-hub preset name such as ``"resnet_50_imagenet"``, or a keras-hub
              ResNet / ViT preset folder, wrapped as the backbone of a new `ImageEncoder`
              (`image_encoder_from_preset`; ImageNet pixel statistics; needs the preset
              downloadable or cached; a ViT's position embeddings are interpolated to
              ``image_size``).
        config: Named configuration for ``init="random"`` (see `IMAGE_ENCODER_CONFIGS`).
        image_size: (height, width) of the inputs. A ResNet loaded from disk is rebuilt for
            this size with the same weights; a ViT must keep its size.
        pooling: ``"gem"``/``"avg"`` (ResNet), ``"token"``/``"avg"`` (ViT; ``"gem"`` means
            ``"token"``). A loaded encoder with another pooling is rebuilt with this one.
        last_stride: Stride of the last ResNet stage: a random encoder is built with it
            (None: 1), a loaded ResNet is rebuilt with it, same weights (None: as saved;
            the transfers pass `TRANSFER_LAST_STRIDE`). Ignored by a ViT.

    Returns:
        The `ImageEncoder`.

    Raises:
        FileNotFoundError: ``init`` is a path without an encoder preset in it (the message
            names the folder and what was expected).
        InputError: A keras-hub preset name that cannot be loaded, a preset whose JSON
            files do not parse (the message names the file), or a ViT asked for another
            image size (a `ValueError`).
    """
    if init == "random":
        return build_image_encoder(config, image_size=image_size, pooling=pooling,
                                   last_stride=1 if last_stride is None else last_stride)
    if _looks_like_path(init):
        root = Path(init)
        if (root / IMAGE_ENCODER_DIR / "config.json").is_file():
            preset = root / IMAGE_ENCODER_DIR
        elif (root / "config.json").is_file():
            preset = root
        else:
            raise FileNotFoundError(
                f"{root}: no image encoder found. Expected a pretraining run directory "
                f"containing {IMAGE_ENCODER_DIR}/config.json (written by `valpat pretrain "
                f"--out RUN_DIR`) or a preset directory with config.json (written by "
                f"ImageEncoder.save_to_preset).")
        check_preset_files(preset)
        if str(read_preset_json(preset, "config.json").get("registered_name", "")
               ).startswith("keras_hub>"):
            # A keras-hub ResNet / ViT preset folder, as a preset name would give it.
            return image_encoder_from_preset(preset, image_size, pooling=pooling,
                                             last_stride=last_stride,
                                             pixel_normalization="imagenet")
        encoder = ImageEncoder.from_preset(str(preset))
        return _resize_encoder(encoder, image_size, pooling, last_stride)
    return image_encoder_from_preset(init, image_size, pooling=pooling, last_stride=last_stride,
                                     pixel_normalization="imagenet")


#: ``--pixel-normalization`` choices: named statistics, or the image preset's converter's.
PIXEL_NORMALIZATION_CHOICES = ("imagenet", "lup", "preset")


def converter_statistics(converter) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` on [0, 1] pixels equal to a keras-hub converter's scale and offset.

    keras-hub converters map 0..255 pixels ``x`` to ``x * scale + offset`` (per channel or
    one number; None: 1 and 0); the encoder sees ``x / 255``, so ``std = 1 / (255 scale)``
    and ``mean = -offset / (255 scale)``.
    """
    def per_channel(value, default):
        values = [default] * 3 if value is None else value
        values = [float(values)] * 3 if isinstance(values, (int, float)) else values
        return [float(v) for v in values]

    scale = per_channel(converter.scale, 1.0)
    offset = per_channel(converter.offset, 0.0)
    std = tuple(1.0 / (255.0 * s) for s in scale)
    mean = tuple(-o / (255.0 * s) for o, s in zip(offset, scale))
    return mean, std


def preset_pixel_statistics(preset: str, pixel_normalization: str
                            ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of [0, 1] pixels for ``pixel_normalization`` (see
    `PIXEL_NORMALIZATION_CHOICES`): ``"preset"`` reads the preset's ``image_converter.json``.

    Raises:
        InputError: Unknown name, or ``"preset"`` with a preset that has no image converter.
    """
    if pixel_normalization not in PIXEL_NORMALIZATION_CHOICES:
        raise InputError(f"Unknown pixel normalisation {pixel_normalization!r}; choose one "
                         f"of {PIXEL_NORMALIZATION_CHOICES}")
    if pixel_normalization != "preset":
        return pixel_statistics(pixel_normalization)
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(str(preset))
    except Exception as error:  # no image_converter.json, network, unknown name
        raise InputError(
            f"The image preset {preset!r} has no image converter to take the pixel "
            f"normalisation from ({error}); pass pixel normalisation 'imagenet' or 'lup', or "
            f"save one with converter.save_to_preset (image_converter.json).") from error
    return converter_statistics(converter)


def _resnet_at_size(backbone, image_size: tuple[int, int], last_stride: int | None):
    """The preset ResNet rebuilt for ``image_size`` (and last stride), same weights."""
    config = backbone.get_config()
    config["image_shape"] = (int(image_size[0]), int(image_size[1]), 3)
    if last_stride is not None:
        config["stackwise_num_strides"] = list(config["stackwise_num_strides"])
        config["stackwise_num_strides"][-1] = int(last_stride)
    resized = type(backbone).from_config(config)
    resized.set_weights(backbone.get_weights())
    return resized


def _load_image_backbone(preset: str, image_size: tuple[int, int], last_stride: int | None,
                         patch_stride: int | None):
    """The keras-hub ResNet / ViT backbone of ``preset``, at ``image_size``."""
    backbone = keras_hub.models.Backbone.from_preset(preset)
    if isinstance(backbone, keras_hub.models.ViTBackbone):
        # Loaded at its own size, then position embeddings interpolated (`load_vit_at_size`).
        return resize_vit(backbone, image_size, patch_stride=patch_stride)
    if not isinstance(backbone, keras_hub.models.ResNetBackbone):
        raise InputError(f"The image preset {preset!r} holds a {type(backbone).__name__}; "
                         "expected a keras-hub ResNetBackbone or ViTBackbone preset")
    return _resnet_at_size(backbone, image_size, last_stride)


def image_encoder_from_preset(preset: str | Path, image_size: tuple[int, int] = (256, 128),
                              pooling: str | None = "gem", last_stride: int | None = None,
                              pixel_normalization: str = "preset",
                              patch_stride: int | None = None,
                              name: str = "image_encoder") -> ImageEncoder:
    """An `ImageEncoder` whose backbone starts from a keras-hub image preset's weights.

    Args:
        preset: A keras-hub preset name (``"resnet_50_imagenet"``; downloaded or cached) or
            a local preset folder (``config.json`` + ``model.weights.h5``, optionally
            ``image_converter.json``) of a ``ResNetBackbone`` or ``ViTBackbone``.
        image_size: (height, width) of the inputs. A ResNet is rebuilt for it with the same
            weights; a ViT's position embeddings are interpolated
            (`valpat_keras.models.vit_resize.load_vit_at_size`).
        pooling: ``"gem"`` / ``"avg"`` (ResNet), ``"token"`` / ``"avg"`` (ViT; ``"gem"``
            or None means ``"token"``).
        last_stride: Stride of the last ResNet stage (1: BoT's, doubling the final map);
            None keeps the preset's.
        pixel_normalization: ``"preset"`` (the preset converter's scale and offset),
            ``"imagenet"`` or ``"lup"``.
        patch_stride: A ViT's patch stride (overlapping patches when below the patch size);
            None: the patch size.
        name: Model name.

    Returns:
        The encoder.

    Raises:
        InputError: A missing folder, a preset that cannot be loaded or is no ResNet / ViT,
            or ``"preset"`` normalisation without an image converter.
    """
    preset = str(preset)
    if _looks_like_path(preset) and not (Path(preset) / "config.json").is_file():
        raise InputError(f"{preset}: no image preset found; expected a folder with config.json "
                         "and model.weights.h5 (written by backbone.save_to_preset), or a "
                         "keras-hub preset name such as 'resnet_50_imagenet'")
    try:
        backbone = _load_image_backbone(preset, image_size, last_stride, patch_stride)
    except InputError:
        raise
    except Exception as error:  # network, unknown name, weights that do not match
        raise InputError(
            f"Could not load the keras-hub preset {preset!r} as an image backbone ({error}). "
            f"Use a keras-hub ResNet/ViT preset name that is cached or downloadable (e.g. "
            f"'resnet_50_imagenet') or a preset folder written by save_to_preset.") from error
    mean, std = preset_pixel_statistics(preset, pixel_normalization)
    is_vit = isinstance(backbone, keras_hub.models.ViTBackbone)
    pooling = "token" if is_vit and pooling in (None, "gem") else (pooling or "gem")
    return ImageEncoder(backbone, pooling=pooling, pixel_mean=mean, pixel_std=std, name=name)


def _tokenizer_folder(backbone_dir: Path) -> Path | None:
    """Where a backbone preset keeps its tokenizer: ``tokenizer/`` (older runs) or itself."""
    if (backbone_dir / TOKENIZER_DIR).is_dir():
        return backbone_dir / TOKENIZER_DIR
    if (backbone_dir / PRESET_VOCABULARY_FILE).is_file() or \
            (backbone_dir / PRESET_TOKENIZER_FILE).is_file():
        return backbone_dir
    return None


def load_backbone(run_dir: str | Path, last_stride: int | None = None):
    """Loads the pretrained `ValPatBackbone` and its caption tokenizer from a run directory.

    The layout is the one `valpat pretrain --out RUN_DIR` writes: the backbone preset in
    ``RUN_DIR/backbone/`` with its tokenizer either as a preprocessor in the same preset
    (``preprocessor.json`` + ``assets/tokenizer/vocabulary.txt``, see
    `valpat_keras.models.loading.save_backbone`) or, in older runs, as the folder
    ``RUN_DIR/backbone/tokenizer/``. ``run_dir`` may also be the ``backbone/`` folder itself
    or any preset folder of a `ValPatBackbone` with a caption preprocessor (a search task's).

    Args:
        run_dir: The pretraining run directory.
        last_stride: Rebuild a ResNet image encoder with this last-stage stride, same
            weights (the transfers pass `TRANSFER_LAST_STRIDE`); None keeps the saved one.

    Returns:
        ``(backbone, tokenizer)``: a `ValPatBackbone` and a
        `valpat_keras.data.tokenizer.CaptionTokenizer`.

    Raises:
        FileNotFoundError: The backbone preset or the tokenizer is missing (the message
            names the folder and what was expected).
        InputError: A JSON file of the preset does not parse (the message names it).
    """
    root = Path(run_dir)
    backbone_dir = root / BACKBONE_DIR
    if not (backbone_dir / "config.json").is_file() and (root / "config.json").is_file() \
            and _tokenizer_folder(root) is not None:
        backbone_dir = root
    if not (backbone_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{root}: no pretrained backbone found. Expected {backbone_dir}/config.json (a "
            f"ValPatBackbone preset written by `valpat pretrain --out RUN_DIR`).")
    tokenizer_dir = _tokenizer_folder(backbone_dir)
    if tokenizer_dir is None:
        raise FileNotFoundError(
            f"{backbone_dir}: no caption tokenizer found. Expected "
            f"{backbone_dir / PRESET_VOCABULARY_FILE} (a preprocessor saved with the backbone) "
            f"or the folder {backbone_dir / TOKENIZER_DIR} (CaptionTokenizer preset).")
    check_preset_files(backbone_dir)
    backbone = ValPatBackbone.from_preset(str(backbone_dir))
    if last_stride is not None:
        backbone = _restride_backbone(backbone, last_stride)
    return backbone, CaptionTokenizer.from_preset(tokenizer_dir)


def _restride_backbone(backbone: ValPatBackbone, last_stride: int) -> ValPatBackbone:
    """``backbone`` with its ResNet image encoder at ``last_stride`` (the same weights)."""
    encoder = backbone.image_encoder
    restrided = _resize_encoder(encoder, encoder.image_shape[:2], encoder.pooling, last_stride)
    if restrided is encoder:
        return backbone
    config = backbone.get_config()
    for key in ("image_encoder", "text_encoder", "name", "trainable", "dtype"):
        config.pop(key, None)
    rebuilt = ValPatBackbone(restrided, backbone.text_encoder, dtype=backbone.dtype_policy,
                             name=backbone.name, **config)
    rebuilt.set_weights(backbone.get_weights())
    return rebuilt
