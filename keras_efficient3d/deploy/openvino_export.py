"""OpenVINO IR export (x86 CPUs, Intel GPUs and NPUs): fp32, fp16-compressed weights, int8.

Three layers, as the other exports: `export_openvino` writes a built model,
`build_and_export_openvino` builds one (registry name or ``.keras`` file), calibrates on the
training pipeline and writes it, and ``deployment/export.py --format=openvino`` maps flags
to the latter.

    from keras_efficient3d import create_model
    from keras_efficient3d.deploy.openvino_export import export_openvino
    model = create_model("mobilenetv2_1.0x", num_classes=27)
    export_openvino(model, "/tmp/m.xml")                                  # fp32, checked to 1e-4
    export_openvino(model, "/tmp/m_int8.xml", quantize="ptq", calibration=train_ds)

    python deployment/export.py --model=mobilenetv2_1.0x --num_classes=27 --format=openvino \
        --quantize=ptq --data_root=/tmp/gestures --output=exports/m_int8.xml

The route is the ONNX export (`keras_efficient3d.deploy.onnx_export.export_onnx`, batch 1 by
default: OpenVINO plans static shapes best), ``openvino.convert_model`` and
``openvino.save_model`` (channel shuffles fused into OpenVINO's ShuffleChannels,
`fuse_channel_shuffles`): an ``.xml`` graph and a ``.bin`` of weights of the same name, and a
``<model>.xml.json`` metadata sidecar when metadata is given (`artifacts.write_sidecar`).

int8 comes two ways:

* ``quantize="ptq"``: NNCF's post-training quantization (``nncf.quantize``, the maintained
  route; OpenVINO's Post-training Optimization Tool is gone) of the float IR, calibrated on
  clips of the training pipeline (what `keras_efficient3d.deploy.tflite.representative_dataset`
  accepts: a ``tf.data`` pipeline of (clips, labels), an array of clips).
* ``quantize="qat"``: a quantization-aware model (`keras_efficient3d.deploy.quantize`)
  exports to ONNX with QuantizeLinear/DequantizeLinear pairs; OpenVINO turns them into
  FakeQuantize and runs the convolutions in int8.

On CPUs with AMX int8 tiles, int8 IR takes its stem convolution with adjacent input
columns folded into channels (`keras_efficient3d.deploy.onnx_native.native_onnx`'s
``stem_fold``): a 3-channel input wastes most of each 64-deep int8 tile product, and the
stem alone took ~40% of ShuffleNetV2 1.0x int8. The best fold depends on the model and the
layer after the stem, so ``stem_fold="auto"`` quantizes each of `STEM_FOLDS` and keeps the
fastest on this machine (`fastest`; the choice is in the report). Elsewhere, and for
float IR (f32 runs the folded stem slower), there is no fold unless asked for. A narrow
depthwise layer after a folded stem reads its output folded (MobileNetV2 0.2x;
`onnx_native._folded_depthwise3d`).

PTQ IR writes a linear pointwise convolution and the pointwise one that alone reads it as
one (MobileNetV2's first projection and second expansion, 32 -> 16 -> 96 as 32 -> 96;
`onnx_native.pointwise_pairs`): their int8 kernels are bound by the elements they move, not
by the multiplications (1.0x int8 2.94 -> 2.85 ms, 0.2x 1.28 -> 1.18); float IR keeps them
apart (no faster in f32).

Every export is run back with `keras_efficient3d.runtime.OpenVINORunner`: float IR must match
the Keras model to ``rtol`` (1e-4; fp16-compressed weights to ``fp16_rtol``); int8 reports its
top-1 agreement with the Keras model on the validation clips (``validation``, else the
calibration clips) and its relative error.
"""

import contextlib
import dataclasses
import os
import sys
import tempfile

import keras
import numpy as np
import onnx

from keras_efficient3d import runtime
from keras_efficient3d.artifacts import ModelFileError
from keras_efficient3d.atomic import replacement_mode
from keras_efficient3d.deploy.frames import frames_input_affine
from keras_efficient3d.deploy.onnx_export import DEFAULT_OPSET, convert_to_onnx, export_onnx, resolve_form
from keras_efficient3d.deploy.onnx_native import stem_fold_factors
from keras_efficient3d.deploy.savedmodel import load_or_build_model
from keras_efficient3d.deploy.tflite import (
    calibration_clips,
    eager_outputs,
    naming_the_data,
    top1_agreement,
)

__all__ = [
    "PRESETS",
    "QUANTIZE",
    "STEM_FOLDS",
    "build_and_export_openvino",
    "calibration_clips",
    "convert_to_openvino",
    "export_openvino",
    "fastest",
    "fuse_channel_shuffles",
    "int8_summary",
    "ir_precision",
    "per_tensor_before_reshapes",
    "ptq",
    "resolve_stem_output_fold",
    "save_ir",
    "stem_folds",
    "uint8_frames_input",
]

