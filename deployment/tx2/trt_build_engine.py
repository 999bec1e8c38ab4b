#!/usr/bin/env python3
"""Builds a TensorRT engine from an exported ONNX file with trtexec, printing the command.

    python3 trt_build_engine.py --onnx mobilenetv2.onnx --engine mobilenetv2_fp16.engine \
        --precision fp16 --batch-sizes 1,8

For a dynamic-batch ONNX file the engine's optimisation profile covers the smallest to the
largest batch size (``--minShapes input:1x16x112x112x3 --optShapes input:8x... --maxShapes
input:8x...``); a fixed-batch file is built as it is (--clip-shape and --input-name are
refused for it). The input's name, batch and clip shape are read from the file with the onnx
package where it is installed. JetPack has no onnx package: there the clip (frames, size)
and the batch come from the export's sidecar ``<file>.onnx.json`` (export.py records both;
``--onnx-batch`` for a file whose sidecar predates the batch), and a file that says neither
is refused rather than guessed.

``--precision int8`` adds ``--int8 --fp16`` with trtexec's placeholder scales (speed only, not
accuracy): this script has no calibration. This project's quantization-aware ONNX exports
(QuantizeLinear/DequantizeLinear) do not build: their activations are quantized asymmetrically
(UINT8, nonzero zero points) and TensorRT's ONNX parser takes symmetric INT8 only, so such a
file is refused where the onnx package can check it. INT8 is refused on the Jetson TX2
(sm_62), which has no INT8 kernels; on Xavier or Orin, accurate INT8 means calibration
(trt_convert.py --precision INT8 --calibration-npy, through TF-TRT). --dry-run prints the
command only. Python 3.6 compatible.
"""

import argparse
import json
import os
import subprocess

import tx2_common as common


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--engine", required=True, help="Engine file to write.")
    parser.add_argument("--precision", default="fp16", type=str.lower, choices=("fp32", "fp16", "int8"))
    parser.add_argument("--batch-sizes", default=None,
                        help="Batches the engine's profile covers (default: 1,8); a fixed-batch "
                             "file keeps its own.")
    parser.add_argument("--onnx-batch", default=None,
                        help="The file's batch axis: 'dynamic', or N for an export with a fixed "
                             "batch N. Read from the file where the onnx package is installed "
                             "(then this must agree); needed without it (JetPack) unless the "
                             "sidecar <file>.json records the batch.")
    parser.add_argument("--input-name", default=None,
                        help="Dynamic batch only. Default: read from the file, else 'input'.")
    parser.add_argument("--clip-shape", default=None,
                        help="frames,height,width,channels; dynamic batch only. Default: read from "
                             "the file, else from its sidecar <file>.json.")
    parser.add_argument("--workspace-mb", type=int, default=1024)
    parser.add_argument("--trtexec", default=None, help="Path of trtexec (default: PATH, then JetPack's).")
    parser.add_argument("--compute-capability", default=None, help="Override GPU detection, e.g. 6.2.")
    parser.add_argument("--dry-run", action="store_true", help="Print the command without running it.")
    return parser.parse_args(argv)


def load_onnx(path):
    """The ONNX model of `path` without its external weights, or None without the onnx
    package (JetPack has none)."""
    try:
        import onnx  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as err:  # pylint: disable=broad-except
        # protobuf's DecodeError, or onnx's own, for a corrupt, truncated or other file
        detail = " ".join(str(err).split()) or type(err).__name__
        raise common.Refused("--onnx {}: not an ONNX model (corrupt, truncated or another "
                             "format: {})".format(path, detail[:200])) from None


def onnx_input(model, path):
    """(name, shape with None for a dynamic axis) of the model's first input."""
    # Files of IR version < 4 list their weights among the inputs too.
    weights = set(init.name for init in model.graph.initializer)
    inputs = [v for v in model.graph.input if v.name not in weights]
    if not inputs:
        raise common.Refused("--onnx {}: not an ONNX model of a clip network (the graph has "
                             "no input)".format(path))
    value = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    return value.name, tuple(dims)


