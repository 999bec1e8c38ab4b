"""ONNX export, verified with ONNX Runtime, for ONNX Runtime, OpenVINO and TensorRT.

Three layers, as in Model Garden's MoViNet export: `export_onnx` writes a built model,
`build_and_export_onnx` builds one (registry name or ``.keras`` file) and writes it, and
``deployment/export.py`` maps flags to the latter.

    from keras_efficient3d import create_model
    from keras_efficient3d.deploy.onnx_export import export_onnx
    model = create_model("mobilenetv2_0.2x", num_classes=27)
    report = export_onnx(model, "/tmp/mobilenetv2.onnx", opset=13)   # verified to 1e-4

    python deployment/export.py --model shufflenet_0.5x_g3 --num_classes 27 \
        --format onnx --opset 13 --output /tmp/shufflenet.onnx

The graph has one input ``input`` (batch, frames, height, width, 3) float32, channels-last
as in Keras, and one output ``logits``; the batch axis is ``batch`` (dynamic) unless a
batch size is given. Opset 13 is the default: TensorRT 8.2 (JetPack 4.6, Jetson TX2)
parses it, and it is the first opset with per-channel QuantizeLinear/DequantizeLinear.

Two forms (``form``, `layers.forms.FORMS["onnx"]`): ``"native"``, written from the layer
graph by `keras_efficient3d.deploy.onnx_native` (5-D Conv with ``group``, NCDHW inside,
BatchNorm folded), the one ONNX runtimes optimise; ``"taps"``, tf2onnx of the 2D-tap
TensorFlow graph, for models with layers the native writer does not know. ``"auto"`` (the
default) takes the native form whenever every layer has one.

A quantization-aware model of `keras_efficient3d.deploy.quantize` (one `QuantizedGraph`
layer) exports natively too (``"auto"``): the native graph of its float model with
QuantizeLinear/DequantizeLinear pairs at the QAT graph's activation points and on the
weights (`onnx_native`'s docstring), which OpenVINO's CPU plugin compiles into int8
convolutions (it fails on the taps form's Q/DQ through the temporal Pad/Slice taps). Its
verification is top-1 agreement with the fake-quantized Keras model, not a tolerance.

Other fake-quantized graphs (``tf.quantization.fake_quant_with_min_max_vars``/``_args``/
``_vars_per_channel``), and QAT models with ``form="taps"``, export in the taps form with
QuantizeLinear/DequantizeLinear pairs. tf2onnx's own handler emits uint8 with a zero point, refuses
``narrow_range`` and per-channel ranges; ours reproduces TensorFlow's nudged ranges and emits
the symmetric int8 form (zero point 0) that TensorRT's explicit INT8 mode requires wherever
the range is symmetric (nudged zero point 128), uint8 otherwise (ONNX Runtime runs it,
TensorRT refuses it).
"""

import contextlib
import dataclasses
import logging
import os

import keras
import numpy as np
import onnx
import tensorflow as tf

from keras_efficient3d.artifacts import atomic_write
from keras_efficient3d.backends import require_tensorflow_backend
from keras_efficient3d.deploy import onnx_native
from keras_efficient3d.deploy.savedmodel import (
    INPUT_NAME,
    OUTPUT_NAME,
    clip_spec,
    inference_form,
    load_or_build_model,
)
from keras_efficient3d.layers import forms
from keras_efficient3d.runtime import check_close, onnx_session, random_clips

DEFAULT_OPSET = 13
FORMS = ("auto", "native", "taps")
MIN_OPSET = 13  # per-channel Q/DQ, Split/Squeeze with input axes: all our graphs are >= 13
_FAKE_QUANT_OPS = (
    "FakeQuantWithMinMaxArgs",
    "FakeQuantWithMinMaxVars",
    "FakeQuantWithMinMaxVarsPerChannel",
)


@contextlib.contextmanager
def _tf2onnx_without_graph_copies():
    """tf2onnx deep-copies the whole graph (weights included) before each of its ~24
    optimizer passes so that it can fall back when one fails; for 30M-parameter ResNets that
    is most of the conversion time. We ask it to raise instead (and let it raise)."""
    key = "TF2ONNX_CATCH_ERRORS"
    previous = os.environ.get(key)
    os.environ[key] = "FALSE"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


