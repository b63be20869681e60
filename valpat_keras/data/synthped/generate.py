"""In-memory SynthPed samples: one rendered image with its labels and captions.

`generate_identity_images` and `generate_arrays` are the small direct API for code that wants
pedestrian images without files (tests, notebooks); the dataset writers use the same
`render_sample`, so images in memory and on disk come from one generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from valpat_keras.data.synthped.captions import describe
from valpat_keras.data.synthped.identity import Identity, attribute_vector, sample_identity
from valpat_keras.data.synthped.render import Camera, render, sample_camera, sample_shot


@dataclasses.dataclass(frozen=True)
class SynthPedImage:
    """One rendered image and everything known about it.

    Attributes:
        image: ``uint8`` array (H, W, 3).
        uid: The identity's number.
        camera: 1-based camera number.
        view: ``"front"``, ``"side"`` or ``"back"``.
        attributes: ``int8`` (26,) PA-100K labels of this image.
        captions: Captions describing this image.
    """

    image: np.ndarray
    uid: int
    camera: int
    view: str
    attributes: np.ndarray
    captions: tuple[str, ...]


def default_cameras(seed: int = 0, num_cameras: int = 6) -> list[Camera]:
    """The cameras of a world with this seed (numbered 1..num_cameras).

    Args:
        seed: World seed.
        num_cameras: How many cameras.

    Returns:
        The list of `Camera`.
    """
    rng = np.random.default_rng([seed, 1])
    return [sample_camera(rng, i + 1) for i in range(num_cameras)]


def render_sample(identity: Identity, camera: Camera, rng: np.random.Generator,
                  height: int = 256, width: int = 128, num_captions: int = 2,
                  occlusion_prob: float = 0.15, view: str | None = None) -> SynthPedImage:
    """Renders one image of ``identity`` under ``camera`` with its labels and captions.

    Args:
        identity: The person.
        camera: The camera.
        rng: NumPy random generator (shot, pixels and captions).
        height: Image height.
        width: Image width.
        num_captions: Captions to write.
        occlusion_prob: Probability of an occluder hiding the feet.
        view: Force ``"front"``, ``"side"`` or ``"back"``; by default drawn per camera.

    Returns:
        A `SynthPedImage`.
    """
    shot = sample_shot(rng, camera, view=view, occlusion_prob=occlusion_prob)
    image = render(identity, camera, shot, rng, height, width)
    captions = describe(identity, shot.view, rng, num_captions, shot.feet_visible)
    return SynthPedImage(
        image=image, uid=identity.uid, camera=camera.index, view=shot.view,
        attributes=attribute_vector(identity, shot.view, shot.feet_visible),
        captions=tuple(captions))


def generate_identity_images(identity: Identity, n: int, rng: np.random.Generator,
                             cameras: Sequence[Camera] | None = None, height: int = 256,
                             width: int = 128, num_captions: int = 2,
                             occlusion_prob: float = 0.15) -> list[SynthPedImage]:
    """Renders ``n`` images of one identity spread evenly over the cameras.

    Args:
        identity: The person (e.g. from `sample_identity`).
        n: Number of images.
        rng: NumPy random generator.
        cameras: Cameras to use; `default_cameras()` when None.
        height: Image height.
        width: Image width.
        num_captions: Captions per image.
        occlusion_prob: Probability of an occluder hiding the feet.

    Returns:
        ``n`` `SynthPedImage` objects.

    Example:

    ```python
    rng = np.random.default_rng(0)
    person = sample_identity(rng, difficulty=0.5)
    shots = generate_identity_images(person, 4, rng, height=128, width=64)
    shots[0].image.shape, shots[0].captions[0]
    ```
    """
    cameras = list(cameras) if cameras is not None else default_cameras()
    order = rng.permutation(len(cameras))
    return [render_sample(identity, cameras[int(order[i % len(cameras)])], rng, height, width,
                          num_captions, occlusion_prob) for i in range(n)]


def generate_arrays(num_identities: int, images_per_identity: int, seed: int = 0,
                    height: int = 64, width: int = 32, difficulty: float = 0.5,
                    num_captions: int = 2) -> dict[str, np.ndarray | list]:
    """A small labelled data set in memory (no files), deterministic for the seed.

    Args:
        num_identities: Number of identities (pids 0..num_identities-1).
        images_per_identity: Images per identity, spread over 6 cameras.
        seed: Random seed.
        height: Image height.
        width: Image width.
        difficulty: Identity difficulty in [0, 1] (see `sample_identity`).
        num_captions: Captions per image.

    Returns:
        A dict with ``images`` (N, H, W, 3) uint8, ``pids`` (N,) int32, ``camids`` (N,) int32
        (0-based), ``attributes`` (N, 26) int8, ``views`` (list of str) and ``captions``
        (list of lists of str).
    """
    rng = np.random.default_rng([seed, 7])
    cameras = default_cameras(seed)
    samples = []
    for pid in range(num_identities):
        identity = sample_identity(rng, difficulty, uid=pid)
        samples += generate_identity_images(identity, images_per_identity, rng, cameras, height,
                                            width, num_captions)
    return {
        "images": np.stack([s.image for s in samples]),
        "pids": np.asarray([s.uid for s in samples], np.int32),
        "camids": np.asarray([s.camera - 1 for s in samples], np.int32),
        "attributes": np.stack([s.attributes for s in samples]),
        "views": [s.view for s in samples],
        "captions": [list(s.captions) for s in samples],
    }
