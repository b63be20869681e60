"""keras-hub preprocessors: raw images and captions in, model inputs out, saved with a task.

`PedestrianImageConverter` resizes images to the encoder's size and brings integer (``uint8``,
[0, 255]) images to [0, 1] as `valpat_keras.data.pipelines.decode_image` does (bilinear,
antialiased, aspect ratio not kept). `CaptionPreprocessor` frames the WordPiece ids of
`valpat_keras.data.tokenizer.CaptionWordPieceTokenizer` as ``[CLS] ... [SEP]`` padded with 0,
the ids of `valpat_keras.data.tokenizer.CaptionTokenizer`. `ImagePreprocessor` (image tasks)
and `ValPatPreprocessor` (images and captions) are the `keras_hub.models.Preprocessor` layers
a task carries: ``task.save_to_preset(run_dir)`` writes them (``preprocessor.json``,
``image_converter.json``, ``tokenizer.json``, ``assets/tokenizer/vocabulary.txt``) next to
the backbone, and ``Task.from_preset(run_dir)`` restores them.

Every preprocessor leaves the pipelines' outputs unchanged (float images in [0, 1] of the
target size, int32 token ids), so a task with a preprocessor still trains on the tf.data
pipelines, where keras-hub maps the preprocessor over each batch.
"""

from __future__ import annotations

import keras
import keras_hub
import numpy as np

# keras-hub's own decorator of preprocessor calls (tf inputs in, backend tensors out, nested
# layers kept in TensorFlow); not exported, so pinned with the keras-hub range (pyproject).
from keras_hub.src.utils.tensor_utils import preprocessing_function

from valpat_keras.data.tokenizer import (
    CaptionTokenizer,
    CaptionWordPieceTokenizer,
    PresetCaptionTokenizer,
    caption_packer,
)
from valpat_keras.models.backbone import ValPatBackbone
from valpat_keras.models.image_encoder import ImageEncoder


def _is_integer(inputs) -> bool:
    dtype = getattr(inputs, "dtype", None)
    return dtype is not None and "int" in keras.backend.standardize_dtype(dtype)


def _is_text(inputs) -> bool:
    if isinstance(inputs, (str, bytes, list)):
        return isinstance(inputs, (str, bytes)) or _is_text(np.asarray(inputs))
    if isinstance(inputs, np.ndarray):
        return inputs.dtype.kind in "SUO"
    return getattr(getattr(inputs, "dtype", None), "name", None) == "string"


@keras.saving.register_keras_serializable(package="valpat_keras")
class PedestrianImageConverter(keras_hub.layers.ImageConverter):
    """Resizes pedestrian images and brings integer pixels to [0, 1], as the pipelines do.

    Integer images (``uint8`` in [0, 255]) are divided by 255 first; float images are taken
    as already in [0, 1]. Images are then resized to ``image_size`` with antialiased
    bilinear interpolation, aspect ratio not kept (re-ID crops are stretched). A pipeline's
    output (float, already at ``image_size``) passes through unchanged. The encoder
    normalises with ImageNet statistics itself, so no mean/std is applied here.

    Args:
        image_size: (int, int). Output (height, width). Defaults to ``(256, 128)``.
        scale: float | tuple | None. keras-hub's extra scale after resizing. Defaults to
            ``None``.
        offset: float | tuple | None. keras-hub's extra offset after resizing. Defaults to
            ``None``.
        crop_to_aspect_ratio: bool. Defaults to ``False`` (the pipelines stretch).
        interpolation: str. Defaults to ``"bilinear"``.
        antialias: bool. Defaults to ``True`` (as ``tf.image.resize`` in the pipelines).
        **kwargs: Other `keras_hub.layers.ImageConverter` arguments.

    Example:
    ```python
    converter = PedestrianImageConverter(image_size=(256, 128))
    images = converter(np.random.randint(0, 256, (2, 300, 140, 3), dtype="uint8"))
    ```
    """

    def __init__(self, image_size=(256, 128), scale=None, offset=None,
                 crop_to_aspect_ratio: bool = False, interpolation: str = "bilinear",
                 antialias: bool = True, **kwargs):
        super().__init__(image_size=tuple(int(s) for s in image_size), scale=scale,
                         offset=offset, crop_to_aspect_ratio=crop_to_aspect_ratio,
                         interpolation=interpolation, antialias=antialias, **kwargs)
        self.rescaling = keras.layers.Rescaling(1.0 / 255.0, dtype=self.dtype_policy,
                                                name="rescaling")

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            inputs = np.asarray(inputs)
        if _is_integer(inputs):
            inputs = self.rescaling(inputs)
        return super().call(inputs)


