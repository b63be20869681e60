"""``shards``: a folder written by ``valpat pack`` (TFRecord shards), as the kind it was packed from.

The format and the readers are in `valpat_keras.data.shards`; this module only registers the
loader, so ``valpat datasets shards:SHARDS``, ``valpat pretrain --data SHARDS`` and the
transfers (``valpat reid / attributes / search / evaluate --data shards:SHARDS``) read it.
"""

from __future__ import annotations

from typing import Any

from valpat_keras.data.registry import note_ignored_options, register_dataset

__all__ = ["load_shards"]


@register_dataset("shards", kind="pretraining")
def load_shards(root: str, subset: str = "train", verify_images: bool = False,
                kind: str = "pretraining", **options: Any):
    """TFRecord shards written by ``valpat pack`` (a pretraining split, or a transfer set).

    Args:
        root: The shard folder (holding ``index.json``).
        subset: For ``kind="pretraining"``: the packed split to read (``train``; a re-ID pack
            also has ``query`` and ``gallery``). A transfer kind reads every split.
        verify_images: Also read every shard through (CRCs and record counts checked).
        kind: ``pretraining`` (any pack, one split), or ``reid``, ``attributes``, ``text``:
            the dataset the pack holds, with every split (the transfer commands ask for the
            kind they read).
        **options: Options of other loaders; named in ``ignored_options`` and the summary.

    Returns:
        A `valpat_keras.data.shards.ShardPretrainDataset`, or a ``ShardReIDDataset`` /
        ``ShardAttributeDataset`` / ``ShardTextDataset``: records whose ``path`` is
        ``SHARDS/KEY``, read from the shards by every pipeline (``image_source``).

    Raises:
        InputError: Not a shard folder, a missing or corrupt shard or index (named), no
            such split, or a pack of another kind than ``kind``.
    """
    # Imported here: `data.shards` imports the pipelines, which import this package.
    from valpat_keras.data.shards import load_shard_pretraining, load_shard_transfer

    if kind == "pretraining":
        dataset = load_shard_pretraining(root, split=subset, verify=verify_images)
    else:
        if subset != "train":
            options["subset"] = subset  # a transfer set reads every split
        dataset = load_shard_transfer(root, kind, verify=verify_images)
    return note_ignored_options(dataset, options)