QUANTIZE = (None, "ptq", "qat")
PRESETS = ("performance", "mixed")
# The stem folds stem_fold="auto" times for int8 on AMX CPUs (8 and 16 were never faster).
STEM_FOLDS = (1, 2, 4)
# OpenVINO's CPU convolutions vectorise over output channels, 16 fp32/int32 lanes (AVX-512):
# a stem of at most half that writes two output columns per position as channels and fills
# twice the lanes (`resolve_stem_output_fold`); 12 channels would take 24 of 32 either way.
LANES = 16


def _check_output(path):
    if os.path.splitext(os.fspath(path))[1].lower() != ".xml":
        raise ValueError(f"An OpenVINO IR is written as an .xml file (and a .bin beside it). "
                         f"Received: path={path}")


def convert_to_openvino(model, batch_size=1, opset=DEFAULT_OPSET, fold_bn=True, verify_onnx=False,
                        stem_fold=1, merge_pointwise=False, frames=None, stem_output_fold=1):
    """`model` as an in-memory ``openvino.Model``, through a temporary ONNX file; with
    `frames` (a `Normalization`), one that takes float RGB 0-255 frames and normalises them
    (`onnx_native.native_onnx`; `uint8_frames_input` makes them uint8 after quantization)."""
    ov = runtime.openvino_module()
    try:
        return _convert_through_onnx(ov, model, batch_size, opset, fold_bn, verify_onnx,
                                     stem_fold, merge_pointwise, frames, stem_output_fold)
    except OSError as err:  # a full temporary folder: its files are none the user chose
        raise OSError(f"cannot write the temporary ONNX file in {tempfile.gettempdir()} "
                      f"({os.strerror(err.errno) if err.errno else err}); free space there, or set TMPDIR to a "
                      "folder with room") from None


def _convert_through_onnx(ov, model, batch_size, opset, fold_bn, verify_onnx, stem_fold,
                          merge_pointwise, frames, stem_output_fold):
    with tempfile.TemporaryDirectory(prefix="keras_efficient3d-ov-") as tmp:
        onnx_path = os.path.join(tmp, "model.onnx")
        # a QAT model's weights on 7 bits: x86 CPUs without VNNI (AVX2) saturate 8-bit u8 x s8
        # int16 pair sums in int8 convolutions (onnx_native; NNCF's overflow fix)
        if frames is not None:  # not verifiable against the model as it is: other inputs
            onnx.save(convert_to_onnx(model, opset, batch_size, fold_bn, "native", 7, stem_fold,
                                      merge_pointwise, frames, stem_output_fold), onnx_path)
        else:
            export_onnx(model, onnx_path, opset=opset, batch_size=batch_size, fold_bn=fold_bn,
                        verify=verify_onnx, weight_bits=7, stem_fold=stem_fold,
                        merge_pointwise=merge_pointwise, stem_output_fold=stem_output_fold)
        with runtime.quiet_stderr():
            return fuse_channel_shuffles(ov.convert_model(onnx_path))


def stem_folds(model, quantize, stem_fold="auto"):
    """The stem folds to build for `model` (`export_openvino`): `stem_fold` itself when
    given, else `STEM_FOLDS` that the stem allows for int8 on a CPU with AMX, else (1,)."""
    factors = stem_fold_factors(model)
    if stem_fold == "auto":
        if not quantize or not runtime.cpu_has_amx() or resolve_form(model) != "native":
            return (1,)
        return tuple(f for f in STEM_FOLDS if f == 1 or f in factors)
    if stem_fold != 1 and stem_fold not in factors:
        raise ValueError(f"`stem_fold` must be 'auto', 1 or one of {factors} for "
                         f"'{getattr(model, 'name', model)}'. Received: stem_fold={stem_fold!r}")
    return (stem_fold,)


def resolve_stem_output_fold(model, quantize, stem_fold, value="auto"):
    """The stem's output fold for `model` (`onnx_native.native_onnx`'s ``stem_output_fold``):
    `value` itself when given; ``"auto"``: 2 for PTQ IR whose stem writes at most half of
    `LANES` channels and reads the clip unfolded (`stem_fold` 1), and for float IR of such a
    stem that feeds a depthwise layer; else 1.

    Why float IR only then: ShuffleNetV1 0.25x's stem (6 channels) feeds a max pool, and its
    fp32 IR ran 22% slower folded (1.33 against 1.62 ms), its int8 IR 3% faster; MobileNetV1
    0.25x's (8 channels, then a depthwise layer) 9% faster in both, MobileNetV2 0.2x's 3-4%."""
    from keras_efficient3d.deploy.onnx_native import _stem, stem_feeds_a_depthwise_layer, stem_output_fold_factors  # pylint: disable=import-outside-toplevel

    factors = stem_output_fold_factors(model) if resolve_form(model) == "native" else ()
    if value != "auto":
        if value != 1 and (value not in factors or stem_fold != 1 or quantize == "qat"):
            raise ValueError(f"`stem_output_fold` must be 'auto', 1 or one of {factors} for "
                             f"'{getattr(model, 'name', model)}' (float or PTQ, no `stem_fold`). "
                             f"Received: stem_output_fold={value!r}")
        return value
    if quantize == "qat" or stem_fold != 1 or 2 not in factors or 2 * _stem(model).filters > LANES:
        return 1
    return 2 if quantize == "ptq" or stem_feeds_a_depthwise_layer(model) else 1