@keras.saving.register_keras_serializable(package="valpat_keras")
class ImagePreprocessor(keras_hub.models.Preprocessor):
    """The preprocessor of image tasks (re-ID, attributes): raw images to encoder inputs.

    Calls its `PedestrianImageConverter` on ``x`` and passes ``y`` and ``sample_weight``
    through, like keras-hub's `ImageClassifierPreprocessor`.

    Args:
        image_converter: PedestrianImageConverter | None. ``None`` passes images through.
        **kwargs: Standard `keras_hub.models.Preprocessor` arguments.

    Example:
    ```python
    preprocessor = ImagePreprocessor(PedestrianImageConverter(image_size=(256, 128)))
    task = ReIDModel(encoder, num_classes=751, preprocessor=preprocessor)
    ```
    """

    backbone_cls = ImageEncoder
    image_converter_cls = PedestrianImageConverter

    def __init__(self, image_converter=None, **kwargs):
        super().__init__(**kwargs)
        self.image_converter = image_converter

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        if self.image_converter is not None:
            x = self.image_converter(x)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    @classmethod
    def for_encoder(cls, encoder: ImageEncoder, **kwargs) -> ImagePreprocessor:
        """The preprocessor matching an encoder's input size."""
        converter = PedestrianImageConverter(image_size=tuple(encoder.image_shape[:2]))
        return cls(image_converter=converter, **kwargs)


@keras.saving.register_keras_serializable(package="valpat_keras")
class CaptionPreprocessor(keras_hub.models.Preprocessor):
    """Captions to ``[CLS] pieces [SEP]`` int32 ids padded with 0, ``(B, sequence_length)``.

    The same ids as `valpat_keras.data.tokenizer.CaptionTokenizer` (same layer, same packer);
    captions longer than ``sequence_length`` are truncated keeping ``[SEP]``. Integer inputs
    are taken as token ids already and pass through. The vocabulary is saved as a preset
    asset, so ``preprocessor.save_to_preset`` / ``from_preset`` (or the task's) restore it.

    Args:
        tokenizer: CaptionWordPieceTokenizer | keras_hub.tokenizers.Tokenizer. The
            WordPiece tokenizer layer, or a pretrained text model's tokenizer (``BertTokenizer``,
            ...), whose own start / end / pad ids frame the rows.
        sequence_length: int. Length of every row, ``[CLS]`` and ``[SEP]`` included.
            Defaults to ``32``.
        **kwargs: Standard `keras_hub.models.Preprocessor` arguments.

    Example:
    ```python
    tokenizer = CaptionWordPieceTokenizer.from_captions(captions, vocabulary_size=2000)
    preprocessor = CaptionPreprocessor(tokenizer, sequence_length=32)
    token_ids = preprocessor(["a woman in a red coat"])  # int32 (1, 32)
    ```
    """

    backbone_cls = ValPatBackbone
    tokenizer_cls = CaptionWordPieceTokenizer

    def __init__(self, tokenizer=None, sequence_length: int = 32, **kwargs):
        if int(sequence_length) < 3:
            raise ValueError(f"sequence_length must be at least 3 ([CLS] x [SEP]); got "
                             f"{sequence_length}")
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.packer = None

    def build(self, input_shape):
        # After the tokenizer's assets are loaded (from_preset builds the layer without them).
        self.packer = caption_packer(self.tokenizer, self.sequence_length)
        self.built = True

    @preprocessing_function
    def tokenize(self, captions):
        """int32 token ids of string ``captions``; integer inputs are returned as they are."""
        if _is_integer(captions):
            return captions
        if not self.built:
            self.build(None)
        return self.packer(self.tokenizer(captions))

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        return keras.utils.pack_x_y_sample_weight(self.tokenize(x), y, sample_weight)

    def caption_tokenizer(self) -> CaptionTokenizer:
        """The `CaptionTokenizer` adapter with the same ids (for the tf.data pipelines).

        A `PresetCaptionTokenizer` when the layer is a pretrained model's (e.g. BERT's).
        """
        if isinstance(self.tokenizer, CaptionWordPieceTokenizer):
            return CaptionTokenizer.from_layer(self.tokenizer, self.sequence_length)
        return PresetCaptionTokenizer(self.tokenizer, self.sequence_length)

    def get_config(self):
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length})
        return config


