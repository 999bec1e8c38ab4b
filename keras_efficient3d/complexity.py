"""Parameters, multiply-accumulates and MFLOPs in the convention of the paper's Table 8.

Kopuklu et al. counted operations with a modified ``thop`` (Efficient-3DCNNs,
``thop/count_hooks.py``), which hooks only registered ``nn.Module`` leaves and counts, per
call of the module, with batch 1:

* ``Conv3d``: ``kt*kh*kw*cin/groups`` multiply-adds (one op each) plus 1 per output
  element with a bias;
* ``BatchNorm3d``: 2 ops per input element; ``ReLU`` / ``ReLU6``: 1 per input element;
* ``MaxPool3d``: ``prod(kernel_size) - 1`` per output element, where ``kernel_size`` is
  the value the module stored: ``MaxPool3d(kernel_size=3)`` stores the int 3, so thop
  counts 2 (not 26) per output element (ShuffleNetV1/V2 and SqueezeNet pools), while
  ``kernel_size=(3, 3, 3)`` (ResNet, ResNeXt) gives 26;
* ``AvgPool3d``: ``prod(kernel_size)`` per output element (adds and one division);
* ``Linear``: ``2*in_features - 1`` per output element (no bias term);
* ``Dropout``: nothing.

Functional operations are not modules and are not counted: ``F.relu`` (MobileNetV1's
blocks), ``F.avg_pool3d`` (the global pool of the MobileNets and ShuffleNets), ``torch.cat``,
the channel shuffle's views, ``+`` residuals and ResNet's shortcut A (a function).
ResNet/ResNeXt and SqueezeNet pool with an ``nn.AvgPool3d`` module, which is counted.

`count(model)` applies these rules to the Keras layers of this package, whose names and
types mirror the original modules, analytically from the layers' static shapes (no forward
pass). What differs per family (which pools and ReLUs were modules, how MaxPool3d stored
its kernel, the Table 8 rows) is read from each family's `Family` record
(``keras_efficient3d/models/_family.py``). MFLOPs are thop's total / 1e6 (thop
accumulated in float32; the exact integer is reported here). MACs are the
multiply-accumulates of convolutions and dense layers only.

Command line::

    python -m keras_efficient3d.complexity --model=mobilenetv2 --width_mult=0.45
    python -m keras_efficient3d.complexity --paper_table --format=json
"""

import csv
import io
import json
import math

import keras

from keras_efficient3d import registry
from keras_efficient3d.fold import RELU_LIKE, activation_name
from keras_efficient3d.models._base import flat_layers

# Layers that are functional operations (or nothing) in the original: zero ops.
# `Folded`: a BatchNorm (or its ReLU) folded into the convolution before it (`fold`); a
# folded model is another graph, counted by these rules as it is (its convolution's bias).
_FREE_LAYERS = ("InputLayer", "Dropout", "Add", "Concatenate", "ChannelShuffle",
                "ChannelSplit", "ZeroPadChannels", "Flatten", "Permute", "Reshape", "Folded")

TOLERANCE = 0.005  # every Table 8 row must match the paper within 0.5%
DEFAULT_FRAMES = 16
DEFAULT_SIZE = 112
PAPER_NUM_CLASSES = 600

# Table 8 rows whose printed params the original code does not give (the families' own).
PARAMS_EXCEPTIONS = {row: why for family in registry.families()
                     for row, why in family.params_exceptions.items()}


# --------------------------------------------------------------------------- counting


def _numel(shape):
    """Elements of one sample (batch counted as 1, as thop's batch-1 profile)."""
    return int(math.prod(int(d) for d in shape[1:]))


def _shape(tensor):
    return tuple(tensor.shape)


def detect_family(model):
    """Family of a model of this package from its name ('mobilenetv2_3d_1.0x' ->
    'mobilenetv2'), or that of the first model nested in it that has one; None when no
    name is one of the defaults (a renamed model: pass `family` to `count`)."""
    name = model.name.lower()
    for family in registry.families():
        if name.startswith(family.name):
            return family.name
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found = detect_family(layer)
            if found:
                return found
    return None


def _layer_params(layer):
    """Learnable parameters (PyTorch's ``parameters()``): BatchNorm's moving statistics are
    buffers there, not parameters."""
    if isinstance(layer, keras.layers.BatchNormalization):
        weights = [w for w in (getattr(layer, "gamma", None), getattr(layer, "beta", None))
                   if w is not None]
    else:
        weights = layer.weights
    return int(sum(math.prod(w.shape) for w in weights))


