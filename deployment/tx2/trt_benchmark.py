#!/usr/bin/env python3
"""Times a TensorRT engine (trt_build_engine.py) in clips/s at batch 1 and 8.

    python3 trt_benchmark.py --engine mobilenetv2_fp16.engine --batch-sizes 1,8 \
        --warmup 20 --iterations 100 --json mobilenetv2_trt.json

Through TensorRT's Python API where it is installed (JetPack ships it; device memory via
libcudart with ctypes, so neither pycuda nor cuda-python is needed), else through trtexec
(``--loadEngine``), whose GPU compute time summary (min, mean, median, max) is parsed.
Either way: warm-up, then the median latency of the timed runs and clips/s = batch / median
(the paper's measure). trtexec warms up for a time, not a number of runs (its ``--warmUp``
is in milliseconds): there, ``--warmup N`` means N x 10 ms (0: none). A batch outside a
dynamic engine's optimisation profile is refused; a fixed-batch engine runs its own batch
only (trtexec ignores ``--shapes`` for it), with a note. Python 3.6 compatible.
"""

import argparse
import os
import re
import subprocess
import time

import tx2_common as common

TRTEXEC_WARMUP_MS_PER_RUN = 10
DEFAULT_CLIP_SHAPE = "16,112,112,3"
DEFAULT_INPUT_NAME = "input"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", required=True)
    parser.add_argument("--batch-sizes", default=None, help="Default: 1,8.")
    parser.add_argument("--warmup", type=int, default=20,
                        help="Untimed runs before timing (default 20). The trtexec backend warms up "
                             "for a time instead (trtexec's --warmUp is in milliseconds): N x {} ms, "
                             "0 for none.".format(TRTEXEC_WARMUP_MS_PER_RUN))
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--backend", default="auto", choices=("auto", "python", "trtexec"))
    # None: not typed, so that the Python API backend, which reads none of these three, can
    # refuse them only when the user gave them.
    parser.add_argument("--trtexec", default=None, help="trtexec backend: path of trtexec.")
    parser.add_argument("--input-name", default=None,
                        help="trtexec backend: the engine's input (default: {}).".format(DEFAULT_INPUT_NAME))
    parser.add_argument("--clip-shape", default=None,
                        help="trtexec backend: frames,height,width,channels (default: {}); 'none' "
                             "for a fixed-shape engine.".format(DEFAULT_CLIP_SHAPE))
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def profile_batch_range(engine, v3, name, index):
    """(smallest, largest) batch of the engine's first optimisation profile for input `name`
    (binding `index`), or None where the engine does not say."""
    try:
        if v3:
            low, _, high = engine.get_tensor_profile_shape(name, 0)
        else:
            low, _, high = engine.get_profile_shape(0, index)
        return int(low[0]), int(high[0])
    except Exception:  # pylint: disable=broad-except
        # an engine without profiles, or an API spelled differently in some TensorRT version
        return None


def _refuse_batch(engine_path, batch, batch_range, clip_shape):
    if batch_range is None:
        raise common.Refused("--batch-sizes: TensorRT refused batch {} (input {}) for --engine "
                             "{}: outside its optimisation profile? (TensorRT's log above says "
                             "why)".format(batch, "x".join(str(d) for d in clip_shape), engine_path))
    raise common.Refused("--batch-sizes: batch {} is outside the optimisation profile of --engine "
                         "{}, built for batch {} to {} (rebuild it with trt_build_engine.py "
                         "--batch-sizes to cover it)".format(batch, engine_path, *batch_range))


