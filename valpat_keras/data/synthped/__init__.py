"""SynthPed: a procedural pedestrian generator whose images, labels and captions agree.

Real pedestrian datasets cannot be downloaded here, so SynthPed renders people (clothes,
colours, accessories, body proportions) seen by several cameras from several views, and writes
complete datasets in the real on-disk formats (a LUPerson-TA-style pretraining manifest,
Market-1501, PA-100K, CUHK-PEDES), read by the same loaders as real data.

Example:

```python
from valpat_keras.data.synthped import SynthPedConfig, write_synthped

info = write_synthped("/tmp/synthped", SynthPedConfig.preset("tiny"))
print(info.counts)
```
"""

from valpat_keras.data.synthped.captions import ATTRIBUTE_WORDS, describe
from valpat_keras.data.synthped.figure import plot_identity_grid
from valpat_keras.data.synthped.generate import (
    SynthPedImage,
    default_cameras,
    generate_arrays,
    generate_identity_images,
    render_sample,
)
from valpat_keras.data.synthped.identity import (
    VIEWS,
    Identity,
    attribute_vector,
    sample_identity,
    visible_features,
)
from valpat_keras.data.synthped.render import Camera, Shot, render, sample_camera, sample_shot
from valpat_keras.data.synthped.writers import (
    PRETRAIN_FORMAT,
    SETS,
    SynthPedConfig,
    SynthPedInfo,
    build_identities,
    ensure_synthped,
    write_synthped,
)

__all__ = [
    "ATTRIBUTE_WORDS", "PRETRAIN_FORMAT", "SETS", "VIEWS", "Camera", "Identity", "Shot",
    "SynthPedConfig", "SynthPedImage", "SynthPedInfo", "attribute_vector", "build_identities",
    "default_cameras", "describe", "ensure_synthped", "generate_arrays", "generate_identity_images",
    "plot_identity_grid", "render", "render_sample", "sample_camera", "sample_identity",
    "sample_shot", "visible_features", "write_synthped",
]
