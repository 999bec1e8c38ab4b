"""Model registry: ``create_model(name, **kwargs)`` and ``list_models()``.

Names are lower case (``mobilenetv2``, ``resnet18``, ``resnext101``...) and looked up in
any case. The original's ``--model`` names work as aliases (``mobilenet``, ``shufflenet``,
``resnet``/``resnext`` with ``depth``), and so do configuration names such as ``mobilenetv2_0.2x``,
``shufflenet_0.5x_g3``, ``squeezenet_1.1`` or ``resnet18_A``, which carry their arguments.

The names, aliases and everything else a family knows come from its module's `Family`
(``keras_efficient3d/models/_family.py``): a new family is one module beside its siblings
and one `register_family` line at the end of this file.
"""

import fnmatch
import functools
import inspect
import re

from keras_efficient3d.models import (
    c3d,
    mobilenet_v1,
    mobilenet_v2,
    resnet,
    shufflenet_v1,
    shufflenet_v2,
    squeezenet,
)

_REGISTRY = {}
_FAMILIES = {}  # family name -> Family
_MODEL_FAMILY = {}  # registry name -> family name
_ALIASES = {}  # the original's --model names -> family name


def register_model(name, builder, **defaults):
    """Registers `builder` (called with ``defaults`` updated by the caller's kwargs) under
    `name`, lower case (names are looked up in any case)."""
    if not isinstance(name, str) or not name.strip() or name != name.strip().lower():
        raise ValueError("A model name is lower case, without surrounding spaces (it is looked "
                         f"up in any case): register {str(name).strip().lower()!r}. "
                         f"Received: name={name!r}")
    if name in _REGISTRY:
        raise ValueError(f"Model '{name}' is already registered.")
    _REGISTRY[name] = functools.partial(builder, **defaults) if defaults else builder


def register_family(family):
    """Registers the model names of a `models._family.Family` and its aliases."""
    if family.name in _FAMILIES or family.name in _ALIASES:
        raise ValueError(f"Family '{family.name}' is already registered. "
                         f"Received: family={family.name}")
    names = family.registry_names()
    taken = [n for n in names if n in _REGISTRY]
    taken += [a for a in family.aliases if a in _FAMILIES or a in _ALIASES or a in names]
    if taken:
        raise ValueError(f"Names of family '{family.name}' are already taken: {taken}. "
                         f"Received: family={family.name}")
    for name, defaults in names.items():
        register_model(name, family.builder, **defaults)
        _MODEL_FAMILY[name] = family.name
    _ALIASES.update(dict.fromkeys(family.aliases, family.name))
    _FAMILIES[family.name] = family


def families():
    """The registered families, in registration order."""
    return tuple(_FAMILIES.values())