@contextlib.contextmanager
def _quiet_tf2onnx():
    """tf2onnx logs its versions, opset and optimizer counts at INFO on its own loggers
    ("tf2onnx.*"), which reach the screen through absl's root handler in the programs; they
    tell a user nothing. Its warnings and errors still show."""
    logger = logging.getLogger("tf2onnx")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def _keep_fake_quant_on_constants():
    """tf2onnx evaluates every TensorFlow node whose inputs are constant before conversion,
    FakeQuant included (it spares only QuantizeAndDequantizeV2-4): the fake-quantized
    weights of a QAT model would become plain float constants, and TensorRT would see no
    Q/DQ on the weights and run those layers in float. While this is active, the fake-quant
    nodes on constants stay in the graph, with their (constant) ranges folded."""
    from tf2onnx import tf_loader, tfonnx  # pylint: disable=import-outside-toplevel

    original = getattr(tfonnx, "compute_const_folding_using_tf", None)
    if original is None:  # another tf2onnx layout: weights export as float constants
        yield
        return

    def patched(g, const_node_values, graph_outputs):
        values, dtypes = original(g, const_node_values, graph_outputs)
        for op in g.get_operations():
            if op.type not in _FAKE_QUANT_OPS or op.outputs[0].name not in values:
                continue
            consumers = [c for out in op.outputs for c in out.consumers()]
            if any(c.outputs and c.outputs[0].name in values for c in consumers):
                continue  # folded further downstream: the fake-quant node is gone anyway
            ranges = [t for t in op.inputs[1:] if t.op.type not in ("Const", "ConstV2")]
            if ranges:
                with tf_loader.tf_session(graph=g) as sess:
                    for tensor, value in zip(ranges, sess.run(ranges)):
                        values[tensor.name] = value
                        dtypes[tensor.name] = tensor.dtype
            del values[op.outputs[0].name]
            dtypes.pop(op.outputs[0].name, None)
        return values, dtypes

    tfonnx.compute_const_folding_using_tf = patched
    try:
        yield
    finally:
        tfonnx.compute_const_folding_using_tf = original


def _fake_quant_to_qdq(ctx, node, name, args):
    """tf2onnx handler (old custom-op API): FakeQuant* -> QuantizeLinear -> DequantizeLinear."""
    from tf2onnx import utils  # pylint: disable=import-outside-toplevel

    op = node.type
    num_bits = node.get_attr_value("num_bits", 8)
    narrow_range = bool(node.get_attr_value("narrow_range", 0))
    if op == "FakeQuantWithMinMaxArgs":
        min_value, max_value = node.get_attr_value("min"), node.get_attr_value("max")
    else:
        for index, label in ((1, "min"), (2, "max")):
            if not node.inputs[index].is_const():
                raise ValueError(f"{op} '{name}' needs a constant {label} to export.")
        min_value = node.inputs[1].get_tensor_value(as_list=False)
        max_value = node.inputs[2].get_tensor_value(as_list=False)
    try:
        scale, zero = onnx_native.qdq_params(min_value, max_value, num_bits, narrow_range)
    except ValueError as err:
        raise ValueError(f"{err} ({name})") from None
    qtype = onnx.helper.np_dtype_to_tensor_dtype(zero.dtype)
    per_channel = op == "FakeQuantWithMinMaxVarsPerChannel"
    shape = ctx.get_shape(node.input[0])
    dtype = ctx.get_dtype(node.input[0])
    attr = {}
    if per_channel:
        rank = len(shape) if shape is not None else None
        if rank is None:
            raise ValueError(f"{op} '{name}' needs an input of known rank to export.")
        attr["axis"] = rank - 1
    shape_of = (lambda a: a.reshape(-1)) if per_channel else (lambda a: a.reshape(()))
    scale_const = ctx.make_const(utils.make_name(f"{name}_scale"), shape_of(scale))
    zero_const = ctx.make_const(utils.make_name(f"{name}_zero_point"), shape_of(zero))
    quantize = ctx.make_node("QuantizeLinear", [node.input[0], scale_const.output[0], zero_const.output[0]],
                             op_name_scope=name, attr=attr, shapes=[shape], dtypes=[qtype])
    ctx.replace_input(node, node.input[0], quantize.output[0], 0)
    ctx.remove_node(node.name)
    dequantize = ctx.make_node("DequantizeLinear", [quantize.output[0], scale_const.output[0], zero_const.output[0]],
                               op_name_scope=name, attr=attr, shapes=[shape], dtypes=[dtype])
    ctx.replace_all_inputs(node.output[0], dequantize.output[0])
    return dequantize