def fastest(ov_models, threads=None, rounds=10, runs=20):
    """The key of the fastest of `ov_models` (key -> ``openvino.Model``) on this machine's
    CPU at `threads`, and key -> its ms: each is timed in turn over `rounds` and keeps its
    quietest round's median (a burst of other work slows some rounds, never speeds one up:
    with the median of rounds, 5 of 10, a busy machine once kept ShuffleNetV1's second-best
    fold)."""
    steps = {key: runtime.OpenVINORunner(m, threads).timing_step(0)[0] for key, m in ov_models.items()}
    times = runtime.time_interleaved(steps, rounds=rounds, warmup=3, runs=runs)
    best = {key: float(np.min(t)) for key, t in times.items()}
    return min(best, key=best.get), best


def fuse_channel_shuffles(ov_model):
    """Each channel shuffle of the native export (Reshape to (N, g, C/g, THW), Transpose of
    the two group axes, Reshape back to the clip) as one OpenVINO ``ShuffleChannels``, in
    place; returns the model.

    Why: NNCF quantizes through ShuffleChannels, and the CPU plugin shuffles int8 in its
    blocked layout; behind the three-op form NNCF left ShuffleNetV1's depthwise convolutions
    in float with layout reorders around the shuffle (int8 ShuffleNetV1 ~18% slower, float
    alike either way). Not a Gather in the ONNX: OpenVINO 2026.4's CPU plugin computed
    ShuffleNetV2 wrongly with one."""
    import openvino.opset13 as ops  # pylint: disable=import-outside-toplevel

    fused = 0
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "Transpose":
            continue
        first = op.input_value(0).get_node()
        order = op.input_value(1).get_node()
        consumers = list(op.output(0).get_target_inputs())
        if first.get_type_name() != "Reshape" or order.get_type_name() != "Constant" \
                or list(order.get_vector()) != [0, 2, 1, 3] or len(consumers) != 1:
            continue
        last = consumers[0].get_node()
        source = first.input_value(0)
        shape, grouped = source.get_partial_shape(), first.get_output_partial_shape(0)
        if last.get_type_name() != "Reshape" or shape.rank.get_length() != 5 \
                or grouped.rank.get_length() != 4 or not grouped[1].is_static \
                or not last.get_output_partial_shape(0).same_scheme(shape):
            continue
        shuffle = ops.shuffle_channels(source, axis=1, group=grouped[1].get_length())
        shuffle.set_friendly_name(last.get_friendly_name())
        last.output(0).replace(shuffle.output(0))
        fused += 1
    if fused:
        ov_model.validate_nodes_and_infer_types()
    return ov_model


def per_tensor_before_reshapes(ov_model):
    """Gives one range (the widest) to each FakeQuantize with per-channel ranges whose output
    reaches a Reshape through Transposes and Reshapes only, in place; returns the model.

    Why: NNCF quantizes a depthwise convolution's input per channel. Behind a folded stem
    with an output fold (`native_onnx`'s ``stem_fold`` 4 at stride 2: q*O channels unfolded
    by Transpose-Reshape-Transpose), OpenVINO cannot carry per-channel scales through the
    Reshape that splits channels: it dequantized there and ran MobileNetV2's first depthwise
    layer in f32 (0.50 of 3.2 ms), so `fastest` kept fold 2. With one range the int8 flows
    through (MobileNetV2 1.0x int8 at fold 4 2.78 against 2.96 ms at fold 2, MobileNetV1
    0.86 against 1.15: `benchmark_openvino.py --stem_folds=1,2,4`); the stem's
    ranges differed by a few percent between channels."""
    import openvino.opset13 as ops  # pylint: disable=import-outside-toplevel

    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        ranges = [op.input_value(i).get_node() for i in range(1, 5)]
        if any(r.get_type_name() != "Constant" for r in ranges) or \
                all(np.asarray(r.get_data()).size == 1 for r in ranges):
            continue
        node, reshaped = op, False
        while True:
            users = list(node.output(0).get_target_inputs())
            if len(users) != 1 or users[0].get_node().get_type_name() not in ("Transpose", "Reshape"):
                break
            node = users[0].get_node()
            reshaped = reshaped or node.get_type_name() == "Reshape"
        if not reshaped:
            continue
        lows_in, highs_in, lows_out, highs_out = (np.asarray(r.get_data()) for r in ranges)
        one = (1,) * lows_in.ndim  # a broadcast shape: OpenVINO then sees a per-tensor scale
        for i, value in enumerate((lows_in.min(), highs_in.max(), lows_out.min(), highs_out.max()), 1):
            op.input(i).replace_source_output(ops.constant(np.full(one, value, np.float32)).output(0))
    return ov_model