def time_with_python_api(trt, engine_path, batch_sizes, warmup, iterations, given=None):
    """`given`: --batch-sizes as typed, for the note on a fixed-batch engine."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    engine = common.load_engine(trt, engine_path)
    v3, names, inputs = common.engine_io(trt, engine)
    if len(inputs) != 1:
        raise common.Refused("expected an engine with one input, found {}.".format(len(inputs)))
    index = names.index(inputs[0])
    shape = tuple(engine.get_tensor_shape(inputs[0]) if v3 else engine.get_binding_shape(index))
    batch_sizes = common.fixed_batch_sizes(engine_path, None if shape[0] == -1 else shape[0],
                                           batch_sizes, given, "the engine runs")
    batch_range = profile_batch_range(engine, v3, inputs[0], index) if shape[0] == -1 else None
    # Before any timing: TensorRT only says so (a False and a log line) when the shape is set,
    # and the buffers sized from the shape it then reports would have negative dimensions.
    for batch in batch_sizes:
        if batch_range is not None and not batch_range[0] <= batch <= batch_range[1]:
            _refuse_batch(engine_path, batch, batch_range, (batch,) + shape[1:])
    cuda = common.CudaRuntime()
    context = engine.create_execution_context()
    execute = "execute_async_v3" if v3 else "execute_v2"
    results = []
    for batch in batch_sizes:
        clip_shape = (batch,) + shape[1:]
        buffers, host = {}, {}
        if -1 in shape:  # a static engine has its shape already
            if v3:
                accepted = context.set_input_shape(inputs[0], clip_shape)
            else:
                accepted = context.set_binding_shape(index, clip_shape)
            if accepted is False:  # None: a TensorRT whose call returns nothing
                _refuse_batch(engine_path, batch, batch_range, clip_shape)
        if v3:
            shapes = {n: tuple(context.get_tensor_shape(n)) for n in names}
        else:
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
                    ran = context.execute_async_v3(0)
                else:
                    ran = context.execute_v2([buffers[n].value for n in names])
                if ran is False:
                    raise common.Failed("TensorRT failed to run --engine {} at batch {} ({} "
                                        "returned False; its log above says why)".format(
                                            engine_path, batch, execute))
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


_SUMMARY = (re.compile(r"GPU Compute Time:([^\n]*)"), re.compile(r"Latency:([^\n]*)"))
_STATISTICS = ("min", "max", "mean", "median")


def parse_trtexec_times(text):
    """{"min", "max", "mean", "median"} (ms, None where not printed) of trtexec's last
    summary line of GPU compute time, else of its latency; None when neither has a median."""
    for pattern in _SUMMARY:
        lines = [line for line in pattern.findall(text) if re.search(r"\bmedian = ", line)]
        if lines:
            times = {}
            for key in _STATISTICS:
                found = re.search(r"\b{} = ([0-9.eE+-]+) ms".format(key), lines[-1])
                times[key] = float(found.group(1)) if found else None
            return times
    return None


def parse_trtexec_median_ms(text):
    """Median GPU compute time (ms) from trtexec's summary, else its median latency."""
    times = parse_trtexec_times(text)
    return times["median"] if times else None


_BINDING = re.compile(r"Created input binding for \S+ with dimensions (\d+)x")


def parse_trtexec_batch(text):
    """The batch of the engine's input as trtexec set it up, or None."""
    found = _BINDING.search(text)
    return int(found.group(1)) if found else None


def trtexec_warmup_ms(warmup):
    """trtexec's --warmUp is a duration in milliseconds, not a number of runs."""
    return warmup * TRTEXEC_WARMUP_MS_PER_RUN


def run_trtexec(trtexec, engine_path, warmup, iterations, shapes=None):
    """(times in ms as parse_trtexec_times gives them, trtexec's output) of one timing run."""
    cmd = [trtexec, "--loadEngine={}".format(engine_path), "--iterations={}".format(iterations),
           "--warmUp={}".format(trtexec_warmup_ms(warmup)), "--duration=0"]
    if shapes:
        cmd.append("--shapes={}".format(shapes))
    print(" ".join(cmd))
    try:
        run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as err:  # not a program this machine can run (another architecture...)
        raise common.Failed("cannot run trtexec {}: {}".format(trtexec, err)) from None
    # bytes, not the locale's text: under LC_ALL=C, Python 3.6 decodes ASCII and a path's
    # accent in trtexec's output ended the script with a UnicodeDecodeError
    output = run.stdout.decode("utf-8", "replace")
    times = parse_trtexec_times(output)
    if run.returncode != 0 or times is None:
        why = "exit {}".format(run.returncode) if run.returncode else "no timing in its output"
        raise common.Failed("trtexec failed ({}): {} (its command is the line above)".format(
            why, common.trtexec_error(output)))
    return times, output


