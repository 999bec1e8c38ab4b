#!/usr/bin/env python3
"""Times a SavedModel (TF-TRT converted by trt_convert.py, or plain) in clips/s.

    python3 tftrt_benchmark.py --saved-model mobilenetv2_trt_fp16 --batch-sizes 1,8 \
        --warmup 20 --iterations 100 --json mobilenetv2_tftrt.json

For each batch size: `--warmup` untimed calls, then `--iterations` timed calls (each ends
when the result is on the host); reports the median latency and clips/s = batch / median,
the paper's measure (Table 8 quotes batch 8). Needs a GPU unless --allow-cpu.
Python 3.6 compatible; TensorFlow and NumPy only.
"""

import argparse
import os
import time

import tx2_common as common


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saved-model", required=True)
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--batch-sizes", default=None, help="Default: 1,8.")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--json", default=None, help="Also write the results to this file.")
    parser.add_argument("--allow-cpu", action="store_true", help="Time on the CPU when there is no GPU.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    batch_sizes = common.parse_batch_sizes(args.batch_sizes)
    if args.warmup < 0 or args.iterations < 1:
        raise common.Refused("--warmup must be >= 0 and --iterations >= 1.")
    common.check_saved_model(args.saved_model)
    common.check_output_file(args.json, "--json")
    common.quiet_tensorflow()
    try:
        import numpy as np  # pylint: disable=import-outside-toplevel
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise common.Missing("{} (on JetPack: NVIDIA's tensorflow wheel).".format(err)) from None
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.allow_cpu:
        raise common.Missing("no GPU visible to TensorFlow (use --allow-cpu to time on the CPU).")

    loaded = common.load_saved_model(tf, args.saved_model)
    if args.signature not in loaded.signatures:
        raise common.Refused("the SavedModel has no signature '{}' (it has: {}).".format(
            args.signature, ", ".join(sorted(loaded.signatures))))
    fn = loaded.signatures[args.signature]
    (key, spec), = fn.structured_input_signature[1].items()
    shape = tuple(spec.shape.as_list())
    batch_sizes = common.fixed_batch_sizes(
        "signature {} of {}".format(args.signature, args.saved_model), shape[0], batch_sizes,
        args.batch_sizes, "this script times")

    results = []
    rng = np.random.RandomState(0)
    for batch in batch_sizes:
        clips = tf.constant(rng.standard_normal((batch,) + shape[1:]).astype(np.float32))
        latencies = []
        for i in range(args.warmup + args.iterations):
            start = time.perf_counter()
            outputs = fn(**{key: clips})
            for value in outputs.values():
                value.numpy()
            if i >= args.warmup:
                latencies.append(time.perf_counter() - start)
        results.append(common.summarize(latencies, batch))
    device = "GPU" if gpus else "CPU"
    common.print_results(results, "TF-TRT/TensorFlow ({}) {}: {}".format(
        device, os.path.basename(os.path.normpath(args.saved_model)), "clips/s = batch / median"),
        args.json)
    return 0


if __name__ == "__main__":
    common.run_main(main)
