"""Times TFLite models (LiteRT + XNNPACK, batch 1): latency and clips/s per model, precision
and thread count; writes JSON and a Markdown table.

    python deployment/benchmark_tflite.py --output results/tflite_timing.json
    python deployment/benchmark_tflite.py --models mobilenetv2_1.0x --precisions fp32,int8 --threads 2
    python deployment/benchmark_tflite.py --pytorch_json pytorch.json   # from benchmark_pytorch.py
"""

import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
DEFAULT_MODELS = "mobilenetv2_1.0x,shufflenetv2_1.0x,mobilenet_1.0x,shufflenet_1.0x_g3,squeezenet_1.1"


def define_flags():
    flags.DEFINE_string("models", DEFAULT_MODELS, "Comma-separated registry names.")
    flags.DEFINE_string("precisions", "fp32,fp16,dynamic,int8", "Comma-separated precisions.")
    flags.DEFINE_string("threads", "1,2,4", "Comma-separated thread counts.")
    flags.DEFINE_integer("frames", 16, "Clip length.")
    flags.DEFINE_integer("size", 112, "Clip height and width.")
    flags.DEFINE_integer("num_classes", 600, "Classifier size.")
    flags.DEFINE_integer("runs", 30, "Timed invokes per setting.")
    flags.DEFINE_integer("warmup", 5, "Untimed invokes first.")
    flags.DEFINE_string("output", "tflite_timing.json", "JSON output; the table goes next to it (.md).")
    flags.DEFINE_string("pytorch_json", None, "benchmark_pytorch.py rows measured on this "
                        "machine: adds the PyTorch latency and the speed-up at 2 threads.")


def main(argv):
    del argv
    from keras_efficient3d.deploy.benchmark import benchmark_models, format_table, load_reference

    try:
        reference = (load_reference(FLAGS.pytorch_json, input_shape=(FLAGS.frames, FLAGS.size, FLAGS.size))
                     if FLAGS.pytorch_json else None)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = benchmark_models(
        FLAGS.models.split(","), FLAGS.precisions.split(","),
        [int(t) for t in FLAGS.threads.split(",")], (FLAGS.frames, FLAGS.size, FLAGS.size, 3),
        FLAGS.num_classes, FLAGS.warmup, FLAGS.runs, reference=reference)
    table = format_table(rows)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=2)
    with open(os.path.splitext(FLAGS.output)[0] + ".md", "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    print(table)


if __name__ == "__main__":
    define_flags()
    app.run(main)
