"""tf.data input pipelines: records in, batched and prefetched datasets out.

Images leave every pipeline as float32 in [0, 1], shape ``(B, H, W, 3)`` (the encoder
normalises inside itself); caption tokens as int32 ``(B, L)`` with 0 padding; attribute
vectors as float32 with -1 for unknown. The datasets feed ``model.fit`` on every Keras backend.

Randomness is deterministic given ``seed``: building the same pipeline twice gives the same
batches. A training dataset is finite (one epoch) and draws a new shuffle, new augmentations
and new caption choices each time it is iterated again (``fit(ds, epochs=n)``), still
reproducibly: per-element stateless seeds come from ``tf.data.Dataset.random`` with
``rerandomize_each_iteration=True``. The re-ID pipeline instead lays out the PK sampler's epochs
explicitly and returns the steps per epoch.

An image that still fails to decode while a pipeline is iterated (changed after the image
check, or the check was off) stops the iteration with an error naming the file: a TensorFlow
``InvalidArgumentError`` whose message starts with `DECODE_FAILURE_MARKER`, which
`decode_failure_from` (or the `named_decode_errors` context) turns into an `InputError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from valpat_keras.data.augment import (
    attribute_train_augment,
    reid_ssl_view_augment,
    reid_train_augment,
    ssl_view_augment,
)
from valpat_keras.data.errors import DECODE_FAILURE_MARKER, SkippedImages, decode_failure_from
from valpat_keras.data.loaders._common import check_images as _check_decodable
from valpat_keras.data.records import PretrainRecord, ReIDRecord, TextRecord, camids_of, pids_of
from valpat_keras.data.sampler import PKSampler
from valpat_keras.data.tokenizer import CaptionTokenizer

__all__ = ["AUTOTUNE", "DECODE_FAILURE_MARKER", "ImageSource", "caption_dataset",
           "decode_image", "decode_image_bytes", "filter_readable", "image_dataset",
           "labeled_image_dataset", "named_decode_errors",
           "pretrain_dataset", "pretrain_views", "reid_train_dataset", "text_image_dataset"]

AUTOTUNE = tf.data.AUTOTUNE
Augment = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Where a pipeline reads encoded images that are not one file each (LMDB, TFRecord shards).

    With a source, a record's ``path`` is the image's key in the store.

    Attributes:
        read: Maps a scalar string tensor (a record's ``path``, i.e. its key) to the encoded
            image bytes (scalar string tensor); runs inside a parallel ``tf.data`` map.
        check: Maps keys to a `SkippedImages` naming the unreadable ones (used by
            ``check_images=True`` and to name the failing image when an element fails).
        name: What the store is, for messages (e.g. the LMDB folder).
    """

    read: Callable[[tf.Tensor], tf.Tensor]
    check: Callable[[Sequence[str]], SkippedImages]
    name: str = ""


def _reader_and_check(source: ImageSource | None, items: Sequence = ()
                      ) -> tuple[Callable[[tf.Tensor], tf.Tensor],
                                 Callable[[Sequence[str]], SkippedImages]]:
    """The bytes reader and the image check of ``source``; without one, of the shard folder
    ``items`` (paths or records) were loaded from (``SHARDS/KEY``), else of files."""
    if source is None and len(items):
        # Imported here: `data.shards` imports this module.
        from valpat_keras.data.shards import image_source_for_paths

        source = image_source_for_paths(items)
    if source is None:
        return tf.io.read_file, _check_decodable
    return source.read, source.check


@contextlib.contextmanager
def named_decode_errors() -> Iterator[None]:
    """Turns a pipeline's decode failure inside the block into an `InputError` naming the file.

    Example:

    ```python
    with named_decode_errors():
        model.fit(pretrain_dataset(records), epochs=2)
    ```
    """
    try:
        yield
    except tf.errors.OpError as error:
        failure = decode_failure_from(error)
        if failure is None:
            raise
        raise failure from None


