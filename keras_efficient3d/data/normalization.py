"""Input normalisation, as the original implementation's options define it.

The original (``main.py`` + ``mean.py``) divides pixels by ``norm_value`` (1: range
0-255, 255: range 0-1), subtracts a per-channel mean (ActivityNet's or
Kinetics') unless ``--no_mean_norm``, and divides by the Kinetics std if
``--std_norm``. It also feeds channels in whatever order its loader produced:
RGB for JPEG frames (PIL), but **BGR** for Kinetics videos, which it decodes
with OpenCV and never converts. A :class:`Normalization` therefore records the
channel order explicitly, so that a converted checkpoint sees exactly the input
it was trained on. It is small and serialisable (``to_config``/``from_config``)
so that saved models can carry it.

Clips reach :meth:`Normalization.apply` as float RGB in 0-255; ``mean`` and
``std`` are listed in the model's channel order and in its value range.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "ACTIVITYNET_MEAN",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "Normalization",
    "PRESETS",
]

# mean.py, in the range 0-255, for channels (0, 1, 2) as the model receives them.
ACTIVITYNET_MEAN = (114.7748, 107.7354, 99.4750)
KINETICS_MEAN = (110.63666788, 103.16065604, 96.29023126)
KINETICS_STD = (38.7568578, 37.88248729, 40.02898126)

VALUE_RANGES = ("0-255", "0-1")
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclasses.dataclass(frozen=True)
class Normalization:
    """``(x / (1 or 255) - mean) / std`` with an explicit value range and channel order.

    Attributes:
        mean: 3 values, in the model's channel order and value range.
        std: 3 values, same conventions.
        value_range: ``'0-255'`` (the original's ``norm_value=1``) or ``'0-1'``
            (``norm_value=255``).
        channel_order: ``'RGB'`` or ``'BGR'``: the order the model expects.
    """

    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    value_range: str = "0-255"
    channel_order: str = "RGB"

    def __post_init__(self):
        mean = tuple(float(v) for v in np.asarray(self.mean, dtype=np.float64).reshape(-1))
        std = tuple(float(v) for v in np.asarray(self.std, dtype=np.float64).reshape(-1))
        if len(mean) != 3:
            raise ValueError(f"`mean` must have 3 values. Received: mean={self.mean}")
        if len(std) != 3 or any(not v > 0 for v in std):
            raise ValueError(f"`std` must have 3 positive values. Received: std={self.std}")
        if self.value_range not in VALUE_RANGES:
            raise ValueError(f"`value_range` must be one of {VALUE_RANGES}. Received: value_range={self.value_range!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                f"`channel_order` must be one of {CHANNEL_ORDERS}. Received: channel_order={self.channel_order!r}"
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def from_original_options(
        cls,
        mean_dataset: str = "activitynet",
        norm_value: int = 1,
        no_mean_norm: bool = False,
        std_norm: bool = False,
        channel_order: str = "RGB",
    ) -> Normalization:
        """The normalisation the original's ``main.py`` builds from its flags.

        ``--no_mean_norm`` only takes effect without ``--std_norm`` (as in the
        original, where ``std_norm`` implies mean subtraction).
        """
        if mean_dataset not in ("activitynet", "kinetics"):
            raise ValueError(
                f"`mean_dataset` must be 'activitynet' or 'kinetics'. Received: mean_dataset={mean_dataset!r}"
            )
        if norm_value not in (1, 255):
            raise ValueError(f"`norm_value` must be 1 or 255. Received: norm_value={norm_value}")
        base = ACTIVITYNET_MEAN if mean_dataset == "activitynet" else KINETICS_MEAN
        mean = tuple(v / norm_value for v in base)
        if no_mean_norm and not std_norm:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        elif not std_norm:
            std = (1.0, 1.0, 1.0)
        else:
            std = tuple(v / norm_value for v in KINETICS_STD)
        return cls(mean, std, "0-255" if norm_value == 1 else "0-1", channel_order)

    @classmethod
    def preset(cls, name: str) -> Normalization:
        """One of :data:`PRESETS` by name."""
        if name not in PRESETS:
            raise ValueError(
                f"Unknown normalization preset. Expected one of {sorted(PRESETS)}. Received: name={name!r}"
            )
        return PRESETS[name]

    @classmethod
    def coerce(cls, value) -> Normalization:
        """``value`` as a :class:`Normalization`: one already, a preset name (see
        :meth:`preset`) or a :meth:`to_config` dict; anything else is a ``ValueError``."""
        if isinstance(value, Normalization):
            return value
        if isinstance(value, str):
            return cls.preset(value)
        if isinstance(value, dict):
            return cls.from_config(value)
        raise ValueError(
            "`normalization` must be a Normalization, a preset name or a config dict. "
            f"Received: normalization={value!r}"
        )

    @property
    def preset_name(self) -> str | None:
        """The name of the first of :data:`PRESETS` with these values, or None."""
        return next((name for name, preset in PRESETS.items() if preset == self), None)

    def describe(self) -> str:
        """For messages: the preset's name where it is one, else its values."""
        if self.preset_name:
            return f"preset '{self.preset_name}'"
        return (f"mean {list(self.mean)}, std {list(self.std)}, {self.value_range}, "
                f"{self.channel_order}")

    @property
    def scale(self) -> float:
        """Divisor applied to 0-255 pixels (the original's ``norm_value``)."""
        return 1.0 if self.value_range == "0-255" else 255.0

    def apply(self, clip):
        """Normalise a float clip (numpy or TF tensor, ``(..., 3)``, RGB, 0-255)."""
        if self.channel_order == "BGR":
            clip = clip[..., ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        inv_std = np.asarray([1.0 / s for s in self.std], dtype=np.float32)
        if self.scale != 1.0:
            clip = clip * np.float32(1.0 / self.scale)
        return (clip - mean) * inv_std

    def invert(self, clip):
        """The float RGB 0-255 clip that `apply` turns into `clip` (numpy)."""
        clip = np.asarray(clip, np.float32) * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)
        if self.scale != 1.0:
            clip = clip * np.float32(self.scale)
        return clip[..., ::-1] if self.channel_order == "BGR" else clip

    def frames(self, clip):
        """The uint8 RGB frames closest to what `apply` turns into `clip`."""
        return np.clip(np.rint(self.invert(clip)), 0, 255).astype(np.uint8)

    def to_config(self) -> dict:
        """A JSON-serialisable dict; :meth:`from_config` inverts it."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "value_range": self.value_range,
            "channel_order": self.channel_order,
        }

    @classmethod
    def from_config(cls, config: dict) -> Normalization:
        expected = {"mean", "std", "value_range", "channel_order"}
        unknown = set(config) - expected
        if unknown:
            raise ValueError(f"Unknown normalization config keys {sorted(unknown)}. Received: config={config}")
        return cls(**config)


PRESETS = {
    # The original's defaults (run-jester.sh, UCF-101): PIL-loaded RGB frames,
    # ActivityNet mean, 0-255, no std.
    "original": Normalization.from_original_options(),
    "jester": Normalization.from_original_options(),
    "ucf101": Normalization.from_original_options(),
    # Kinetics checkpoints of the original saw BGR (OpenCV frames never converted), whatever
    # its mean and std options: the mean and std apply to the channels as they came.
    "kinetics": Normalization.from_original_options(channel_order="BGR"),
    "kinetics_mean_std": Normalization.from_original_options("kinetics", std_norm=True,
                                                             channel_order="BGR"),
    # No mean, 0-1: for models trained from scratch in this project.
    "unit": Normalization(value_range="0-1"),
    "none": Normalization(),
}
