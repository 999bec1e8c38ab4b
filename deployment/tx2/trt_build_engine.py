#!/usr/bin/env python3
"""Builds a TensorRT engine from an exported ONNX file with trtexec, printing the command.

    python3 trt_build_engine.py --onnx mobilenetv2.onnx --engine mobilenetv2_fp16.engine \
        --precision fp16 --batch-sizes 1,8

For a dynamic-batch ONNX file the engine's optimisation profile covers the smallest to the
largest batch size (``--minShapes input:1x16x112x112x3 --optShapes input:8x... --maxShapes
input:8x...``); a fixed-batch file is built as it is. ``--precision int8`` adds ``--int8
--fp16``: with a QAT export (QuantizeLinear/DequantizeLinear nodes) TensorRT uses its
ranges; without, trtexec uses placeholder scales (speed only, not accuracy). INT8 is refused
on the Jetson TX2 (sm_62), which has no INT8 kernels. --dry-run prints the command only.
Python 3.6 compatible; uses the onnx package when present to read the input's name and shape.
"""

import argparse
import os
import shutil
import subprocess

import tx2_common as common

TRTEXEC_PLACES = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec",
                  "/opt/tensorrt/bin/trtexec")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--engine", required=True, help="Engine file to write.")
    parser.add_argument("--precision", default="fp16", type=str.lower, choices=("fp32", "fp16", "int8"))
    parser.add_argument("--batch-sizes", default=None,
                        help="Batches the engine's profile covers (default: 1,8); a fixed-batch "
                             "file keeps its own.")
    parser.add_argument("--input-name", default=None, help="Default: read from the file, else 'input'.")
    parser.add_argument("--clip-shape", default=None,
                        help="frames,height,width,channels; default: read from the file, else 16,112,112,3.")
    parser.add_argument("--workspace-mb", type=int, default=1024)
    parser.add_argument("--trtexec", default=None, help="Path of trtexec (default: PATH, then JetPack's).")
    parser.add_argument("--compute-capability", default=None, help="Override GPU detection, e.g. 6.2.")
    parser.add_argument("--dry-run", action="store_true", help="Print the command without running it.")
    return parser.parse_args(argv)


def find_trtexec(explicit=None):
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    found = shutil.which("trtexec")
    if found:
        return found
    for place in TRTEXEC_PLACES:
        if os.path.isfile(place):
            return place
    return None


def onnx_input(path):
    """(name, shape with None for a dynamic axis) of the file's first input, or None."""
    try:
        import onnx  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as err:  # pylint: disable=broad-except
        # protobuf's DecodeError, or onnx's own, for a corrupt, truncated or other file
        detail = " ".join(str(err).split()) or type(err).__name__
        raise common.Refused("--onnx {}: not an ONNX model (corrupt, truncated or another "
                             "format: {})".format(path, detail[:200])) from None
    # Files of IR version < 4 list their weights among the inputs too.
    weights = set(init.name for init in model.graph.initializer)
    inputs = [v for v in model.graph.input if v.name not in weights]
    if not inputs:
        raise common.Refused("--onnx {}: not an ONNX model of a clip network (the graph has "
                             "no input)".format(path))
    value = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    return value.name, tuple(dims)


def device_capability(override):
    if override:
        return common.parse_compute_capability(override)
    try:
        import tensorrt as trt  # pylint: disable=import-outside-toplevel
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        if not builder.platform_has_fast_int8:
            return common.compute_capability_from_board() or (6, 2)
    except Exception:  # pylint: disable=broad-except
        pass
    return common.compute_capability_from_board() or common.compute_capability_from_nvidia_smi()


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
    if not os.path.isfile(args.onnx):
        raise common.Refused("--onnx {} is not a file.".format(args.onnx))
    # trtexec finds an unwritable --saveEngine only after minutes of building.
    common.check_output_file(args.engine, "--engine")
    common.check_workspace_mb(args.workspace_mb)
    if args.precision == "int8":
        common.check_int8(device_capability(args.compute_capability), "TensorRT INT8 engine")
    found = onnx_input(args.onnx)
    name, shape = found if found else ("input", None)
    name = args.input_name or name
    if args.clip_shape:
        try:
            clip_shape = tuple(int(v) for v in args.clip_shape.split(","))
        except ValueError:
            clip_shape = ()
        if len(clip_shape) != 4:
            raise common.Refused("--clip-shape must be frames,height,width,channels. Received: {}".format(
                args.clip_shape))
    elif shape is not None:
        clip_shape = shape[1:]
    else:
        clip_shape = (16, 112, 112, 3)
    fixed_batch = shape is not None and shape[0] is not None
    batch_sizes = common.fixed_batch_sizes(args.onnx, shape[0] if fixed_batch else None,
                                           batch_sizes, args.batch_sizes, "the engine runs")
    trtexec = find_trtexec(args.trtexec) or (args.trtexec or "trtexec")
    cmd = trtexec_command(trtexec, args.onnx, args.engine, args.precision, name, clip_shape,
                          batch_sizes, args.workspace_mb, fixed_batch)
    print(" ".join(cmd))
    if args.dry_run:
        return 0
    if not find_trtexec(args.trtexec):
        raise common.Missing("trtexec not found (TensorRT; on JetPack it is /usr/src/tensorrt/bin/trtexec). "
                             "Install TensorRT or pass --trtexec PATH.")
    return 0 if subprocess.call(cmd) == 0 else 1


if __name__ == "__main__":
    common.run_main(main)