def _family(name):
    """The registered family called `name`; None for None."""
    if name is None:
        return None
    family = {f.name: f for f in registry.families()}.get(name)
    if family is None:
        names = tuple(f.name for f in registry.families())
        raise ValueError(f"`family` must be one of {names} or None. Received: family={name}")
    return family


def count_layer(layer, family=None):
    """Ops of one layer in the paper's convention: a dict with ``ops`` (thop's count),
    ``macs`` (multiply-accumulates of convolutions and dense layers), ``params`` and
    ``counted`` (False when the layer type has no rule; its ops are then 0, as thop does
    for modules it has no hook for). `family`: a family name, or None (every layer a
    module)."""
    rules = _family(family)
    functional_relu = rules is not None and rules.is_functional_relu(layer.name)
    kind = "BatchNormalization" if isinstance(layer, keras.layers.BatchNormalization) \
        else type(layer).__name__
    ops = macs = 0
    counted = True
    if kind in _FREE_LAYERS:
        pass
    elif kind in ("Conv3D", "DepthwiseConv3D"):
        in_shape, out_shape = _shape(layer.input), _shape(layer.output)
        kt, kh, kw = layer.kernel_size
        if kind == "Conv3D":
            groups = getattr(layer, "groups", 1)
            cin = int(in_shape[-1]) // groups
        else:
            cin = 1  # thop: kd*kh*kw*C // groups with groups == C
        out = _numel(out_shape)
        kernel_ops = kt * kh * kw * cin
        bias = 1 if getattr(layer, "use_bias", False) else 0
        macs = out * kernel_ops
        ops = out * (kernel_ops + bias)
        if activation_name(layer) in RELU_LIKE and not functional_relu:
            ops += out  # the folded form's ReLU module
    elif kind == "BatchNormalization":
        ops = 2 * _numel(_shape(layer.input))
    elif kind == "ReLU" or (kind == "Activation" and activation_name(layer) in RELU_LIKE):
        if not functional_relu:
            ops = _numel(_shape(layer.input))
    elif kind == "Activation":
        pass  # e.g. a softmax head: thop's register_hooks (thop/utils.py) leaves nn.Softmax out
    elif kind == "MaxPool3D":
        kernel = layer.pool_size
        if rules is not None and rules.int_kernel_pools and len(set(kernel)) == 1:
            window = kernel[0]  # MaxPool3d(kernel_size=3): thop's prod([3]) == 3
        else:
            window = math.prod(kernel)
        ops = (window - 1) * _numel(_shape(layer.output))
    elif kind == "AvgPool3D":
        ops = math.prod(layer.pool_size) * _numel(_shape(layer.output))
    elif kind in ("GlobalAveragePooling3D", "GlobalMaxPooling3D"):
        in_shape = _shape(layer.input)
        window = math.prod(int(d) for d in in_shape[1:4])
        channels = int(in_shape[-1])
        if kind == "GlobalMaxPooling3D":
            ops = (window - 1) * channels
        elif rules is None or rules.counted_global_pool:
            ops = window * channels  # nn.AvgPool3d(last cells, stride=1)
    elif kind == "Dense":
        in_features = int(_shape(layer.input)[-1])
        out = _numel(_shape(layer.output))
        macs = in_features * out
        ops = (2 * in_features - 1) * out
        if activation_name(layer) in RELU_LIKE:
            ops += out  # C3D's fc6/fc7 are Linear + nn.ReLU
    else:
        counted = False
    return {"name": layer.name, "type": kind, "ops": int(ops), "macs": int(macs),
            "params": _layer_params(layer), "counted": counted}


