"""Throughput of the data pipeline: clips/s of decode + sample + augment + normalise.

Generates the synthetic gesture dataset into a temporary folder (or reads an
existing one), builds :func:`keras_efficient3d.data.make_dataset` and times
iterating it after a warm-up, per layout (JPEG frame folders, encoded videos)
and mode. Prints a table and a JSON line.

Shell::

    python -m keras_efficient3d.data.benchmark
    python -m keras_efficient3d.data.benchmark --layout=jester --batch_size=8 --num_batches=40
    python -m keras_efficient3d.data.benchmark --compare_jpeg   # OpenCV vs tf.io.decode_jpeg
    python -m keras_efficient3d.data.benchmark --layout=video --data_root=/data/videos --json_out=rows.json

``--frames``/``--size`` are the clip the pipeline makes; ``--source_frames``/``--source_size``
the generated videos it reads.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from keras_efficient3d.data import synthetic
from keras_efficient3d.data.decode import list_frame_files, read_image
from keras_efficient3d.data.folders import index_folders
from keras_efficient3d.data.jester import index_jester
from keras_efficient3d.data.pipeline import make_dataset

__all__ = ["benchmark_pipeline", "compare_jpeg_decoders", "define_flags", "main", "run"]

LAYOUTS = ("jester", "video")


def _index(layout, root, split="train"):
    if layout == "jester":
        return index_jester(root, "train" if split == "train" else "validation")[0]
    return index_folders(root, "train" if split == "train" else "val")[0]


def benchmark_pipeline(
    records,
    mode: str = "train",
    batch_size: int = 8,
    num_batches: int = 30,
    warmup_batches: int = 3,
    **dataset_kwargs,
) -> dict:
    """Time ``num_batches`` batches of ``make_dataset(records, mode, ...)`` after a warm-up.

    The dataset is repeated so that small datasets do not run dry.

    Returns:
        ``{'mode', 'batch_size', 'clips', 'seconds', 'clips_per_s', 'ms_per_batch'}``.
    """
    dataset = make_dataset(records, mode, batch_size=batch_size, **dataset_kwargs).repeat()
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    clips = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
        clips += int(batch[0].shape[0])
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "batch_size": batch_size,
        "clips": clips,
        "seconds": round(seconds, 3),
        "clips_per_s": round(clips / seconds, 1),
        "ms_per_batch": round(1000 * seconds / num_batches, 1),
    }


def compare_jpeg_decoders(root: str, max_clips: int = 150, frames_per_clip: int = 16,
                          parallel_calls: int = tf.data.AUTOTUNE) -> dict:
    """Frames/s decoding the same JPEG frames with OpenCV and with ``tf.io.decode_jpeg``.

    Both decode ``frames_per_clip`` frames of one folder per element inside a
    parallel ``tf.data`` map, as the pipeline does: OpenCV in one
    ``tf.numpy_function`` call per clip, TensorFlow in-graph with ``tf.map_fn``.
    """
    clips = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            files = list_frame_files(entry.path)
            if len(files) >= frames_per_clip:
                clips.append(files[:frames_per_clip])
        if len(clips) >= max_clips:
            break
    if not clips:
        raise ValueError(f"No frame folder with {frames_per_clip} frames under {root}.")
    names = tf.data.Dataset.from_tensor_slices(tf.constant(clips))

    def opencv(paths):
        def read(batch):
            return np.stack([read_image(p.decode()) for p in batch])

        return tf.numpy_function(read, [paths], tf.uint8)

    def tensorflow(paths):
        return tf.map_fn(lambda p: tf.io.decode_jpeg(tf.io.read_file(p), channels=3), paths,
                         fn_output_signature=tf.uint8)

    result = {"clips": len(clips), "frames_per_clip": frames_per_clip}
    for name, decode in (("opencv", opencv), ("tf.io.decode_jpeg", tensorflow)):
        dataset = names.map(decode, num_parallel_calls=parallel_calls).prefetch(tf.data.AUTOTUNE)
        for _ in dataset.take(8):
            pass  # warm-up
        start = time.perf_counter()
        for _ in dataset:
            pass
        result[name] = round(len(clips) * frames_per_clip / (time.perf_counter() - start), 1)
    return result


def run(
    layouts=LAYOUTS,
    modes=("train", "val"),
    data_dir: str | None = None,
    batch_size: int = 8,
    num_batches: int = 30,
    sample_duration: int = 16,
    sample_size: int = 112,
    downsample: int = 1,
    videos_per_class: int = 12,
    frames: int = 32,
    size: int = 128,
    seed: int = 0,
    compare_jpeg: bool = False,
) -> list[dict]:
    """Benchmark each layout and mode; returns one result dict per row."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="efficient3d_bench_") as tmp:
        for layout in layouts:
            if layout not in LAYOUTS:
                raise ValueError(f"`layout` must be in {LAYOUTS}. Received: layout={layout!r}")
            if data_dir is not None:
                root = data_dir
            else:
                root = synthetic.generate(os.path.join(tmp, layout), layout, videos_per_class, seed, frames, size)
            for mode in modes:
                records = _index(layout, root, "train" if mode == "train" else "val")
                row = benchmark_pipeline(
                    records, mode, batch_size, num_batches, sample_duration=sample_duration,
                    sample_size=sample_size, downsample=downsample, seed=seed,
                )
                row.update(layout=layout, clip=f"{sample_duration}x{sample_size}x{sample_size}",
                           source_frames=f"{frames}x{size}x{size}" if data_dir is None else data_dir)
                rows.append(row)
            if compare_jpeg and layout == "jester":
                rows.append({"layout": layout, "mode": "jpeg-decoders (frames/s)", **compare_jpeg_decoders(root)})
    return rows