def _describe_failure(paths: Sequence[str], position: int, context: str,
                      check: Callable[[Sequence[str]], SkippedImages] = _check_decodable) -> str:
    """The message of a failed element: the files that do not decode now (cached check)."""
    skipped = check(paths)
    if len(skipped):
        files = "; ".join(f"{p} ({r})" for p, r in zip(skipped.paths[:5], skipped.reasons[:5]))
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        return (f"{DECODE_FAILURE_MARKER} {context}: element {position} of the epoch failed to "
                f"load; {len(skipped)} file(s) do not decode: {files}{more}. Replace or remove "
                "them (the loaders' verify_images=True drops and counts them)")
    return (f"{DECODE_FAILURE_MARKER} {context}: element {position} of the epoch failed to "
            f"load, yet all {len(paths)} images decode now; see the TensorFlow warning above "
            "for the error")


def _map_in_order(source: tf.data.Dataset, load: Callable[..., object], total: int,
                  paths: Sequence[str], context: str,
                  image_check: Callable[[Sequence[str]], SkippedImages] = _check_decodable
                  ) -> tf.data.Dataset:
    """``source.map(load)`` in parallel and in order, naming the files when an element fails.

    A decode error inside a parallel map carries no file name. Here the failed element is
    skipped (`ignore_errors`, which logs the error), the next element (or an end marker)
    sees the gap in the positions, and the iteration stops with an ``InvalidArgumentError``
    holding `DECODE_FAILURE_MARKER` and the files that fail a fresh (cached) image check.
    Elements that load are unchanged, in the same order.

    Args:
        source: Elements (tuples are unpacked into ``load``), one epoch of ``total``.
        load: The per-element function.
        total: The number of elements of ``source``.
        paths: Every image the elements read (checked only when something failed).
        context: The builder's name, for the message.
        image_check: The image check naming the unreadable ones (files by default; an
            `ImageSource`'s for keys).
    """
    paths = [str(p) for p in paths]
    loaded = source.enumerate().map(
        lambda position, element: (position, load(*element) if isinstance(element, tuple)
                                   else load(element)),
        num_parallel_calls=AUTOTUNE).ignore_errors(log_warning=True)
    spec = loaded.element_spec[1]
    end = tf.data.Dataset.from_tensors((tf.constant(total, tf.int64), tf.nest.map_structure(
        lambda s: tf.zeros([d or 0 for d in s.shape], s.dtype), spec)))

    described: list[str] = []
    lock = threading.Lock()

    def describe(count) -> str:
        # Once per pipeline: the elements prefetched after the failed one all see a gap too.
        with lock:
            if not described:
                described.append(_describe_failure(paths, int(count), context,
                                                   image_check))
            return described[0]

    def fail(count):
        message = tf.py_function(describe, [count], tf.string)
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.constant(False)

    def check(count, pair):
        position, element = pair
        ok = tf.cond(tf.equal(position, count), lambda: tf.constant(True), lambda: fail(count))
        with tf.control_dependencies([ok]):
            return tf.identity(position), element

    dataset = (loaded.concatenate(end).enumerate().map(check)
               .filter(lambda position, _: position < total).map(lambda _, element: element))
    if total == _ENDLESS:
        return dataset
    # A finite pass holds exactly `total` elements (a gap stops it with the error above), and
    # says so: Keras then knows the number of batches instead of warning "Your input ran out
    # of data" at the end of every `predict` / `evaluate` over a pipeline.
    return dataset.apply(tf.data.experimental.assert_cardinality(total))


def filter_readable(paths: Sequence[str], context: str = "",
                    check: Callable[[Sequence[str]], SkippedImages] = _check_decodable
                    ) -> tuple[np.ndarray, list[str]]:
    """Decodes the images (cached, see `check_images`) and warns about unreadable ones.

    Args:
        paths: Image files (or an `ImageSource`'s keys, with its ``check``).
        context: Prefix for the warning, e.g. the builder's name.
        check: The image check (files by default).

    Returns:
        ``(keep, skipped)``: a boolean mask over ``paths`` and the list of skipped files.
    """
    skipped = check(paths)
    skipped.warn(f"{context}: " if context else "")
    bad = set(skipped.paths)
    return np.asarray([str(p) not in bad for p in paths], dtype=bool), list(skipped.paths)


