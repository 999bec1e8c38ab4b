"""Keras inference and training speed of registry models (random weights).

    python deployment/benchmark.py --models=mobilenetv2_1.0x,shufflenetv2_1.0x --threads=2
    python deployment/benchmark.py --mode=train --models=mobilenetv2_0.2x --batch_sizes=8

Inference: median latency and clips/s of ``model(x, training=False)`` in a tf.function,
after warm-up, for the training form ("keras") and the BatchNorm-folded inference form
("keras-folded"). Training: clips/s of ``model.fit`` steps (forward, backward, SGD update)
on an in-memory batch, so that only the model is measured. Prints a table and JSON; with
``--pytorch_json`` (rows of ``benchmark_pytorch.py`` measured on the same machine) the table
gains the original's figure and the speed-up.
"""

import json
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
DEFAULT_MODELS = ("mobilenetv2_1.0x,shufflenetv2_1.0x,mobilenet_1.0x,shufflenet_1.0x_g3,"
                  "squeezenet_1.1,resnet18_A")


def define_timing_flags(threads_help):
    """The flags this script shares with benchmark_pytorch.py (same names, same rows)."""
    flags.DEFINE_list("models", DEFAULT_MODELS.split(","), "Registry/configuration names.")
    flags.DEFINE_enum("mode", "inference", ["inference", "train"], "What to time.")
    flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
    flags.DEFINE_integer("frames", 16, "Frames per clip.")
    flags.DEFINE_integer("size", 112, "Frame size.")
    flags.DEFINE_integer("num_classes", 600, "Classes of the head.")
    flags.DEFINE_integer("threads", 2, threads_help)
    flags.DEFINE_integer("warmup", 3, "Untimed runs first.")
    flags.DEFINE_integer("runs", 15, "Timed runs (inference) or steps (train).")
    flags.DEFINE_string("json_out", None, "Also write the JSON rows to this file.")


def define_flags():
    define_timing_flags("TensorFlow intra-op threads (0: TensorFlow's default).")
    flags.DEFINE_bool("folded", True, "Also time the BatchNorm-folded inference form.")
    flags.DEFINE_string("pytorch_json", None, "benchmark_pytorch.py rows of this machine, to "
                        "compare with.")


def set_threads(threads):
    import keras_efficient3d  # noqa: F401  (first: it sets TensorFlow's CPU options)
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def timed(step, warmup=3, runs=15):
    """Median seconds of `step()` over `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return median(times)


def time_inference(model, batch_size, frames, size, warmup=3, runs=15):
    """Median seconds per call of the model on one random batch."""
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).random((batch_size, frames, size, size, 3), np.float32))
    call = tf.function(lambda v: model(v, training=False))
    return timed(lambda: call(x).numpy(), warmup, runs)


def time_training(model, batch_size, frames, size, num_classes, warmup=3, runs=15):
    """Median seconds per training step of ``model.fit`` (forward, backward, the original's
    SGD update) on one in-memory batch repeated, so that only the model is measured."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_efficient3d.optim import TorchSGD

    rng = np.random.default_rng(0)
    x = rng.random((batch_size, frames, size, size, 3), np.float32)
    y = rng.integers(0, num_classes, batch_size)
    model.compile(optimizer=TorchSGD(0.01, momentum=0.9, dampening=0.9, l2_weight_decay=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    class StepTimes(keras.callbacks.Callback):
        times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    data = tf.data.Dataset.from_tensors((x, y)).repeat(warmup + runs)
    model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[StepTimes()])
    return median(StepTimes.times[warmup:])


def run(models, mode="inference", batch_sizes=(1, 8), frames=16, size=112, num_classes=600,
        threads=2, warmup=3, runs=15, folded=True, log=print):
    """Times each model; returns JSON-serialisable rows."""
    set_threads(threads)
    from keras_efficient3d import registry
    from keras_efficient3d.fold import fold_batchnorm

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
                if log:
                    log(f"{name:20s} {row['form']:13s} batch {batch:2d}: {row['median_ms']:8.1f} ms  "
                        f"{row['clips_per_s']:7.1f} clips/s")
    return rows


def add_reference(rows, pytorch_rows):
    """Adds ``pytorch_ms`` and ``speedup`` (PyTorch time / ours) to the rows that the
    original's rows (same model, mode, batch, threads and clip size) cover."""
    key = ("model", "mode", "batch_size", "threads", "input")
    index = {tuple(r[k] for k in key): r["median_ms"] for r in pytorch_rows}
    for row in rows:
        ref = index.get(tuple(row[k] for k in key))
        if ref is not None:
            row["pytorch_ms"], row["speedup"] = ref, ref / row["median_ms"]
    return rows


def format_table(rows):
    lines = [f"{'model':20s} {'form':13s} {'batch':>5s} {'median ms':>10s} {'clips/s':>8s}"
             f" {'PyTorch ms':>10s} {'speed-up':>8s}"]
    for r in rows:
        ref = (f"{r['pytorch_ms']:10.1f} {r['speedup']:7.2f}x" if "pytorch_ms" in r
               else f"{'':10s} {'':8s}")
        lines.append(f"{r['model']:20s} {r['form']:13s} {r['batch_size']:5d} "
                     f"{r['median_ms']:10.1f} {r['clips_per_s']:8.1f} {ref}")
    return "\n".join(lines)


def write_rows(rows, path=None):
    """Prints the rows as JSON and writes them to `path` too when given."""
    print(json.dumps(rows, indent=1))
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        batch_sizes = [int(b) for b in FLAGS.batch_sizes]
        reference = None
        if FLAGS.pytorch_json:  # checked before anything is timed
            from keras_efficient3d.deploy.benchmark import read_reference_rows
            reference = read_reference_rows(FLAGS.pytorch_json)
        rows = run(FLAGS.models, FLAGS.mode, batch_sizes, FLAGS.frames, FLAGS.size,
                   FLAGS.num_classes, FLAGS.threads, FLAGS.warmup, FLAGS.runs, FLAGS.folded,
                   log=lambda line: print(line, file=sys.stderr))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if reference:
        add_reference(rows, reference)
    print(format_table(rows))
    write_rows(rows, FLAGS.json_out)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
