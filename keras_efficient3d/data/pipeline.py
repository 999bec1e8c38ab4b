"""The ``tf.data`` pipeline: records -> decoded, sampled, augmented, normalised batches.

Decoding and augmentation are numpy/OpenCV code run through
``tf.numpy_function`` in a parallel ``map`` (OpenCV releases the GIL while it
decodes and resizes, so the calls overlap across cores); normalisation runs in
TensorFlow on whole batches. Per-sample randomness comes from a seed drawn by
``tf.data.Dataset.random`` and zipped to each sample *before* the parallel map, so
with ``seed`` set the clips are reproducible whatever order the map finishes in.

Modes (the original implementation's three loaders):

* ``'train'``: ``TemporalRandomCrop`` + multi-scale crop (+ optional flip);
  yields ``(clips, labels)``.
* ``'val'``: ``TemporalCenterCrop`` + ``Scale`` + ``CenterCrop``; ``(clips, labels)``.
* ``'test'``: every non-overlapping window of every video, ``Scale`` +
  ``CornerCrop``; ``(clips, labels, video_indices)`` where ``video_indices`` are
  positions in ``records``, for :func:`video_level_accuracy`.

Example::

    records, classes = index_jester("/data/jester", "train")
    train = make_dataset(records, "train", downsample=2, batch_size=16, seed=1)
    model.fit(train, epochs=...)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import warnings
from collections.abc import Sequence

import cv2
import numpy as np

from keras_efficient3d._tf import tf
from keras_efficient3d.data import spatial, temporal
from keras_efficient3d.data.decode import (
    DataError,
    TruncatedVideoError,
    count_frames,
    list_frame_files,
    read_frame_folder,
    read_video,
)
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.data.records import VideoRecord

__all__ = [
    "MODES",
    "DecodeFailures",
    "make_dataset",
    "aggregate_video_predictions",
    "video_level_accuracy",
]

logger = logging.getLogger("keras_efficient3d.data")

MODES = ("train", "val", "test")
# Failures that come from the files themselves; anything else is a bug and propagates.
_FILE_ERRORS = (DataError, cv2.error, OSError)


@tf.autograph.experimental.do_not_convert
def _decoded_ok(*element):
    return element[-1]


@tf.autograph.experimental.do_not_convert
def _drop_ok(*element):
    return element[:-1]


class DecodeFailures:
    """Thread-safe count of the samples skipped because they failed to decode.

    A sample counts once, however often it fails: a training pipeline decodes every video
    each epoch (a broken one would otherwise use up the limit over the epochs), and one
    object may serve several pipelines (training and validation, or evaluation's two
    passes). Its first failure is logged as a warning. Once more than ``limit`` samples
    have failed, the next one raises :class:`DataError` instead (inside ``tf.data`` it
    surfaces as a ``tf.errors`` exception carrying the same message). ``limit=None``
    never raises.
    """

    def __init__(self, limit: int | None = 100, class_names: Sequence[str] | None = None):
        if limit is not None and limit < 0:
            raise ValueError(f"`max_decode_failures` must be >= 0 or None. Received: {limit}")
        self.limit = limit
        # the warnings name a skipped video's class by name where the caller knows them
        self.class_names = list(class_names) if class_names is not None else None
        self._failed: dict[str, None] = {}  # the paths, in the order they first failed
        self._lock = threading.Lock()

    @property
    def paths(self) -> list[str]:
        return list(self._failed)

    @property
    def count(self) -> int:
        return len(self._failed)

    def add(self, record: VideoRecord, error: Exception) -> None:
        with self._lock:
            if record.path in self._failed:
                return
            self._failed[record.path] = None
            count = len(self._failed)
        if self.limit is not None and count > self.limit:
            # a DataError names its file already ("P: cannot open video")
            last = str(error) if str(error).startswith(record.path) else f"{record.path}: {error}"
            # from None: the decoder's own error, which this one names, twice the lines of
            # the Python traceback tf.data carries in its error for a script's own loop
            raise DataError(
                f"{count} video{'' if count == 1 else 's'} failed to decode, more than "
                f"max_decode_failures={self.limit}; the last: {last} (repair or remove "
                f"{'it' if count == 1 else 'them'}, or raise --max_decode_failures to skip more)"
            ) from None
        names = self.class_names
        label = (f"class {names[record.label]!r}" if names and 0 <= record.label < len(names)
                 else f"label {record.label}")
        why = str(error)
        if why.startswith(f"{record.path}: "):  # a DataError names its file: once is enough
            why = why[len(record.path) + 2:]
        logger.warning("skipping %s (%s): %s [%d video(s) that failed to decode so far]",
                       record.path, label, why, count)


class _ClipSource:
    """The numpy side of the pipeline: one sample in, one (or more) clips out."""

    def __init__(self, records, sample_duration, downsample, sample_size, crop, scales, hflip,
                 scale_in_test, crop_position_in_test, failures, hflip_labels=None):
        self.records = records
        self.sample_duration = sample_duration
        self.downsample = downsample
        self.sample_size = sample_size
        self.crop = crop
        self.scales = scales
        self.hflip = hflip
        self.hflip_labels = hflip_labels
        self.scale_in_test = scale_in_test
        self.crop_position_in_test = crop_position_in_test
        self.failures = failures
        self.clip_shape = (sample_duration, sample_size, sample_size, 3)
        self._truncated: set[str] = set()  # said once each
        self._lock = threading.Lock()

    # -- decoding -------------------------------------------------------------
    def _read(self, record: VideoRecord, sampler, transform=None):
        """Decode the frames ``sampler(num_frames)`` picks (all frames if ``sampler`` is None),
        each through `transform` as decoded."""
        if record.kind == "frames":
            files = list_frame_files(record.path)
            indices = None if sampler is None else sampler(len(files))
            return read_frame_folder(record.path, indices, files, transform)
        if sampler is None:
            return read_video(record.path, transform=transform)
        num_frames = record.num_frames or count_frames(record.path)
        try:
            return read_video(record.path, sampler(num_frames))
        except TruncatedVideoError as error:
            # The container promised more frames than the stream holds: sample again
            # within the frames that do decode rather than drop a usable video.
            with self._lock:
                first = record.path not in self._truncated
                self._truncated.add(record.path)
            if first:
                logger.warning("%s: its container says %d frames, %d decode: its clips are "
                               "taken from those", record.path, num_frames, error.available)
            return read_video(record.path, sampler(error.available))

    def _fail(self, index, error, shape):
        self.failures.add(self.records[int(index)], error)
        return np.zeros(shape, np.uint8)

    # -- per mode ---------------------------------------------------------------
    def _rng(self, seed):
        return np.random.default_rng(int(seed) % (1 << 64))

    def train_clip(self, index, seed):
        record = self.records[int(index)]
        rng = self._rng(seed)
        try:
            frames = self._read(
                record,
                lambda n: temporal.temporal_random_indices(n, self.sample_duration, self.downsample, rng),
            )
        except _FILE_ERRORS as error:
            return self._fail(index, error, self.clip_shape), np.int32(record.label), False
        return (*self._augment(frames, record.label, rng), True)

    def full_video(self, index):
        record = self.records[int(index)]
        try:
            frames = self._read(record, None)
        except _FILE_ERRORS as error:
            return self._fail(index, error, (1, 1, 1, 3)), np.int32(record.label), False
        return frames, np.int32(record.label), True

    def augment_cached(self, frames, label, seed):
        rng = self._rng(seed)
        indices = temporal.temporal_random_indices(len(frames), self.sample_duration, self.downsample, rng)
        return self._augment(frames[indices], label, rng)

    def _augment(self, frames, label, rng):
        """The training clip and its label: a mirrored clip takes its mirror class."""
        clip = spatial.train_transform(frames, self.sample_size, rng, self.crop, self.scales)
        if self.hflip:  # drawn after the crop, as train_transform's: the same clips for a seed
            clip, mirrored = spatial.random_hflip(clip, rng)
            if mirrored and self.hflip_labels is not None:
                label = self.hflip_labels[int(label)]
        return np.ascontiguousarray(clip), np.int32(label)

    def val_clip(self, index):
        record = self.records[int(index)]
        try:
            frames = self._read(
                record, lambda n: temporal.temporal_center_indices(n, self.sample_duration, self.downsample)
            )
        except _FILE_ERRORS as error:
            return self._fail(index, error, self.clip_shape), np.int32(record.label), False
        return spatial.val_transform(frames, self.sample_size), np.int32(record.label), True

    def test_clips(self, index):
        record = self.records[int(index)]
        try:
            # The test transform is the same for every frame: applied to each as decoded
            # (the whole video is held at the clip's size), then windows are cut.
            frames = self._read(record, None, lambda frame: spatial.test_transform(
                frame, self.sample_size, self.scale_in_test, self.crop_position_in_test))
        except _FILE_ERRORS as error:
            clips = self._fail(index, error, (1,) + self.clip_shape)
            return clips, np.full(1, record.label, np.int32), np.full(1, index, np.int32), False
        windows = temporal.sliding_window_indices(len(frames), self.sample_duration, self.downsample)
        count = len(windows)
        return (
            frames[windows],
            np.full(count, record.label, np.int32),
            np.full(count, index, np.int32),
            True,
        )


def _check_records(records):
    if isinstance(records, tuple) and len(records) == 2 and isinstance(records[0], list) and \
            isinstance(records[1], list):
        # an indexer's whole result, whose message listed every record
        raise ValueError("`records` must be a list of VideoRecord objects; received a pair of "
                         "lists, as the indexers return (records, class_names): unpack it, "
                         "records, classes = index_folders(...)")
    records = list(records)
    if not records:
        raise ValueError("`records` is empty: nothing to load.")
    for record in records:
        if not isinstance(record, VideoRecord):
            shown = repr(record)
            shown = shown if len(shown) <= 200 else shown[:200] + "..."
            raise ValueError(f"`records` must hold VideoRecord objects. Received an element {shown}")
    return records


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


@functools.cache
def _free_iterators_at_exit():
    """A script whose loop over a dataset ends in an uncaught error (a DataError, which
    tf.data hands back as a TensorFlow error) keeps the iterator alive in the traceback that
    Python keeps (``sys.last_exc``); freed while the interpreter finalises, its threads
    aborted the process ("terminate called without an active exception", status 134).
    Freed at exit, before that, the script ends with Python's own status 1. (The
    command lines free it themselves: `cli.run`.)"""
    import atexit
    import gc
    import sys

    def free():
        for name in ("last_exc", "last_value", "last_traceback", "last_type"):
            if hasattr(sys, name):
                setattr(sys, name, None)
        gc.collect()

    atexit.register(free)


@contextlib.contextmanager
def quiet_end_of_data():
    """Silences Keras' "Your input ran out of data" warning: these pipelines skip videos
    that fail to decode, so their length is unknown until a pass ends, which is how every
    epoch ends (Keras warns about it on each pass)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


