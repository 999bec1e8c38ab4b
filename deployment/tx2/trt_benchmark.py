#!/usr/bin/env python3
"""Times a TensorRT engine (trt_build_engine.py) in clips/s at batch 1 and 8.

    python3 trt_benchmark.py --engine mobilenetv2_fp16.engine --batch-sizes 1,8 \
        --warmup 20 --iterations 100 --json mobilenetv2_trt.json

Through TensorRT's Python API where it is installed (JetPack ships it; device memory via
libcudart with ctypes, so neither pycuda nor cuda-python is needed), else through trtexec
(``--loadEngine``), whose median GPU compute time is parsed. Either way: warm-up, then the
median latency of the timed runs and clips/s = batch / median (the paper's measure).
Python 3.6 compatible.
"""

import argparse
import ctypes
import ctypes.util
import os
import re
import subprocess
import time

import tx2_common as common
from trt_build_engine import find_trtexec


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", required=True)
    parser.add_argument("--batch-sizes", default=None, help="Default: 1,8.")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--backend", default="auto", choices=("auto", "python", "trtexec"))
    parser.add_argument("--trtexec", default=None)
    parser.add_argument("--input-name", default="input", help="trtexec backend: the engine's input.")
    parser.add_argument("--clip-shape", default="16,112,112,3",
                        help="trtexec backend: frames,height,width,channels; 'none' for a fixed-shape engine.")
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


class CudaRuntime(object):
    """The few libcudart calls the benchmark needs."""

    def __init__(self):
        names = [ctypes.util.find_library("cudart"), "libcudart.so", "/usr/local/cuda/lib64/libcudart.so"]
        self.lib = None
        for name in names:
            if not name:
                continue
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if self.lib is None:
            raise common.Missing("libcudart not found (CUDA runtime); is this a CUDA machine?")
        count = ctypes.c_int(0)
        if self.lib.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value == 0:
            raise common.Missing("no CUDA GPU found.")

    def malloc(self, nbytes):
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), "cudaMalloc")
        return ptr

    def free(self, ptr):
        self.lib.cudaFree(ptr)

    def copy_to_device(self, ptr, array):
        self._check(self.lib.cudaMemcpy(ptr, array.ctypes.data_as(ctypes.c_void_p),
                                        ctypes.c_size_t(array.nbytes), 1), "cudaMemcpy")

    def copy_to_host(self, array, ptr):
        self._check(self.lib.cudaMemcpy(array.ctypes.data_as(ctypes.c_void_p), ptr,
                                        ctypes.c_size_t(array.nbytes), 2), "cudaMemcpy")

    def synchronize(self):
        self._check(self.lib.cudaDeviceSynchronize(), "cudaDeviceSynchronize")

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise common.Failed("{} failed with CUDA error {}".format(what, status))


def time_with_python_api(trt, engine_path, batch_sizes, warmup, iterations, given=None):
    """`given`: --batch-sizes as typed, for the note on a fixed-batch engine."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    logger = trt.Logger(trt.Logger.WARNING)
    with open(engine_path, "rb") as f:
        engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
    if engine is None:
        raise common.Failed("TensorRT {} could not load --engine {} (not an engine, or built by "
                            "another TensorRT version)".format(getattr(trt, "__version__", "?"),
                                                              engine_path))
    cuda = CudaRuntime()
    context = engine.create_execution_context()
    v3 = hasattr(engine, "num_io_tensors")  # TensorRT >= 8.5 tensor API, else bindings (8.2)
    if v3:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        shape = tuple(engine.get_tensor_shape(inputs[0]))
    else:
        names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        inputs = [n for i, n in enumerate(names) if engine.binding_is_input(i)]
        shape = tuple(engine.get_binding_shape(0))
    if len(inputs) != 1:
        raise common.Refused("expected an engine with one input, found {}.".format(len(inputs)))
    batch_sizes = common.fixed_batch_sizes(engine_path, None if shape[0] == -1 else shape[0],
                                           batch_sizes, given, "the engine runs")
    results = []
    for batch in batch_sizes:
        clip_shape = (batch,) + shape[1:]
        buffers, host = {}, {}
        if v3:
            context.set_input_shape(inputs[0], clip_shape)
            shapes = {n: tuple(context.get_tensor_shape(n)) for n in names}
        else:
            context.set_binding_shape(0, clip_shape)
            shapes = {n: tuple(context.get_binding_shape(i)) for i, n in enumerate(names)}
        for n in names:
            host[n] = np.zeros(shapes[n], np.float32)
            buffers[n] = cuda.malloc(max(host[n].nbytes, 1))
        host[inputs[0]][...] = np.random.RandomState(0).standard_normal(clip_shape)
        latencies = []
        try:
            for i in range(warmup + iterations):
                start = time.perf_counter()
                cuda.copy_to_device(buffers[inputs[0]], host[inputs[0]])
                if v3:
                    for n in names:
                        context.set_tensor_address(n, buffers[n].value)
                    context.execute_async_v3(0)
                else:
                    context.execute_v2([buffers[n].value for n in names])
                cuda.synchronize()
                for n in names:
                    if n not in inputs:
                        cuda.copy_to_host(host[n], buffers[n])
                if i >= warmup:
                    latencies.append(time.perf_counter() - start)
        finally:
            for ptr in buffers.values():
                cuda.free(ptr)
        results.append(common.summarize(latencies, batch))
    return results


_MEDIAN = re.compile(r"GPU Compute Time:.*?median = ([0-9.]+) ms")
_LATENCY = re.compile(r"Latency:.*?median = ([0-9.]+) ms")


def parse_trtexec_median_ms(text):
    """Median GPU compute time (ms) from trtexec's summary, else its median latency."""
    for pattern in (_MEDIAN, _LATENCY):
        found = pattern.findall(text)
        if found:
            return float(found[-1])
    return None