def _check_opset(opset):
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"`opset` must be an integer >= {MIN_OPSET}. Received: opset={opset}")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ValueError(f"`opset` must be at most {newest} (this onnx package). Received: opset={opset}")


def _check_form(form):
    if form not in FORMS:
        raise ValueError(f"`form` must be one of {FORMS}. Received: form={form!r}")


def resolve_form(model, form="auto"):
    """The form `model` exports in: `form`, with ``"auto"`` resolved by the table
    (`forms.FORMS["onnx"]`) to ``"native"`` when every layer has a native ONNX form
    (`onnx_native.supports`), else ``"taps"``."""
    _check_form(form)
    if form == "auto":
        return "native" if forms.FORMS["onnx"].native and onnx_native.supports(model) else "taps"
    return form


def convert_to_onnx(model, opset=DEFAULT_OPSET, batch_size=None, fold_bn=True, form="auto",
                    weight_bits=8, stem_fold=1, merge_pointwise=False, frames=None, stem_output_fold=1):
    """Converts a built `model` to an in-memory `onnx.ModelProto` (not verified; see
    `export_onnx`) in `form` (module docstring). Raises `ValueError` for a layer without
    a native form (``form="native"``) or a TensorFlow op tf2onnx leaves (``"taps"``).
    `weight_bits` (8, or 7 for x86 CPUs without VNNI) applies to a native QAT export,
    `stem_fold`, `merge_pointwise`, `frames` and `stem_output_fold` (`onnx_native.native_onnx`)
    to the native form."""
    _check_opset(opset)
    if resolve_form(model, form) == "native":
        clip_spec(model, batch_size, name=INPUT_NAME)  # the same argument checks as "taps"
        return onnx_native.native_onnx(model, opset, batch_size, fold_bn, weight_bits, stem_fold,
                                       merge_pointwise, frames, stem_output_fold)
    if frames is not None:
        raise ValueError("A frames input applies to the native form.")
    if stem_output_fold != 1:
        raise ValueError("`stem_output_fold` applies to the native form. "
                         f"Received: stem_output_fold={stem_output_fold!r}")
    if stem_fold != 1:
        raise ValueError(f"`stem_fold` applies to the native form. Received: stem_fold={stem_fold!r}")
    if merge_pointwise:
        raise ValueError("`merge_pointwise` applies to the native form. Received: merge_pointwise=True")
    return _taps_onnx(model, opset, batch_size, fold_bn)


