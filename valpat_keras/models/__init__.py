"""Models: the image and text encoders, heads and the VAL-PAT backbone (Keras 3, keras-hub).

Importing this package imports Keras: set ``KERAS_BACKEND`` first.
"""

from valpat_keras.models.backbone import L2Normalize, LogitScale, ValPatBackbone
from valpat_keras.models.heads import AttributeHead, PredictionHead, ProjectionHead
from valpat_keras.models.image_encoder import (
    IMAGE_ENCODER_CONFIGS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LUP_MEAN,
    LUP_STD,
    PIXEL_NORMALIZATIONS,
    ImageEncoder,
    build_image_encoder,
)
from valpat_keras.models.init import image_encoder_from_preset, load_backbone, load_image_encoder
from valpat_keras.models.loading import load_preprocessor, load_task, save_backbone, save_task
from valpat_keras.models.mgn import MGN_HEAD_NAMES, EmbeddingHead
from valpat_keras.models.non_local import NonLocalBlock
from valpat_keras.models.pooling import GeneralizedMeanPooling2D, TokenPooling, make_pooling_2d
from valpat_keras.models.preprocessors import (
    CaptionPreprocessor,
    ImagePreprocessor,
    PedestrianImageConverter,
    ValPatPreprocessor,
)
from valpat_keras.models.text_encoder import (
    TEXT_ENCODER_CONFIGS,
    PresetTextEncoder,
    TextEncoder,
    build_text_encoder,
    load_text_preset,
    load_text_tokenizer,
)
from valpat_keras.models.vit_resize import load_vit_at_size, resize_vit

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_ENCODER_CONFIGS",
    "LUP_MEAN",
    "LUP_STD",
    "MGN_HEAD_NAMES",
    "PIXEL_NORMALIZATIONS",
    "TEXT_ENCODER_CONFIGS",
    "AttributeHead",
    "CaptionPreprocessor",
    "EmbeddingHead",
    "GeneralizedMeanPooling2D",
    "ImageEncoder",
    "ImagePreprocessor",
    "L2Normalize",
    "LogitScale",
    "NonLocalBlock",
    "PedestrianImageConverter",
    "PredictionHead",
    "PresetTextEncoder",
    "ProjectionHead",
    "TextEncoder",
    "TokenPooling",
    "ValPatBackbone",
    "ValPatPreprocessor",
    "build_image_encoder",
    "build_text_encoder",
    "image_encoder_from_preset",
    "load_backbone",
    "load_image_encoder",
    "load_preprocessor",
    "load_task",
    "load_text_preset",
    "load_text_tokenizer",
    "load_vit_at_size",
    "make_pooling_2d",
    "resize_vit",
    "save_backbone",
    "save_task",
]