_BINDING = re.compile(r"Created input binding for \S+ with dimensions (\d+)x")


def parse_trtexec_batch(text):
    """The batch of the engine's input as trtexec set it up, or None."""
    found = _BINDING.search(text)
    return int(found.group(1)) if found else None


def run_trtexec(trtexec, engine_path, warmup, iterations, shapes=None):
    """(median ms, trtexec's output) of one trtexec timing run."""
    cmd = [trtexec, "--loadEngine={}".format(engine_path), "--iterations={}".format(iterations),
           "--warmUp={}".format(max(warmup, 1) * 10), "--duration=0"]
    if shapes:
        cmd.append("--shapes={}".format(shapes))
    print(" ".join(cmd))
    run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    median = parse_trtexec_median_ms(run.stdout)
    if run.returncode != 0 or median is None:
        # Its last line says why (the lines above it are trtexec's settings).
        last = [line.strip() for line in run.stdout.splitlines() if line.strip()][-1:]
        why = "exit {}".format(run.returncode) if run.returncode else "no timing in its output"
        raise common.Failed("trtexec failed ({}): {} (its command is the line above)".format(
            why, last[0] if last else "no output"))
    return median, run.stdout


def time_with_trtexec(trtexec, engine_path, batch_sizes, warmup, iterations, input_shape=None,
                      given=None):
    """`input_shape`: (input name, "FxHxWxC") of a dynamic-batch engine, or None for a
    fixed-shape one, which trtexec runs at its own batch (read from trtexec's output)."""
    runs = []
    if input_shape is None:
        median, output = run_trtexec(trtexec, engine_path, warmup, iterations)
        batch = parse_trtexec_batch(output)
        if batch is None:
            raise common.Failed("trtexec did not say the engine's input dimensions, so its batch "
                                "is unknown: pass --clip-shape for a dynamic-batch engine")
        common.fixed_batch_sizes(engine_path, batch, batch_sizes, given, "the engine runs")
        runs.append((batch, median))
    else:
        for batch in batch_sizes:
            shapes = "{}:{}x{}".format(input_shape[0], batch, input_shape[1])
            runs.append((batch, run_trtexec(trtexec, engine_path, warmup, iterations, shapes)[0]))
    results = []
    for batch, median in runs:
        result = common.summarize([median / 1000.0], batch)
        result["iterations"] = iterations
        results.append(result)
    return results


def main(argv=None):
    args = parse_args(argv)
    batch_sizes = common.parse_batch_sizes(args.batch_sizes)
    if args.warmup < 0 or args.iterations < 1:
        raise common.Refused("--warmup must be >= 0 and --iterations >= 1.")
    if not os.path.isfile(args.engine):
        raise common.Refused("--engine {} is not a file (build it with trt_build_engine.py).".format(args.engine))
    common.check_output_file(args.json, "--json")
    trt = None
    if args.backend in ("auto", "python"):
        try:
            import tensorrt as trt  # pylint: disable=import-outside-toplevel
        except ImportError:
            if args.backend == "python":
                raise common.Missing("TensorRT's Python API (tensorrt) is not installed.") from None
    if trt is not None:
        results = time_with_python_api(trt, args.engine, batch_sizes, args.warmup, args.iterations,
                                       args.batch_sizes)
        how = "TensorRT {} Python API".format(trt.__version__)
    else:
        trtexec = find_trtexec(args.trtexec)
        if not trtexec:
            raise common.Missing("neither TensorRT's Python API nor trtexec is available "
                                 "(on JetPack: python3-libnvinfer, /usr/src/tensorrt/bin/trtexec).")
        shape = None
        if args.clip_shape.lower() != "none":
            shape = (args.input_name, "x".join(v.strip() for v in args.clip_shape.split(",")))
        results = time_with_trtexec(trtexec, args.engine, batch_sizes, args.warmup, args.iterations,
                                    shape, args.batch_sizes)
        how = "trtexec (median GPU compute time)"
    common.print_results(results, "TensorRT {} via {}: clips/s = batch / median".format(
        os.path.basename(args.engine), how), args.json)
    return 0


if __name__ == "__main__":
    common.run_main(main)
