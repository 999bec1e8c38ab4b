"""Model registry: ``create_model(name, **kwargs)`` and ``list_models()``.

Names are lower case (``mobilenetv2``, ``resnet18``, ``resnext101``...). The original's
``--model`` names work as aliases (``mobilenet``, ``shufflenet``, ``resnet``/``resnext``
with ``depth``), and so do configuration names such as ``mobilenetv2_0.2x``,
``shufflenet_0.5x_g3``, ``squeezenet_1.1`` or ``resnet18_A``, which carry their arguments.
"""

import fnmatch
import functools
import re

from keras_efficient3d import models

_REGISTRY = {}
_ALIASES = {
    "mobilenet": "mobilenetv1",
    "shufflenet": "shufflenetv1",
    "resnet": "resnet",  # resolved with `depth`
    "resnext": "resnext",
}


def register_model(name, builder, **defaults):
    """Registers `builder` (called with ``defaults`` updated by the caller's kwargs)."""
    if name in _REGISTRY:
        raise ValueError(f"Model '{name}' is already registered.")
    _REGISTRY[name] = functools.partial(builder, **defaults) if defaults else builder


def list_models(pattern=None):
    """Sorted registered names, optionally filtered by a shell-style pattern."""
    names = sorted(_REGISTRY, key=_natural_key)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def _natural_key(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


_CONFIG_NAME = re.compile(
    r"^(?P<arch>[a-z]+?(?:v[12])?)(?P<depth>\d+)?"
    r"(?:_(?P<width>\d+(?:\.\d+)?)x)?(?:_g(?P<groups>\d+))?"
    r"(?:_(?P<version>1\.[01]))?(?:_(?P<shortcut>[AB]))?$"
)


def resolve_name(name, **kwargs):
    """Maps a registry name, alias or configuration name to (registry name, kwargs)."""
    key = str(name).strip()
    lowered = key.lower()
    if lowered in _REGISTRY:
        return lowered, kwargs
    match = _CONFIG_NAME.match(key)
    if not match:
        raise ValueError(_unknown(name))
    arch = _ALIASES.get(match["arch"], match["arch"])
    extra = {}
    if arch in ("resnet", "resnext"):
        depth = match["depth"] or kwargs.pop("depth", None) or kwargs.pop("model_depth", None)
        if depth is None:
            raise ValueError(f"'{name}' needs a depth, e.g. {arch}18 or depth=18. Received: name={name}")
        arch = f"{arch}{int(depth)}"
    elif match["depth"]:
        raise ValueError(_unknown(name))
    if match["width"]:
        extra["width_mult"] = float(match["width"])
    if match["groups"]:
        extra["groups"] = int(match["groups"])
    if match["version"]:
        extra["version"] = float(match["version"])
    if match["shortcut"]:
        extra["shortcut"] = match["shortcut"]
    if arch not in _REGISTRY:
        raise ValueError(_unknown(name))
    extra.update(kwargs)
    return arch, extra


def _unknown(name):
    return (
        f"Unknown model '{name}'. Available: {', '.join(list_models())} "
        f"(aliases: mobilenet, shufflenet, resnet/resnext with depth=N). Received: name={name}"
    )


def create_model(name, **kwargs):
    """Builds a registered model; ``None`` kwargs are dropped so that unset CLI flags keep
    the model's defaults."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    arch, kwargs = resolve_name(name, **kwargs)
    try:
        return _REGISTRY[arch](**kwargs)
    except TypeError as err:
        raise ValueError(f"Invalid arguments for model '{arch}': {err}") from None


register_model("mobilenetv1", models.MobileNetV1_3D)
register_model("mobilenetv2", models.MobileNetV2_3D)
register_model("shufflenetv1", models.ShuffleNetV1_3D)
register_model("shufflenetv2", models.ShuffleNetV2_3D)
register_model("squeezenet", models.SqueezeNet_3D)
register_model("c3d", models.C3D)
for _depth in (10, 18, 34, 50, 101, 152, 200):
    register_model(f"resnet{_depth}", models.ResNet3D, depth=_depth)
for _depth in (50, 101, 152):
    register_model(f"resnext{_depth}", models.ResNeXt3D, depth=_depth)