def decode_image(path: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Reads a JPEG/PNG/BMP/GIF file into float32 ``(H, W, 3)`` in [0, 1] at ``image_size``.

    Args:
        path: Scalar string tensor.
        image_size: ``(height, width)`` after resizing (aspect ratio not kept, as in re-ID).
    """
    return decode_image_bytes(tf.io.read_file(path), image_size)


def decode_image_bytes(raw: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """`decode_image` of encoded bytes already read (an LMDB value, a shard's ``image``).

    Args:
        raw: Scalar string tensor holding a JPEG/PNG/BMP/GIF file's bytes.
        image_size: ``(height, width)`` after resizing.
    """
    image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, image_size, antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def _resolve_augment(augment: bool | Augment | None, default: Augment) -> Augment | None:
    """``True`` -> the builder's recipe, a callable -> itself, ``False``/``None`` -> none."""
    if callable(augment):
        return augment
    return default if augment else None


def _keep_readable(records: list, check_images: bool, context: str,
                   check: Callable[[Sequence[str]], SkippedImages] = _check_decodable) -> list:
    """Drops records with unreadable images (with a warning) when ``check_images``."""
    if not check_images:
        return list(records)
    keep, _ = filter_readable([r.path for r in records], context, check)
    return [r for r, ok in zip(records, keep) if ok]


def _seeded_indices(num: int, seed: int, shuffle: bool) -> tf.data.Dataset:
    """``(index, element_seed)`` pairs: one epoch, reshuffled and reseeded per iteration."""
    if num == 0:
        raise ValueError("cannot build a pipeline from zero records")
    indices = tf.data.Dataset.range(num)
    if shuffle:
        # The whole index list fits in the buffer: a full, reproducible shuffle.
        indices = indices.shuffle(num, seed=seed, reshuffle_each_iteration=True)
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(indices, randoms).map(
        lambda index, r: (index, tf.stack([r, index])))


#: The element count `_map_in_order` is given for an endless stream (never reached).
_ENDLESS = 2**62


def _stream_indices(num: int, seed: int, shuffle: bool, batch_size: int,
                    drop_remainder: bool, start_step: int) -> tf.data.Dataset:
    """`_seeded_indices` of pass after pass, from batch ``start_step`` on (see
    `pretrain_dataset`): the elements each pass's ``drop_remainder`` batching would drop are
    left out, so batching the stream gives the per-pass batches of ``.repeat()``."""
    if not drop_remainder:
        raise ValueError("pretrain_dataset: start_step needs drop_remainder=True (a pass "
                         "must hold whole batches)")
    if int(start_step) < 0:
        raise ValueError(f"pretrain_dataset: start_step must be >= 0, got {start_step}")
    used = num // batch_size * batch_size
    # The same per-iteration reshuffle and reseed as repeating the one-pass pipeline: the
    # index dataset is iterated once per pass, in order.
    stream = _seeded_indices(num, seed, shuffle).repeat().enumerate()
    stream = stream.filter(lambda position, _: position % num < used)
    return stream.skip(int(start_step) * batch_size).map(lambda _, pair: pair)


def _resumable_batches(num: int, seed: int, shuffle: bool, batch_size: int,
                       drop_remainder: bool, start_step: int, load: Callable[..., object],
                       paths: Sequence[str], context: str,
                       image_check: Callable[[Sequence[str]], SkippedImages] = _check_decodable
                       ) -> tf.data.Dataset:
    """The batches ``.repeat()`` of a one-pass `_seeded_indices` pipeline yields, endless,
    from batch ``start_step`` on (the ``start_step`` of `labeled_image_dataset` and
    `text_image_dataset`); skipped batches are skipped by index, without loading.

    Without ``drop_remainder`` each pass ends with its partial batch: the elements carry
    their batch number and ``group_by_window`` closes each batch at its size.
    """
    if int(start_step) < 0:
        raise ValueError(f"{context}: start_step must be >= 0, got {start_step}")
    if drop_remainder:
        source = _stream_indices(num, seed, shuffle, batch_size, True, start_step)
        return _map_in_order(source, load, _ENDLESS, paths, context, image_check).batch(
            batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    per_pass = -(-num // batch_size)
    last = num - (per_pass - 1) * batch_size
    passes, batch = divmod(int(start_step), per_pass)
    stream = _seeded_indices(num, seed, shuffle).repeat().enumerate().skip(
        passes * num + batch * batch_size)

    def keyed(position, pair):
        number = position // num * per_pass + position % num // batch_size
        return number, load(*pair)

    loaded = _map_in_order(stream, keyed, _ENDLESS, paths, context, image_check)
    batches = loaded.group_by_window(
        key_func=lambda number, _: number, reduce_func=lambda _, w: w.batch(batch_size),
        window_size_func=lambda number: tf.where(
            number % per_pass == per_pass - 1, tf.constant(last, tf.int64),
            tf.constant(batch_size, tf.int64)))
    return batches.map(lambda _, element: element)


def _finish(dataset: tf.data.Dataset, batch_size: int, drop_remainder: bool
            ) -> tf.data.Dataset:
    """Batches and prefetches; small result sets still yield one (partial) batch."""
    return dataset.batch(batch_size, drop_remainder=drop_remainder,
                         num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def _check_batch(num: int, batch_size: int, drop_remainder: bool, context: str) -> None:
    """Fails early instead of yielding an empty dataset that would stall ``fit``."""
    if drop_remainder and num < batch_size:
        raise ValueError(f"{context}: {num} records give no full batch of {batch_size} with "
                         "drop_remainder=True; lower batch_size")


def image_dataset(paths: Sequence[str], image_size: tuple[int, int] = (256, 128),
                  batch_size: int = 64, *, image_source: ImageSource | None = None
                  ) -> tf.data.Dataset:
    """Images only, in order, no augmentation (feature extraction).

    Filter unreadable files beforehand with `filter_readable` if needed: dropping them here
    would silently shift features against their records.

    Args:
        paths: Image files.
        image_size: ``(height, width)``.
        batch_size: Images per batch (the last batch may be smaller).
        image_source: Where the images are when they are not files (`ImageSource`: an LMDB
            tree's, or TFRecord shards' random access by record offset); ``paths`` are then
            the images' keys. None: files.

    Returns:
        A dataset of float32 ``(B, H, W, 3)`` batches.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("image_dataset needs at least one path")
    read, check = _reader_and_check(image_source, paths)
    dataset = _map_in_order(tf.data.Dataset.from_tensor_slices(paths),
                            lambda p: decode_image_bytes(read(p), image_size), len(paths), paths,
                            "image_dataset", check)
    return _finish(dataset, batch_size, drop_remainder=False)


def labeled_image_dataset(paths: Sequence[str], labels: np.ndarray,
                          image_size: tuple[int, int] = (256, 128), batch_size: int = 64,
                          training: bool = False, seed: int = 0,
                          augment: bool | Augment | None = None, drop_remainder: bool = False,
                          check_images: bool = False, *, start_step: int | None = None,
                          image_source: ImageSource | None = None) -> tf.data.Dataset:
    """``(images, labels)`` batches for attribute training/evaluation and generic use.

    Args:
        paths: Image files.
        labels: One label (scalar or array) per path; floating labels become float32 (e.g.
            attribute vectors with -1 unknown), integer labels int32.
        image_size: ``(height, width)``.
        batch_size: Images per batch.
        training: Shuffle (and augment, unless ``augment`` says otherwise).
        seed: Seed of shuffling and augmentation.
        augment: ``None`` follows ``training``; ``True`` uses `attribute_train_augment`; a
            callable ``(image, seed) -> image`` is used as is; ``False`` disables.
        drop_remainder: Drop the last incomplete batch.
        check_images: Drop (and warn about) files that cannot be decoded.
        start_step: None: one pass (a new shuffle and new augmentations each time the
            dataset is iterated). An int: an endless stream of the batches ``.repeat()`` of
            that dataset yields (each pass ending with its partial batch unless
            ``drop_remainder``), from batch ``start_step`` on, so that a resumed run
            continues the data order and augmentation stream; earlier batches are skipped
            by index, without reading their images.
        image_source: Where the images are when they are not files (`ImageSource`: an LMDB
            tree's, or TFRecord shards' random access by record offset); ``paths`` are then
            the images' keys. None: files.

    Returns:
        A dataset of ``(float32 (B, H, W, 3), labels (B, ...))``.
    """
    labels = np.asarray(labels)
    if len(labels) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    labels = labels.astype(np.float32 if labels.dtype.kind in "fb" else np.int32)
    paths = np.asarray([str(p) for p in paths])
    read, check = _reader_and_check(image_source, paths)
    if check_images:
        keep, _ = filter_readable(list(paths), "labeled_image_dataset", check)
        paths, labels = paths[keep], labels[keep]
    _check_batch(len(paths), batch_size, drop_remainder, "labeled_image_dataset")
    augment_fn = _resolve_augment(training if augment is None else augment,
                                  attribute_train_augment)
    path_table, label_table = tf.constant(paths), tf.constant(labels)

    def load(index, element_seed):
        image = decode_image_bytes(read(tf.gather(path_table, index)), image_size)
        if augment_fn is not None:
            image = augment_fn(image, element_seed)
        return image, tf.gather(label_table, index)

    if start_step is not None:
        return _resumable_batches(len(paths), seed, training, batch_size, drop_remainder,
                                  start_step, load, paths.tolist(), "labeled_image_dataset",
                                  check).prefetch(AUTOTUNE)
    dataset = _map_in_order(_seeded_indices(len(paths), seed, shuffle=training), load,
                            len(paths), paths.tolist(), "labeled_image_dataset", check)
    return _finish(dataset, batch_size, drop_remainder)


def _caption_table(captions: Sequence[Sequence[str]]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Flattened captions with each record's start offset and count."""
    counts = np.asarray([len(c) for c in captions], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flat = [str(c) for caps in captions for c in caps]
    return tf.constant(flat, tf.string), tf.constant(starts), tf.constant(counts)


def _pick_caption(flat: tf.Tensor, starts: tf.Tensor, counts: tf.Tensor, index: tf.Tensor,
                  seed: tf.Tensor) -> tf.Tensor:
    """One of the record's captions, chosen by the element's (per-epoch) seed."""
    pick = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 7),
                                       0, tf.gather(counts, index), dtype=tf.int64)
    return tf.gather(flat, tf.gather(starts, index) + pick)


def pretrain_dataset(records: Sequence[PretrainRecord], image_size: tuple[int, int] = (256, 128),
                     batch_size: int = 64, tokenizer: CaptionTokenizer | None = None,
                     seed: int = 0, augment: bool | str | Augment = True, shuffle: bool = True,
                     drop_remainder: bool = True, num_attributes: int | None = None,
                     check_images: bool = False, start_step: int | None = None, *,
                     image_source: ImageSource | None = None) -> tf.data.Dataset:
    """Dict batches for VAL-PAT pretraining (the pretrainer reads ``x`` only, ``y`` is None).

    Keys: ``"view1"``, ``"view2"``: two independently augmented views, float32
    ``(B, H, W, 3)``; ``"token_ids"``: int32 ``(B, L)``, one caption sampled per image per
    epoch (only with a ``tokenizer`` and captioned records); ``"attributes"``: float32
    ``(B, A)`` with -1 unknown (only when some record has attributes; records without get
    all -1).

    Args:
        records: Pretraining records.
        image_size: ``(height, width)``.
        batch_size: Images per batch.
        tokenizer: Caption tokenizer; ``None`` leaves out ``"token_ids"``.
        seed: Seed of shuffling, augmentation and caption choice.
        augment: ``True`` or ``"moco_v2"`` uses `ssl_view_augment`, ``"reid"``
            `reid_ssl_view_augment` (both crop from a source decoded at twice
            ``image_size``), a callable ``(image, seed) -> image`` is used as is on the resized
            image, ``False`` makes both views the plain resized image.
        shuffle: Shuffle the records each epoch.
        drop_remainder: Drop the last incomplete batch (the MoCo queue needs a static batch).
        num_attributes: Length of the attribute vectors; inferred from the records if None.
        check_images: Drop (and warn about) records whose image cannot be decoded.
        start_step: None: one pass (the dataset draws a new shuffle and new augmentations
            each time it is iterated). An int: an endless stream of the batches that
            ``.repeat()`` of the one-pass dataset yields, from batch ``start_step`` on
            (batch ``n`` of the stream is batch ``n % passes`` of pass ``n // passes``,
            the same batch whatever ``start_step`` is): a resumed run continues the data
            order and the augmentation stream where it stopped. The batches before
            ``start_step`` are skipped by index, without reading their images. Needs
            ``drop_remainder``.
        image_source: Where the images are when they are not files (`ImageSource`, e.g. an
            LMDB tree's); the records' ``path`` is then the image's key. None: files.

    Returns:
        A dataset of dict batches.

    Raises:
        ValueError: With a tokenizer, when only some records have captions; a
            ``start_step`` without ``drop_remainder`` or negative.
    """
    read, check = _reader_and_check(image_source)
    records = _keep_readable(list(records), check_images, "pretrain_dataset", check)
    _check_batch(len(records), batch_size, drop_remainder, "pretrain_dataset")
    source_size, views = pretrain_views(augment, image_size)
    path_table = tf.constant([r.path for r in records])

    with_captions = tokenizer is not None and any(r.captions for r in records)
    if tokenizer is not None and not with_captions:
        warnings.warn("pretrain_dataset: a tokenizer was given but no record has a caption; "
                      "the batches have no 'token_ids'", UserWarning, stacklevel=2)
    if with_captions:
        missing = sum(1 for r in records if not r.captions)
        if missing:
            raise ValueError(f"pretrain_dataset: {missing} of {len(records)} records have no "
                             "caption; pass tokenizer=None or give every record a caption")
        caption_table = _caption_table([r.captions for r in records])

    with_attributes = num_attributes is not None or any(
        r.attributes is not None for r in records)
    if with_attributes:
        attribute_table = tf.constant(_attribute_matrix(records, num_attributes))

    def load(index, element_seed):
        image = decode_image_bytes(read(tf.gather(path_table, index)), source_size)
        batch = views(image, element_seed)
        if with_captions:
            batch["caption"] = _pick_caption(*caption_table, index, element_seed)
        if with_attributes:
            batch["attributes"] = tf.gather(attribute_table, index)
        return batch

    if start_step is None:
        source, total = _seeded_indices(len(records), seed, shuffle), len(records)
    else:
        source = _stream_indices(len(records), seed, shuffle, batch_size, drop_remainder,
                                 start_step)
        total = _ENDLESS
    dataset = _map_in_order(source, load, total, [r.path for r in records], "pretrain_dataset",
                            check)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=AUTOTUNE)
    if with_captions:
        # Tokenizing a whole batch at once is much cheaper than per caption.
        dataset = dataset.map(lambda b: _tokenize_batch(b, tokenizer), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def pretrain_views(augment: bool | str | Augment | None, image_size: tuple[int, int]
                   ) -> tuple[tuple[int, int], Callable[[tf.Tensor, tf.Tensor], dict]]:
    """The two SSL views of `pretrain_dataset`: the decode size and ``views(image, seed)``.

    Shared with the other pretraining sources (TFRecord shards) so that the same image and
    element seed give the same views whatever the source.

    Args:
        augment: As `pretrain_dataset`'s ``augment``.
        image_size: ``(height, width)`` of the views.

    Returns:
        ``(source_size, views)``: decode images at ``source_size``; ``views`` maps the decoded
        image and its element seed (int64 ``(2,)``) to ``{"view1", "view2"}``.

    Raises:
        ValueError: An unknown recipe name.
    """
    view_recipes = {"moco_v2": ssl_view_augment, "reid": reid_ssl_view_augment}
    if isinstance(augment, str) and augment not in view_recipes:
        raise ValueError(f"pretrain_dataset: augment={augment!r}; expected True, False, a "
                         f"callable or one of {sorted(view_recipes)}")
    recipe = view_recipes.get(augment, ssl_view_augment) if isinstance(augment, str) \
        else ssl_view_augment
    augment_fn = _resolve_augment(augment, recipe)
    # The default recipe crops from a 2x source: a 20 % crop of the final size would be a blur.
    sharp_crops = augment is True or isinstance(augment, str)
    source_size = (2 * image_size[0], 2 * image_size[1]) if sharp_crops else image_size

    def view(image, view_seed):
        if sharp_crops:
            return recipe(image, view_seed, size=image_size)
        return augment_fn(image, view_seed)

    def views(image, element_seed):
        if augment_fn is None:
            return {"view1": image, "view2": image}
        seed1, seed2 = tf.unstack(tf.random.experimental.stateless_split(element_seed, 2))
        return {"view1": view(image, seed1), "view2": view(image, seed2)}

    return source_size, views


def _tokenize_batch(batch: dict, tokenizer: CaptionTokenizer) -> dict:
    """Replaces the batch's ``"caption"`` strings with ``"token_ids"``."""
    batch = dict(batch)
    captions = batch.pop("caption")
    # Keep the static batch size (drop_remainder) that the tokenizer's reshape loses.
    batch["token_ids"] = tf.ensure_shape(tokenizer(captions),
                                         [captions.shape[0], tokenizer.sequence_length])
    return batch


def _attribute_matrix(records: Sequence[PretrainRecord], num_attributes: int | None
                      ) -> np.ndarray:
    """``(N, A)`` float32 labels; records without attributes are all -1 (unknown)."""
    lengths = {np.asarray(r.attributes).size for r in records if r.attributes is not None}
    if num_attributes is None:
        if len(lengths) != 1:
            raise ValueError(f"records have attribute vectors of lengths {sorted(lengths)}; "
                             "pass num_attributes")
        num_attributes = lengths.pop()
    matrix = np.full((len(records), num_attributes), -1.0, dtype=np.float32)
    for row, record in enumerate(records):
        if record.attributes is None:
            continue
        values = np.asarray(record.attributes, dtype=np.float32).reshape(-1)
        if values.size != num_attributes:
            raise ValueError(f"{record.path}: attribute vector has {values.size} entries, "
                             f"expected num_attributes={num_attributes}")
        matrix[row] = values
    return matrix


def reid_train_dataset(records: Sequence[ReIDRecord], image_size: tuple[int, int] = (256, 128),
                       p: int = 16, k: int = 4, seed: int = 0,
                       augment: bool | Augment = True, epochs: int = 1,
                       check_images: bool = False, *, start_step: int | None = None,
                       image_source: ImageSource | None = None
                       ) -> tuple[tf.data.Dataset, int]:
    """``(images, pids)`` batches of P identities x K images from `PKSampler`.

    The dataset holds ``epochs`` sampler epochs back to back (epoch ``e`` uses the sampler's
    ``(seed, e)``), so train with ``model.fit(ds, epochs=epochs,
    steps_per_epoch=steps_per_epoch)``; Keras then keeps one iterator across epochs.

    Args:
        records: Training records (pids relabelled 0..N-1).
        image_size: ``(height, width)``.
        p: Identities per batch.
        k: Images per identity.
        seed: Seed of the sampler and the augmentation.
        augment: ``True`` uses `reid_train_augment`, a callable ``(image, seed) -> image`` is
            used as is, ``False`` disables.
        epochs: Number of sampler epochs laid out in the dataset.
        check_images: Drop (and warn about) records whose image cannot be decoded.
        start_step: None: the ``epochs`` sampler epochs once. An int: an endless stream of
            the batches ``.repeat()`` of that dataset yields, from batch ``start_step`` on
            (the same batch ``n`` whatever ``start_step`` is, its augmentation seeded by its
            position in the laid-out epochs as before): a resumed run continues the P x K
            order and the augmentation stream where it stopped. The batches before
            ``start_step`` are skipped by index, without reading their images.
        image_source: Where the images are when they are not files (`ImageSource`: an LMDB
            tree's, or TFRecord shards' random access by record offset); the records'
            ``path`` is then the image's key. None: files.

    Returns:
        ``(dataset, steps_per_epoch)``; the dataset yields float32 ``(P*K, H, W, 3)`` images
        and int32 ``(P*K,)`` pids.

    Raises:
        ValueError: A negative ``start_step``.
    """
    records = list(records)
    read, check = _reader_and_check(image_source, records)
    records = _keep_readable(records, check_images, "reid_train_dataset", check)
    sampler = PKSampler(pids_of(records).tolist(), camids_of(records).tolist(), p=p, k=k,
                        seed=seed)
    order = np.concatenate([sampler.epoch_indices(e).reshape(-1) for e in range(epochs)])
    augment_fn = _resolve_augment(augment, reid_train_augment)
    path_table = tf.constant([r.path for r in records])
    pid_table = tf.constant(pids_of(records), tf.int32)

    def load(position, index):
        image = decode_image_bytes(read(tf.gather(path_table, index)), image_size)
        if augment_fn is not None:
            image = augment_fn(image, tf.stack([tf.constant(seed, tf.int64), position]))
        return image, tf.gather(pid_table, index)

    positions = np.arange(len(order), dtype=np.int64)
    if start_step is None:
        source, total = tf.data.Dataset.from_tensor_slices((positions, order)), len(order)
    else:
        source, total = _pk_stream(positions, order, sampler.batch_size, start_step), _ENDLESS
    dataset = _map_in_order(source, load, total, [r.path for r in records],
                            "reid_train_dataset", check)
    return _finish(dataset, sampler.batch_size, drop_remainder=True), sampler.num_batches


def _pk_stream(positions: np.ndarray, order: np.ndarray, batch_size: int,
               start_step: int) -> tf.data.Dataset:
    """``(position, index)`` of the laid-out P x K epochs repeated, from batch ``start_step``.

    ``order`` holds whole batches, so batching this stream gives the batches of the
    repeated finite pipeline.
    """
    if int(start_step) < 0:
        raise ValueError(f"reid_train_dataset: start_step must be >= 0, got {start_step}")
    start = int(start_step) * batch_size % len(order)
    head = tf.data.Dataset.from_tensor_slices((positions[start:], order[start:]))
    return head.concatenate(tf.data.Dataset.from_tensor_slices((positions, order)).repeat())


def text_image_dataset(records: Sequence[TextRecord], tokenizer: CaptionTokenizer,
                       image_size: tuple[int, int] = (256, 128), batch_size: int = 64,
                       seed: int = 0, augment: bool | Augment = True, shuffle: bool = True,
                       drop_remainder: bool = True, check_images: bool = False, *,
                       start_step: int | None = None, image_source: ImageSource | None = None
                       ) -> tf.data.Dataset:
    """Dict batches ``{"images", "token_ids", "pids"}`` for text-based person search training.

    One caption is sampled per image per epoch.

    Args:
        records: Training records (every one needs a caption).
        tokenizer: Caption tokenizer.
        image_size: ``(height, width)``.
        batch_size: Images per batch.
        seed: Seed of shuffling, augmentation and caption choice.
        augment: ``True`` uses `reid_train_augment` (IRRA's recipe), a callable is used as is,
            ``False`` disables.
        shuffle: Shuffle the records each epoch.
        drop_remainder: Drop the last incomplete batch.
        check_images: Drop (and warn about) records whose image cannot be decoded.
        start_step: None: one pass. An int: an endless stream of the batches ``.repeat()``
            of that dataset yields, from batch ``start_step`` on (as `labeled_image_dataset`).
        image_source: Where the images are when they are not files (`ImageSource`: an LMDB
            tree's, or TFRecord shards' random access by record offset); the records'
            ``path`` is then the image's key. None: files.

    Returns:
        A dataset of dicts: float32 ``(B, H, W, 3)`` images, int32 ``(B, L)`` token ids,
        int32 ``(B,)`` pids.
    """
    records = list(records)
    read, check = _reader_and_check(image_source, records)
    records = _keep_readable(records, check_images, "text_image_dataset", check)
    missing = [r.path for r in records if not r.captions]
    if missing:
        raise ValueError(f"text_image_dataset: {len(missing)} records have no caption "
                         f"(e.g. {missing[0]})")
    _check_batch(len(records), batch_size, drop_remainder, "text_image_dataset")
    augment_fn = _resolve_augment(augment, reid_train_augment)
    path_table = tf.constant([r.path for r in records])
    pid_table = tf.constant(pids_of(records), tf.int32)
    caption_table = _caption_table([r.captions for r in records])

    def load(index, element_seed):
        image = decode_image_bytes(read(tf.gather(path_table, index)), image_size)
        if augment_fn is not None:
            image = augment_fn(image, element_seed)
        return {"images": image, "caption": _pick_caption(*caption_table, index, element_seed),
                "pids": tf.gather(pid_table, index)}

    paths = [r.path for r in records]
    if start_step is not None:
        dataset = _resumable_batches(len(records), seed, shuffle, batch_size, drop_remainder,
                                     start_step, load, paths, "text_image_dataset", check)
    else:
        dataset = _map_in_order(_seeded_indices(len(records), seed, shuffle), load,
                                len(records), paths, "text_image_dataset", check)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder,
                                num_parallel_calls=AUTOTUNE)
    dataset = dataset.map(lambda b: _tokenize_batch(b, tokenizer), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def caption_dataset(captions: Sequence[str], tokenizer: CaptionTokenizer,
                    batch_size: int = 64) -> tf.data.Dataset:
    """Token id batches of ``captions``, in order (text queries).

    Args:
        captions: Caption strings.
        tokenizer: Caption tokenizer.
        batch_size: Captions per batch (the last batch may be smaller).

    Returns:
        A dataset of int32 ``(B, L)`` batches.
    """
    captions = [str(c) for c in captions]
    if not captions:
        raise ValueError("caption_dataset needs at least one caption")
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(captions, tf.string))
    return dataset.batch(batch_size).map(tokenizer, num_parallel_calls=AUTOTUNE).prefetch(
        AUTOTUNE)
