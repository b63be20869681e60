"""A figure of SynthPed identities across cameras, each row with one caption."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from valpat_keras.data.synthped.generate import default_cameras, render_sample
from valpat_keras.data.synthped.writers import SynthPedConfig, SynthPedInfo, build_identities


def plot_identity_grid(source: SynthPedInfo | SynthPedConfig | str | Path, path: str | Path,
                       num_identities: int = 6, views_per_identity: int = 4) -> Path:
    """Saves a grid: one row per reID test identity, one column per camera, plus a caption.

    The images are re-rendered from the config (the same generator and identities as the
    written Market-1501 test set, other shots of them), so the figure needs no files.

    Args:
        source: A `SynthPedInfo`, a `SynthPedConfig`, or a SynthPed output folder (or its
            ``synthped.json``).
        path: Where to save the PNG.
        num_identities: Rows (capped by the number of reID test identities).
        views_per_identity: Columns, each from a different camera (capped by the cameras).

    Returns:
        The saved path.
    """
    # The Agg canvas draws without pyplot, so no global GUI backend is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(source, SynthPedConfig):
        config = source
    elif isinstance(source, SynthPedInfo):
        config = source.config
    else:
        config = SynthPedInfo.load(source).config
    people = build_identities(config)["reid_test"][:num_identities]
    cameras = default_cameras(config.seed, config.num_cameras)
    cols = min(views_per_identity, len(cameras))
    rng = np.random.default_rng([config.seed, 99])
    aspect = config.height / config.width
    fig = Figure(figsize=(1.0 * cols + 2.8, 1.05 * aspect * len(people)))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(people), cols + 1, width_ratios=[1] * cols + [2.8],
                            wspace=0.05, hspace=0.15)
    for row, person in enumerate(people):
        caption = ""
        for col in range(cols):
            camera = cameras[(row + col) % len(cameras)]
            sample = render_sample(person, camera, rng, config.height, config.width, 1,
                                   config.occlusion_prob)
            caption = caption or sample.captions[0]
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(sample.image)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"cam {camera.index} · {sample.view}", fontsize=6, labelpad=1)
            if col == 0:
                ax.set_ylabel(f"id {person.uid}", fontsize=7)
        text_ax = fig.add_subplot(grid[row, cols])
        text_ax.axis("off")
        text_ax.text(0.02, 0.5, textwrap.fill(f"cam {cameras[row % len(cameras)].index}: "
                                              + caption, 42),
                     fontsize=6.5, va="center", ha="left", transform=text_ax.transAxes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path