def check_symmetric_quantization(model, path):
    """Refuses Q/DQ nodes whose zero point TensorRT's ONNX parser rejects ("TRT only supports
    symmetric quantization - zeroPt must be all zeros"): UINT8, or not all zeros. This
    project's QAT exports quantize activations that way (asymmetric UINT8)."""
    from onnx import TensorProto, numpy_helper  # pylint: disable=import-outside-toplevel

    tensors = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    tensors[node.output[0]] = attribute.t
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zero = tensors.get(node.input[2])
        if zero is None:  # none given, or computed in the graph: nothing to read here
            continue
        if zero.data_type == TensorProto.UINT8:
            why = "a UINT8 zero point"
        elif numpy_helper.to_array(zero).any():
            why = "a nonzero zero point"
        else:
            continue
        raise common.Refused(
            "--onnx {}: {} {} has {} (asymmetric quantization, as in this project's QAT exports), "
            "which TensorRT's ONNX parser refuses: it takes symmetric INT8 Q/DQ only (zero points "
            "all 0); build the float export instead (INT8 on Xavier/Orin: calibration, see "
            "README.md)".format(path, node.op_type, node.name or node.output[0], why))


def sidecar_input(onnx_path):
    """(clip (frames, height, width, 3) or None, batch) that the export's sidecar
    ``<file>.json`` records: batch is "dynamic", a fixed batch, or None where it says nothing
    (a sidecar written before export.py recorded the batch). None without a sidecar."""
    where = onnx_path + ".json"
    if not os.path.isfile(where):
        return None
    try:
        with open(where, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        raise common.Refused("{} (the sidecar of --onnx) is not readable JSON: {}".format(
            where, " ".join(str(err).split())[:200])) from None
    inputs = data.get("input") if isinstance(data, dict) else None
    if not isinstance(inputs, dict):
        return None, None

    def positive(value):
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    frames, size = inputs.get("frames"), inputs.get("size")
    if positive(size):
        size = [size, size]
    clip = None
    if (inputs.get("layout") in (None, "NDHWC") and positive(frames) and isinstance(size, list)
            and len(size) == 2 and all(positive(v) for v in size)):
        clip = (frames, size[0], size[1], 3)
    batch = None
    for key in ("batch",):
        if key in inputs:
            value = inputs[key]
            if value is None or value == "dynamic":
                batch = "dynamic"
            elif positive(value):
                batch = value
            break
    return clip, batch


def parse_onnx_batch(text):
    if text is None:
        return None
    if text.strip().lower() == "dynamic":
        return "dynamic"
    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    raise common.Refused("--onnx-batch must be 'dynamic' or a positive batch size. Received: "
                         "{}".format(text))


def parse_clip_shape(text):
    if text is None:
        return None
    try:
        clip_shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        clip_shape = ()
    if len(clip_shape) != 4 or any(d < 1 for d in clip_shape):
        raise common.Refused("--clip-shape must be frames,height,width,channels. Received: "
                             "{}".format(text))
    return clip_shape


def _dims(shape):
    return "x".join("?" if d is None else str(d) for d in shape)


def device_capability(override):
    """The compute capability the INT8 check goes by: `override` (--compute-capability),
    else the board's or nvidia-smi's. None (nothing refused) where TensorRT itself says this
    GPU has fast INT8 and those say otherwise: a board newer than the table."""
    if override:
        return override
    known = common.compute_capability_from_board() or common.compute_capability_from_nvidia_smi()
    try:
        import tensorrt as trt  # pylint: disable=import-outside-toplevel
        fast = trt.Builder(trt.Logger(trt.Logger.ERROR)).platform_has_fast_int8
    except Exception:  # pylint: disable=broad-except
        fast = None
    if fast is False:
        return known or (6, 2)
    if fast and known is not None and not common.int8_supported(known):
        return None
    return known


def other_format(path):
    """What `path` holds where it is recognisably no ONNX file, else None: without the onnx
    package (JetPack) nothing else reads it before trtexec, which fails on it after the
    advice to pass --onnx-batch had been followed."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    stripped = head.lstrip()
    if not head:
        return "an empty file"
    if head[4:8] == b"TFL3":
        return "a TFLite model"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a .keras model?)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if stripped[:1] in (b"{", b"["):
        return "JSON (an export's sidecar?)"
    if stripped[:1] == b"<":
        return "XML (an OpenVINO IR?)"
    return None


def trtexec_command(trtexec, onnx_path, engine_path, precision, input_name, clip_shape,
                    batch_sizes, workspace_mb, fixed_batch):
    """The trtexec argument list (TensorRT 8.2 flags)."""
    cmd = [trtexec, "--onnx={}".format(onnx_path), "--saveEngine={}".format(engine_path),
           "--workspace={}".format(workspace_mb), "--explicitBatch"]
    if not fixed_batch:
        dims = "x".join(str(d) for d in clip_shape)
        low, high = min(batch_sizes), max(batch_sizes)
        cmd += ["--minShapes={}:{}x{}".format(input_name, low, dims),
                "--optShapes={}:{}x{}".format(input_name, high, dims),
                "--maxShapes={}:{}x{}".format(input_name, high, dims)]
    if precision == "fp16":
        cmd.append("--fp16")
    elif precision == "int8":
        cmd += ["--int8", "--fp16"]
    return cmd


def main(argv=None):
    args = parse_args(argv)
    batch_sizes = common.parse_batch_sizes(args.batch_sizes)
    stated_batch = parse_onnx_batch(args.onnx_batch)
    stated_clip = parse_clip_shape(args.clip_shape)
    if not os.path.isfile(args.onnx):
        raise common.Refused("--onnx {} is not a file.".format(args.onnx))
    if os.path.realpath(args.engine) == os.path.realpath(args.onnx):
        raise common.Refused("--engine {} is the --onnx file: trtexec would write the engine "
                             "over the model it builds from.".format(args.engine))
    # trtexec finds an unwritable --saveEngine only after minutes of building.
    common.check_output_file(args.engine, "--engine")
    common.check_workspace_mb(args.workspace_mb)
    override = None
    if args.compute_capability:
        if args.precision != "int8":
            raise common.Refused("--compute-capability is read for --precision int8 only (the "
                                 "check that the GPU has INT8 kernels): drop it")
        override = common.parse_compute_capability(args.compute_capability)
    if args.precision == "int8":
        common.check_int8(device_capability(override), "TensorRT INT8 engine")
    trtexec = common.find_trtexec(args.trtexec)
    model = load_onnx(args.onnx)
    name = None
    if model is not None:
        check_symmetric_quantization(model, args.onnx)
        name, shape = onnx_input(model, args.onnx)
        batch = "dynamic" if shape[0] is None else shape[0]
        file_clip = shape[1:]
        if stated_batch is not None and stated_batch != batch:
            raise common.Refused("--onnx-batch {} does not match --onnx {}, whose batch is {} "
                                 "(input {})".format(args.onnx_batch, args.onnx, batch, _dims(shape)))
        if args.input_name and args.input_name != name and batch == "dynamic":
            raise common.Refused("--input-name {} does not match --onnx {}, whose input is named "
                                 "{}".format(args.input_name, args.onnx, name))
        if stated_clip and batch == "dynamic" and any(
                f is not None and f != c for f, c in zip(file_clip, stated_clip)):
            raise common.Refused("--clip-shape {} does not match --onnx {}, whose input is "
                                 "{}".format(args.clip_shape, args.onnx, _dims(shape)))
    else:
        other = other_format(args.onnx)
        if other:
            raise common.Refused("--onnx {}: not an ONNX model ({})".format(args.onnx, other))
        sidecar = args.onnx + ".json"
        recorded = sidecar_input(args.onnx)
        file_clip, recorded_batch = recorded or (None, None)
        if stated_batch is not None and recorded_batch is not None and stated_batch != recorded_batch:
            raise common.Refused("--onnx-batch {} does not match {}, which records batch {}".format(
                args.onnx_batch, sidecar, recorded_batch))
        batch = stated_batch if stated_batch is not None else recorded_batch
        if batch is None:
            # A guess here gives a fixed-batch file explicit shapes, which trtexec refuses
            # ("Static model does not take explicit shapes"), or a profile for another clip.
            raise common.Refused(
                "--onnx {}: its batch is unknown without the onnx Python package (JetPack has "
                "none; pip3 install onnx) and {}: pass --onnx-batch dynamic{} for a dynamic-batch "
                "export (export.py's default), or --onnx-batch N for one exported with "
                "--batch_size N".format(
                    args.onnx, "its sidecar {} does not record it".format(sidecar) if recorded
                    else "it has no sidecar {}".format(sidecar),
                    "" if stated_clip or file_clip else " --clip-shape frames,height,width,channels"))
    fixed_batch = batch != "dynamic"
    if fixed_batch:
        for flag, value in (("--clip-shape", args.clip_shape), ("--input-name", args.input_name)):
            if value is not None:
                raise common.Refused("{} is not read for a fixed-batch ONNX file ({} has batch {}, "
                                     "built as it is, without shapes): drop {}".format(
                                         flag, args.onnx, batch, flag))
        clip_shape = None
    elif stated_clip:
        clip_shape = stated_clip
    elif file_clip and all(d is not None for d in file_clip):
        clip_shape = tuple(file_clip)
    else:
        raise common.Refused("--onnx {}: its clip shape is unknown ({}): pass --clip-shape "
                             "frames,height,width,channels, e.g. 16,112,112,3".format(
                                 args.onnx, "input {}".format(_dims((None,) + tuple(file_clip)))
                                 if file_clip else "no onnx package, and {}".format(
                                     "its sidecar {}.json records no clip".format(args.onnx)
                                     if os.path.isfile(args.onnx + ".json")
                                     else "no sidecar {}.json".format(args.onnx))))
    name = args.input_name or name or "input"
    batch_sizes = common.fixed_batch_sizes(args.onnx, batch if fixed_batch else None,
                                           batch_sizes, args.batch_sizes, "the engine runs")
    cmd = trtexec_command(trtexec or args.trtexec or "trtexec", args.onnx, args.engine,
                          args.precision, name, clip_shape, batch_sizes, args.workspace_mb,
                          fixed_batch)
    if args.precision == "int8":
        print("note: --precision int8 builds with trtexec's placeholder scales: an engine to time "
              "INT8 speed with, whose outputs mean nothing; an accurate INT8 engine needs "
              "calibration (trt_convert.py --precision INT8 --calibration-npy, through TF-TRT)")
    print(" ".join(cmd))
    if args.dry_run:
        return 0
    if not trtexec:
        raise common.Missing("trtexec not found (TensorRT; on JetPack it is /usr/src/tensorrt/bin/trtexec). "
                             "Install TensorRT or pass --trtexec PATH.")
    try:
        code = subprocess.call(cmd)
    except OSError as err:  # not a program this machine can run (another architecture...)
        raise common.Failed("cannot run trtexec {}: {}".format(trtexec, err)) from None
    if code != 0:
        raise common.Failed("trtexec failed (exit {}) building --engine {} from {}; its output is "
                            "above".format(code, args.engine, args.onnx))
    record = args.engine + ".json"
    if common.copy_record(args.onnx + ".json", record, {"engine": {
            "precision": args.precision, "onnx": os.path.basename(args.onnx)}}):
        print("wrote {} (the export's record: trt_classify.py reads the clip, normalisation and "
              "class names from it)".format(record))
    return 0


if __name__ == "__main__":
    common.run_main(main)
