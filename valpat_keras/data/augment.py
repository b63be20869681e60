"""Image augmentations for the tf.data pipelines, deterministic given a seed.

Every function takes one float32 image in [0, 1] of shape ``(H, W, 3)`` and a stateless seed
(an int32/int64 tensor of shape ``(2,)``) and returns an image of the same shape and range.
Only TensorFlow *stateless* random ops are used, so the same seed always gives the same image;
the pipelines derive one seed per element from the global seed, the element and the epoch.

Recipes:
    * `ssl_view_augment`: the MoCo v2 view (random resized crop, colour jitter, grayscale,
      Gaussian blur, flip), with a crop scale and aspect ratio adapted to person crops.
    * `reid_train_augment`: the BoT recipe (flip, pad + random crop, random erasing).
    * `attribute_train_augment`: the strong-baseline PAR recipe (flip, pad + random crop).
"""

from __future__ import annotations

import math

import tensorflow as tf

# Fill value of random erasing: the ImageNet mean, which the encoder maps to zero (BoT).
IMAGENET_MEAN = (0.485, 0.456, 0.406)


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """Splits one stateless seed into ``num`` independent ones."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)
    return [seeds[i] for i in range(num)]


def _coin(seed: tf.Tensor, probability: float) -> tf.Tensor:
    """A boolean scalar that is True with ``probability``."""
    return tf.random.stateless_uniform([], seed) < probability


def _image_hw(image: tf.Tensor) -> tuple[int, int]:
    """Static height and width (augmentations need them to keep static output shapes)."""
    height, width = image.shape[0], image.shape[1]
    if height is None or width is None:
        raise ValueError(f"augmentations need a static image size; got shape {image.shape}")
    return int(height), int(width)


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor,
                        scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (0.75, 1.333),
                        size: tuple[int, int] | None = None) -> tf.Tensor:
    """Crops a random box and resizes it to ``size`` (default: the image size).

    Unlike torchvision, ``ratio`` is the box's aspect ratio *relative to the image's*, so
    ``ratio=1`` keeps the upright shape of a person crop instead of squashing it.

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1]; any (even dynamic) size when ``size`` is given.
        seed: Stateless seed, shape ``(2,)``.
        scale: Range of the box area as a fraction of the image area.
        ratio: Range of the box's relative aspect ratio (sampled log-uniformly).
        size: Output ``(height, width)``; cropping a larger source keeps the crop sharp.

    Returns:
        The resized crop, ``(*size, 3)``.
    """
    height, width = size if size is not None else _image_hw(image)
    area_seed, ratio_seed, y_seed, x_seed = _split(seed, 4)
    area = tf.random.stateless_uniform([], area_seed, scale[0], scale[1])
    log_ratio = tf.random.stateless_uniform([], ratio_seed, math.log(ratio[0]),
                                            math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    box_h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    box_w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    top = tf.random.stateless_uniform([], y_seed) * (1.0 - box_h)
    left = tf.random.stateless_uniform([], x_seed) * (1.0 - box_w)
    box = tf.stack([top, left, top + box_h, left + box_w])[None]
    crop = tf.image.crop_and_resize(image[None], box, [0], [height, width])
    return tf.clip_by_value(crop[0], 0.0, 1.0)


def horizontal_flip(image: tf.Tensor, seed: tf.Tensor, probability: float = 0.5) -> tf.Tensor:
    """Mirrors the image left-right with ``probability``.

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1].
        seed: Stateless seed, shape ``(2,)``.
        probability: Chance of flipping.
    """
    return tf.where(_coin(seed, probability), tf.image.flip_left_right(image), image)


def color_jitter(image: tf.Tensor, seed: tf.Tensor, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1,
                 probability: float = 0.8) -> tf.Tensor:
    """Jitters brightness, contrast, saturation and hue (in this fixed order), with ``probability``.

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1].
        seed: Stateless seed, shape ``(2,)``.
        brightness: Brightness factor range ``[1 - b, 1 + b]`` (multiplicative, as torchvision).
        contrast: Contrast factor range ``[1 - c, 1 + c]``.
        saturation: Saturation factor range ``[1 - s, 1 + s]``.
        hue: Hue shift range ``[-h, h]`` (fraction of the colour circle, at most 0.5).
        probability: Chance of applying the jitter at all (MoCo v2 uses 0.8).
    """
    coin_seed, b_seed, c_seed, s_seed, h_seed = _split(seed, 5)
    factor = tf.random.stateless_uniform([], b_seed, 1.0 - brightness, 1.0 + brightness)
    jittered = tf.clip_by_value(image * factor, 0.0, 1.0)
    jittered = tf.image.stateless_random_contrast(jittered, 1.0 - contrast, 1.0 + contrast,
                                                  c_seed)
    jittered = tf.clip_by_value(jittered, 0.0, 1.0)
    jittered = tf.image.stateless_random_saturation(jittered, 1.0 - saturation,
                                                    1.0 + saturation, s_seed)
    jittered = tf.image.stateless_random_hue(jittered, hue, h_seed)
    return tf.where(_coin(coin_seed, probability), tf.clip_by_value(jittered, 0.0, 1.0), image)


def random_grayscale(image: tf.Tensor, seed: tf.Tensor, probability: float = 0.2) -> tf.Tensor:
    """Replaces the image by its 3-channel grayscale version with ``probability``.

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1].
        seed: Stateless seed, shape ``(2,)``.
        probability: Chance of converting.
    """
    gray = tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])
    return tf.where(_coin(seed, probability), gray, image)


def gaussian_blur(image: tf.Tensor, seed: tf.Tensor, sigma: tuple[float, float] = (0.1, 2.0),
                  probability: float = 0.5, kernel_fraction: float = 0.1) -> tf.Tensor:
    """Blurs with a Gaussian of random ``sigma`` (in pixels) with ``probability``.

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1].
        seed: Stateless seed, shape ``(2,)``.
        sigma: Range of the standard deviation, sampled uniformly (MoCo v2: 0.1 to 2.0).
        probability: Chance of blurring (MoCo v2: 0.5).
        kernel_fraction: Kernel size as a fraction of the image width (SimCLR: 10 %), made odd.
    """
    _, width = _image_hw(image)
    coin_seed, sigma_seed = _split(seed, 2)
    radius = max(1, int(width * kernel_fraction) // 2)
    value = tf.random.stateless_uniform([], sigma_seed, sigma[0], sigma[1])
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / value))
    kernel = kernel / tf.reduce_sum(kernel)
    # Separable blur: a column then a row pass, depthwise over the three channels.
    column = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    row = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]],
                    mode="REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, column, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, row, [1, 1, 1, 1], "VALID")[0]
    return tf.where(_coin(coin_seed, probability), blurred, image)


def pad_random_crop(image: tf.Tensor, seed: tf.Tensor, padding: int = 10) -> tf.Tensor:
    """Zero-pads ``padding`` pixels on every side, then crops back to the size at random.

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1].
        seed: Stateless seed, shape ``(2,)``.
        padding: Pixels added on each side (BoT: 10 at 256x128).
    """
    height, width = _image_hw(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.image.stateless_random_crop(padded, [height, width, 3], tf.cast(seed, tf.int64))


def random_erasing(image: tf.Tensor, seed: tf.Tensor, probability: float = 0.5,
                   scale: tuple[float, float] = (0.02, 0.4), ratio: float = 0.3,
                   value: tuple[float, float, float] = IMAGENET_MEAN) -> tf.Tensor:
    """Fills one random rectangle with ``value`` with ``probability`` (Zhong et al., BoT).

    The box size is drawn once and clipped to the image, instead of torchvision's up to 100
    retries, so the op stays branch-free.

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1].
        seed: Stateless seed, shape ``(2,)``.
        probability: Chance of erasing.
        scale: Range of the erased area as a fraction of the image.
        ratio: Aspect ratios (h / w) are sampled log-uniformly in ``[ratio, 1 / ratio]``.
        value: RGB fill value.
    """
    height, width = _image_hw(image)
    coin_seed, area_seed, ratio_seed, y_seed, x_seed = _split(seed, 5)
    area = tf.random.stateless_uniform([], area_seed, scale[0], scale[1]) * height * width
    aspect = tf.exp(tf.random.stateless_uniform([], ratio_seed, math.log(ratio),
                                                -math.log(ratio)))
    box_h = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, float(height))
    box_w = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, float(width))
    top = tf.floor(tf.random.stateless_uniform([], y_seed) * (height - box_h + 1.0))
    left = tf.floor(tf.random.stateless_uniform([], x_seed) * (width - box_w + 1.0))
    rows = tf.range(height, dtype=tf.float32)[:, None]
    cols = tf.range(width, dtype=tf.float32)[None, :]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    inside = inside[:, :, None] & _coin(coin_seed, probability)
    return tf.where(inside, tf.constant(value, tf.float32), image)


def ssl_view_augment(image: tf.Tensor, seed: tf.Tensor,
                     size: tuple[int, int] | None = None) -> tf.Tensor:
    """One self-supervised view: the MoCo v2 recipe adapted to upright person crops.

    Random resized crop (area 20-100 %, relative aspect 3/4-4/3), colour jitter
    (0.4, 0.4, 0.4, 0.1 with p=0.8; fixed order, not MoCo's random order), grayscale (p=0.2),
    Gaussian blur (p=0.5), flip (p=0.5).

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1]; any size when ``size`` is given.
        seed: Stateless seed, shape ``(2,)``; two views of one image need two seeds.
        size: Output ``(height, width)``; default the image size. The pretraining pipeline
            passes a source at twice this size so that small crops are not upsampled blurs.
    """
    crop_seed, jitter_seed, gray_seed, blur_seed, flip_seed = _split(seed, 5)
    image = random_resized_crop(image, crop_seed, size=size)
    image = color_jitter(image, jitter_seed)
    image = random_grayscale(image, gray_seed)
    image = gaussian_blur(image, blur_seed)
    return horizontal_flip(image, flip_seed)


def reid_ssl_view_augment(image: tf.Tensor, seed: tf.Tensor,
                          size: tuple[int, int] | None = None) -> tf.Tensor:
    """One self-supervised view that keeps clothing colour: random resized crop and flip.

    `ssl_view_augment` without its colour jitter, grayscale and blur. Clothing colour and
    brightness are the main identity cues of pedestrians; MoCo v2's hue shifts (up to 36
    degrees), saturation and brightness jitter and grayscale views teach the encoder to ignore
    them. On SynthPed small (1,500 images at 64x32, 300 steps of the image-image objective
    alone, queue 256, momentum 0.99) MoCo v2 views reach an image-image accuracy of 0.06 and
    leave the frozen-feature reID mAP at random level (3.0 vs 3.2); crop-and-flip views reach
    0.75 and 5.8 mAP; adding brightness / contrast jitter (0.4) gives 0.37 and 3.1 mAP.

    Random resized crop (area 20-100 %, relative aspect 3/4-4/3), flip (p=0.5).

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1]; any size when ``size`` is given.
        seed: Stateless seed, shape ``(2,)``; two views of one image need two seeds.
        size: Output ``(height, width)``; default the image size.
    """
    crop_seed, flip_seed = _split(seed, 2)
    return horizontal_flip(random_resized_crop(image, crop_seed, size=size), flip_seed)


def reid_train_augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Re-ID fine-tuning augmentation (BoT): flip, pad 10 + random crop, random erasing.

    The padding is scaled with the image height (10 px at 256) so small test images keep the
    same relative jitter.

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1].
        seed: Stateless seed, shape ``(2,)``.
    """
    height, _ = _image_hw(image)
    flip_seed, crop_seed, erase_seed = _split(seed, 3)
    image = horizontal_flip(image, flip_seed)
    image = pad_random_crop(image, crop_seed, padding=max(1, round(10 * height / 256)))
    return random_erasing(image, erase_seed)


def attribute_train_augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Attribute-recognition training augmentation: flip, pad 10 + random crop.

    No erasing: it can delete exactly the evidence of an attribute (a hat, a bag).

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1].
        seed: Stateless seed, shape ``(2,)``.
    """
    height, _ = _image_hw(image)
    flip_seed, crop_seed = _split(seed, 2)
    image = horizontal_flip(image, flip_seed)
    return pad_random_crop(image, crop_seed, padding=max(1, round(10 * height / 256)))
