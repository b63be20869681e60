import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

pytestmark = pytest.mark.keras


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_cross_entropy(logits, labels):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_prob = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = -log_prob[np.arange(len(labels)), labels].mean()
    return loss, (logits.argmax(axis=1) == labels).mean()


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(4, 8)).astype("float32"), rng.normal(size=(4, 8)).astype("float32"),
            rng.normal(size=(6, 8)).astype("float32"))


def test_info_nce_with_queue_matches_numpy(vectors):
    from valpat_keras.losses import info_nce

    q, k, queue = (_normalize(v) for v in vectors)
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1) / 0.2
    ref_loss, ref_acc = _np_cross_entropy(logits, np.zeros(4, int))
    loss, acc = info_nce(vectors[0], vectors[1], vectors[2], temperature=0.2)
    np.testing.assert_allclose(float(to_np(loss)), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(to_np(acc)), ref_acc)


def test_info_nce_in_batch_negatives_matches_numpy(vectors):
    from valpat_keras.losses import info_nce

    q, k, queue = (_normalize(v) for v in vectors)
    labels = np.arange(4)
    ref = _np_cross_entropy(np.concatenate([q @ k.T, q @ queue.T], axis=1) / 0.1, labels)
    got = info_nce(q, k, queue, temperature=0.1, in_batch_negatives=True)
    np.testing.assert_allclose([float(to_np(v)) for v in got], ref, rtol=1e-5)
    ref_batch_only = _np_cross_entropy(q @ k.T / 0.1, labels)
    got = info_nce(q, k, None, temperature=0.1)
    np.testing.assert_allclose([float(to_np(v)) for v in got], ref_batch_only, rtol=1e-5)
    # A perfect match (k == q, far apart) gives accuracy 1 and a loss near 0.
    _, acc = info_nce(np.eye(4, 8) * 3, np.eye(4, 8), None, temperature=0.05)
    assert float(to_np(acc)) == 1.0


def test_symmetric_info_nce_matches_numpy(vectors):
    from valpat_keras.losses import symmetric_info_nce

    image, text = _normalize(vectors[0]), _normalize(vectors[1])
    logits = 10.0 * image @ text.T
    labels = np.arange(4)
    i2t, t2i = _np_cross_entropy(logits, labels), _np_cross_entropy(logits.T, labels)
    loss, acc = symmetric_info_nce(vectors[0], vectors[1], 10.0)
    np.testing.assert_allclose(float(to_np(loss)), (i2t[0] + t2i[0]) / 2, rtol=1e-5)
    np.testing.assert_allclose(float(to_np(acc)), (i2t[1] + t2i[1]) / 2)