def _taps_onnx(model, opset, batch_size, fold_bn):
    import tf2onnx  # pylint: disable=import-outside-toplevel
    from tf2onnx.constants import OPSET_TO_IR_VERSION  # pylint: disable=import-outside-toplevel

    require_tensorflow_backend("ONNX export through tf2onnx")
    newest = max(OPSET_TO_IR_VERSION)  # its own "make_sure failure: Opset 28 is not supported"
    if opset > newest:
        raise ValueError(f"The taps form converts through tf2onnx, whose opsets end at {newest} "
                         f"(the native form takes up to {onnx.defs.onnx_opset_version()}). "
                         f"Received: opset={opset}")
    spec = clip_spec(model, batch_size, name=INPUT_NAME)
    served = inference_form(model, fold_bn)

    @tf.function(input_signature=[spec])
    def serve(clips):
        return {OUTPUT_NAME: served(clips, training=False)}

    handlers = {op: (_fake_quant_to_qdq, []) for op in _FAKE_QUANT_OPS}
    with _tf2onnx_without_graph_copies(), _keep_fake_quant_on_constants(), \
            forms.portable_ops(), _quiet_tf2onnx():
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=[spec], opset=opset, custom_op_handlers=handlers)

    foreign = sorted({n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise ValueError(f"tf2onnx left TensorFlow ops it cannot convert: {', '.join(foreign)}.")
    if batch_size is None:
        for value in list(proto.graph.input) + list(proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    # The oldest IR version that carries the opset: older parsers (TensorRT 8.2's) accept it.
    proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    proto.producer_name = "keras_efficient3d+tf2onnx"
    onnx.checker.check_model(proto)
    return proto


def run_onnx(onnx_model, clips, providers=("CPUExecutionProvider",)):
    """Runs an ONNX model (proto or path) on `clips` with ONNX Runtime; returns the output."""
    session = onnx_session(onnx_model, providers=providers)
    return session.run(None, {session.get_inputs()[0].name: np.asarray(clips, np.float32)})[0]


def _verification_run(proto, model, clips, default_clips):
    if clips is None:
        dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
        batch = dim.dim_value if dim.HasField("dim_value") else default_clips
        clips = random_clips(model, batch)
    got = run_onnx(proto, clips)
    return got, keras.ops.convert_to_numpy(model(clips, training=False))


def verify_onnx(onnx_model, model, clips=None, rtol=1e-4, atol=1e-6):
    """Compares ONNX Runtime (CPU) on `onnx_model` (proto or path) with `model` in inference
    mode on `clips` (random by default; the graph's batch when fixed, else 2). Returns the
    relative error max|onnx - keras| / max|keras|; raises `AssertionError` beyond
    ``rtol * max|keras| + atol``."""
    proto = onnx_model if isinstance(onnx_model, onnx.ModelProto) else onnx.load(str(onnx_model))
    got, expected = _verification_run(proto, model, clips, 2)
    return check_close(got, expected, rtol, atol, what="ONNX model")


def top1_agreement(onnx_model, model, clips=None):
    """Fraction of `clips` (8 random ones by default) on which ONNX Runtime's top-1 class of
    `onnx_model` is `model`'s: the check of an int8 graph against its fake-quantized model,
    whose logits it follows to within quantization steps, not to float precision."""
    proto = onnx_model if isinstance(onnx_model, onnx.ModelProto) else onnx.load(str(onnx_model))
    got, expected = _verification_run(proto, model, clips, 8)
    return float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1)))


def quantization_summary(onnx_model):
    """Counts of QuantizeLinear/DequantizeLinear nodes and the integer types they use."""
    proto = onnx_model if isinstance(onnx_model, onnx.ModelProto) else onnx.load(str(onnx_model))
    types = {}
    for init in proto.graph.initializer:
        types[init.name] = init.data_type
    for node in proto.graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    qtypes = set()
    for node in proto.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
            if len(node.input) > 2 and node.input[2] in types:
                qtypes.add(onnx.TensorProto.DataType.Name(types[node.input[2]]))
    counts["types"] = sorted(qtypes)
    return counts


