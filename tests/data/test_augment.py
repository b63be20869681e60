"""Augmentations keep shape and range, change the image, and repeat exactly for a seed."""

import numpy as np
import pytest
import tensorflow as tf

from valpat_keras.data import augment

IMAGE = tf.constant(np.random.default_rng(0).random((64, 32, 3)), tf.float32)
SEED = tf.constant([3, 4], tf.int64)

ALWAYS_ON = {
    "random_resized_crop": lambda x, s: augment.random_resized_crop(x, s),
    "horizontal_flip": lambda x, s: augment.horizontal_flip(x, s, probability=1.0),
    "color_jitter": lambda x, s: augment.color_jitter(x, s, probability=1.0),
    "random_grayscale": lambda x, s: augment.random_grayscale(x, s, probability=1.0),
    "gaussian_blur": lambda x, s: augment.gaussian_blur(x, s, probability=1.0),
    "pad_random_crop": lambda x, s: augment.pad_random_crop(x, s, padding=4),
    "random_erasing": lambda x, s: augment.random_erasing(x, s, probability=1.0),
    "ssl_view_augment": augment.ssl_view_augment,
    "reid_ssl_view_augment": augment.reid_ssl_view_augment,
    "reid_train_augment": augment.reid_train_augment,
    "attribute_train_augment": augment.attribute_train_augment,
}


@pytest.mark.parametrize("name", sorted(ALWAYS_ON))
def test_shape_range_and_determinism(name):
    fn = ALWAYS_ON[name]
    out = fn(IMAGE, SEED).numpy()
    assert out.shape == (64, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, fn(IMAGE, SEED).numpy())
    # Some seed among a few must change the image (pad+crop may pick the centre once).
    changed = [not np.allclose(fn(IMAGE, tf.constant([s, 1], tf.int64)).numpy(), IMAGE)
               for s in range(4)]
    assert any(changed)


def test_zero_probability_is_identity():
    for fn in (augment.horizontal_flip, augment.color_jitter, augment.random_grayscale,
               augment.gaussian_blur, augment.random_erasing):
        np.testing.assert_array_equal(fn(IMAGE, SEED, probability=0.0).numpy(), IMAGE.numpy())


def test_flip_mirrors_and_grayscale_has_equal_channels():
    flipped = augment.horizontal_flip(IMAGE, SEED, probability=1.0).numpy()
    np.testing.assert_array_equal(flipped, IMAGE.numpy()[:, ::-1])
    gray = augment.random_grayscale(IMAGE, SEED, probability=1.0).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 2])


def test_erasing_fills_a_rectangle_with_the_mean():
    out = augment.random_erasing(IMAGE, SEED, probability=1.0).numpy()
    erased = np.all(np.isclose(out, augment.IMAGENET_MEAN), axis=-1)
    rows, cols = np.nonzero(erased)
    assert erased.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # one full rectangle


def test_works_inside_tf_data_map():
    data = tf.data.Dataset.from_tensors(IMAGE).repeat(2)
    seeds = tf.data.Dataset.from_tensor_slices(tf.constant([[1, 0], [1, 1]], tf.int64))
    views = list(tf.data.Dataset.zip(data, seeds).map(augment.ssl_view_augment))
    assert len(views) == 2 and not np.allclose(views[0], views[1])


def test_crops_from_a_larger_source_to_the_requested_size():
    source = tf.image.resize(IMAGE[:4, :2], (128, 64))  # smooth, so resampling grids agree
    view = augment.ssl_view_augment(source, SEED, size=(64, 32)).numpy()
    assert view.shape == (64, 32, 3) and 0.0 <= view.min() and view.max() <= 1.0
    full = augment.random_resized_crop(source, SEED, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                       size=(64, 32)).numpy()
    np.testing.assert_allclose(full, tf.image.resize(source, (64, 32)).numpy(), atol=0.05)


def test_reid_views_keep_clothing_colour():
    # A red coat stays red in every view (no hue shift, no grayscale), unlike MoCo v2 views.
    red = tf.constant(np.tile([[[0.8, 0.1, 0.1]]], (64, 32, 1)), tf.float32)
    for s in range(20):
        view = augment.reid_ssl_view_augment(red, tf.constant([s, 7], tf.int64)).numpy()
        assert np.all(view[..., 0] > view[..., 1]) and np.allclose(view[..., 1], view[..., 2])