def ptq(ov_model, clips, preset="performance", fast_bias_correction=True, ignored_scope=None):
    """NNCF post-training int8 quantization of an ``openvino.Model`` calibrated on `clips`
    (N, T, H, W, C).

    Args:
        preset: ``"performance"`` (symmetric weights and activations) or ``"mixed"``
            (asymmetric activations: closer to float after ReLU-free layers, slower on some
            CPUs).
        fast_bias_correction: NNCF's fast bias correction (the accurate one runs the model
            per layer: minutes for the 1.0x models).
        ignored_scope: an ``nncf.IgnoredScope`` of nodes to keep in float.
    """
    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {PRESETS}. Received: preset={preset!r}")
    if len(clips) == 0:
        raise ValueError("Post-training quantization needs calibration clips. Received: 0 clips")
    try:
        nncf = runtime.import_keeping_log_handlers("nncf")
    except ImportError:
        raise ImportError("Post-training quantization needs nncf: "
                          f"{runtime.install_command('nncf')}") from None

    batch = ov_model.inputs[0].get_partial_shape()[0]
    batch = batch.get_length() if batch.is_static else 1
    # every clip in a sample of the model's batch: a last partial one filled with its first
    # clips again (dropped, 6 clips at batch 4 calibrated on 4; fewer than a batch, on none)
    samples = [clips[i:i + batch] for i in range(0, len(clips), batch)]
    if len(samples[-1]) < batch:
        samples[-1] = np.resize(samples[-1], (batch,) + tuple(np.shape(samples[-1])[1:]))
    kwargs = {"ignored_scope": ignored_scope} if ignored_scope is not None else {}
    # Weights on 7 bits in every layer (NNCF's overflow fix; its default fixes the first layer
    # only): without VNNI, oneDNN's u8 x s8 convolutions sum pairs of products in int16, which
    # full 8-bit weights overflow (top-1 agreement with float, shipped model: 96.9% -> 100%).
    advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE)
    # NNCF's progress bars, printed on stdout, go where its log lines go (nowhere): stdout
    # keeps to the results (export.py's JSON report), and a calibration takes seconds.
    with runtime.quiet_stderr(), contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(
            ov_model, nncf.Dataset(samples), subset_size=len(samples),
            preset=getattr(nncf.QuantizationPreset, preset.upper()),
            fast_bias_correction=fast_bias_correction, advanced_parameters=advanced, **kwargs)
    return per_tensor_before_reshapes(quantized)


def uint8_frames_input(ov_model, zero_point, scale):
    """An int8 ``openvino.Model`` of frames (`convert_to_openvino`'s ``frames``, then `ptq`)
    made to take uint8 frames: its input becomes u8, followed by Convert, Subtract
    `zero_point` and Multiply `scale` (`deploy.frames.frames_input_affine`), in place of the
    scalar arithmetic and the FakeQuantize NNCF put before the stem.

    Why that is exact: u8 values are on the grid of 256 levels that quantization would
    have given them (NNCF's range, calibrated on 0-255 frames, is that grid up to its
    rounding), and Convert -> Subtract -> Multiply is the dequantization OpenVINO's
    low-precision transformations fold into the stem (the ONNX's Sub and Mul, which
    OpenVINO rewrites as Multiply and Add, are not): the frames reach its int8 kernel
    without a quantization pass over the clip (MobileNetV2 0.2x: 0.05 ms of 1.1, and a
    quarter of the bytes to copy in)."""
    ov = runtime.openvino_module()
    import openvino.opset13 as ops  # pylint: disable=import-outside-toplevel

    (param,) = ov_model.get_parameters()
    node, removed = param, None
    while removed is None:
        users = list(node.output(0).get_target_inputs())
        if len(users) != 1:
            break
        node = users[0].get_node()
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            removed = node
        elif kind not in ("Subtract", "Multiply", "Add") or \
                node.input_value(1).get_node().get_type_name() != "Constant":
            break
    if removed is None:
        raise ValueError("The int8 model has no quantization of the frames' scalar normalisation "
                         f"before its first layer (reached {node.get_type_name()} '{node.get_friendly_name()}')")
    frames = ops.parameter(param.get_partial_shape(), ov.Type.u8, name=param.get_friendly_name())
    frames.output(0).set_names(param.output(0).get_names())
    x = ops.subtract(ops.convert(frames, ov.Type.f32), ops.constant(np.float32(zero_point)))
    x = ops.multiply(x, ops.constant(np.float32(scale)))
    removed.output(0).replace(x.output(0))
    model = ov.Model(ov_model.get_results(), [frames], ov_model.get_friendly_name())
    model.validate_nodes_and_infer_types()
    return model


def save_ir(ov_model, path, compress_to_fp16=False):
    """Writes ``path`` (.xml) and its ``.bin``: both are written in a temporary folder beside
    them and renamed into place, weights first, so that an interrupted export leaves no
    half-written file (a crash between the two renames leaves the old graph beside new
    weights, which ``read_model`` rejects or the verification catches)."""
    _check_output(path)
    ov = runtime.openvino_module()
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=directory) as tmp:
        tmp_xml = os.path.join(tmp, "model.xml")
        try:
            ov.save_model(ov_model, tmp_xml, compress_to_fp16=compress_to_fp16)
        except RuntimeError as err:
            if "iostream error" not in str(err):
                raise
            # a full disk (or quota, or size limit): "basic_ios::clear: iostream error"
            raise OSError(f"cannot write {path} and its .bin: OpenVINO's save_model failed "
                          f"({' '.join(str(err).split())[:200]}); is there room in {directory}?") from None
        bin_path = os.path.splitext(path)[0] + ".bin"
        _move_in(os.path.join(tmp, "model.bin"), bin_path)
        _move_in(tmp_xml, path)
    return path