def count(model, family=None):
    """Counts a Keras model of this package analytically from its layer shapes.

    Args:
        model: a built `keras.Model` with static input shape.
        family: a registered family name ('mobilenetv1', 'mobilenetv2', 'shufflenetv1',
            'shufflenetv2', 'squeezenet', 'resnet', 'resnext', 'c3d'); detected from the
            model name when None. It decides which parameter-free layers were modules in the original
            (see the module docstring). Unknown: every layer is counted as a module.

    Returns:
        A dict: ``model``, ``family``, ``input_shape``, ``params`` (learnable), ``macs``,
        ``flops`` (thop's total, an int), ``mflops`` (flops / 1e6), ``layers`` (per-layer
        dicts of `count_layer`) and ``uncounted`` (names of layers without a rule).
    """
    if family is None:
        family = detect_family(model)
    _family(family)
    layers = [count_layer(layer, family) for layer in flat_layers(model)]
    flops = sum(entry["ops"] for entry in layers)
    return {
        "model": model.name,
        "family": family,
        "input_shape": [int(d) for d in model.input_shape[1:]],
        "params": sum(entry["params"] for entry in layers),
        "macs": sum(entry["macs"] for entry in layers),
        "flops": flops,
        "mflops": flops / 1e6,
        "layers": layers,
        "uncounted": [entry["name"] for entry in layers if not entry["counted"]],
    }