def export_onnx(model, output_path, opset=DEFAULT_OPSET, batch_size=None, fold_bn=True,
                verify=True, rtol=1e-4, atol=1e-6, form="auto", weight_bits=8, stem_fold=1,
                merge_pointwise=False, stem_output_fold=1):
    """Writes `model` as ONNX and, with `verify`, checks it against the Keras model.

    Args:
        model: a built `keras.Model` with one static-shaped clip input (float or QAT).
        output_path: the ``.onnx`` file to write.
        opset: ONNX opset (>= 13; 13 for TensorRT 8.2 on JetPack 4.6).
        batch_size: None for a dynamic ``batch`` axis, or a fixed batch.
        fold_bn: export the BatchNorm-folded inference form (default) or keep BatchNorm.
        verify: run ONNX Runtime on random clips and compare with `model` (unfolded).
        rtol, atol: tolerance of the check: max|diff| <= rtol * max|keras| + atol.
        form: ``"auto"`` (native when every layer has a native form), ``"native"`` or
            ``"taps"`` (module docstring).
        weight_bits: weights of a native QAT export: 8, or 7 for OpenVINO on x86 CPUs
            without VNNI (`onnx_native`).
        stem_fold: input columns the native form's stem takes as channels (1: none;
            `onnx_native.native_onnx`): OpenVINO int8 on CPUs with AMX.
        merge_pointwise: write linear pointwise pairs as one convolution
            (`onnx_native.pointwise_pairs`): for int8 (the same model to float rounding).
        stem_output_fold: output columns the native form's stem writes per position as
            channels (1: none; `onnx_native.native_onnx`): OpenVINO, stems of few channels.

    Returns:
        A dict: path, opset, input_shape (None for dynamic batch), max_rel_error (None
        without `verify`), quantization (Q/DQ counts and integer types), form (the one
        written), stem_fold and stem_output_fold; for a native QAT export, top1_agreement
        with the fake-quantized model on random clips instead of max_rel_error (None without
        `verify`).
    """
    if not os.fspath(output_path).lower().endswith(".onnx"):
        # an ONNX file under another format's name is refused only when it is loaded, later
        raise ValueError(f"`output_path` must end in .onnx. Received: output_path={output_path!r}")
    form = resolve_form(model, form)
    proto = convert_to_onnx(model, opset, batch_size, fold_bn, form, weight_bits, stem_fold, merge_pointwise,
                            stem_output_fold=stem_output_fold)
    native_qat = form == "native" and onnx_native.qat_layer(model) is not None
    extra = {}
    if native_qat:
        error = None
        extra["top1_agreement"] = top1_agreement(proto, model) if verify else None
    else:
        error = verify_onnx(proto, model, rtol=rtol, atol=atol) if verify else None
    atomic_write(output_path, proto.SerializeToString())
    return {**extra,
        "path": output_path,
        "opset": opset,
        "input_shape": (batch_size,) + tuple(model.inputs[0].shape[1:]),
        "max_rel_error": error,
        "quantization": quantization_summary(proto),
        "form": form,
        "stem_fold": stem_fold,
        "stem_output_fold": stem_output_fold,
    }


def build_and_export_onnx(output_path, model_name=None, keras_file=None, num_frames=16,
                          image_size=112, num_classes=None, opset=DEFAULT_OPSET, batch_size=None,
                          fold_bn=True, verify=True, form="auto", stem_fold=1, stem_output_fold=1,
                          normalization=None, downsample=None, **model_kwargs):
    """Builds (`load_or_build_model`) and exports with `export_onnx`; returns its report,
    with ``sidecar``: the ``<path>.json`` metadata (`artifacts.export_metadata`) that
    `predict` and the runtime read for the clip the model expects."""
    from keras_efficient3d.artifacts import export_metadata, write_sidecar  # pylint: disable=import-outside-toplevel

    _check_form(form)  # before the (slow) build
    model = load_or_build_model(model_name, keras_file, num_frames, image_size, num_classes,
                                **model_kwargs)
    # Read before the .onnx is written: a model file's bad metadata must not leave a new
    # .onnx beside the sidecar of the one it replaced.
    metadata = export_metadata(model, keras_file, model_name, weights=model_kwargs.get("weights"),
                               normalization=normalization, downsample=downsample)
    # read by TensorRT's engine build on a Jetson, which has no onnx package to read the file
    metadata = dataclasses.replace(metadata, batch=batch_size or "dynamic")
    report = export_onnx(model, output_path, opset=opset, batch_size=batch_size, fold_bn=fold_bn,
                         verify=verify, form=form, stem_fold=stem_fold, stem_output_fold=stem_output_fold)
    report["sidecar"] = write_sidecar(output_path, metadata)
    return report


__all__ = [
    "DEFAULT_OPSET",
    "FORMS",
    "build_and_export_onnx",
    "convert_to_onnx",
    "export_onnx",
    "quantization_summary",
    "resolve_form",
    "run_onnx",
    "top1_agreement",
    "verify_onnx",
]
