"""Spatial crops, rescaling and flips of ``(T, H, W, 3)`` clips.

Box computations are pure functions of the frame size and a
``np.random.Generator`` and return PIL-style integer boxes ``(x1, y1, x2, y2)``
(right/bottom exclusive), reproducing the original implementation
(``spatial_transforms.py``): ``MultiScaleRandomCrop``, ``MultiScaleCornerCrop``,
``CenterCrop`` after ``Scale``, and ``CornerCrop`` for testing. One box is drawn
per clip, so every frame of a clip gets the same crop (as the original's
``randomize_parameters`` once per clip).

Resizing uses OpenCV: ``INTER_AREA`` when shrinking (close to PIL's antialiased
bilinear that the original used) and ``INTER_LINEAR`` otherwise.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

__all__ = [
    "CROP_POSITIONS",
    "TRAIN_CROPS",
    "multiscale_scales",
    "multiscale_random_crop_box",
    "multiscale_corner_crop_box",
    "corner_crop_box",
    "center_crop_box",
    "scaled_size",
    "crop_clip",
    "resize_clip",
    "scale_clip",
    "hflip_clip",
    "random_hflip",
    "mirror_labels",
    "train_transform",
    "val_transform",
    "test_transform",
]

CROP_POSITIONS = ("c", "tl", "tr", "bl", "br")
TRAIN_CROPS = ("random", "corner", "center")

# The original's --scale_step: 2 ** (-1/4), so that 5 scales span 1 -> 0.5.
DEFAULT_SCALE_STEP = 0.84089641525


def multiscale_scales(initial_scale: float = 1.0, n_scales: int = 5, scale_step: float = DEFAULT_SCALE_STEP):
    """The original's scale list: ``initial_scale * scale_step ** i`` for ``i < n_scales``.

    With the defaults: ``[1.0, 0.8409, 0.7071, 0.5946, 0.5]``.
    """
    if not 0 < initial_scale <= 1:
        raise ValueError(f"`initial_scale` must be in (0, 1]. Received: initial_scale={initial_scale}")
    if n_scales < 1:
        raise ValueError(f"`n_scales` must be >= 1. Received: n_scales={n_scales}")
    if not 0 < scale_step <= 1:
        raise ValueError(f"`scale_step` must be in (0, 1]. Received: scale_step={scale_step}")
    scales = [float(initial_scale)]
    for _ in range(1, n_scales):
        scales.append(scales[-1] * scale_step)
    return scales


def _check_scales(scales):
    scales = [float(s) for s in scales]
    if not scales or any(not 0 < s <= 1 for s in scales):
        raise ValueError(f"`scales` must be a non-empty list of values in (0, 1]. Received: scales={scales}")
    return scales


def _crop_side(height, width, scale):
    # At least a pixel: the original's crop of a frame a pixel or two high is empty and its
    # resize fails; a training clip of such a video is better a stretched pixel than a crash.
    return max(1, int(min(height, width) * scale))


def multiscale_random_crop_box(height: int, width: int, scales, rng: np.random.Generator):
    """``MultiScaleRandomCrop``: a square of side ``int(min(H, W) * scale)`` anywhere.

    The scale is drawn uniformly from ``scales``; the top-left corner is
    ``round(u * (W - side)), round(v * (H - side))`` with ``u, v ~ U[0, 1)``
    (PIL rounds crop coordinates).
    """
    scales = _check_scales(scales)
    scale = scales[int(rng.integers(0, len(scales)))]
    side = _crop_side(height, width, scale)
    tl_x, tl_y = rng.random(), rng.random()
    x1 = int(round(tl_x * (width - side)))
    y1 = int(round(tl_y * (height - side)))
    return x1, y1, x1 + side, y1 + side


def _position_box(height, width, side, position):
    if position == "c":
        # The original's MultiScaleCornerCrop centre box: (side // 2) on each side of
        # the centre pixel, so odd sides lose one pixel. Kept for fidelity.
        cx, cy, half = width // 2, height // 2, side // 2
        if not half:  # a one-pixel crop: the centre pixel, not an empty box
            return cx, cy, cx + 1, cy + 1
        return cx - half, cy - half, cx + half, cy + half
    if position == "tl":
        return 0, 0, side, side
    if position == "tr":
        return width - side, 0, width, side
    if position == "bl":
        return 0, height - side, side, height
    if position == "br":
        return width - side, height - side, width, height
    raise ValueError(f"`position` must be one of {CROP_POSITIONS}. Received: position={position!r}")


def multiscale_corner_crop_box(
    height: int, width: int, scales, rng: np.random.Generator, positions=CROP_POSITIONS
):
    """``MultiScaleCornerCrop``: a scaled square at a corner or the centre.

    Scale drawn from ``scales``, then position from ``positions`` (both uniform).
    """
    scales = _check_scales(scales)
    if not positions or any(p not in CROP_POSITIONS for p in positions):
        raise ValueError(f"`positions` must be a subset of {CROP_POSITIONS}. Received: positions={positions}")
    scale = scales[int(rng.integers(0, len(scales)))]
    position = positions[int(rng.integers(0, len(positions)))]
    return _position_box(height, width, _crop_side(height, width, scale), position)


def corner_crop_box(height: int, width: int, size: int, position: str = "c"):
    """``CornerCrop`` (testing): a ``size`` square at ``position``; centre rounded as PIL."""
    if position == "c":
        x1 = int(round((width - size) / 2.0))
        y1 = int(round((height - size) / 2.0))
        return x1, y1, x1 + size, y1 + size
    return _position_box(height, width, size, position)


def center_crop_box(height: int, width: int, size: int):
    """``CenterCrop``: ``x1 = round((W - size) / 2)``, same for ``y1``."""
    return corner_crop_box(height, width, size, "c")


def scaled_size(height: int, width: int, size: int):
    """``Scale(size)``: the ``(H', W')`` with the shorter side ``size``, aspect kept (truncated)."""
    if size < 1:
        raise ValueError(f"`size` must be >= 1. Received: size={size}")
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def crop_clip(clip: np.ndarray, box) -> np.ndarray:
    """``clip[:, y1:y2, x1:x2]`` for a box inside the frame."""
    x1, y1, x2, y2 = (int(v) for v in box)
    height, width = clip.shape[1:3]
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(f"Crop box {box} is not inside a {height}x{width} frame.")
    return clip[:, y1:y2, x1:x2]


def resize_clip(clip: np.ndarray, height: int, width: int) -> np.ndarray:
    """Every frame resized to ``(height, width)``."""
    if clip.shape[1:3] == (height, width):
        return clip
    shrink = height <= clip.shape[1] and width <= clip.shape[2]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = np.empty((clip.shape[0], height, width, clip.shape[3]), dtype=clip.dtype)
    for t in range(clip.shape[0]):
        cv2.resize(clip[t], (width, height), dst=out[t], interpolation=interpolation)
    return out


def scale_clip(clip: np.ndarray, size: int) -> np.ndarray:
    """``Scale(size)`` applied to every frame."""
    return resize_clip(clip, *scaled_size(clip.shape[1], clip.shape[2], size))


def hflip_clip(clip: np.ndarray) -> np.ndarray:
    """Mirror every frame left-right."""
    return clip[:, :, ::-1]


def random_hflip(clip: np.ndarray, rng: np.random.Generator):
    """Mirrors `clip` with probability 1/2 (one draw from `rng`): ``(clip, mirrored)``."""
    if rng.random() < 0.5:
        return hflip_clip(clip), True
    return clip, False


# Words whose meaning a left-right mirror swaps, in class names such as Jester's "Swiping
# Left" or "Turning Hand Clockwise".
_MIRROR_WORDS = {"Left": "Right", "Right": "Left",
                 "Clockwise": ("Counterclockwise", "Anticlockwise", "CounterClockwise",
                               "AntiClockwise"),
                 "Counterclockwise": "Clockwise", "Anticlockwise": "Clockwise"}


def mirror_labels(class_names) -> list[int] | None:
    """The class each class becomes in a left-right mirror image: ``result[i]`` is the
    index of the class whose name is class ``i``'s with Left/Right and Clockwise/
    Counterclockwise (or Anticlockwise) swapped (as words between spaces, underscores or
    hyphens, in any case: "swipe_left", or of a CamelCase name: "MoveLeft", as UCF-101's
    classes are named), or ``i`` where no such class exists
    (most gestures look the same mirrored). None when no class changes: then flipping
    keeps every label, as for Kinetics or UCF-101.

        mirror_labels(["Swiping Left", "Swiping Right", "Thumb Up"])  # [1, 0, 2]
        mirror_labels(["Swiping_Left", "Swiping_Right"])                # [1, 0]
        mirror_labels(["MoveRight", "MoveLeft"])                        # [1, 0]
    """
    names = [str(name) for name in class_names]
    index = {name: i for i, name in enumerate(names)}
    result = []
    for i, name in enumerate(names):
        # Words between spaces, underscores or hyphens (folder names: "Swiping_Left") or where
        # a capital follows a small letter or digit ("MoveLeft": an empty separator); the
        # separators are kept, so the swapped name is spelled as the class folders are.
        parts = re.split(r"([ _-]|(?<=[a-z0-9])(?=[A-Z]))", name)
        for position in range(len(parts) - 3, -1, -2):  # CounterClockwise is one word
            if parts[position].lower() in ("counter", "anti") and parts[position + 1] == "" \
                    and parts[position + 2].lower() == "clockwise":
                parts[position:position + 3] = [parts[position] + parts[position + 2]]
        target = i
        for position in range(0, len(parts), 2):
            word = parts[position]
            swaps = _MIRROR_WORDS.get(word.capitalize(), ())
            for swap in (swaps,) if isinstance(swaps, str) else swaps:
                swap = swap.lower() if word.islower() else swap.upper() if word.isupper() else swap
                other = "".join(parts[:position] + [swap] + parts[position + 1:])
                if other in index:
                    target = index[other]
        result.append(target)
    return None if result == list(range(len(names))) else result


def train_transform(
    clip: np.ndarray,
    size: int,
    rng: np.random.Generator,
    crop: str = "random",
    scales=None,
    hflip: bool = False,
) -> np.ndarray:
    """Training augmentation of the original, per clip.

    ``crop='random'`` is ``MultiScaleRandomCrop``, ``'corner'`` ``MultiScaleCornerCrop``
    over the five positions and ``'center'`` ``MultiScaleCornerCrop`` at the centre
    only; the crop is resized to ``size x size``; then, if ``hflip``, the clip is
    mirrored with probability 1/2 (the original flips before cropping; flipping
    after touches fewer pixels and is the same distribution for the random crop and the
    four corners (whose boxes trade places); the centre box of an odd width, not centred
    there (`_position_box`), covers on a flipped frame the pixels one column right of
    ours).
    """
    if crop not in TRAIN_CROPS:
        raise ValueError(f"`crop` must be one of {TRAIN_CROPS}. Received: crop={crop!r}")
    scales = multiscale_scales() if scales is None else scales
    height, width = clip.shape[1:3]
    if crop == "random":
        box = multiscale_random_crop_box(height, width, scales, rng)
    else:
        positions = CROP_POSITIONS if crop == "corner" else ("c",)
        box = multiscale_corner_crop_box(height, width, scales, rng, positions)
    out = resize_clip(crop_clip(clip, box), size, size)
    if hflip:
        out, _ = random_hflip(out, rng)
    return np.ascontiguousarray(out)


def val_transform(clip: np.ndarray, size: int) -> np.ndarray:
    """Validation: ``Scale(size)`` then ``CenterCrop(size)``."""
    clip = scale_clip(clip, size)
    box = center_crop_box(clip.shape[1], clip.shape[2], size)
    return np.ascontiguousarray(crop_clip(clip, box))


def test_transform(clip: np.ndarray, size: int, scale_in_test: float = 1.0, position: str = "c") -> np.ndarray:
    """Testing: ``Scale(int(size / scale_in_test))`` then ``CornerCrop(size, position)``."""
    if not 0 < scale_in_test <= 1:
        raise ValueError(f"`scale_in_test` must be in (0, 1]. Received: scale_in_test={scale_in_test}")
    clip = scale_clip(clip, int(size / scale_in_test))
    box = corner_crop_box(clip.shape[1], clip.shape[2], size, position)
    return np.ascontiguousarray(crop_clip(clip, box))


# pytest would collect a module-level ``test_*`` function imported into a test file.
test_transform.__test__ = False