def _move_in(staged, path):
    """Renames `staged` over `path`, with the mode of the file it replaces (or a new file's
    under the umask: OpenVINO and mkstemp write 0600)."""
    os.chmod(staged, replacement_mode(path))
    os.replace(staged, path)


def int8_summary(ov_model):
    """FakeQuantize nodes and integer-typed constants (int8 weights) of an ``openvino.Model``
    or IR path: ``{"fake_quantize": n, "int8_constants": n}`` (and ``"fp16_constants"``)."""
    if isinstance(ov_model, (str, os.PathLike)):
        ov_model = runtime.openvino_module().Core().read_model(os.fspath(ov_model))
    fake_quantize = int8 = fp16 = 0
    for op in ov_model.get_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            fake_quantize += 1
        elif kind == "Constant":
            dtype = op.get_output_element_type(0).get_type_name()
            int8 += dtype in ("i8", "u8")
            fp16 += dtype == "f16"
    return {"fake_quantize": fake_quantize, "int8_constants": int8, "fp16_constants": fp16}


def ir_precision(ov_model):
    """What an IR (``openvino.Model`` or path) stores: ``"int8"`` (FakeQuantize), ``"fp16"``
    (compressed weights) or ``"fp32"``."""
    summary = int8_summary(ov_model)
    if summary["fake_quantize"]:
        return "int8"
    return "fp16" if summary["fp16_constants"] else "fp32"


def ir_label(path):
    """`ir_precision` as the timing scripts name what they time: ``"int8-frames"`` for an
    int8 IR that takes uint8 frames (its row read "int8", as one of normalised clips)."""
    precision = ir_precision(path)
    if precision == "int8":
        import openvino as ov  # pylint: disable=import-outside-toplevel

        with runtime.quiet_stderr():
            model = ov.Core().read_model(os.fspath(path))
        if model.inputs[0].get_element_type().get_type_name() == "u8":
            return "int8-frames"
    return precision


