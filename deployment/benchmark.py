"""Keras inference and training speed of registry models (random weights).

    python deployment/benchmark.py --models=mobilenetv2_1.0x,shufflenetv2_1.0x --threads=2
    python deployment/benchmark.py --mode=train --models=mobilenetv2_0.2x --batch_sizes=8

Inference: median latency and clips/s of ``model(x, training=False)`` in a tf.function,
after warm-up, for the training form ("keras") and the BatchNorm-folded inference form
("keras-folded"). Training: clips/s of ``model.fit`` steps (forward, backward, SGD update)
on in-memory batches, so that only the model is measured. Prints a table and JSON.
"""

import json
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
DEFAULT_MODELS = ("mobilenetv2_1.0x,shufflenetv2_1.0x,mobilenet_1.0x,shufflenet_1.0x_g3,"
                  "squeezenet_1.1,resnet18_A")


def define_flags():
    flags.DEFINE_list("models", DEFAULT_MODELS.split(","), "Registry/configuration names.")
    flags.DEFINE_enum("mode", "inference", ["inference", "train"], "What to time.")
    flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
    flags.DEFINE_integer("frames", 16, "Frames per clip.")
    flags.DEFINE_integer("size", 112, "Frame size.")
    flags.DEFINE_integer("num_classes", 600, "Classes of the head.")
    flags.DEFINE_integer("threads", 2, "TensorFlow intra-op threads (0: TensorFlow's default).")
    flags.DEFINE_integer("warmup", 3, "Untimed runs first.")
    flags.DEFINE_integer("runs", 15, "Timed runs (inference) or steps (train).")
    flags.DEFINE_bool("folded", True, "Also time the BatchNorm-folded inference form.")
    flags.DEFINE_string("json_out", None, "Also write the JSON rows to this file.")


def set_threads(threads):
    import keras_efficient3d  # noqa: F401  (first: it sets TensorFlow's CPU options)
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def time_inference(model, batch_size, frames, size, warmup=3, runs=15):
    """Median seconds per call of the model on one random batch."""
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).random((batch_size, frames, size, size, 3), np.float32))
    call = tf.function(lambda v: model(v, training=False))
    for _ in range(warmup):
        call(x).numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(x).numpy()
        times.append(time.perf_counter() - start)
    return _median(times)


def time_training(model, batch_size, frames, size, num_classes, warmup=3, runs=15):
    """Median seconds per ``train_on_batch`` step (forward, backward, SGD update)."""
    import keras
    import numpy as np

    from keras_efficient3d.optim import TorchSGD

    rng = np.random.default_rng(0)
    x = rng.random((batch_size, frames, size, size, 3), np.float32)
    y = rng.integers(0, num_classes, batch_size)
    model.compile(optimizer=TorchSGD(0.01, momentum=0.9, dampening=0.9, l2_weight_decay=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return _median(times)


def run(models, mode="inference", batch_sizes=(1, 8), frames=16, size=112, num_classes=600,
        threads=2, warmup=3, runs=15, folded=True, log=print):
    """Times each model; returns JSON-serialisable rows."""
    set_threads(threads)
    from keras_efficient3d import registry
    from keras_efficient3d.inference import fold_batchnorm

    rows = []
    for name in models:
        model = registry.create_model(name, num_classes=num_classes,
                                      input_shape=(frames, size, size, 3))
        forms = [("keras", model)]
        if mode == "inference" and folded:
            forms.append(("keras-folded", fold_batchnorm(model)))
        for form, net in forms:
            for batch in batch_sizes:
                if mode == "inference":
                    seconds = time_inference(net, batch, frames, size, warmup, runs)
                else:
                    seconds = time_training(net, batch, frames, size, num_classes, warmup, runs)
                row = {"model": name, "form": form if mode == "inference" else "keras-fit",
                       "mode": mode, "batch_size": batch, "threads": threads,
                       "input": f"{frames}x{size}x{size}", "median_ms": 1000 * seconds,
                       "clips_per_s": batch / seconds}
                rows.append(row)
                log(f"{name:20s} {row['form']:13s} batch {batch:2d}: {row['median_ms']:8.1f} ms  "
                    f"{row['clips_per_s']:7.1f} clips/s")
    return rows


def format_table(rows):
    lines = [f"{'model':20s} {'form':13s} {'batch':>5s} {'median ms':>10s} {'clips/s':>8s}"]
    for r in rows:
        lines.append(f"{r['model']:20s} {r['form']:13s} {r['batch_size']:5d} "
                     f"{r['median_ms']:10.1f} {r['clips_per_s']:8.1f}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        batch_sizes = [int(b) for b in FLAGS.batch_sizes]
        rows = run(FLAGS.models, FLAGS.mode, batch_sizes, FLAGS.frames, FLAGS.size,
                   FLAGS.num_classes, FLAGS.threads, FLAGS.warmup, FLAGS.runs, FLAGS.folded,
                   log=lambda line: print(line, file=sys.stderr))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print(json.dumps(rows, indent=1))
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
