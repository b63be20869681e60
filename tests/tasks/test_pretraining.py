"""`pretrain` defaults that depend on the data size and the run length."""

import pytest

pytestmark = pytest.mark.keras


def test_queue_is_at_most_a_quarter_of_the_images_and_a_multiple_of_the_batch():
    from valpat_keras.tasks.pretraining import default_queue_size

    # SynthPed small: 1,500 images; a 4,096-key queue would hold each image 2.7 times.
    assert default_queue_size(1500, 32, 4096) == 352
    assert default_queue_size(1_280_000, 256, 65536) == 65536
    assert default_queue_size(100, 32, 4096) == 0  # under one batch: in-batch negatives


def test_momentum_follows_the_run_length():
    from valpat_keras.tasks.pretraining import default_momentum

    assert default_momentum(500) == pytest.approx(0.99)
    assert default_momentum(10_000) == pytest.approx(0.998)
    assert default_momentum(1_000_000) == pytest.approx(0.999)
    # The key encoder forgets its random start within the run.
    assert default_momentum(500) ** 500 < 0.01