def time_with_trtexec(trtexec, engine_path, batch_sizes, warmup, iterations, input_shape=None,
                      given=None):
    """`input_shape`: (input name, "FxHxWxC") of a dynamic-batch engine, or None for a
    fixed-shape one, which trtexec runs at its own batch (read from trtexec's output)."""
    runs = []
    if input_shape is None:
        times, output = run_trtexec(trtexec, engine_path, warmup, iterations)
        batch = parse_trtexec_batch(output)
        if batch is None:
            raise common.Failed("trtexec did not say the engine's input dimensions, so its batch "
                                "is unknown: pass --clip-shape for a dynamic-batch engine")
        common.fixed_batch_sizes(engine_path, batch, batch_sizes, given, "the engine runs")
        runs.append((batch, times))
    else:
        for batch in batch_sizes:
            shapes = "{}:{}x{}".format(input_shape[0], batch, input_shape[1])
            times, output = run_trtexec(trtexec, engine_path, warmup, iterations, shapes)
            ran = parse_trtexec_batch(output)
            if ran is None or ran == batch:
                runs.append((batch, times))
                continue
            # TensorRT 8.2's trtexec ignores --shapes for a static engine and runs its own
            # batch: every other batch asked for would be this same run again.
            common.fixed_batch_sizes(engine_path, ran, batch_sizes, given, "the engine runs")
            runs = [(b, t) for b, t in runs if b == ran] or [(ran, times)]
            break
    results = []
    for batch, times in runs:
        result = common.summarize([times["median"] / 1000.0], batch)
        # One median from trtexec, not a list of latencies: the other statistics are its own.
        for key in ("min", "mean", "max"):
            result[key + "_ms"] = times[key]
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
        for flag, value in (("--trtexec", args.trtexec), ("--input-name", args.input_name),
                            ("--clip-shape", args.clip_shape)):
            if value is not None:
                raise common.Refused(
                    "{} is read by the trtexec backend only, and TensorRT's Python API runs this "
                    "time (it takes the engine's own input): drop {}, or pass --backend "
                    "trtexec".format(flag, flag))
        results = time_with_python_api(trt, args.engine, batch_sizes, args.warmup, args.iterations,
                                       args.batch_sizes)
        how = "TensorRT {} Python API (each call: the clips copied in, run, logits copied " \
              "out)".format(trt.__version__)
    else:
        clip_shape = args.clip_shape if args.clip_shape is not None else DEFAULT_CLIP_SHAPE
        shape = None
        if clip_shape.strip().lower() != "none":
            dims = [v.strip() for v in clip_shape.split(",")]
            if len(dims) != 4 or not all(v.isdigit() and int(v) > 0 for v in dims):
                raise common.Refused("--clip-shape must be frames,height,width,channels (positive "
                                     "integers) or 'none' for a fixed-shape engine. Received: "
                                     "{}".format(args.clip_shape))
            shape = (args.input_name or DEFAULT_INPUT_NAME, "x".join(dims))
        elif args.input_name is not None:
            raise common.Refused("--input-name is not read with --clip-shape none (trtexec runs "
                                 "the engine's input as it is): drop it")
        trtexec = common.find_trtexec(args.trtexec)
        if not trtexec:
            raise common.Missing("neither TensorRT's Python API nor trtexec is available "
                                 "(on JetPack: python3-libnvinfer, /usr/src/tensorrt/bin/trtexec).")
        results = time_with_trtexec(trtexec, args.engine, batch_sizes, args.warmup, args.iterations,
                                    shape, args.batch_sizes)
        how = "trtexec (median GPU compute time: the copies in and out not included)"
    common.print_results(results, "TensorRT {} via {}: clips/s = batch / median".format(
        os.path.basename(args.engine), how), args.json)
    return 0


if __name__ == "__main__":
    common.run_main(main)