def export_openvino(model, path, *, compress_to_fp16=False, quantize=None, calibration=None,
                    num_calibration=64, validation=None, num_validation=64, preset="performance",
                    fast_bias_correction=True, ignored_scope=None, batch_size=1,
                    opset=DEFAULT_OPSET, fold_bn=True, verify=True, rtol=1e-4, fp16_rtol=1e-2,
                    atol=1e-6, threads=None, metadata=None, stem_fold="auto", merge_pointwise=True,
                    frames_input=False, normalization=None, stem_output_fold="auto"):
    """Writes `model` as OpenVINO IR (``path``: .xml, with .bin beside it) and checks it.

    Args:
        model: a built float `keras.Model` (``quantize`` None or ``"ptq"``), or a model from
            `keras_efficient3d.deploy.quantize.quantize_model` (``"qat"``).
        compress_to_fp16: store float weights in fp16 (half the file; the CPU computes in
            fp32 or its inference precision).
        quantize: None (float), ``"ptq"`` or ``"qat"`` (see the module docstring).
        calibration: for ``"ptq"``: clips of the training pipeline (a ``tf.data`` pipeline
            of (clips, labels) batches, an array of clips, an iterable of batches).
        num_calibration: calibration clips.
        validation: clips on which int8 top-1 agreement is measured (default: the
            calibration clips; random clips when there are none).
        num_validation: validation clips.
        preset, fast_bias_correction, ignored_scope: of `ptq`.
        batch_size: the IR's fixed batch (None: dynamic).
        opset, fold_bn: of the ONNX export.
        verify: run the IR with OpenVINO and compare with `model`.
        rtol, fp16_rtol, atol: tolerance of float IR (fp32, fp16-compressed weights).
        threads: CPU threads of the verification runs.
        metadata: a `keras_efficient3d.artifacts.ModelMetadata` (or dict) written as the
            ``<path>.json`` sidecar.
        stem_fold: input columns the stem convolution takes as channels: ``"auto"`` (int8
            on AMX CPUs: the fastest of `STEM_FOLDS`, timed at `threads`; else 1), or a
            factor (`stem_folds`, module docstring).
        merge_pointwise: for ``"ptq"``, write linear pointwise pairs as one convolution
            (`keras_efficient3d.deploy.onnx_native.pointwise_pairs`, module docstring); an
            ``ignored_scope`` naming the first of a pair needs it off.
        frames_input: for ``"ptq"``: the IR takes uint8 RGB frames (0-255) and normalises
            them itself (`uint8_frames_input`; the sidecar says ``preprocessing_included``):
            no float clip to build, and no quantization pass over it (MobileNetV2 0.2x int8
            2-6% faster). Calibration and validation clips stay normalised, as the pipeline
            gives them; they are turned back into frames. Exact where every channel's mean
            is the same whole 0-255 pixel value (any std); else the frame border sees the
            nearest such value (`deploy.frames.FramesInput`), which the top-1 agreement
            measures.
        normalization: the model's `Normalization` (or preset name), for ``frames_input``
            (default: the one `metadata` records).
        stem_output_fold: output columns the stem writes per position as channels:
            ``"auto"`` (2 for a stem of at most 8 channels at stem fold 1, PTQ, or float
            where a depthwise layer reads it: OpenVINO's kernels fill 12 of 16 lanes instead
            of 6; else 1) or a factor
            (`resolve_stem_output_fold`).

    Returns:
        A dict: path, bin, precision (fp32, fp16, int8), quantize, input_shape, size_bytes,
        int8 (`int8_summary`), stem_fold (and stem_fold_ms, each candidate's time, when
        timed: `fastest`), max_rel_error, calibration_clips, top1_agreement and clips (int8
        only), sidecar, stem_output_fold; with ``frames_input``, frames (zero_point, scale,
        exact, border_offset).
    """
    from keras_efficient3d.artifacts import frames_metadata, write_sidecar  # pylint: disable=import-outside-toplevel

    _check_output(path)
    if quantize not in QUANTIZE:
        raise ValueError(f"`quantize` must be one of {QUANTIZE}. Received: quantize={quantize!r}")
    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {PRESETS}. Received: preset={preset!r}")
    if quantize == "ptq" and calibration is None:
        raise ValueError("Post-training quantization needs `calibration` clips from the training "
                         "pipeline. Received: calibration=None")
    if quantize is None and calibration is not None and not _is_qat(model):
        raise ValueError("`calibration` clips apply to int8 exports (quantize='ptq'); a float "
                         "export does not use them. Received: quantize=None")
    if quantize and compress_to_fp16:
        raise ValueError("`compress_to_fp16` applies to float exports: an int8 IR keeps its "
                         f"int8 weights. Received: quantize={quantize!r}")
    if quantize == "qat" and not _is_qat(model):
        raise ValueError("`quantize='qat'` exports a model from "
                         "keras_efficient3d.deploy.quantize.quantize_model. "
                         f"Received: model={getattr(model, 'name', model)!r}")
    if quantize is None and _is_qat(model):
        quantize = "qat"
    frames = _frames_normalization(frames_input, quantize, normalization, metadata)
    # an output fold asked for goes with the unfolded stem, whatever auto would time
    folds = stem_folds(model, quantize, 1 if stem_fold == "auto" and stem_output_fold not in ("auto", 1)
                       else stem_fold)

    merge = merge_pointwise and quantize == "ptq" and resolve_form(model) == "native"
    input_shape = tuple(model.inputs[0].shape[1:])
    calib = None
    if calibration is not None:
        calib = calibration_clips(calibration, num_calibration, input_shape)

    affine = pixels = None
    if frames is not None:  # the calibration clips as the frames they came from, once for every fold
        affine, pixels = frames_input_affine(frames), frames.frames(calib).astype(np.float32)
    candidates = {}
    output_folds = {fold: resolve_stem_output_fold(model, quantize, fold, stem_output_fold) for fold in folds}
    for fold in folds:
        candidates[fold] = convert_to_openvino(
            model, batch_size, opset, fold_bn, stem_fold=fold, merge_pointwise=merge, frames=frames,
            stem_output_fold=output_folds[fold])
        if frames is not None:
            candidates[fold] = uint8_frames_input(
                ptq(candidates[fold], pixels, preset, fast_bias_correction, ignored_scope),
                affine["zero_point"], affine["scale"])
        elif quantize == "ptq":
            candidates[fold] = ptq(candidates[fold], calib, preset, fast_bias_correction, ignored_scope)
    timings = None
    if len(candidates) > 1:
        fold, timings = fastest(candidates, threads)
    ov_model = candidates[fold]
    precision = "int8" if quantize else ("fp16" if compress_to_fp16 else "fp32")
    path = os.fspath(path)
    bin_path = os.path.splitext(path)[0] + ".bin"
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Written and checked in a folder beside `path`, then moved into place: a failed or
    # interrupted check leaves an earlier export at `path` as it was, not an unchecked IR.
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=directory) as staging:
        staged = os.path.join(staging, "model.xml")
        staged_bin = os.path.join(staging, "model.bin")

        def unstaged(err):  # the user's paths in a message, not the staging folder's
            return str(err).replace(staged_bin, bin_path).replace(staged, path).replace(
                staging, directory)

        try:
            save_ir(ov_model, staged, compress_to_fp16=compress_to_fp16 and quantize is None)
        except OSError as err:  # a full disk
            raise OSError(unstaged(err)) from None

        report = {"path": path, "bin": bin_path, "precision": precision,
                  "quantize": quantize, "input_shape": (batch_size,) + input_shape,
                  "size_bytes": os.path.getsize(staged_bin) + os.path.getsize(staged),
                  # the file's constants: fp16 compression happens as it is written
                  "int8": int8_summary(staged if precision == "fp16" else ov_model),
                  "stem_fold": fold, "stem_output_fold": output_folds[fold], "max_rel_error": None}
        if calib is not None:  # fewer than num_calibration where the data has fewer clips
            report["calibration_clips"] = len(calib)
        if timings is not None:
            report["stem_fold_ms"] = timings
        if affine is not None:
            report["frames"] = affine
        if verify:
            try:
                report.update(verify_openvino(staged, model, precision, validation, num_validation,
                                              calib, rtol=fp16_rtol if precision == "fp16" else rtol,
                                              atol=atol, threads=threads, frames=frames))
            except ModelFileError as err:
                if quantize != "qat":
                    raise ModelFileError(unstaged(err)) from None
                # OpenVINO 2026.4's CPU low-precision transformations move the asymmetric
                # dequantization of the QAT graph's activations through the temporal Pad and
                # Slice taps and fail shape inference (with them off it compiles, in float).
                raise ValueError(f"{path}: OpenVINO cannot compile this QAT model for the CPU "
                                 f"({unstaged(err)[:300]}); export with "
                                 "quantize='ptq'") from None
        sidecar = None
        if metadata is not None:  # checked and written with the IR, moved in with it
            if frames is not None:
                metadata = frames_metadata(metadata, frames)
            try:
                sidecar = write_sidecar(staged, metadata)
            except ModelFileError as err:
                raise ModelFileError(unstaged(err)) from None
            except OSError as err:  # a full disk
                raise OSError(unstaged(err)) from None
        _move_in(staged_bin, bin_path)  # weights first, as save_ir does
        final_sidecar = path + ".json"
        if sidecar is not None:
            _move_in(sidecar, final_sidecar)
            report["sidecar"] = final_sidecar
        elif os.path.exists(final_sidecar):
            os.remove(final_sidecar)  # an earlier export's: it does not describe this IR
        _move_in(staged, path)
    return report