def get_family(name):
    """The `Family` of a family name or one of the original's ``--model`` names
    ('mobilenet', 'resnext'), of a registry name ('resnet18') or of a configuration name
    ('shufflenet_0.5x_g3'); None when `name` belongs to no family."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key in _FAMILIES:
        return _FAMILIES[key]
    try:
        arch, _ = resolve_name(name)
    except ValueError:
        return None
    return _FAMILIES.get(_MODEL_FAMILY.get(arch))


def list_models(pattern=None):
    """Sorted registered names, optionally filtered by a shell-style pattern
    (``list_models("mobilenetv2*")``)."""
    if pattern is not None and not isinstance(pattern, str):
        raise ValueError("`pattern` must be a shell-style pattern string, such as "
                         f"'mobilenetv2*'. Received: pattern={pattern!r}")
    names = sorted(_REGISTRY, key=_natural_key)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def _natural_key(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


_CONFIG_NAME = re.compile(
    r"^(?P<arch>[a-z]+?(?:v[12])?)(?P<depth>\d+)?"
    r"(?:_(?P<width>\d+(?:\.\d+)?)x)?(?:_g(?P<groups>\d+))?"
    r"(?:_(?P<version>1\.[01]))?(?:_(?P<shortcut>[ab]))?$"
)


def _depth_variants(family):
    """{depth: registry name} of a family whose variants fix a depth, else {}."""
    names = family.registry_names() if family is not None else {}
    return {d["depth"]: n for n, d in names.items() if "depth" in d}


def _fixed_by(arch):
    """The builder kwargs that registry name `arch` fixes ({'depth': 18} for resnet18)."""
    family = _FAMILIES.get(_MODEL_FAMILY.get(arch))
    return dict(family.registry_names().get(arch, {})) if family is not None else {}


def _refuse_conflicts(name, fixed, kwargs):
    """A name that fixes an argument and a kwarg that says otherwise ('resnet18' with
    depth=50) would build what the kwarg says under the name's promise: refused."""
    def same(a, b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return float(a) == float(b)
        return str(a).upper() == str(b).upper()

    clashes = [k for k, v in fixed.items()
               if kwargs.get(k) is not None and not same(kwargs[k], v)]
    if clashes:
        raise ValueError(
            f"'{name}' fixes {', '.join(f'{k}={fixed[k]!r}' for k in clashes)}; name another "
            f"model or drop the argument. Received: "
            f"{', '.join(f'{k}={kwargs[k]!r}' for k in clashes)}")


def resolve_name(name, **kwargs):
    """Maps a registry name, alias or configuration name (any case) to (registry name,
    kwargs). Raises ValueError for an unknown name, or kwargs that contradict the name."""
    key = str(name).strip()
    lowered = key.lower()
    if lowered in _REGISTRY:
        fixed = _fixed_by(lowered)
        _refuse_conflicts(name, fixed, kwargs)
        # what agrees with the name, as the name says it ("18" for resnet18's depth 18)
        return lowered, {k: fixed[k] if k in fixed and v is not None else v for k, v in kwargs.items()}
    match = _CONFIG_NAME.match(lowered)
    if not match:
        raise ValueError(_unknown(name))
    arch = _ALIASES.get(match["arch"], match["arch"])
    depths = _depth_variants(_FAMILIES.get(arch))
    extra = {}
    if depths:
        depth = match["depth"]
        if depth is None:
            # both spellings popped (the second would reach the builder), 0 not taken for none
            depth, other = kwargs.pop("depth", None), kwargs.pop("model_depth", None)
            if depth is not None and other is not None and depth != other:
                raise ValueError(f"depth={depth!r} and model_depth={other!r} disagree: give "
                                 f"one. Received: name={name}")
            depth = other if depth is None else depth
        if depth is None:
            raise ValueError(f"'{name}' needs a depth, e.g. {arch}{min(depths)} or "
                             f"depth={min(depths)}. Received: name={name}")
        whole = _whole_number(depth)
        if whole not in depths:
            raise ValueError(f"'{arch}' has depths {', '.join(map(str, sorted(depths)))}. "
                             f"Received: depth={depth!r}")
        arch = depths[whole]
    elif match["depth"]:
        raise ValueError(_unknown(name))
    if match["width"]:
        extra["width_mult"] = float(match["width"])
    if match["groups"]:
        extra["groups"] = int(match["groups"])
    if match["version"]:
        extra["version"] = float(match["version"])
    if match["shortcut"]:
        extra["shortcut"] = match["shortcut"].upper()
    if arch not in _REGISTRY:
        raise ValueError(_unknown(name))
    fixed = dict(_fixed_by(arch), **extra)
    _refuse_conflicts(name, fixed, kwargs)
    extra.update({k: fixed[k] if k in fixed and v is not None else v for k, v in kwargs.items()})
    return arch, extra


def named_arguments(name):
    """(registry name, the builder arguments `name` fixes): a registry name's ('resnet50':
    depth 50) and a configuration name's ('shufflenet_2.0x_g8': width_mult 2.0, groups 8)."""
    arch, extra = resolve_name(name)
    return arch, dict(_fixed_by(arch), **extra)


def configuration_name(name, **kwargs):
    """The configuration name of model `name` built with `kwargs`, as `resolve_name` reads
    it back: 'mobilenetv2_0.2x', 'shufflenetv1_0.5x_g3', 'squeezenet_1.1', 'resnet18_A';
    what such a name cannot say (cardinality, classes) is left out."""
    arch, kwargs = resolve_name(name, **kwargs)
    parts = [arch]
    if kwargs.get("width_mult") is not None:
        parts.append(f"{float(kwargs['width_mult'])}x")
    if kwargs.get("groups") is not None:
        parts.append(f"g{int(kwargs['groups'])}")
    if kwargs.get("version") is not None:
        parts.append(str(float(kwargs["version"])))
    if kwargs.get("shortcut") is not None:
        parts.append(str(kwargs["shortcut"]).upper())
    return "_".join(parts)


def unknown_arguments(builder, kwargs):
    """The names in `kwargs` that `builder` does not take ('width_mult' for SqueezeNet_3D),
    in their order."""
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return []
    return [k for k in kwargs if k not in parameters]


def _whole_number(value):
    """`value` (18, 18.0, "18") as an int, or None where it is not a whole number (18.7)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def _unknown(name):
    with_depth = "/".join(f.name for f in families() if _depth_variants(f))
    aliases = [*sorted(_ALIASES), f"{with_depth} with depth=N"]
    return (f"Unknown model '{name}'. Available: {', '.join(list_models())} "
            f"(aliases: {', '.join(aliases)}), each also with its arguments in the name: "
            f"mobilenetv2_0.2x, shufflenet_0.5x_g3, squeezenet_1.1, resnet18_A. "
            f"Received: name={name}")


def configuration(name, **kwargs):
    """(registry name, every keyword argument the builder would be called with, its defaults
    included): ``mobilenetv2`` and ``mobilenetv2_1.0x`` configure the same model."""
    arch, kwargs = resolve_name(name, **kwargs)
    parameters = inspect.signature(_REGISTRY[arch]).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return arch, {**defaults, **kwargs}


def create_model(name, **kwargs):
    """Builds a registered model; ``None`` kwargs are dropped so that unset CLI flags keep
    the model's defaults."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    arch, kwargs = resolve_name(name, **kwargs)
    unknown = unknown_arguments(_REGISTRY[arch], kwargs)
    if unknown:
        # rather than the builder's "SqueezeNet_3D() got an unexpected keyword argument"
        raise ValueError(f"Invalid arguments for model '{arch}': it takes no {' or '.join(unknown)}: "
                         "leave it unset. "
                         f"Received: {', '.join(f'{k}={kwargs[k]!r}' for k in unknown)}")
    try:
        return _REGISTRY[arch](**kwargs)
    except TypeError as err:
        raise ValueError(f"Invalid arguments for model '{arch}': {err}") from None


# One line per family module.
register_family(mobilenet_v1.FAMILY)
register_family(mobilenet_v2.FAMILY)
register_family(shufflenet_v1.FAMILY)
register_family(shufflenet_v2.FAMILY)
register_family(squeezenet.FAMILY)
register_family(resnet.RESNET)
register_family(resnet.RESNEXT)
register_family(c3d.FAMILY)
