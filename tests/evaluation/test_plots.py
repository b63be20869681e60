import numpy as np
import pytest
from PIL import Image

from valpat_keras.evaluation import (
    plot_attribute_bars,
    plot_cmc,
    plot_embedding_tsne,
    plot_ranked_results,
    plot_text_retrieval,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    paths = []
    for i in range(6):
        path = root / f"{i}.png"
        Image.new("RGB", (8, 16), (40 * i, 100, 200 - 30 * i)).save(path)
        paths.append(str(path))
    return paths


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_ranked_results_grid(images, tmp_path):
    distmat = np.array([[0.1, 0.5, 0.2, 0.9], [0.3, 0.2, 0.4, 0.1]], dtype=np.float32)
    out = tmp_path / "ranked.png"
    fig = plot_ranked_results(images[:2], images[2:], distmat, np.array([1, 2]),
                              np.array([1, 2, 1, 3]), np.array([0, 0]), np.array([0, 1, 1, 0]),
                              topk=3, path=str(out))
    assert _is_png(out)
    # Query 0's same-pid same-camera item (gallery 0) is excluded: row = query + 3 images.
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[0].startswith("query") and titles[1] == "#1 c1"
    worst = plot_ranked_results(images[:2], images[2:], distmat, np.array([1, 2]),
                                np.array([1, 2, 1, 3]), np.array([0, 0]),
                                np.array([0, 1, 1, 0]), topk=2, order="worst")
    assert len(worst.axes) == 6


def test_cmc_bars_tsne_text(images, tmp_path):
    plot_cmc({"a": np.linspace(0.5, 1, 20), "b": np.linspace(0.3, 1, 20)},
             path=str(tmp_path / "cmc.png"))
    plot_attribute_bars(["Female", "Hat", "Backpack"], np.array([0.8, 0.7, 0.9]),
                        path=str(tmp_path / "bars.png"))
    rng = np.random.default_rng(0)
    plot_embedding_tsne(rng.normal(size=(24, 5)), np.repeat(np.arange(4), 6),
                        path=str(tmp_path / "tsne.png"), max_iter=250)
    plot_text_retrieval(["a man in a red coat", "a woman with a bag"], images,
                        rng.random((2, 6)), np.array([0, 1]), np.arange(6) % 2, topk=3,
                        path=str(tmp_path / "text.png"))
    for name in ("cmc", "bars", "tsne", "text"):
        assert _is_png(tmp_path / f"{name}.png")
    with pytest.raises(ValueError, match="names for"):
        plot_attribute_bars(["a"], np.array([0.1, 0.2]))