def _frames_normalization(frames_input, quantize, normalization, metadata):
    """The `Normalization` a frames input applies (`export_openvino`), or None."""
    from keras_efficient3d.artifacts import ModelMetadata  # pylint: disable=import-outside-toplevel
    from keras_efficient3d.data.normalization import Normalization  # pylint: disable=import-outside-toplevel

    if not frames_input:
        if normalization is not None:
            raise ValueError("`normalization` is for `frames_input=True`. Received: frames_input=False")
        return None
    if quantize != "ptq":
        raise ValueError("`frames_input` is for int8 from post-training quantization "
                         "(quantize='ptq'): float IR takes normalised clips faster, and a QAT "
                         f"model's input range was learned on them. Received: quantize={quantize!r}")
    recorded = None
    if metadata is not None:
        recorded = ModelMetadata.from_dict(metadata)  # a dict or ModelMetadata
        if recorded.preprocessing_included:
            raise ValueError("`frames_input`: the model already takes frames and normalises "
                             "them itself (its metadata says preprocessing_included)")
        recorded = recorded.normalization
    if normalization is None:
        normalization = recorded
    if normalization is None:
        raise ValueError("`frames_input` needs the model's normalisation: pass `normalization` "
                         "(a Normalization or preset name) or `metadata` that records it")
    normalization = Normalization.coerce(normalization)
    if recorded is not None and normalization != recorded:
        # the sidecar would say one and the graph apply the other
        raise ValueError(f"`frames_input`: `normalization` ({normalization}) differs from the one "
                         f"the metadata records ({recorded}); the IR applies one of them: leave "
                         "`normalization` out, or give metadata that records it")
    return normalization


def _is_qat(model):
    from keras_efficient3d.deploy.quantize import QuantizedGraph  # pylint: disable=import-outside-toplevel

    return any(isinstance(layer, QuantizedGraph) for layer in getattr(model, "layers", []))


def verify_openvino(path, model, precision="fp32", validation=None, num_validation=64,
                    calibration=None, rtol=1e-4, atol=1e-6, threads=None, frames=None):
    """Runs the IR at `path` and compares with `model` in inference mode.

    Float IR: raises `AssertionError` beyond ``rtol * max|keras| + atol`` on random clips.
    int8: measures the top-1 agreement on `validation` clips (else `calibration`, else random).
    An IR of frames (`frames`: the `Normalization` it applies) gets the clips as uint8
    frames, and the model those frames normalised.

    Returns:
        ``{"max_rel_error": ...}``, plus ``top1_agreement`` and ``clips`` for int8.
    """
    runner = runtime.OpenVINORunner(path, threads=threads)
    input_shape = tuple(model.inputs[0].shape[1:])
    if precision != "int8":
        clips = runtime.random_clips(model, 2)
        expected = keras.ops.convert_to_numpy(model(clips, training=False))
        error = runtime.check_close(runner(clips), expected, rtol, atol,
                                    what=f"OpenVINO {precision} model")
        return {"max_rel_error": error}
    if validation is not None:
        clips = calibration_clips(validation, num_validation, input_shape,
                                  purpose="int8 agreement check", wanted="the check takes")
    elif calibration is not None:
        clips = calibration[:num_validation]
    else:
        clips = runtime.random_clips(model, 8)
    if frames is not None:
        pixels = frames.frames(clips)
        clips = frames.apply(pixels.astype(np.float32))
    expected = eager_outputs(model, clips)
    actual = runner(clips if frames is None else pixels)
    return {"max_rel_error": runtime.relative_error(actual, expected),
            "top1_agreement": top1_agreement(actual, expected), "clips": int(len(clips))}


