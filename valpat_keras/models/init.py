"""Where transfer tasks get their encoders: random, a pretraining run, a preset folder or name."""

from __future__ import annotations

from pathlib import Path

import keras_hub

from valpat_keras.data.tokenizer import PRESET_VOCABULARY_FILE, CaptionTokenizer
from valpat_keras.errors import InputError
from valpat_keras.models.backbone import ValPatBackbone
from valpat_keras.models.image_encoder import ImageEncoder, build_image_encoder
from valpat_keras.models.loading import check_preset_files

#: Sub-folders of a pretraining run directory (written by `valpat pretrain --out RUN_DIR`).
IMAGE_ENCODER_DIR = "image_encoder"
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"  # inside BACKBONE_DIR


def _looks_like_path(init: str) -> bool:
    return "/" in init or "\\" in init or init.startswith(".") or Path(init).exists()


def _resize_encoder(encoder: ImageEncoder, image_size: tuple[int, int],
                    pooling: str | None) -> ImageEncoder:
    """Rebuilds ``encoder`` for another input size / pooling, keeping the backbone weights."""
    is_vit = isinstance(encoder.backbone, keras_hub.models.ViTBackbone)
    if is_vit and pooling in (None, "gem"):
        pooling = "token"
    pooling = pooling or encoder.pooling
    image_shape = (int(image_size[0]), int(image_size[1]), 3)
    if tuple(encoder.image_shape) == image_shape and pooling == encoder.pooling:
        return encoder
    if is_vit and tuple(encoder.image_shape) != image_shape:
        raise InputError(
            f"This ViT image encoder was built for images of {encoder.image_shape[:2]}; its "
            f"position embeddings cannot be reused for {image_shape[:2]}. Pass "
            f"image_size={tuple(encoder.image_shape[:2])}.")
    backbone_config = encoder.backbone.get_config()
    backbone_config["image_shape"] = image_shape
    backbone = type(encoder.backbone).from_config(backbone_config)
    backbone.set_weights(encoder.backbone.get_weights())
    return ImageEncoder(backbone, pooling=pooling, gem_p=encoder.gem_p,
                        dtype=encoder.dtype_policy, name=encoder.name)


def load_image_encoder(init: str = "random", config: str = "tiny",
                       image_size: tuple[int, int] = (256, 128),
                       pooling: str | None = "gem", last_stride: int = 1) -> ImageEncoder:
    """Returns the image encoder a transfer task starts from.

    Args:
        init: Where the weights come from:

            - ``"random"``: a fresh `build_image_encoder(config, image_size, pooling)`.
            - a pretraining run directory (contains ``image_encoder/``, the keras-hub preset
              `valpat pretrain` writes);
            - a preset directory written by ``ImageEncoder.save_to_preset`` (contains
              ``config.json``);
            - a keras-hub preset name such as ``"resnet_50_imagenet"``, wrapped as the
              backbone of a new `ImageEncoder` (needs the preset downloadable or cached;
              the last stride stays as the preset has it).
        config: Named configuration for ``init="random"`` (see `IMAGE_ENCODER_CONFIGS`).
        image_size: (height, width) of the inputs. A ResNet loaded from disk is rebuilt for
            this size with the same weights; a ViT must keep its size.
        pooling: ``"gem"``/``"avg"`` (ResNet), ``"token"``/``"avg"`` (ViT; ``"gem"`` means
            ``"token"``). A loaded encoder with another pooling is rebuilt with this one.
        last_stride: Last ResNet stage stride for ``init="random"``.

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
                                   last_stride=last_stride)
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
        encoder = ImageEncoder.from_preset(str(preset))
        return _resize_encoder(encoder, image_size, pooling)
    try:
        backbone = keras_hub.models.Backbone.from_preset(
            init, image_shape=(int(image_size[0]), int(image_size[1]), 3))
    except Exception as error:  # network, unknown name, or a non-image preset
        raise InputError(
            f"Could not load the keras-hub preset {init!r} as an image backbone ({error}). "
            f"Use 'random', a pretraining run directory, a preset directory, or a keras-hub "
            f"ResNet/ViT preset name that is cached or downloadable (e.g. "
            f"'resnet_50_imagenet').") from error
    is_vit = isinstance(backbone, keras_hub.models.ViTBackbone)
    pooling = "token" if is_vit and pooling in (None, "gem") else (pooling or "gem")
    return ImageEncoder(backbone, pooling=pooling, name="image_encoder")


def _tokenizer_folder(backbone_dir: Path) -> Path | None:
    """Where a backbone preset keeps its tokenizer: ``tokenizer/`` (older runs) or itself."""
    if (backbone_dir / TOKENIZER_DIR).is_dir():
        return backbone_dir / TOKENIZER_DIR
    if (backbone_dir / PRESET_VOCABULARY_FILE).is_file():
        return backbone_dir
    return None


def load_backbone(run_dir: str | Path):
    """Loads the pretrained `ValPatBackbone` and its caption tokenizer from a run directory.

    The layout is the one `valpat pretrain --out RUN_DIR` writes: the backbone preset in
    ``RUN_DIR/backbone/`` with its tokenizer either as a preprocessor in the same preset
    (``preprocessor.json`` + ``assets/tokenizer/vocabulary.txt``, see
    `valpat_keras.models.loading.save_backbone`) or, in older runs, as the folder
    ``RUN_DIR/backbone/tokenizer/``. ``run_dir`` may also be the ``backbone/`` folder itself
    or any preset folder of a `ValPatBackbone` with a caption preprocessor (a search task's).

    Args:
        run_dir: The pretraining run directory.

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
    return backbone, CaptionTokenizer.from_preset(tokenizer_dir)
