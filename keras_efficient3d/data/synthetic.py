"""Synthetic gestures: a small dataset whose classes are defined by motion alone.

Each video shows one random shape (with an off-centre marker, so its orientation
is visible) over a random textured background with static distractors, camera
jitter and sensor noise. The class is *how the shape moves*: swiping
left/right/up/down, zooming in/out, turning clockwise/anticlockwise. Every
position, size and orientation that appears in one class appears in its
opposite, so no single frame tells the classes apart; a model has to see time.

Two layouts, so that the main job exercises the same readers as real data:

* ``jester``: the real Jester layout, ``<root>/<id>/00001.jpg`` plus
  ``jester-v1-labels.csv``, ``jester-v1-train.csv``, ``jester-v1-validation.csv``
  (read with :func:`keras_efficient3d.data.index_jester`).
* ``video``: encoded videos in the generic layout
  ``<root>/{train,val}/<class>/<id>.mp4`` (read with
  :func:`keras_efficient3d.data.index_folders`).

Shell::

    python -m keras_efficient3d.data.synthetic --output=/tmp/gestures
    python -m keras_efficient3d.data.synthetic --output=/tmp/gestures_avi --layout=video --video_format=avi

Generation is deterministic for a seed (each video has its own child seed).

`GESTURES` is the one definition of the set the demo trains on; `cached_gestures()` writes it
once into a cache folder (``$KERAS_HOME/datasets``, as ``keras.utils.get_file`` caches) and is
what ``training/train.py --dataset=synthetic`` reads when no ``--data_root`` is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from keras_efficient3d.atomic import replace_folder
from keras_efficient3d.data.jester import LABELS_CSV, SPLIT_CSVS

__all__ = ["CLASSES", "GESTURES", "LAYOUTS", "VIDEO_FORMATS", "cache_dir", "cached_gestures", "define_flags",
           "generate", "main", "render_video"]

CLASSES = (
    "Swiping Left",
    "Swiping Right",
    "Swiping Up",
    "Swiping Down",
    "Zooming In",
    "Zooming Out",
    "Turning Clockwise",
    "Turning Anticlockwise",
)
LAYOUTS = ("jester", "video")
# extension -> fourcc; all of them decode with the opencv-python-headless wheels.
VIDEO_FORMATS = {"mp4": "mp4v", "avi": "MJPG", "webm": "VP80"}

# The dataset of the demo and of training/flags/synthetic.flags: `generate`'s arguments. A
# second definition (the generator's defaults, a flagfile header) drifted from it once and
# trained to 91% where the demo reaches 99%.
GESTURES = {"layout": "jester", "videos_per_class": 100, "seed": 0, "frames": 32, "size": 128,
            "val_fraction": 0.2}

# Unit-radius outlines (x right, y down). None of them has a rotational symmetry
# of order <= 4 together with the marker, so turning is always visible.
_SHAPES = {
    "triangle": [(0.0, -1.0), (0.8, 0.8), (-0.8, 0.8)],
    "arrow": [(0.0, -1.0), (0.75, -0.2), (0.3, -0.2), (0.3, 1.0), (-0.3, 1.0), (-0.3, -0.2), (-0.75, -0.2)],
    "ell": [(-0.7, -1.0), (-0.1, -1.0), (-0.1, 0.4), (0.8, 0.4), (0.8, 1.0), (-0.7, 1.0)],
    "bar": [(-1.0, -0.45), (1.0, -0.45), (1.0, 0.45), (-1.0, 0.45)],
    "kite": [(0.0, -1.0), (0.6, -0.1), (0.0, 1.0), (-0.6, -0.1)],
    "tee": [(-1.0, -1.0), (1.0, -1.0), (1.0, -0.4), (0.3, -0.4), (0.3, 1.0), (-0.3, 1.0), (-0.3, -0.4), (-1.0, -0.4)],
}
_MARKER = (0.0, -0.55)


def _background(rng, size, dark):
    """A smooth random texture plus a gradient, in a luminance band away from the object."""
    low, high = (10, 110) if dark else (145, 245)
    coarse = rng.uniform(low, high, size=(int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3)).astype(np.float32)
    texture = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    background = texture + rng.uniform(5, 20) * gradient[..., None]
    # Static distractors: small blobs that never move.
    for _ in range(int(rng.integers(0, 3))):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        radius = int(rng.integers(size // 20, size // 10))
        cv2.circle(background, centre, radius, tuple(float(v) for v in rng.uniform(low, high, 3)), -1, cv2.LINE_AA)
    return np.clip(background, 0, 255)


def _trajectory(label, rng, frames, size):
    """Per-frame centre (x, y), radius and angle of the object for class ``label``."""
    t = np.linspace(0.0, 1.0, frames)
    # Mild random easing so that speed varies within and across videos.
    t = t ** rng.uniform(0.8, 1.25)
    name = CLASSES[label]
    radius = np.full(frames, size * rng.uniform(0.16, 0.23))
    angle = np.full(frames, rng.uniform(0, 360))
    cx = np.full(frames, size * rng.uniform(0.38, 0.62))
    cy = np.full(frames, size * rng.uniform(0.38, 0.62))
    if name.startswith("Swiping"):
        distance = size * rng.uniform(0.45, 0.75)
        start = size / 2 + distance / 2 + size * rng.uniform(-0.08, 0.08)
        path = start - distance * t  # decreasing coordinate
        lateral = size * rng.uniform(0.3, 0.7)
        drift = size * rng.uniform(-0.05, 0.05) * t
        if name == "Swiping Left":
            cx, cy = path, lateral + drift
        elif name == "Swiping Right":
            cx, cy = size - path, lateral + drift
        elif name == "Swiping Up":
            cx, cy = lateral + drift, path
        else:
            cx, cy = lateral + drift, size - path
    elif name.startswith("Zooming"):
        small, large = size * rng.uniform(0.07, 0.11), size * rng.uniform(0.30, 0.38)
        grow = small * (large / small) ** t  # geometric: constant apparent speed
        radius = grow if name == "Zooming In" else grow[::-1]
    else:
        turn = rng.uniform(150, 270) * t
        angle = angle + (turn if name == "Turning Clockwise" else -turn)
    return cx, cy, radius, angle


def render_video(label: int, rng: np.random.Generator, frames: int = 32, size: int = 128) -> np.ndarray:
    """One synthetic gesture video of class ``label`` as RGB uint8 ``(frames, size, size, 3)``."""
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"`label` must be in [0, {len(CLASSES)}). Received: label={label}")
    dark = bool(rng.random() < 0.5)
    background = _background(rng, size, dark)
    object_colour = rng.uniform(175, 255, 3) if dark else rng.uniform(0, 80, 3)
    marker_colour = 255.0 - object_colour
    outline = np.asarray(_SHAPES[list(_SHAPES)[int(rng.integers(len(_SHAPES)))]], dtype=np.float64)
    outline = outline * rng.uniform(0.85, 1.15, 2)  # random aspect
    cx, cy, radius, angle = _trajectory(label, rng, frames, size)
    noise_sigma = rng.uniform(2.0, 7.0)
    jitter = np.cumsum(rng.normal(0.0, 0.6, size=(frames, 2)), axis=0)
    jitter = np.clip(jitter - jitter.mean(axis=0), -3, 3)
    # One noise field per video, read at a random offset per frame: a fresh-looking
    # noise pattern every frame at a fraction of the cost of drawing it each time.
    noise = rng.standard_normal((2 * size, 2 * size, 3), dtype=np.float32) * np.float32(noise_sigma)
    offsets = rng.integers(0, size, size=(frames, 2))
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        frame = background.copy()
        theta = np.deg2rad(angle[i])
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        centre = np.array([cx[i], cy[i]])
        points = centre + radius[i] * outline @ rotation.T
        # 4 fractional bits: sub-pixel motion stays smooth at small speeds.
        cv2.fillPoly(frame, [np.round(points * 16).astype(np.int32)], tuple(object_colour), cv2.LINE_AA, shift=4)
        marker = centre + radius[i] * (np.asarray(_MARKER) @ rotation.T)
        cv2.circle(frame, tuple(int(v) for v in np.round(marker * 16)), int(radius[i] * 0.22 * 16),
                   tuple(marker_colour), -1, cv2.LINE_AA, shift=4)
        shift = np.float32([[1, 0, jitter[i, 0]], [0, 1, jitter[i, 1]]])
        frame = cv2.warpAffine(frame, shift, (size, size), borderMode=cv2.BORDER_REFLECT)
        oy, ox = offsets[i]
        frame += noise[oy : oy + size, ox : ox + size]
        video[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def _write_jpegs(folder, video, quality=90):
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(video, 1):
        ok = cv2.imwrite(os.path.join(folder, f"{i:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                         [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise OSError(f"cannot write JPEG frames into {folder}")


def _write_video(path, video, video_format, fps=12):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    height, width = video.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*VIDEO_FORMATS[video_format]), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {video_format} ({VIDEO_FORMATS[video_format]}) video {path}")
    for frame in video:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


RECORD = "synthetic_gestures.json"  # the arguments of a generated set, written last


def generate(
    output,
    layout: str = "jester",
    videos_per_class: int = 50,
    seed: int = 0,
    frames: int = 32,
    size: int = 128,
    val_fraction: float = 0.2,
    video_format: str = "mp4",
    num_workers: int | None = None,
) -> str:
    """Write the synthetic gesture dataset and return its root folder.

    Args:
        output: destination folder: new, empty, or a set generated before, which the new
            one replaces whole (another folder's files are refused).
        layout: ``'jester'`` (JPEG folders + official CSVs) or ``'video'``
            (``<output>/{train,val}/<class>/<id>.<video_format>``).
        videos_per_class: videos per class, split into train and validation.
        seed: the dataset is a pure function of the arguments.
        frames: frames per video.
        size: frame height and width.
        val_fraction: share of each class's videos in the validation split (at
            least one video per class when ``videos_per_class >= 2``).
        video_format: ``'mp4'`` (mp4v), ``'avi'`` (MJPG) or ``'webm'`` (VP8), video layout only.
        num_workers: writer threads (OpenCV releases the GIL); default ``os.cpu_count()``.

    Returns:
        ``output`` as a string.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"`layout` must be one of {LAYOUTS}. Received: layout={layout!r}")
    if video_format not in VIDEO_FORMATS:
        raise ValueError(
            f"`video_format` must be one of {sorted(VIDEO_FORMATS)}. Received: video_format={video_format!r}"
        )
    if videos_per_class < 1:
        raise ValueError(f"`videos_per_class` must be >= 1. Received: videos_per_class={videos_per_class}")
    if frames < 2:
        raise ValueError(f"`frames` must be >= 2 (motion needs time). Received: frames={frames}")
    if size < 32:
        raise ValueError(f"`size` must be >= 32. Received: size={size}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"`val_fraction` must be in [0, 1). Received: val_fraction={val_fraction}")
    final = os.fspath(output)
    if os.path.exists(final) and not os.path.isdir(final):
        raise ValueError(f"{final} is a file; a folder is needed")
    if os.path.isdir(final) and os.listdir(final) and not os.path.isfile(os.path.join(final, RECORD)):
        raise ValueError(f"{final} holds files of no generated set (no {RECORD}): the new videos "
                         "would be mixed with them; give an empty or new folder")
    # Written beside it and renamed into place: a set generated there before with other
    # arguments left its extra videos among the new ones (a video in both splits, frames of
    # longer videos after the new ones' ends), and an interrupted run half a set.
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    output = tempfile.mkdtemp(prefix=".synthetic-partial-", dir=parent)
    try:
        _generate_into(output, layout, videos_per_class, seed, frames, size, val_fraction,
                       video_format, num_workers)
        replace_folder(output, final)
    finally:
        shutil.rmtree(output, ignore_errors=True)  # what was not renamed into place
    return final


def _generate_into(output, layout, videos_per_class, seed, frames, size, val_fraction,
                   video_format, num_workers):
    num_val = int(round(videos_per_class * val_fraction))
    if val_fraction > 0 and videos_per_class >= 2:
        num_val = min(max(num_val, 1), videos_per_class - 1)
    jobs = []  # (label, split, child seed)
    children = np.random.SeedSequence(seed).spawn(len(CLASSES) * videos_per_class)
    for label in range(len(CLASSES)):
        for j in range(videos_per_class):
            split = "validation" if j < num_val else "train"
            jobs.append((label, split, children[label * videos_per_class + j]))
    # Jester ids carry no class information: number the videos in a seeded random order.
    order = np.random.default_rng(seed).permutation(len(jobs))
    video_ids = {int(job): str(int(position) + 1) for position, job in enumerate(order)}

    def write(job_index):
        label, split, child = jobs[job_index]
        video = render_video(label, np.random.default_rng(child), frames, size)
        video_id = video_ids[job_index]
        if layout == "jester":
            _write_jpegs(os.path.join(output, video_id), video)
        else:
            folder = os.path.join(output, "val" if split == "validation" else "train", CLASSES[label].replace(" ", "_"))
            _write_video(os.path.join(folder, f"{video_id}.{video_format}"), video, video_format)

    with ThreadPoolExecutor(max_workers=num_workers or os.cpu_count() or 1) as pool:
        list(pool.map(write, range(len(jobs))))

    if layout == "jester":
        with open(os.path.join(output, LABELS_CSV), "w", encoding="utf-8") as handle:
            handle.write("".join(name + "\n" for name in CLASSES))
        for split in ("train", "validation"):
            rows = sorted(
                (int(video_ids[i]), CLASSES[label]) for i, (label, s, _) in enumerate(jobs) if s == split
            )
            with open(os.path.join(output, SPLIT_CSVS[split]), "w", encoding="utf-8") as handle:
                handle.write("".join(f"{vid};{name}\n" for vid, name in rows))
    with open(os.path.join(output, RECORD), "w", encoding="utf-8") as handle:
        json.dump(
            dict(layout=layout, videos_per_class=videos_per_class, seed=seed, frames=frames, size=size,
                 val_fraction=val_fraction, video_format=video_format if layout == "video" else None,
                 classes=list(CLASSES)),
            handle,
            indent=2,
        )


def cache_dir() -> str:
    """Where `cached_gestures` writes: ``$KERAS_HOME/datasets`` (``~/.keras/datasets``), or
    ``/tmp/.keras/datasets`` when that is not writable, as ``keras.utils.get_file`` does."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    if not os.access(home if os.path.exists(home) else os.path.dirname(home), os.W_OK):
        home = os.path.join(tempfile.gettempdir(), ".keras")
    return os.path.join(home, "datasets")


def _matches(root, definition):
    """Whether `root` holds a complete set generated from `definition` (its record is written
    last)."""
    try:
        with open(os.path.join(root, "synthetic_gestures.json"), encoding="utf-8") as handle:
            recorded = json.load(handle)
    except (OSError, ValueError):
        return False
    return all(recorded.get(key) == value for key, value in definition.items()
               if key != "video_format" or definition.get("layout") == "video")


def cached_gestures(definition=None, directory=None, log=None) -> str:
    """The synthetic gestures of `definition` (default `GESTURES`), generated on first use into
    a cache folder named after the definition; returns that folder.

    The set is written into a temporary sibling and renamed into place when complete, so an
    interrupted generation is never mistaken for a dataset, and concurrent callers (the
    workers of a multi-worker run) end with the same folder.

    Args:
        definition: `generate`'s arguments (other than ``output``).
        directory: the cache (default `cache_dir()`).
        log: called with one line saying which folder is used and whether it was generated.
    """
    definition = dict(GESTURES if definition is None else definition)
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:10]
    directory = directory or cache_dir()
    root = os.path.join(directory, f"synthetic_gestures-{digest}")
    if _matches(root, definition):
        if log:
            log(f"synthetic gestures: using the cached set in {root}")
        return root
    os.makedirs(directory, exist_ok=True)
    count = len(CLASSES) * definition.get("videos_per_class", 50)
    if log:
        log(f"synthetic gestures: generating {count} videos once into {root}")
    partial = tempfile.mkdtemp(prefix=f".synthetic_gestures-{digest}-", dir=directory)
    try:
        generate(partial, **definition)
        try:
            os.rename(partial, root)
        except OSError:
            if not _matches(root, definition):  # not another process that finished first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root


def define_flags(flag_values):
    from absl import flags

    from keras_efficient3d import cli

    cli.define("output", None, "Destination folder.", flag_values=flag_values, required=True,
               check=cli.output_folder)
    flags.DEFINE_enum("layout", "jester", LAYOUTS, "jester (JPEG folders and CSVs) or video.",
                      flag_values=flag_values)
    cli.define("videos_per_class", 50, flag_values=flag_values)
    cli.define("seed", 0, flag_values=flag_values)
    cli.define("frames", 32, "(frames per generated video)", flag_values=flag_values)
    cli.define("size", 128, flag_values=flag_values)
    flags.DEFINE_float("val_fraction", 0.2, "Share of each class's videos in the validation "
                       "split.", flag_values=flag_values)
    flags.DEFINE_enum("video_format", "mp4", sorted(VIDEO_FORMATS), "Container of the video "
                      "layout.", flag_values=flag_values)


def main(argv, flag_values) -> None:
    del argv
    f = flag_values
    start = time.perf_counter()
    # generate() replaces an earlier generated set whole: said, as the set's files go
    earlier = os.path.isfile(os.path.join(f.output, RECORD))
    root = generate(f.output, f.layout, f.videos_per_class, f.seed, f.frames, f.size,
                    f.val_fraction, f.video_format)
    replaced = " in place of the set generated there before" if earlier else ""
    print(f"wrote {len(CLASSES) * f.videos_per_class} videos ({f.layout} layout) to {root}"
          f"{replaced} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    from keras_efficient3d import cli

    cli.run(main, define_flags)
