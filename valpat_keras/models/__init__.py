"""Models: the image and text encoders, heads and the VAL-PAT backbone (Keras 3, keras-hub).

Importing this package imports Keras: set ``KERAS_BACKEND`` first.
"""

from valpat_keras.models.backbone import L2Normalize, LogitScale, ValPatBackbone
from valpat_keras.models.heads import AttributeHead, PredictionHead, ProjectionHead
from valpat_keras.models.image_encoder import (
    IMAGE_ENCODER_CONFIGS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageEncoder,
    build_image_encoder,
)
from valpat_keras.models.init import load_backbone, load_image_encoder
from valpat_keras.models.loading import load_preprocessor, load_task, save_backbone, save_task
from valpat_keras.models.pooling import GeneralizedMeanPooling2D, TokenPooling, make_pooling_2d
from valpat_keras.models.preprocessors import (
    CaptionPreprocessor,
    ImagePreprocessor,
    PedestrianImageConverter,
    ValPatPreprocessor,
)
from valpat_keras.models.text_encoder import TEXT_ENCODER_CONFIGS, TextEncoder, build_text_encoder

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_ENCODER_CONFIGS", "TEXT_ENCODER_CONFIGS",
    "AttributeHead", "CaptionPreprocessor", "GeneralizedMeanPooling2D", "ImageEncoder",
    "ImagePreprocessor", "L2Normalize", "LogitScale", "PedestrianImageConverter",
    "PredictionHead", "ProjectionHead", "TextEncoder", "TokenPooling", "ValPatBackbone",
    "ValPatPreprocessor", "build_image_encoder", "build_text_encoder", "load_backbone",
    "load_image_encoder", "load_preprocessor", "load_task", "make_pooling_2d", "save_backbone",
    "save_task",
]