def _table(rows):
    lines = [f"{'layout':8} {'mode':6} {'clip':12} {'batch':>5} {'clips/s':>9} {'ms/batch':>9}"]
    for row in rows:
        if "clips_per_s" in row:
            lines.append(f"{row['layout']:8} {row['mode']:6} {row['clip']:12} {row['batch_size']:>5} "
                         f"{row['clips_per_s']:>9} {row['ms_per_batch']:>9}")
        else:
            lines.append(f"{row['layout']:8} {json.dumps({k: v for k, v in row.items() if k != 'layout'})}")
    return "\n".join(lines)


MODES = ("train", "val", "test")


def define_flags(flag_values):
    from absl import flags

    from keras_efficient3d import cli

    fv = {"flag_values": flag_values}
    flags.DEFINE_enum("layout", "both", LAYOUTS + ("both",), "Dataset layout to time.", **fv)
    flags.DEFINE_list("modes", ["train", "val"], f"Pipeline modes, comma-separated: {MODES}.",
                      **fv)
    flags.register_validator("modes", lambda v: bool(v) and set(v) <= set(MODES),
                             message=f"expected comma-separated modes of {MODES}", **fv)
    cli.define("data_root", None, "An existing dataset of --layout instead of a generated one.",
               **fv)
    cli.define("batch_size", 8, **fv)
    flags.DEFINE_integer("num_batches", 30, "Timed batches per row.", lower_bound=1, **fv)
    cli.define("frames", 16, "(of the clips the pipeline makes)", **fv)
    cli.define("size", 112, "(of the clips the pipeline makes)", **fv)
    cli.define("downsample", 1, **fv)
    cli.define("videos_per_class", 12, **fv)
    flags.DEFINE_integer("source_frames", 32, "Frames per generated video.", lower_bound=2, **fv)
    flags.DEFINE_integer("source_size", 128, "Height and width of the generated videos.",
                         lower_bound=32, **fv)
    cli.define("seed", 0, **fv)
    flags.DEFINE_bool("compare_jpeg", False, "Also time OpenCV against tf.io.decode_jpeg.", **fv)
    cli.define("json_out", None, **fv)
    # The argparse spellings of the first version (--data-dir, --json, --sample-duration...).
    for old, new in (("data_dir", "data_root"), ("json", "json_out"),
                     ("sample_duration", "frames"), ("sample_size", "size")):
        cli.define_alias(old, new, flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["layout", "data_root"], lambda v: not (v["layout"] == "both" and v["data_root"]),
        message="--data_root needs a single --layout", flag_values=flag_values)


def main(argv, flag_values) -> None:
    del argv
    f = flag_values
    layouts = LAYOUTS if f.layout == "both" else (f.layout,)
    rows = run(layouts, tuple(f.modes), f.data_root, f.batch_size,
               f.num_batches, f.frames, f.size, f.downsample, f.videos_per_class,
               f.source_frames, f.source_size, f.seed, f.compare_jpeg)
    print(_table(rows))
    print(json.dumps(rows))
    if f.json_out:
        with open(f.json_out, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    from keras_efficient3d import cli

    cli.run(main, define_flags)