def build_and_export_openvino(output_path, model_name=None, keras_file=None, num_frames=16,
                              image_size=112, num_classes=None, data_root=None,
                              num_calibration=64, quantize=None, compress_to_fp16=False,
                              batch_size=1, opset=DEFAULT_OPSET, fold_bn=True, verify=True,
                              threads=None, stem_fold="auto", frames_input=False, stem_output_fold="auto",
                              normalization=None, downsample=None, **model_kwargs):
    """Builds (`load_or_build_model`), calibrates int8 on clips of the dataset at
    `data_root`, in either layout (`keras_efficient3d.data.index_dataset`): its train split,
    validation transforms, as TFLite int8 does, with the frame step and normalisation a
    `keras_file` records. Measures agreement on its validation split, and exports with
    `export_openvino`, the sidecar written from `artifacts.export_metadata`.

    ``quantize="qat"`` wraps the model in its quantization-aware form
    (`keras_efficient3d.deploy.quantize.quantize_model`, ranges calibrated on the same clips);
    fine-tune that form as the demo does for the full QAT benefit, and export it with
    `export_openvino`.

    ``frames_input`` (with ``quantize="ptq"``): the IR takes uint8 frames and applies the
    normalisation the calibration clips had (`export_openvino`). `normalization` and
    `downsample`: how a model that records none was trained (`artifacts.export_metadata`).
    """
    from keras_efficient3d.artifacts import export_metadata  # pylint: disable=import-outside-toplevel

    if quantize not in QUANTIZE:
        raise ValueError(f"`quantize` must be one of {QUANTIZE}. Received: quantize={quantize!r}")
    if quantize and data_root is None:
        raise ValueError(f"`quantize={quantize!r}` needs `data_root` (calibration clips of the "
                         "training pipeline). Received: data_root=None")
    model = load_or_build_model(model_name, keras_file, num_frames, image_size, num_classes,
                                **model_kwargs)
    metadata = export_metadata(model, keras_file, model_name, weights=model_kwargs.get("weights"),
                               normalization=normalization, downsample=downsample)
    # the IR's batch axis, as an ONNX export's sidecar records it
    metadata = dataclasses.replace(metadata, batch=batch_size or "dynamic")
    if frames_input and quantize == "ptq" and metadata.normalization is None:
        from keras_efficient3d.data.normalization import PRESETS  # pylint: disable=import-outside-toplevel

        # what the pipeline below normalises with when nothing is recorded: the IR applies it
        metadata = dataclasses.replace(metadata, normalization=PRESETS["original"])
    calibration = validation = None
    if quantize:
        from keras_efficient3d import data as kdata  # pylint: disable=import-outside-toplevel

        # The clips the model was trained on: its recorded frame step and normalisation (the
        # shipped model takes 0-1 pixels; the pipeline's default is mean-subtracted 0-255).
        common = dict(sample_duration=int(model.inputs[0].shape[1]),
                      sample_size=int(model.inputs[0].shape[2]), batch_size=8,
                      **metadata.pipeline_arguments())
        records, _ = kdata.index_dataset(data_root, "train")
        calibration = kdata.make_dataset(records, "val", **common)
        val_records, note = kdata.agreement_records(data_root)
        if note:
            print(f"note: {note}", file=sys.stderr)
        validation = kdata.make_dataset(val_records, "val", **common)
    with naming_the_data(data_root):  # a --data_root whose videos all fail to decode
        float_model = model
        if quantize == "qat":
            from keras_efficient3d.deploy.quantize import quantize_model  # pylint: disable=import-outside-toplevel

            model = quantize_model(model, calibration, num_calibration)
        report = export_openvino(model, output_path, compress_to_fp16=compress_to_fp16,
                                 quantize=quantize, calibration=calibration,
                                 num_calibration=num_calibration, validation=validation,
                                 batch_size=batch_size, opset=opset, fold_bn=fold_bn, verify=verify,
                                 threads=threads, metadata=metadata, stem_fold=stem_fold,
                                 frames_input=frames_input, stem_output_fold=stem_output_fold)
        if verify and quantize == "qat":
            # Agreement with the float model, not only with its fake-quantized form, on the clips
            # of that check (the report's "clips" counts both).
            runner = runtime.OpenVINORunner(output_path, threads=threads)
            clips = calibration_clips(validation, report["clips"], tuple(model.inputs[0].shape[1:]),
                                      purpose="QAT agreement with the float model")
            expected = eager_outputs(float_model, clips)
            report["top1_agreement_float"] = top1_agreement(runner(clips), expected)
    return report
