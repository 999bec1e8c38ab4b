"""What the prediction tests share: the tiny model's settings, test videos, fakes."""

import os

import cv2
import numpy as np

from helpers import TINY_CLASSES, TINY_FRAMES, TINY_LABELS, TINY_SIZE, tiny_metadata, tiny_normalization
from keras_efficient3d.data.spatial import val_transform
from keras_efficient3d.data.temporal import loop_pad
from keras_efficient3d.runtime import InputSpec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAMES, SIZE, CLASSES, LABELS = TINY_FRAMES, TINY_SIZE, TINY_CLASSES, TINY_LABELS
NORM = tiny_normalization()
METADATA = tiny_metadata()


def write_video(path, frames_rgb, fps=30.0):
    fourcc = {".mp4": "mp4v", ".avi": "MJPG"}[os.path.splitext(path)[1]]
    height, width = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def count_video_frames(path):
    capture = cv2.VideoCapture(path)
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def window_starts(frames, stride, span=FRAMES):
    """The first frames of the windows over a stream of `frames` frames: every `stride`, and
    a last one of the last `span` frames where frames at the end were in none."""
    if frames <= span:
        return [0]
    starts = list(range(0, frames - span + 1, stride))
    return starts + ([frames - span] if starts[-1] + span < frames else [])


def reference_probabilities(model, frames_rgb, starts, span=FRAMES):
    """What the predictions must be, computed independently of `predict`: the validation
    transform on the whole clip, the recorded normalisation, the Keras model, a softmax."""
    out = []
    n = len(frames_rgb)
    for start in starts:
        indices = loop_pad(np.arange(start, min(start + span, n)), span)
        clip = val_transform(frames_rgb[indices], SIZE).astype(np.float32)
        logits = model(NORM.apply(clip)[None], training=False).numpy()[0]
        out.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
    return np.asarray(out)


class FakeCapture:
    """Stands for `cv2.VideoCapture(index)`: BGR frames, then end of stream, or a Ctrl-C."""

    def __init__(self, frames_rgb, interrupt_at=None):
        self.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames_rgb]
        self.interrupt_at = interrupt_at
        self.reads = 0
        self.released = False

    def isOpened(self):
        return True

    def read(self):
        if self.interrupt_at is not None and self.reads == self.interrupt_at:
            raise KeyboardInterrupt
        if self.reads >= len(self.frames):
            return False, None
        self.reads += 1
        return True, self.frames[self.reads - 1].copy()

    def release(self):
        self.released = True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0


class FakeRunner:
    """A runner whose logits are known: class c scores the mean of channel c (+ frame count)."""

    backend, path, threads = "fake", "fake.model", 1

    def __init__(self, probabilities=False):
        self.input_spec = InputSpec((1, FRAMES, SIZE, SIZE, 3))
        self.num_classes = CLASSES
        self.probabilities = probabilities
        self.calls = []

    def __call__(self, clips):
        self.calls.append(np.array(clips))
        means = clips.mean(axis=(1, 2, 3))  # (N, 3)
        logits = np.concatenate([means, means[:, :1] * 0 + 0.5], axis=1).astype(np.float32)
        if self.probabilities:
            e = np.exp(logits)
            return e / e.sum(axis=1, keepdims=True)
        return logits


def _boxes(data, start, end):
    import struct

    i = start
    while i < end:
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        yield i, size, kind.decode("latin-1")
        i += size


def _find_box(data, want, start=0, end=None, path=()):
    """(offsets of the boxes holding it, offset) of the first MP4 box of type `want`."""
    for i, size, kind in _boxes(data, start, len(data) if end is None else end):
        if kind == want:
            return list(path), i
        if kind in ("moov", "trak", "mdia", "minf", "stbl", "edts"):
            found = _find_box(data, want, i + 8, i + size, path + (i,))
            if found:
                return found
    return None


def make_variable_frame_rate(path, slow_after, factor):
    """Rewrites an MP4 that OpenCV wrote (one ``stts`` entry: every frame as long, the movie
    box after the media data) so that the frames from `slow_after` on last `factor` times as
    long: a variable frame rate, as phones record. Returns the frames' timestamps (s)."""
    import struct

    data = bytearray(open(path, "rb").read())
    parents, at = _find_box(data, "stts")
    size, = struct.unpack(">I", data[at:at + 4])
    flags, entries = struct.unpack(">II", data[at + 8:at + 16])
    assert entries == 1, "expected OpenCV's constant frame rate"
    count, delta = struct.unpack(">II", data[at + 16:at + 24])
    table = struct.pack(">IIIIII", flags, 2, slow_after, delta, count - slow_after, factor * delta)
    data[at + 8:at + size] = table
    for offset in [at, *parents]:  # every box around it grows by one entry
        struct.pack_into(">I", data, offset, struct.unpack(">I", data[offset:offset + 4])[0] + 8)
    # the durations (track, movie, edit list), or the decoder stops at the old one
    _, mdhd = _find_box(data, "mdhd")
    timescale, = struct.unpack(">I", data[mdhd + 20:mdhd + 24])
    total = slow_after * delta + (count - slow_after) * factor * delta
    struct.pack_into(">I", data, mdhd + 24, total)
    _, mvhd = _find_box(data, "mvhd")
    movie_scale, = struct.unpack(">I", data[mvhd + 20:mvhd + 24])
    movie_total = total * movie_scale // timescale
    struct.pack_into(">I", data, mvhd + 24, movie_total)
    _, tkhd = _find_box(data, "tkhd")
    struct.pack_into(">I", data, tkhd + 28, movie_total)
    edit = _find_box(data, "elst")
    if edit:
        struct.pack_into(">I", data, edit[1] + 16, movie_total)
    open(path, "wb").write(bytes(data))
    step = delta / timescale
    return [i * step if i < slow_after else (slow_after + (i - slow_after) * factor) * step
            for i in range(count)]
