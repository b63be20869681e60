"""Search losses against NumPy transcriptions of IRRA's reference code."""

import numpy as np
import pytest

pytestmark = pytest.mark.keras


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _sdm_reference(image, text, pid, logit_scale, epsilon=1e-8):
    # Line by line IRRA `objectives.compute_sdm` (torch) in float64 NumPy.
    pid = pid.reshape(-1, 1)
    labels = (pid - pid.T == 0).astype(np.float64)
    image_norm = image / np.linalg.norm(image, axis=1, keepdims=True)
    text_norm = text / np.linalg.norm(text, axis=1, keepdims=True)
    t2i = text_norm @ image_norm.T
    i2t = t2i.T
    text_proj_image = logit_scale * t2i
    image_proj_text = logit_scale * i2t
    labels_distribute = labels / labels.sum(axis=1)
    i2t_pred = np.exp(_log_softmax(image_proj_text))
    i2t_loss = i2t_pred * (_log_softmax(image_proj_text) - np.log(labels_distribute + epsilon))
    t2i_pred = np.exp(_log_softmax(text_proj_image))
    t2i_loss = t2i_pred * (_log_softmax(text_proj_image) - np.log(labels_distribute + epsilon))
    return i2t_loss.sum(axis=1).mean() + t2i_loss.sum(axis=1).mean()


@pytest.mark.parametrize("pids", [[0, 1, 2, 3, 4, 5], [3, 3, 1, 7, 1, 3]])
def test_sdm_loss_matches_irra_reference(pids):
    from keras import ops

    from valpat_keras.losses.search import sdm_loss

    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 16)).astype("float32")
    text = rng.normal(size=(6, 16)).astype("float32")
    pids = np.asarray(pids, dtype="int32")
    got = float(ops.convert_to_numpy(sdm_loss(image, text, pids, 20.0)))
    want = _sdm_reference(image.astype(np.float64), text.astype(np.float64), pids, 20.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_sdm_loss_is_small_for_matching_pairs_and_large_for_swapped():
    from keras import ops

    from valpat_keras.losses.search import sdm_loss

    emb = np.eye(4, 8, dtype="float32")
    pids = np.arange(4, dtype="int32")
    aligned = float(ops.convert_to_numpy(sdm_loss(emb, emb, pids, 50.0)))
    swapped = float(ops.convert_to_numpy(sdm_loss(emb, emb[::-1].copy(), pids, 50.0)))
    assert aligned < 1e-3
    assert swapped > 10.0


def test_identity_loss_matches_numpy():
    from keras import ops

    from valpat_keras.losses.search import identity_loss

    rng = np.random.default_rng(1)
    img = rng.normal(size=(5, 7)).astype("float32")
    txt = rng.normal(size=(5, 7)).astype("float32")
    pids = np.array([0, 6, 2, 2, 3])
    got = float(ops.convert_to_numpy(identity_loss(img, txt, pids)))
    want = 0.5 * (-_log_softmax(img)[np.arange(5), pids].mean()
                  - _log_softmax(txt)[np.arange(5), pids].mean())
    np.testing.assert_allclose(got, want, rtol=1e-5)
