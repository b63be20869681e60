"""Writing complete SynthPed datasets in the real on-disk formats.

`write_synthped(out_dir, config)` writes, under ``out_dir``:

1. ``pretrain/manifest.jsonl`` + ``pretrain/images/*.jpg``: the LUPerson-TA-style manifest
   (header line ``{"format": "valpat-pretrain-v1", "attribute_names": [...]}``, then one
   ``{"image", "captions", "attributes"}`` object per image; no identities).
2. ``Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/`` with Market names
   ``PPPP_cCsS_FFFFFF_BB.jpg``, junk ``-1_...`` and distractor ``0000_...`` gallery files.
3. ``PA-100K/annotation/annotation.mat`` (MATLAB v5) + ``PA-100K/release_data/release_data/``.
4. ``CUHK-PEDES/reid_raw.json`` + ``CUHK-PEDES/imgs/<subfolder>/...``.
5. ``synthped.json``: the config, the counts and the identity numbers of every set.

The identities of the pretraining set and of each downstream set are disjoint; everything is
deterministic for ``config.seed``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from valpat_keras.data.attribute_names import PA100K_ATTRIBUTES
from valpat_keras.data.synthped.generate import SynthPedImage, default_cameras, render_sample
from valpat_keras.data.synthped.identity import VIEWS, Identity, attribute_vector, sample_identity
from valpat_keras.data.synthped.render import sample_camera

#: The identity sets of a SynthPed world, in sampling order.
SETS: tuple[str, ...] = ("pretrain", "reid_train", "reid_test", "attributes", "text")
MARKET_DIR = "Market-1501-v15.09.15"
PRETRAIN_FORMAT = "valpat-pretrain-v1"
_CUHK_SUBFOLDERS = ("CUHK01", "CUHK03", "Market", "cam_a", "cam_b")

_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"height": 64, "width": 32, "pretrain_identities": 10,
             "pretrain_images_per_identity": 2, "reid_train_identities": 8,
             "reid_test_identities": 8, "reid_images_per_identity": 4,
             "attribute_identities": 10, "attribute_images_per_identity": 2,
             "text_identities": 10, "text_images_per_identity": 2},
    "small": {"height": 128, "width": 64, "pretrain_identities": 300,
              "pretrain_images_per_identity": 5, "reid_train_identities": 60,
              "reid_test_identities": 60, "reid_images_per_identity": 8,
              "attribute_identities": 300, "attribute_images_per_identity": 3,
              "text_identities": 150, "text_images_per_identity": 4},
    "default": {"height": 256, "width": 128, "pretrain_identities": 2000,
                "pretrain_images_per_identity": 5, "reid_train_identities": 300,
                "reid_test_identities": 300, "reid_images_per_identity": 12,
                "attribute_identities": 1000, "attribute_images_per_identity": 5,
                "text_identities": 1000, "text_images_per_identity": 4},
}


@dataclasses.dataclass
class SynthPedConfig:
    """What `write_synthped` generates.

    Args:
        seed: Random seed; the same config writes the same bytes.
        height: Image height in pixels.
        width: Image width in pixels.
        difficulty: In [0, 1]; higher means identities share more attributes and differ in
            fine detail (see `sample_identity`).
        pretrain_identities: Identities of the pretraining set.
        pretrain_images_per_identity: Images per pretraining identity.
        reid_train_identities: Identities of Market-style ``bounding_box_train``.
        reid_test_identities: Identities of Market-style query + gallery.
        reid_images_per_identity: Images per reID identity (>= 2, spread over >= 2 cameras).
        attribute_identities: Identities of the PA-100K-style set (split 80/10/10 by
            identity, stratified so that val and test hold positives of every attribute).
        attribute_images_per_identity: Images per attribute identity.
        text_identities: Identities of the CUHK-PEDES-style set (split 80/10/10 by identity).
        text_images_per_identity: Images per text identity.
        captions_per_image: Captions per image (pretraining and text sets).
        num_cameras: Cameras of the reID set (at most 6, as Market-1501 asserts).
        occlusion_prob: Probability that an occluder hides the feet of a person.
        jpeg_quality: JPEG quality of the written images.
    """

    seed: int = 0
    height: int = 256
    width: int = 128
    difficulty: float = 0.5
    pretrain_identities: int = 2000
    pretrain_images_per_identity: int = 5
    reid_train_identities: int = 300
    reid_test_identities: int = 300
    reid_images_per_identity: int = 12
    attribute_identities: int = 1000
    attribute_images_per_identity: int = 5
    text_identities: int = 1000
    text_images_per_identity: int = 4
    captions_per_image: int = 2
    num_cameras: int = 6
    occlusion_prob: float = 0.15
    jpeg_quality: int = 92

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SynthPedConfig:
        """A named size: ``"tiny"`` (seconds, 64x32, for tests), ``"small"`` (the CPU demo,
        128x64) or ``"default"`` (256x128, larger).

        Args:
            name: The preset name.
            **overrides: Fields to change, e.g. ``seed=3``.

        Returns:
            The config.
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown SynthPed preset {name!r}; choose from {sorted(_PRESETS)}")
        return cls(**{**_PRESETS[name], **overrides})

    def validate(self) -> None:
        """Raises ValueError for settings the real formats cannot hold."""
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")
        if self.height < 16 or self.width < 8:
            raise ValueError(f"image size {self.height}x{self.width} is too small (min 16x8)")
        if not 2 <= self.num_cameras <= 6:
            raise ValueError(f"num_cameras must be in 2..6 (Market-1501), got {self.num_cameras}")
        if self.reid_images_per_identity < 2:
            raise ValueError("reid_images_per_identity must be >= 2 (two cameras per identity)")
        if self.reid_train_identities + self.reid_test_identities > 1501:
            raise ValueError("Market-1501 pids are <= 1501: at most 1501 reID identities")
        for name in ("reid_train_identities", "reid_test_identities"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("attribute_identities", "text_identities"):
            if getattr(self, name) < 3:
                raise ValueError(f"{name} must be >= 3 (train / val / test)")
        if self.captions_per_image < 1:
            raise ValueError("captions_per_image must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SynthPedInfo:
    """What `write_synthped` wrote.

    Attributes:
        root: The output folder.
        config: The config used.
        counts: Image / identity / caption counts per dataset and split.
        paths: Dataset roots: ``pretrain_manifest``, ``market1501``, ``pa100k``, ``cuhk_pedes``.
        identity_uids: Identity numbers of each set (`SETS`); the sets are disjoint.
    """

    root: str
    config: SynthPedConfig
    counts: dict[str, int]
    paths: dict[str, str]
    identity_uids: dict[str, list[int]]

    @classmethod
    def load(cls, path: str | Path) -> SynthPedInfo:
        """Reads ``synthped.json`` (or the folder holding it) back.

        Args:
            path: The JSON file or its folder.

        Returns:
            The `SynthPedInfo`.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "synthped.json"
        data = json.loads(path.read_text())
        return cls(root=str(path.parent), config=SynthPedConfig(**data["config"]),
                   counts=data["counts"], paths={k: str(path.parent / v)
                                                 for k, v in data["paths"].items()},
                   identity_uids=data["identity_uids"])


def build_identities(config: SynthPedConfig) -> dict[str, list[Identity]]:
    """The disjoint identity sets of the world of ``config`` (deterministic for its seed).

    Args:
        config: The config.

    Returns:
        Set name (`SETS`) -> identities, with globally unique ``uid``.
    """
    rng = np.random.default_rng([config.seed, 0])
    sizes = {"pretrain": config.pretrain_identities, "reid_train": config.reid_train_identities,
             "reid_test": config.reid_test_identities, "attributes": config.attribute_identities,
             "text": config.text_identities}
    result, uid = {}, 0
    for name in SETS:
        result[name] = [sample_identity(rng, config.difficulty, uid + i) for i in
                        range(sizes[name])]
        uid += sizes[name]
    return result


def _save(image: np.ndarray, path: Path, quality: int) -> None:
    Image.fromarray(image).save(path, "JPEG", quality=quality)


def _split3(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # 80/10/10 by identity, each split non-empty.
    order = rng.permutation(n)
    n_val = max(1, round(0.1 * n))
    n_test = max(1, round(0.1 * n))
    n_train = n - n_val - n_test
    return (np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_val]),
            np.sort(order[n_train + n_val:]))


def _stratified_split3(labels: np.ndarray, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """80/10/10 by identity (the sizes of `_split3`), stratified over multi-label attributes.

    Iterative stratification (Sechidis et al. 2011) on the positive and negative indicator of
    every attribute: the rarest remaining indicator is placed first, each of its identities
    going to the split that still needs it most. A split that has no identity with a value
    yet gets the next one, so with at least three identities per value, val and test both
    hold positives and negatives of every attribute (the protocol's mA needs both).

    Args:
        labels: (n, A) identity-level 0/1 attributes.
        rng: Breaks ties (deterministic for the seed).

    Returns:
        Sorted train, val and test identity indices.
    """
    n = len(labels)
    n_val = n_test = max(1, round(0.1 * n))
    capacity = np.array([n - n_val - n_test, n_val, n_test], np.float64)
    indicators = np.concatenate([labels, 1 - labels], axis=1).astype(np.float64)
    # Drop indicators that do not vary (e.g. a view every identity can show).
    indicators = indicators[:, indicators.sum(0) < n]
    need = capacity[:, None] / n * indicators.sum(0)[None, :]
    have = np.zeros_like(need)
    split_of = np.full(n, -1)
    tie = rng.random((n, 3))
    while (split_of < 0).any():
        free = split_of < 0
        left = indicators[free].sum(0)
        if left.max() == 0:
            column, members = None, np.flatnonzero(free)
        else:
            column = int(np.argmin(np.where(left > 0, left, np.inf)))
            members = np.flatnonzero(free & (indicators[:, column] > 0))
        for i in rng.permutation(members):
            open_ = capacity > 0
            if column is None:
                score = [(open_[s], capacity[s], tie[i, s]) for s in range(3)]
            else:
                missing = (have[:, column] == 0) & (np.arange(3) > 0) & (left[column] >= 3)
                score = [(open_[s], missing[s], need[s, column], capacity[s], tie[i, s])
                         for s in range(3)]
            split = max(range(3), key=lambda s: score[s])
            split_of[i] = split
            capacity[split] -= 1
            need[split] -= indicators[i]
            have[split] += indicators[i]
    return tuple(np.flatnonzero(split_of == s) for s in range(3))


def _tokens(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", caption.lower())


def _write_pretrain(root: Path, identities: list[Identity], config: SynthPedConfig,
                    rng: np.random.Generator) -> dict[str, int]:
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    # Unlabelled web video is varied: many more backgrounds than the 6 reID cameras.
    cameras = [sample_camera(rng, i + 1) for i in range(24)]
    jobs = [(p, k) for p in identities for k in range(config.pretrain_images_per_identity)]
    order = rng.permutation(len(jobs))
    lines = [json.dumps({"format": PRETRAIN_FORMAT, "attribute_names": list(PA100K_ATTRIBUTES)})]
    for n, j in enumerate(order, start=1):
        person = jobs[int(j)][0]
        camera = cameras[int(rng.integers(len(cameras)))]
        sample = render_sample(person, camera, rng, config.height, config.width,
                               config.captions_per_image, config.occlusion_prob)
        name = f"images/{n:06d}.jpg"
        _save(sample.image, root / name, config.jpeg_quality)
        lines.append(json.dumps({"image": name, "captions": list(sample.captions),
                                 "attributes": [int(a) for a in sample.attributes]}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return {"pretrain_images": len(jobs), "pretrain_captions":
            len(jobs) * config.captions_per_image}


def _fragment(image: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    # A badly placed detection box: a sub-window of a person image, resized to full size.
    h, w = image.shape[:2]
    fh, fw = int(h * rng.uniform(low, high)), int(w * rng.uniform(low, high))
    y, x = int(rng.integers(0, h - fh + 1)), int(rng.integers(0, w - fw + 1))
    crop = Image.fromarray(image[y:y + fh, x:x + fw])
    return np.asarray(crop.resize((w, h), Image.BILINEAR))


def _write_market(root: Path, train: list[Identity], test: list[Identity],
                  config: SynthPedConfig, rng: np.random.Generator) -> tuple[dict, dict]:
    dirs = {k: root / k for k in ("bounding_box_train", "query", "bounding_box_test")}
    for d in dirs.values():
        d.mkdir(parents=True)
    cameras = default_cameras(config.seed, config.num_cameras)
    pool = rng.choice(np.arange(1, 1502), size=len(train) + len(test), replace=False)
    pids = {"train": sorted(int(p) for p in pool[:len(train)]),
            "test": sorted(int(p) for p in pool[len(train):])}
    frames = {c.index: int(rng.integers(0, 2000)) for c in cameras}

    def name(pid: int, cam: int) -> str:
        frames[cam] += int(rng.integers(25, 400))
        prefix = "-1" if pid < 0 else f"{pid:04d}"
        seq = int(rng.integers(1, 7))
        return f"{prefix}_c{cam}s{seq}_{frames[cam]:06d}_{int(rng.integers(1, 9)):02d}.jpg"

    def shoot(person: Identity) -> list[SynthPedImage]:
        n = config.reid_images_per_identity
        k = int(rng.integers(2, min(config.num_cameras, n) + 1))
        cams = rng.choice(config.num_cameras, size=k, replace=False)
        return [render_sample(person, cameras[int(cams[i % k])], rng, config.height,
                              config.width, 1, config.occlusion_prob) for i in range(n)]

    counts = {"market_train_images": 0, "market_query_images": 0, "market_gallery_images": 0}
    for person, pid in zip(train, pids["train"]):
        for s in shoot(person):
            _save(s.image, dirs["bounding_box_train"] / name(pid, s.camera), config.jpeg_quality)
            counts["market_train_images"] += 1
    gallery_images = []
    for person, pid in zip(test, pids["test"]):
        samples = shoot(person)
        cams = sorted({s.camera for s in samples})
        # At most one query per camera, and always leave one camera to the gallery only, so
        # every query has a same-pid gallery image under another camera.
        chosen = rng.choice(cams, size=min(2, len(cams) - 1), replace=False)
        query_cams = {int(c) for c in chosen}
        for s in samples:
            if s.camera in query_cams:
                query_cams.discard(s.camera)
                _save(s.image, dirs["query"] / name(pid, s.camera), config.jpeg_quality)
                counts["market_query_images"] += 1
            else:
                _save(s.image, dirs["bounding_box_test"] / name(pid, s.camera),
                      config.jpeg_quality)
                counts["market_gallery_images"] += 1
                gallery_images.append(s.image)
    # Junk (-1, partial boxes) and distractors (0000, mostly background), as in Market-1501.
    n_extra = max(2, round(0.05 * counts["market_gallery_images"]))
    for kind, (low, high) in (("junk", (0.5, 0.7)), ("distractor", (0.2, 0.35))):
        for _ in range(n_extra):
            source = gallery_images[int(rng.integers(len(gallery_images)))]
            cam = int(rng.integers(1, config.num_cameras + 1))
            pid = -1 if kind == "junk" else 0
            _save(_fragment(source, rng, low, high), dirs["bounding_box_test"] / name(pid, cam),
                  config.jpeg_quality)
        counts[f"market_{kind}_images"] = n_extra
    counts["market_train_ids"] = len(train)
    counts["market_test_ids"] = len(test)
    return counts, pids


def _cell(strings: list[str]) -> np.ndarray:
    # An N x 1 object array is written by savemat as an N x 1 cell array of strings.
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = s
    return cell


def _write_pa100k(root: Path, identities: list[Identity], config: SynthPedConfig,
                  rng: np.random.Generator) -> dict[str, int]:
    image_dir = root / "release_data" / "release_data"
    image_dir.mkdir(parents=True)
    (root / "annotation").mkdir()
    cameras = default_cameras(config.seed + 1, 6)
    mat: dict[str, np.ndarray] = {"attributes": _cell(list(PA100K_ATTRIBUTES))}
    counts, number = {}, 0
    # Identity-level labels: what any view of the person can show.
    labels = np.stack([np.max([attribute_vector(p, view) for view in VIEWS], axis=0)
                       for p in identities])
    for split, members in zip(("train", "val", "test"), _stratified_split3(labels, rng)):
        names, labels = [], []
        for i in members:
            person = identities[int(i)]
            for _ in range(config.attribute_images_per_identity):
                camera = cameras[int(rng.integers(len(cameras)))]
                sample = render_sample(person, camera, rng, config.height, config.width, 1,
                                       config.occlusion_prob)
                number += 1
                names.append(f"{number:06d}.jpg")
                _save(sample.image, image_dir / names[-1], config.jpeg_quality)
                labels.append(sample.attributes)
        mat[f"{split}_images_name"] = _cell(names)
        mat[f"{split}_label"] = np.stack(labels).astype(np.uint8)
        counts[f"pa100k_{split}_images"] = len(names)
    mat_path = root / "annotation" / "annotation.mat"
    scipy.io.savemat(mat_path, mat, format="5")
    # savemat stamps the current time into the 116-byte text header; a fixed text keeps the
    # file byte-identical for a seed.
    data = bytearray(mat_path.read_bytes())
    data[:116] = b"MATLAB 5.0 MAT-file, written by valpat_keras SynthPed".ljust(116)
    mat_path.write_bytes(bytes(data))
    return counts


def _write_cuhk_pedes(root: Path, identities: list[Identity], config: SynthPedConfig,
                      rng: np.random.Generator) -> dict[str, int]:
    cameras = default_cameras(config.seed + 2, 6)
    entries, counts, next_id = [], {}, 1
    for split, members in zip(("train", "val", "test"), _split3(len(identities), rng)):
        images = 0
        for i in members:
            person, pid = identities[int(i)], next_id
            next_id += 1
            folder = _CUHK_SUBFOLDERS[int(rng.integers(len(_CUHK_SUBFOLDERS)))]
            (root / "imgs" / folder).mkdir(parents=True, exist_ok=True)
            for k in range(config.text_images_per_identity):
                camera = cameras[int(rng.integers(len(cameras)))]
                sample = render_sample(person, camera, rng, config.height, config.width,
                                       config.captions_per_image, config.occlusion_prob)
                file_path = f"{folder}/{pid:04d}{k + 1:03d}.jpg"
                _save(sample.image, root / "imgs" / file_path, config.jpeg_quality)
                entries.append({"split": split, "captions": list(sample.captions),
                                "file_path": file_path,
                                "processed_tokens": [_tokens(c) for c in sample.captions],
                                "id": pid})
                images += 1
        counts[f"cuhk_{split}_images"] = images
        counts[f"cuhk_{split}_ids"] = len(members)
    (root / "reid_raw.json").write_text(json.dumps(entries))
    return counts


def _prepare(out: Path) -> None:
    # Replace an earlier SynthPed output (recognised by synthped.json); never delete
    # anything else.
    targets = [out / "pretrain", out / MARKET_DIR, out / "PA-100K", out / "CUHK-PEDES"]
    ours = (out / "synthped.json").exists()
    for target in targets:
        if target.exists():
            if not ours:
                raise FileExistsError(
                    f"{target} exists and {out} holds no synthped.json; choose an empty folder")
            shutil.rmtree(target)


def write_synthped(out_dir: str | Path, config: SynthPedConfig | None = None,
                   progress: Callable[[str], None] | None = None) -> SynthPedInfo:
    """Writes the pretraining, reID, attribute and text-search datasets under ``out_dir``.

    A previous SynthPed output in ``out_dir`` is replaced; dataset folders that were not
    written by SynthPed make it raise `FileExistsError` rather than be deleted.

    Args:
        out_dir: The output folder (created if needed).
        config: What to generate; ``SynthPedConfig()`` (the default size) when None.
        progress: Called with a short message before each dataset is written.

    Returns:
        A `SynthPedInfo` (also written to ``out_dir/synthped.json``).

    Example:

    ```python
    info = write_synthped("/tmp/synthped", SynthPedConfig.preset("tiny", seed=1))
    datasets.load("market1501", info.paths["market1501"])
    ```
    """
    config = config or SynthPedConfig()
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _prepare(out)
    say = progress or (lambda message: None)
    identities = build_identities(config)

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([config.seed, 2, k])

    counts: dict[str, int] = {}
    say(f"pretraining set: {config.pretrain_identities} identities")
    counts.update(_write_pretrain(out / "pretrain", identities["pretrain"], config, rng(0)))
    say(f"Market-1501 layout: {config.reid_train_identities} + {config.reid_test_identities} ids")
    market_counts, market_pids = _write_market(
        out / MARKET_DIR, identities["reid_train"], identities["reid_test"], config, rng(1))
    counts.update(market_counts)
    say(f"PA-100K layout: {config.attribute_identities} identities")
    counts.update(_write_pa100k(out / "PA-100K", identities["attributes"], config, rng(2)))
    say(f"CUHK-PEDES layout: {config.text_identities} identities")
    counts.update(_write_cuhk_pedes(out / "CUHK-PEDES", identities["text"], config, rng(3)))

    paths = {"pretrain_manifest": "pretrain/manifest.jsonl", "market1501": MARKET_DIR,
             "pa100k": "PA-100K", "cuhk_pedes": "CUHK-PEDES"}
    uids = {name: [p.uid for p in people] for name, people in identities.items()}
    payload = {"format": "synthped-v1", "config": config.to_dict(), "counts": counts,
               "paths": paths, "identity_uids": uids, "market_pids": market_pids}
    (out / "synthped.json").write_text(json.dumps(payload, indent=1) + "\n")
    return SynthPedInfo(root=str(out), config=config, counts=counts,
                        paths={k: str(out / v) for k, v in paths.items()}, identity_uids=uids)


def ensure_synthped(out_dir: str | Path, config: SynthPedConfig | None = None,
                    progress: Callable[[str], None] | None = print) -> SynthPedInfo:
    """SynthPed for ``config`` in ``out_dir``: reused when already written, else generated.

    The one place commands, the demo and the notebooks turn "no data given" into data. A
    SynthPed folder written with another config is replaced; generation goes to a temporary
    sibling folder renamed into place, so an interrupted run never leaves a half-written set
    that a later run would reuse.

    Args:
        out_dir: The SynthPed folder.
        config: What to generate; ``SynthPedConfig()`` when None.
        progress: Called with one line when generating (``None``: silent).

    Returns:
        The `SynthPedInfo` of ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` is a non-empty folder SynthPed did not write (it is
            never deleted).
    """
    config = config or SynthPedConfig()
    out = Path(out_dir)
    written = out / "synthped.json"
    if written.is_file():
        try:
            same = json.loads(written.read_text()).get("config") == config.to_dict()
        except (OSError, ValueError):
            same = False
        if same:
            return SynthPedInfo.load(out)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        # Only a folder SynthPed wrote (it holds synthped.json) is ever replaced.
        raise FileExistsError(f"{out} exists, is not empty and holds no synthped.json; "
                              "choose an empty or new folder")
    if progress is not None:
        progress(f"generating SynthPed (seed {config.seed}) into {out}")
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    write_synthped(partial, config)
    if out.exists():
        stale = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(partial, out)
    return SynthPedInfo.load(out)
