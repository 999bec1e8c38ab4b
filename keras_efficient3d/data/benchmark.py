"""Throughput of the data pipeline: clips/s of decode + sample + augment + normalise.

Generates the synthetic gesture dataset into a temporary folder (or reads an
existing one), builds :func:`keras_efficient3d.data.make_dataset` and times
iterating it after a warm-up, per layout (JPEG frame folders, encoded videos)
and mode. Prints a table and a JSON line.

Shell::

    python -m keras_efficient3d.data.benchmark
    python -m keras_efficient3d.data.benchmark --layout jester --batch-size 8 --num-batches 40
    python -m keras_efficient3d.data.benchmark --compare-jpeg   # OpenCV vs tf.io.decode_jpeg
"""

from __future__ import annotations

import argparse
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

__all__ = ["benchmark_pipeline", "compare_jpeg_decoders", "run", "main"]

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=LAYOUTS + ("both",), default="both")
    parser.add_argument("--modes", default="train,val", help="comma-separated: train,val,test")
    parser.add_argument("--data-dir", default=None, help="existing dataset of --layout instead of a generated one")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-batches", type=int, default=30)
    parser.add_argument("--sample-duration", type=int, default=16)
    parser.add_argument("--sample-size", type=int, default=112)
    parser.add_argument("--downsample", type=int, default=1)
    parser.add_argument("--videos-per-class", type=int, default=12)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-jpeg", action="store_true", help="also time OpenCV vs tf.io.decode_jpeg")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.layout == "both" and args.data_dir:
        parser.error("--data-dir needs a single --layout")
    layouts = LAYOUTS if args.layout == "both" else (args.layout,)
    rows = run(layouts, tuple(m for m in args.modes.split(",") if m), args.data_dir, args.batch_size,
               args.num_batches, args.sample_duration, args.sample_size, args.downsample,
               args.videos_per_class, args.frames, args.size, args.seed, args.compare_jpeg)
    print(_table(rows))
    print(json.dumps(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