def build(name, width_mult=None, groups=None, shortcut=None, num_classes=PAPER_NUM_CLASSES,
          frames=DEFAULT_FRAMES, size=DEFAULT_SIZE, depth=None, cardinality=None, version=None,
          width=None, **kwargs):
    """Builds a registry model for counting on clips of `frames` x `size` x `width` pixels
    (`width` default: `size`); returns (model, family). Raises ValueError for unknown
    names or invalid arguments."""
    width = size if width is None else width
    for label, value in (("frames", frames), ("size", size), ("width", width),
                         ("num_classes", num_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{label}` must be a positive integer. Received: {label}={value}")
    kwargs.update(width_mult=width_mult, groups=groups, shortcut=shortcut, depth=depth,
                  cardinality=cardinality, version=version)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    family = registry.get_family(name)
    model = registry.create_model(name, num_classes=num_classes,
                                  input_shape=(frames, size, width, 3), **kwargs)
    return model, family.name if family is not None else None


def count_model(name, **kwargs):
    """`build` then `count`: ``count_model('mobilenetv2', width_mult=0.45)``."""
    model, family = build(name, **kwargs)
    return count(model, family)


# --------------------------------------------------------------------------- Table 8


def load_table8():
    """The paper's Table 8 (resources/table8.csv) as a list of dicts of strings."""
    from importlib import resources

    text = resources.files("keras_efficient3d").joinpath("resources/table8.csv").read_text(
        encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(lines))


def _rel(value, reference):
    return (value - reference) / reference


def paper_table(rows=None):
    """Counts every row of Table 8 at the paper's setting (16x112x112, 600 classes).

    Args:
        rows: optional subset of the paper's model names (e.g. ["ResNet-18"]).

    Returns:
        One dict per row: ``model``, ``config`` (registry name and arguments), ``params``,
        ``params_paper`` (printed millions x 1e6), ``params_rel_diff``, ``macs``, ``flops``,
        ``mflops``, ``mflops_paper``, ``mflops_rel_diff``, ``params_printed_match`` and
        ``mflops_printed_match`` (equal at the table's printed precision: 2 decimals of
        millions, integer MFLOPs), ``within_tolerance`` (params and MFLOPs each within 0.5%
        or equal at the printed precision), ``params_exception`` (ResNet-50/101: the
        paper's printed params do not match its own code), ``remark`` (why a row differs
        from its printed value) and ``note`` (configuration and remark).
    """
    table = load_table8()
    if isinstance(rows, str):
        rows = [rows]
    if rows is not None:
        known = {row["model"] for row in table}
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise ValueError(f"Unknown Table 8 rows {unknown}. Available: {sorted(known)}")
        table = [row for row in table if row["model"] in rows]
    # The arch column holds the original's --model names; each family knows its rows.
    configs = {arch: config for family in registry.families()
               for arch, config in family.paper_rows.items()}
    results = []
    for row in table:
        arch, extra, config_note = configs[row["arch"]]
        kwargs = dict(extra)
        if row["width_mult"]:
            kwargs["width_mult"] = float(row["width_mult"])
        if row["groups"]:
            kwargs["groups"] = int(row["groups"])
        result = count_model(arch, **kwargs)
        params_paper = int(round(float(row["params_m"]) * 1e6))
        mflops_paper = float(row["mflops"])
        params_rel = _rel(result["params"], params_paper)
        mflops_rel = _rel(result["mflops"], mflops_paper)
        # The paper prints params in millions with 2 decimals and MFLOPs as integers.
        params_printed = round(result["params"] / 1e6, 2) == float(row["params_m"])
        mflops_printed = round(result["mflops"]) == mflops_paper
        params_ok = abs(params_rel) <= TOLERANCE or params_printed
        mflops_ok = abs(mflops_rel) <= TOLERANCE or mflops_printed
        exception = row["model"] in PARAMS_EXCEPTIONS
        remark = ""
        if exception:
            remark = (
                f"documented exception: the printed {float(row['params_m']):.2f}M params differ "
                f"from the original code with shortcut A ({result['params'] / 1e6:.2f}M, "
                f"{params_rel:+.2%}; shortcut B would give more) while the printed "
                f"{mflops_paper:,.0f} MFLOPs are those of shortcut A; kept as printed, not tuned")
        elif not params_printed:
            remark = (
                f"the printed {float(row['params_m']):.2f}M params differ from the original "
                f"code ({result['params'] / 1e6:.4f}M, {params_rel:+.2%}), within 0.5%")
        elif abs(params_rel) > TOLERANCE:
            remark = (
                f"params {result['params'] / 1e6:.4f}M print as {float(row['params_m']):.2f}M: "
                f"the 2-decimal rounding of the table is +-{0.005 / float(row['params_m']):.1%} "
                "at this size")
        results.append({
            "model": row["model"],
            "config": {"name": arch, **kwargs},
            "params": result["params"],
            "params_paper": params_paper,
            "params_rel_diff": params_rel,
            "params_printed_match": params_printed,
            "macs": result["macs"],
            "flops": result["flops"],
            "mflops": result["mflops"],
            "mflops_paper": mflops_paper,
            "mflops_rel_diff": mflops_rel,
            "mflops_printed_match": mflops_printed,
            "within_tolerance": params_ok and mflops_ok,
            "params_exception": exception,
            "remark": remark,
            "note": "; ".join(n for n in (config_note, remark) if n),
        })
    return results


# --------------------------------------------------------------------------- formatting


def _config_text(config):
    return " ".join(f"{k}={v}" for k, v in config.items())


def format_count(result, fmt="table"):
    """Formats a `count` result (without its per-layer list) as 'table', 'json' or 'csv'."""
    summary = {k: v for k, v in result.items() if k not in ("layers",)}
    if fmt == "json":
        return json.dumps(summary, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["model", "family", "input_shape", "params", "macs", "flops", "mflops"])
        writer.writerow([result["model"], result["family"] or "",
                         "x".join(str(d) for d in result["input_shape"]), result["params"],
                         result["macs"], result["flops"], f"{result['mflops']:.3f}"])
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"`fmt` must be 'table', 'json' or 'csv'. Received: fmt={fmt}")
    lines = [
        f"model       {result['model']} (family: {result['family'] or 'unknown'})",
        f"input       {'x'.join(str(d) for d in result['input_shape'])}",
        f"parameters  {result['params']:,} ({result['params'] / 1e6:.2f} M)",
        f"MACs        {result['macs']:,} ({result['macs'] / 1e9:.3f} G)",
        f"MFLOPs      {result['mflops']:,.1f} (paper convention: Efficient-3DCNNs' thop; "
        f"{result['flops']:,} ops)",
    ]
    if result["uncounted"]:
        lines.append(f"uncounted   {', '.join(result['uncounted'])} (no rule: 0 ops)")
    return "\n".join(lines)


def format_paper_table(rows, fmt="table"):
    """Formats `paper_table` rows as 'table', 'json' or 'csv'."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    columns = ["model", "params", "params_paper", "params_rel_diff", "mflops", "mflops_paper",
               "mflops_rel_diff", "within_tolerance", "params_exception", "note"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([
                row["model"], row["params"], row["params_paper"], f"{row['params_rel_diff']:.6f}",
                f"{row['mflops']:.3f}", f"{row['mflops_paper']:g}", f"{row['mflops_rel_diff']:.6f}",
                row["within_tolerance"], row["params_exception"], row["note"]])
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"`fmt` must be 'table', 'json' or 'csv'. Received: fmt={fmt}")
    header = (f"{'model':<22} {'params (M)':>10} {'paper':>7} {'diff':>7}   "
              f"{'MFLOPs':>9} {'paper':>7} {'diff':>7}  note")
    lines = [
        "Table 8 of Kopuklu et al. 2019 (Kinetics-600 heads, 16x112x112), counted here vs printed",
        header,
        "-" * len(header),
    ]
    footnotes = []
    for row in rows:
        mark = ""
        if row.get("remark"):
            footnotes.append((row["model"], row["remark"]))
            mark = f" [{len(footnotes)}]"
        if not row["within_tolerance"]:
            mark += " [OUT OF TOLERANCE]"
        lines.append(
            f"{row['model']:<22} {row['params'] / 1e6:>10.2f} {row['params_paper'] / 1e6:>7.2f} "
            f"{row['params_rel_diff']:>+7.2%}   {row['mflops']:>9.1f} {row['mflops_paper']:>7g} "
            f"{row['mflops_rel_diff']:>+7.2%}  {_row_config_text(row)}{mark}")
    lines.append("")
    lines.append("MFLOPs follow the paper's counter (thop of Efficient-3DCNNs): conv multiply-adds "
                 "+ 1 per bias, BatchNorm 2/element, ReLU 1/element, pooling and Linear hooks; "
                 "functional ops (F.relu, F.avg_pool3d, cat, +) are not counted.")
    ok = sum(row["within_tolerance"] for row in rows)
    lines.append(f"{ok}/{len(rows)} rows within 0.5% (or equal at the printed precision) in both "
                 "params and MFLOPs.")
    for i, (model, text) in enumerate(footnotes, start=1):
        lines.append(f"[{i}] {model}: {text}.")
    return "\n".join(lines)


def _row_config_text(row):
    config = dict(row["config"])
    config.pop("width_mult", None)
    name = config.pop("name")
    extra = _config_text(config)
    return f"{name} {extra}".strip()


# --------------------------------------------------------------------------- command line


def define_flags(flag_values=None):
    """Flags of the command line, defined only when run as a script."""
    from absl import flags

    from keras_efficient3d import cli

    fv = {"flag_values": flags.FLAGS if flag_values is None else flag_values}
    cli.define("model", None, "Give --model or --paper_table.", **fv)
    cli.define("width_mult", None, **fv)
    cli.define("groups", None, **fv)
    cli.define("shortcut", None, **fv)
    cli.define("depth", None, "(ResNet/ResNeXt, when --model names none: --model=resnet "
               "--depth=18)", **fv)
    cli.define("cardinality", None, **fv)
    cli.define("version", None, **fv)
    cli.define("num_classes", PAPER_NUM_CLASSES, **fv)
    cli.define("frames", DEFAULT_FRAMES, **fv)
    cli.define("size", DEFAULT_SIZE, **fv)
    cli.define("format", "table", choices=("table", "json", "csv"), **fv)
    flags.DEFINE_bool("paper_table", False, "Print the 21 rows of the paper's Table 8 side by "
                      "side with the paper's values.", **fv)


def run_cli(model=None, width_mult=None, groups=None, shortcut=None,
            num_classes=PAPER_NUM_CLASSES, frames=DEFAULT_FRAMES, size=DEFAULT_SIZE,
            fmt="table", paper=False, depth=None, cardinality=None, version=None):
    """The command line's work as a function: returns the text to print. Raises ValueError
    on bad arguments."""
    if fmt not in ("table", "json", "csv"):
        raise ValueError(f"--format must be table, json or csv. Received: --format={fmt}")
    if paper:
        if model:
            raise ValueError("--paper_table and --model are exclusive.")
        return format_paper_table(paper_table(), fmt)
    if not model:
        raise ValueError("--model or --paper_table is required.")
    if shortcut is not None and shortcut not in ("A", "B"):
        raise ValueError(f"--shortcut must be A or B. Received: --shortcut={shortcut}")
    if width_mult is not None and width_mult <= 0:
        raise ValueError(f"--width_mult must be positive. Received: --width_mult={width_mult}")
    model_obj, family = build(model, width_mult=width_mult, groups=groups, shortcut=shortcut,
                              num_classes=num_classes, frames=frames, size=size, depth=depth,
                              cardinality=cardinality,
                              version=None if version is None else float(version))
    return format_count(count(model_obj, family), fmt)


def main(argv, flag_values):
    del argv
    f = flag_values
    print(run_cli(f.model, f.width_mult, f.groups, f.shortcut, f.num_classes, f.frames, f.size,
                  f.format, f.paper_table, f.depth, f.cardinality, f.version))


if __name__ == "__main__":
    from keras_efficient3d import cli

    cli.run(main, define_flags)
