"""Dataset loaders: importing this package registers every built-in loader.

Each module parses one family of on-disk layouts (see ``/work/shared/datasets.md`` in the
project notes) into the record types of `valpat_keras.data.records`; use them through
`valpat_keras.datasets.load`.
"""

from valpat_keras.data.loaders import (
    attributes,
    luperson_lmdb,
    manifest,
    pretraining,
    reid,
    shard_folder,
    text,
)
from valpat_keras.data.loaders._common import check_images

__all__ = ["attributes", "check_images", "luperson_lmdb", "manifest", "pretraining", "reid",
           "shard_folder", "text"]