def make_dataset(
    records,
    mode: str = "train",
    sample_duration: int = 16,
    downsample: int = 1,
    sample_size: int = 112,
    batch_size: int = 8,
    crop: str = "random",
    scales=None,
    hflip: bool = False,
    hflip_labels=None,
    normalization: Normalization | str | dict | None = None,
    shuffle: bool | None = None,
    seed: int | None = None,
    deterministic: bool | None = None,
    cache: bool | str = False,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    max_decode_failures: int | None = 100,
    failures: DecodeFailures | None = None,
    drop_remainder: bool | None = None,
    scale_in_test: float = 1.0,
    crop_position_in_test: str = "c",
    shuffle_buffer: int | None = None,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of clips from ``records``.

    Args:
        records: :class:`VideoRecord` list from an indexer.
        mode: ``'train'``, ``'val'`` or ``'test'`` (see the module docstring).
        sample_duration: frames per clip.
        downsample: temporal stride (the original's ``--downsample``).
        sample_size: clip height and width.
        batch_size: clips per batch.
        crop: training crop, ``'random'`` (``MultiScaleRandomCrop``), ``'corner'``
            or ``'center'`` (``MultiScaleCornerCrop`` over 5 / 1 positions).
        scales: crop scales; default :func:`spatial.multiscale_scales` ``()`` =
            ``[1, 0.84, 0.71, 0.59, 0.5]``.
        hflip: random horizontal flips in training. Off by default: without
            ``hflip_labels`` it would turn Jester's "Swiping Left" into "Swiping Right".
        hflip_labels: the label of each class's mirror image (`spatial.mirror_labels`
            of the class names): a flipped clip takes it, so that flips are valid for
            gestures with a direction.
        normalization: a :class:`Normalization`, a preset name, its config, or ``None`` for
            ``'original'`` (ActivityNet mean, 0-255, RGB).
        shuffle: shuffle samples (default: in training only; never in test mode).
        seed: makes shuffling and augmentation reproducible.
        deterministic: keep element order fixed across parallel calls (default:
            in val and test, where the order is that of ``records``; training
            clips are reproducible for a ``seed`` either way, only their order
            within a few batches may vary when ``False``).
        cache: ``True`` caches decoded data in memory, a string in files with that
            prefix. Training caches whole decoded videos and still augments every
            epoch; validation and test cache the final uint8 clips.
        num_parallel_calls: parallel decode calls (``tf.data.AUTOTUNE``).
        max_decode_failures: samples that may fail to decode (each skipped with a
            warning) before the pipeline stops with the :class:`DataError`'s message (raised
            inside tf.data, it reaches a loop over the dataset or ``fit`` as a
            ``tf.errors.InvalidArgumentError`` that carries it); ``None`` for no limit.
        failures: a :class:`DecodeFailures` to share or inspect; created from
            ``max_decode_failures`` when ``None``.
        drop_remainder: drop the last incomplete batch (default: in training only).
        scale_in_test: test-mode ``Scale(int(sample_size / scale_in_test))``.
        crop_position_in_test: test-mode ``CornerCrop`` position (``c tl tr bl br``).
        shuffle_buffer: shuffle buffer size; default all samples (in training with
            ``cache``, elements are whole videos, so a smaller buffer saves memory).
        shard: ``(num_shards, index)``: keep records ``index::num_shards`` only, so that
            each worker of a multi-worker run decodes its own videos (sharding by file, done
            here because tf.data cannot see the files behind ``numpy_function``). The
            dataset's auto-shard policy is OFF then; without ``shard`` it is DATA, what
            ``AUTO`` falls back to for a dataset not read by a tf.data file reader, set
            explicitly (a strategy that distributes it to several workers has every worker
            decode everything and keep its share of the batches: correct, not efficient).

    Returns:
        ``(clips, labels)`` batches, ``clips`` float32 ``(B, T, S, S, 3)`` normalised,
        ``labels`` int32 ``(B,)``; in test mode ``(clips, labels, video_indices)``, whose
        third element Keras' ``fit`` and ``evaluate`` would take for sample weights (a loss
        weighted by video index): give them ``ds.map(lambda clips, labels, _: (clips,
        labels))``, or use `keras_efficient3d.evaluation.evaluate`. The length is unknown
        until a pass ends (videos that fail to decode are skipped), so Keras warns "Your
        input ran out of data" at the end of each epoch: expected here, and silenced by
        `quiet_end_of_data`.
    """
    _free_iterators_at_exit()
    records = _check_records(records)
    if shard is not None:
        num_shards, shard_index = (int(v) for v in shard)
        if num_shards < 1 or not 0 <= shard_index < num_shards:
            raise ValueError(f"`shard` must be (num_shards, index) with 0 <= index < num_shards. "
                             f"Received: shard={shard!r}")
        records = _check_records(records[shard_index::num_shards])
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    sample_duration = _positive_int("sample_duration", sample_duration)
    downsample = _positive_int("downsample", downsample)
    sample_size = _positive_int("sample_size", sample_size)
    batch_size = _positive_int("batch_size", batch_size)
    if crop not in spatial.TRAIN_CROPS:
        raise ValueError(f"`crop` must be one of {spatial.TRAIN_CROPS}. Received: crop={crop!r}")
    scales = spatial.multiscale_scales() if scales is None else spatial._check_scales(scales)
    if crop_position_in_test not in spatial.CROP_POSITIONS:
        raise ValueError(
            f"`crop_position_in_test` must be one of {spatial.CROP_POSITIONS}. "
            f"Received: crop_position_in_test={crop_position_in_test!r}"
        )
    if not 0 < scale_in_test <= 1:
        raise ValueError(f"`scale_in_test` must be in (0, 1]. Received: scale_in_test={scale_in_test}")
    normalization = Normalization.coerce("original" if normalization is None else normalization)
    if shuffle is None:
        shuffle = mode == "train"
    if mode == "test" and shuffle:
        raise ValueError("`shuffle` must be False in test mode (windows of a video stay together).")
    if drop_remainder is None:
        drop_remainder = mode == "train"
    if deterministic is None:
        deterministic = mode != "train"
    if not isinstance(cache, (bool, str)):
        raise ValueError(f"`cache` must be a bool or a file prefix. Received: cache={cache!r}")
    failures = DecodeFailures(max_decode_failures) if failures is None else failures

    if hflip_labels is not None:
        hflip_labels = [int(v) for v in hflip_labels]
        top = max(int(r.label) for r in records)
        if min(int(r.label) for r in records) < 0:  # a test split's unlabelled videos
            raise ValueError("`hflip_labels` needs labelled videos: a record has label -1")
        if top >= len(hflip_labels) or any(not 0 <= v < len(hflip_labels) for v in hflip_labels):
            raise ValueError(f"`hflip_labels` must give a class in [0, {len(hflip_labels)}) for every "
                             f"label up to {top}. Received: hflip_labels={hflip_labels}")
    source = _ClipSource(records, sample_duration, downsample, sample_size, crop, scales, hflip,
                         scale_in_test, crop_position_in_test, failures, hflip_labels)
    count = len(records)
    buffer = count if shuffle_buffer is None else _positive_int("shuffle_buffer", shuffle_buffer)
    clip_shape = source.clip_shape
    map_kwargs = dict(num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    indices = tf.data.Dataset.range(count)

    def seeds():
        # A fresh, reproducible stream each epoch (rerandomize_each_iteration).
        return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def cache_op(ds):
        if cache is True:
            return ds.cache()
        if isinstance(cache, str) and cache:
            return ds.cache(cache)
        return ds

    if mode == "train" and not cache:
        if shuffle:
            indices = indices.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)

        @tf.autograph.experimental.do_not_convert
        def load(index, sample_seed):
            clip, label, ok = tf.numpy_function(
                source.train_clip, [index, sample_seed], [tf.uint8, tf.int32, tf.bool], name="load_train_clip"
            )
            clip.set_shape(clip_shape)
            label.set_shape(())
            ok.set_shape(())
            return clip, label, ok

        ds = tf.data.Dataset.zip((indices, seeds())).map(load, **map_kwargs)
        ds = ds.filter(_decoded_ok).map(_drop_ok)
    elif mode == "train":

        def load_video(index):
            frames, label, ok = tf.numpy_function(
                source.full_video, [index], [tf.uint8, tf.int32, tf.bool], name="load_video"
            )
            frames.set_shape((None, None, None, 3))
            label.set_shape(())
            ok.set_shape(())
            return frames, label, ok

        ds = indices.map(load_video, **map_kwargs)
        ds = cache_op(ds.filter(_decoded_ok).map(_drop_ok))
        if shuffle:
            ds = ds.shuffle(min(buffer, count), seed=seed, reshuffle_each_iteration=True)

        def augment(element, sample_seed):
            frames, label = element
            clip, label = tf.numpy_function(source.augment_cached, [frames, label, sample_seed],
                                            [tf.uint8, tf.int32], name="augment_clip")
            clip.set_shape(clip_shape)
            label.set_shape(())
            return clip, label

        ds = tf.data.Dataset.zip((ds, seeds())).map(augment, **map_kwargs)
    elif mode == "val":
        if shuffle:
            indices = indices.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)

        def load_val(index):
            clip, label, ok = tf.numpy_function(
                source.val_clip, [index], [tf.uint8, tf.int32, tf.bool], name="load_val_clip"
            )
            clip.set_shape(clip_shape)
            label.set_shape(())
            ok.set_shape(())
            return clip, label, ok

        ds = indices.map(load_val, **map_kwargs)
        ds = cache_op(ds.filter(_decoded_ok).map(_drop_ok))
    else:

        def load_test(index):
            clips, labels, videos, ok = tf.numpy_function(
                source.test_clips, [index], [tf.uint8, tf.int32, tf.int32, tf.bool], name="load_test_clips"
            )
            clips.set_shape((None,) + clip_shape)
            labels.set_shape((None,))
            videos.set_shape((None,))
            ok.set_shape(())
            return clips, labels, videos, ok

        # Test order is fixed so that all windows of a video are contiguous.
        ds = indices.map(load_test, num_parallel_calls=num_parallel_calls, deterministic=True)
        ds = ds.filter(_decoded_ok).map(_drop_ok)
        ds = cache_op(ds.unbatch())

    ds = ds.batch(batch_size)
    if drop_remainder:
        # Dropped by a filter rather than `batch(drop_remainder=True)`, so that the batch size
        # stays unknown to the graph: Keras' TensorFlow trainer runs one last step on an
        # exhausted iterator of unknown length, and with a static batch size the metric and
        # loss counters (`count += batch size`, no data needed) still advance in that step,
        # so every epoch's training loss and accuracy were divided by steps + 1.
        ds = ds.filter(lambda *batch: tf.shape(batch[0])[0] == batch_size)

    @tf.autograph.experimental.do_not_convert
    def normalise(clips, *rest):
        return (normalization.apply(tf.cast(clips, tf.float32)),) + rest

    ds = ds.map(normalise, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if shard is not None
        else tf.data.experimental.AutoShardPolicy.DATA)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def aggregate_video_predictions(probs, video_ids):
    """Average clip scores per video (the original's ``test.py``).

    Args:
        probs: ``(N, C)`` clip probabilities (softmax outputs).
        video_ids: ``(N,)`` video identifiers (ints or strings).

    Returns:
        ``(unique_ids, mean_probs)`` with ``mean_probs`` ``(V, C)``, ids sorted.
    """
    probs = np.asarray(probs, dtype=np.float64)
    video_ids = np.asarray(video_ids).reshape(-1)
    if probs.ndim != 2 or len(probs) != len(video_ids):
        raise ValueError(
            f"`probs` must be (N, C) with N == len(video_ids). Received: probs.shape={probs.shape}, "
            f"len(video_ids)={len(video_ids)}"
        )
    unique, inverse = np.unique(video_ids, return_inverse=True)
    sums = np.zeros((len(unique), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(unique))
    return unique, sums / counts[:, None]


def video_level_accuracy(probs, labels, video_ids, topk=(1, 5)) -> dict:
    """Top-k accuracy over videos, clip probabilities averaged per video.

    Args:
        probs: ``(N, C)`` clip probabilities.
        labels: ``(N,)`` clip labels (all clips of a video must agree).
        video_ids: ``(N,)`` video identifiers.
        topk: the k values; k larger than C counts every video as correct.

    Returns:
        ``{'top1': ..., 'top5': ..., 'num_videos': V, 'num_clips': N}``.
    """
    labels = np.asarray(labels).reshape(-1)
    unique, mean_probs = aggregate_video_predictions(probs, video_ids)
    video_ids = np.asarray(video_ids).reshape(-1)
    if len(labels) != len(video_ids):
        raise ValueError(f"`labels` and `video_ids` differ in length: {len(labels)} vs {len(video_ids)}")
    video_labels = np.empty(len(unique), dtype=np.int64)
    _, inverse = np.unique(video_ids, return_inverse=True)
    video_labels[inverse] = labels
    disagree = np.nonzero(video_labels[inverse] != labels)[0]
    if disagree.size:
        raise ValueError(f"Clips of video {video_ids[disagree[0]]!r} carry different labels.")
    # Descending scores; a stable sort keeps ties in class order.
    ranking = np.argsort(-mean_probs, axis=1, kind="stable")
    result = {}
    for k in topk:
        k = _positive_int("topk", k)
        hits = (ranking[:, :k] == video_labels[:, None]).any(axis=1)
        result[f"top{k}"] = float(hits.mean())
    result["num_videos"] = int(len(unique))
    result["num_clips"] = int(len(labels))
    return result
