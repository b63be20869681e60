"""A keras-hub ViT preset saved at 32x32 loads at person aspect ratios and trains."""

import keras
import keras_hub
import numpy as np
import pytest

from valpat_keras.errors import InputError
from valpat_keras.models.vit_resize import (
    StridedViTBackbone,
    interpolate_position_embedding,
    load_vit_at_size,
)

PATCH = 8


def _cubic(x: float, a: float = -0.75) -> float:
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0


def _bicubic_loop(grid: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Pixel-by-pixel bicubic resize (half-pixel centres, clamped edges), the reference."""
    old_h, old_w = grid.shape[:2]
    out = np.zeros((new_h, new_w, grid.shape[2]))
    for i in range(new_h):
        y = (i + 0.5) * old_h / new_h - 0.5
        for j in range(new_w):
            x = (j + 0.5) * old_w / new_w - 0.5
            for yy in range(int(np.floor(y)) - 1, int(np.floor(y)) + 3):
                for xx in range(int(np.floor(x)) - 1, int(np.floor(x)) + 3):
                    weight = _cubic(y - yy) * _cubic(x - xx)
                    out[i, j] += weight * grid[min(max(yy, 0), old_h - 1),
                                               min(max(xx, 0), old_w - 1)]
    return out


def _reference_positions(weights, old_grid, new_grid):
    grid = weights[1:].astype(np.float64).reshape(*old_grid, -1)
    return np.concatenate([weights[:1], _bicubic_loop(grid, *new_grid).reshape(
        new_grid[0] * new_grid[1], -1)])


@pytest.mark.parametrize("old_grid,new_grid", [((4, 4), (8, 4)), ((4, 4), (11, 7)),
                                               ((14, 14), (21, 10)), ((3, 5), (2, 7))])
def test_interpolation_equals_a_direct_bicubic_computation(old_grid, new_grid):
    weights = np.random.default_rng(0).normal(size=(1 + old_grid[0] * old_grid[1], 3))
    out = interpolate_position_embedding(weights, old_grid, new_grid, num_prefix_tokens=1)
    np.testing.assert_allclose(out, _reference_positions(weights, old_grid, new_grid),
                               atol=1e-12)
    np.testing.assert_array_equal(out[0], weights[0])  # the class token is kept


def test_interpolation_equals_pytorch_bicubic_values():
    # torch.nn.functional.interpolate(grid, size=(3, 3), mode="bicubic",
    # align_corners=False) on [[1, 2], [3, 4]] (computed once with torch 2.x).
    expected = [0.739583, 1.326389, 1.913194, 1.913194, 2.5, 3.086806, 3.086806, 3.673611,
                4.260417]
    weights = np.arange(5, dtype=np.float64).reshape(5, 1)
    out = interpolate_position_embedding(weights[None], (2, 2), (3, 3))
    assert out.shape == (1, 10, 1)
    np.testing.assert_allclose(out[0, 1:, 0], expected, atol=1e-6)
    with pytest.raises(InputError, match="expected 1 \\+ 3 x 3 embeddings"):
        interpolate_position_embedding(weights, (3, 3), (2, 2))


@pytest.fixture(scope="module")
def vit_preset(tmp_path_factory):
    """A tiny random ViT saved at 32x32 (4x4 patches of 8 pixels) with save_to_preset."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=PATCH,
                                            num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16)
    path = tmp_path_factory.mktemp("vit_preset")
    backbone.save_to_preset(str(path))
    return str(path), backbone


def _positions(backbone):
    layer = backbone.get_layer("vit_patching_and_embedding")
    return keras.ops.convert_to_numpy(layer.position_embedding.embeddings)


@pytest.mark.keras
def test_same_size_reproduces_the_preset(vit_preset):
    path, source = vit_preset
    images = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    same = load_vit_at_size(path, (32, 32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(same(images)),
                               keras.ops.convert_to_numpy(source(images)), atol=1e-5)


@pytest.mark.keras
@pytest.mark.parametrize("image_size,stride,grid", [((64, 32), None, (8, 4)),
                                                    ((48, 32), 4, (11, 7))])
def test_preset_loads_at_person_size_and_trains(vit_preset, image_size, stride, grid):
    path, source = vit_preset
    backbone = load_vit_at_size(path, image_size, patch_stride=stride)
    assert isinstance(backbone, keras_hub.models.ViTBackbone)
    assert isinstance(backbone, StridedViTBackbone) == (stride is not None)
    np.testing.assert_allclose(_positions(backbone),
                               _reference_positions(_positions(source), (4, 4), grid),
                               atol=1e-6)
    # Everything but the position table (class token, patch kernel, encoder) is the preset's.
    new_weights = [w for w in backbone.weights if "position_embedding" not in w.path]
    old_weights = [w for w in source.weights if "position_embedding" not in w.path]
    assert len(new_weights) == len(old_weights) > 4
    for new, old in zip(new_weights, old_weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new),
                                      keras.ops.convert_to_numpy(old))
    images = np.random.default_rng(2).random((4, *image_size, 3)).astype("float32")
    tokens = keras.ops.convert_to_numpy(backbone(images))
    assert tokens.shape == (4, 1 + grid[0] * grid[1], 8) and np.isfinite(tokens).all()
    # One training step on random data moves the weights.
    model = keras.Sequential([backbone, keras.layers.Lambda(lambda t: t[:, 0]),
                              keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = _positions(backbone).copy()
    history = model.fit(images, np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(_positions(backbone), before)


@pytest.mark.keras
def test_strided_backbone_round_trips_through_a_preset(vit_preset, tmp_path):
    path, _ = vit_preset
    backbone = load_vit_at_size(path, (48, 32), patch_stride=4)
    backbone.save_to_preset(str(tmp_path / "strided"))
    restored = keras_hub.models.Backbone.from_preset(str(tmp_path / "strided"))
    assert isinstance(restored, StridedViTBackbone) and restored.patch_stride == (4, 4)
    images = np.random.default_rng(3).random((2, 48, 32, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(images)),
                               keras.ops.convert_to_numpy(backbone(images)), atol=1e-5)


@pytest.mark.keras
def test_bad_sizes_and_strides_name_the_problem(vit_preset):
    path, _ = vit_preset
    with pytest.raises(InputError, match="multiple of the patch size"):
        load_vit_at_size(path, (60, 32))
    with pytest.raises(InputError, match="stride between 1 and the patch size"):
        load_vit_at_size(path, (64, 32), patch_stride=9)
    with pytest.raises(InputError, match="at least one patch"):
        load_vit_at_size(path, (4, 32), patch_stride=4)