@keras.saving.register_keras_serializable(package="valpat_keras")
class ValPatPreprocessor(CaptionPreprocessor):
    """The preprocessor of image + caption tasks (search, pretraining): both input kinds.

    ``x`` may be a dict: the entries named in ``image_keys`` go through the image converter,
    ``"captions"`` (strings) become ``"token_ids"``, other entries (``"token_ids"``,
    ``"pids"``, ...) pass through. A string tensor alone is tokenised, any other tensor is
    taken as images. ``y`` and ``sample_weight`` pass through.

    Args:
        image_converter: PedestrianImageConverter | None. ``None`` passes images through.
        tokenizer: CaptionWordPieceTokenizer. The WordPiece tokenizer layer.
        sequence_length: int. Length of the token id rows. Defaults to ``32``.
        image_keys: tuple[str, ...]. Dict entries holding images. Defaults to
            ``("images",)`` (``("view1", "view2")`` for pretraining batches).
        **kwargs: Standard `keras_hub.models.Preprocessor` arguments.

    Example:
    ```python
    preprocessor = ValPatPreprocessor(PedestrianImageConverter((256, 128)), tokenizer)
    batch = preprocessor({"images": uint8_images, "captions": ["a man in a blue shirt"]})
    # {"images": float32 (1, 256, 128, 3) in [0, 1], "token_ids": int32 (1, 32)}
    ```
    """

    image_converter_cls = PedestrianImageConverter

    def __init__(self, image_converter=None, tokenizer=None, sequence_length: int = 32,
                 image_keys=("images",), **kwargs):
        super().__init__(tokenizer=tokenizer, sequence_length=sequence_length, **kwargs)
        self.image_converter = image_converter
        self.image_keys = tuple(image_keys)

    @classmethod
    def for_backbone(cls, backbone: ValPatBackbone, tokenizer: CaptionTokenizer, **kwargs
                     ) -> ValPatPreprocessor:
        """The preprocessor of a backbone's image size and a `CaptionTokenizer`'s ids.

        Args:
            backbone: The `ValPatBackbone` (its image encoder fixes the image size).
            tokenizer: The `CaptionTokenizer` its text encoder was trained with (a
                `PresetCaptionTokenizer`'s keras-hub layer is used as it is).
            **kwargs: Other constructor arguments (e.g. ``image_keys``).
        """
        converter = PedestrianImageConverter(
            image_size=tuple(backbone.image_encoder.image_shape[:2]))
        if isinstance(tokenizer, PresetCaptionTokenizer):
            layer = tokenizer.layer  # a pretrained model's tokenizer (BERT, CLIP, ...)
        else:
            layer = CaptionWordPieceTokenizer(vocabulary=tokenizer.vocabulary)
        return cls(converter, layer, sequence_length=tokenizer.sequence_length, **kwargs)

    def convert_images(self, images):
        """Images through the image converter (when there is one)."""
        return images if self.image_converter is None else self.image_converter(images)

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        if not isinstance(x, dict):
            x = self.tokenize(x) if _is_text(x) else self.convert_images(x)
            return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        x = dict(x)
        for key in self.image_keys:
            if key in x:
                x[key] = self.convert_images(x[key])
        if "captions" in x:
            x["token_ids"] = self.tokenize(x.pop("captions"))
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"image_keys": list(self.image_keys)})
        return config
