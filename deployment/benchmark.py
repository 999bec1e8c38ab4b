"""Keras inference and training speed of registry models (random weights).

    python deployment/benchmark.py --models=mobilenetv2_1.0x,shufflenetv2_1.0x --threads=2
    python deployment/benchmark.py --mode=train --models=mobilenetv2_0.2x --batch_sizes=8

Inference: median latency and clips/s of ``model(x, training=False)`` in a tf.function,
after warm-up, for the training form ("keras") and the BatchNorm-folded inference form
("keras-folded"). Training: clips/s of ``model.fit`` steps (forward, backward, SGD update)
on an in-memory batch, so that only the model is measured. Prints a table (the rows as
JSON with ``--json_out``); with
``--peers_json`` (rows of ``benchmark_pytorch.py`` measured on the same machine) the table
gains the original's PyTorch figure, the best of its peers (PyTorch, ONNX Runtime, OpenVINO)
and the speed-ups. TensorFlow's threads are set once for the process by
`keras_efficient3d.runtime.tf_thread_plan`: the depthwise models' plan when every timed model
is one (``--models=mobilenetv2_1.0x,shufflenetv2_1.0x``), else every thread per op.
"""

import importlib.util
import os
import sys
import time

from absl import flags


def load_standalone(name):
    """keras_efficient3d/<name>.py, a module of the standard library (and absl) only, loaded
    by its path: these scripts must not import the package at module level, since
    benchmark_pytorch.py runs in a PyTorch-only environment."""
    if f"keras_efficient3d.{name}" in sys.modules:
        return sys.modules[f"keras_efficient3d.{name}"]
    alias = f"_keras_efficient3d_{name}"
    if alias not in sys.modules:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "keras_efficient3d", f"{name}.py")
        spec = importlib.util.spec_from_file_location(alias, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[alias] = module
        spec.loader.exec_module(module)
    return sys.modules[alias]


def load_cli():
    """keras_efficient3d/cli.py, the project's flag vocabulary (`load_standalone`)."""
    return load_standalone("cli")


cli = load_cli()


def load_original():
    """deployment/benchmark_pytorch.py, whose functions build, export and time the original
    model for the scripts that time it beside ours."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import benchmark_pytorch
    finally:
        sys.path.pop(0)
    return benchmark_pytorch


def check_original(repo, models):
    """Refuses, before anything is timed, what would stop the original's timing part way: a
    `repo` that is not the original's checkout, a name of `models` it has no model for (found
    otherwise only once the names before it were timed), PyTorch missing here."""
    load_original().check_models(repo, models)
    if importlib.util.find_spec("torch") is None:
        raise cli.UsageError(f"--repo={repo}: timing the original model needs PyTorch in this "
                             "environment (pip install torch), or leave out --repo")
DEFAULT_MODELS = ["mobilenetv2_1.0x", "shufflenetv2_1.0x", "mobilenet_1.0x", "shufflenet_1.0x_g3",
                  "squeezenet_1.1", "resnet18_A"]


def define_timing_flags(flag_values, threads_note):
    """The flags this script shares with benchmark_pytorch.py (same names, same rows)."""
    fv = {"flag_values": flag_values}
    cli.define("models", DEFAULT_MODELS, **fv)
    flags.DEFINE_enum("mode", "inference", ["inference", "train"], "What to time.", **fv)
    cli.define("batch_sizes", [1, 8], **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    cli.define("num_classes", 600, **fv)
    cli.define("threads", 2, threads_note, **fv)
    cli.define("warmup", 3, **fv)
    cli.define("runs", 15, "(inference calls or training steps)", **fv)
    cli.define("json_out", None, "The rows.", **fv)


def define_flags(flag_values=flags.FLAGS):
    define_timing_flags(flag_values, "(TensorFlow's budget: runtime.tf_thread_plan)")
    flags.DEFINE_bool("folded", True, "Also time the BatchNorm-folded inference form.",
                      flag_values=flag_values)
    cli.define("peers_json", None, flag_values=flag_values)
    cli.define_alias("pytorch_json", "peers_json", flag_values=flag_values)


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def timed(step, warmup=3, runs=15):
    """Median seconds of `step()` over `runs` calls after `warmup` untimed ones.

    `keras_efficient3d.runtime.measure` times every Keras, LiteRT and ONNX Runtime model;
    this twin of its loop exists for benchmark_pytorch.py, which runs in a PyTorch-only
    environment where the package (and TensorFlow) cannot be imported."""
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

    from keras_efficient3d.runtime import measure, quiet_stderr

    x = tf.constant(np.random.default_rng(0).random((batch_size, frames, size, size, 3), np.float32))
    call = tf.function(lambda v: model(v, training=False))
    # The first call is when Grappler rewrites the graph; on a folded depthwise model TF's
    # oneDNN passes then log errors about nodes they made ("Relu6 has an empty op name",
    # "remapper failed") and go on with the same results (runtime._tensorflow_call).
    with quiet_stderr():
        call(x).numpy()
    return measure(lambda: call(x).numpy(), warmup, runs)["median_ms"] / 1000.0


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
    import tensorflow as tf

    from keras_efficient3d import registry
    from keras_efficient3d.fold import fold_batchnorm
    from keras_efficient3d.runtime import is_depthwise_model, set_tf_threads

    set_tf_threads(threads, all(is_depthwise_model(name) for name in models))
    # What TensorFlow runs with (0: its default), which a plan set too late is not.
    tf_threads = [tf.config.threading.get_intra_op_parallelism_threads(),
                  tf.config.threading.get_inter_op_parallelism_threads()]

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
                       "tf_threads": tf_threads,
                       "input": f"{frames}x{size}x{size}", "median_ms": 1000 * seconds,
                       "clips_per_s": batch / seconds}
                rows.append(row)
                if log:
                    log(f"{name:20s} {row['form']:13s} batch {batch:2d}: {row['median_ms']:8.1f} ms  "
                        f"{row['clips_per_s']:7.1f} clips/s")
    return rows


def add_reference(rows, pytorch_rows):
    """Adds ``pytorch_ms`` and ``speedup`` (PyTorch time / ours), and the best of every peer
    (``best_peer``, ``best_peer_ms``, ``speedup_vs_best``), to the rows that the original's
    rows (same model, mode, batch, threads and clip size) cover."""
    key = ("model", "mode", "batch_size", "threads", "input")
    index = {}
    for r in pytorch_rows:
        index.setdefault(tuple(r[k] for k in key), {})[r["form"]] = r["median_ms"]
    for row in rows:
        forms = index.get(tuple(row[k] for k in key), {})
        if "pytorch" in forms:
            row["pytorch_ms"], row["speedup"] = forms["pytorch"], forms["pytorch"] / row["median_ms"]
        if forms:
            best = min(forms, key=forms.get)
            row.update(best_peer=best, best_peer_ms=forms[best],
                       speedup_vs_best=forms[best] / row["median_ms"])
    return rows


def format_table(rows):
    lines = [f"{'model':20s} {'form':13s} {'batch':>5s} {'median ms':>10s} {'clips/s':>8s}"
             f" {'PyTorch ms':>10s} {'speed-up':>8s}  best peer"]
    for r in rows:
        ref = (f"{r['pytorch_ms']:10.1f} {r['speedup']:7.2f}x" if "pytorch_ms" in r
               else f"{'':10s} {'':8s}")
        best = (f"  {r['best_peer']} {r['best_peer_ms']:.1f} ms: {r['speedup_vs_best']:.2f}x"
                if "best_peer" in r else "")
        lines.append(f"{r['model']:20s} {r['form']:13s} {r['batch_size']:5d} "
                     f"{r['median_ms']:10.1f} {r['clips_per_s']:8.1f} {ref}{best}".rstrip())
    return "\n".join(lines)


def write_rows(rows, path=None):
    """Writes the rows as JSON to `path` when given (the table is what the screen shows),
    atomically: a run stopped while writing leaves the file of the run before whole."""
    if path:
        load_standalone("atomic").atomic_write_json(path, rows, indent=1)


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    from keras_efficient3d import registry

    for name in f.models:  # an unknown name is reported before anything is timed
        registry.resolve_name(name)
    reference = None
    if f.peers_json:  # checked before anything is timed
        from keras_efficient3d.deploy.benchmark import read_reference_rows
        reference = read_reference_rows(f.peers_json)
    rows = run(f.models, f.mode, f.batch_sizes, f.frames, f.size, f.num_classes, f.threads,
               f.warmup, f.runs, f.folded, log=lambda line: print(line, file=sys.stderr))
    if reference is not None:  # an empty file's rows too: the note says none matched
        add_reference(rows, reference)
        from keras_efficient3d.deploy.benchmark import note_unmatched_peers
        note_unmatched_peers(f.peers_json, any("best_peer" in row for row in rows),
                             f"{f.mode}, {f.threads} threads, batch "
                             f"{','.join(str(b) for b in f.batch_sizes)}, "
                             f"{f.frames}x{f.size}x{f.size} clips")
    print(format_table(rows))
    write_rows(rows, f.json_out)


if __name__ == "__main__":
    cli.run(main, define_flags)
