"""Inference and training speed of the models on Keras' TensorFlow, JAX and PyTorch backends.

    python deployment/benchmark_backends.py --models=mobilenetv2_1.0x,shufflenetv2_1.0x \
        --backends=tensorflow,jax,torch --rounds=5 --threads=2

One worker process per (backend, model, mode) is started and warmed up (tracing, XLA
compilation); then the rounds interleave them (A, B, C, A, B, C...) so that a load change on
the machine hits every backend alike, and each prints the median over rounds. Inference is
``model.predict_on_batch`` at batch 1 (the backend's compiled predict step: a tf.function,
a jax.jit, PyTorch eager under no_grad); training ``model.train_on_batch`` (SGD, momentum
0.9) at ``--train_batch``. Input 16x112x112 by default. The original PyTorch code is timed
by ``benchmark_pytorch.py`` the same way.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_list("models", ["mobilenetv2_1.0x", "shufflenetv2_1.0x"], "Registry names.")
flags.DEFINE_list("backends", ["tensorflow", "jax", "torch"], "Keras backends.")
flags.DEFINE_list("modes", ["inference", "train"], "inference and/or train.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
flags.DEFINE_integer("steps", 5, "Calls per round.")
flags.DEFINE_integer("train_batch", 4, "Clips per training step.")
flags.DEFINE_integer("threads", 2, "Threads of each backend.")
flags.DEFINE_integer("frames", 16, "Frames per clip.")
flags.DEFINE_integer("size", 112, "Frame size.")
flags.DEFINE_string("output", None, "Optional JSON file of the results.")
FLAGS = flags.FLAGS

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _thread_env(backend, threads):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS="1", TF_NUM_INTRAOP_THREADS=str(threads),
               XLA_FLAGS=f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}",
               PYTHONPATH=os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")]))
    return env


def worker(model_name, mode, frames, size, train_batch, threads):
    """Runs in the worker process: builds, warms up, then answers 'N' lines with the
    seconds of N calls."""
    import keras
    import numpy as np

    import keras_efficient3d as k3

    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    model = k3.create_model(model_name, input_shape=(frames, size, size, 3), num_classes=27)
    rng = np.random.default_rng(0)
    if mode == "inference":
        x = rng.normal(size=(1, frames, size, size, 3)).astype(np.float32)

        def step():
            model.predict_on_batch(x)
    else:
        x = rng.normal(size=(train_batch, frames, size, size, 3)).astype(np.float32)
        y = rng.integers(0, 27, train_batch)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

        def step():
            model.train_on_batch(x, y)
    for _ in range(3):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        start = time.perf_counter()
        for _ in range(n):
            step()
        print(time.perf_counter() - start, flush=True)


def main(argv):
    del argv
    jobs = {}
    for model in FLAGS.models:
        for mode in FLAGS.modes:
            for backend in FLAGS.backends:
                args = [sys.executable, os.path.abspath(__file__), "--worker", model, mode,
                        str(FLAGS.frames), str(FLAGS.size), str(FLAGS.train_batch),
                        str(FLAGS.threads)]
                # One at a time: warm-up (XLA compilation) of one does not slow another's.
                proc = subprocess.Popen(args, env=_thread_env(backend, FLAGS.threads),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                while proc.stdout.readline().strip() != "ready":
                    if proc.poll() is not None:
                        raise SystemExit(f"benchmark_backends: error: the {backend} worker for "
                                         f"{model} {mode} failed (exit {proc.returncode}).")
                jobs[(model, mode, backend)] = (proc, [])
    for _ in range(FLAGS.rounds):
        for proc, times in jobs.values():
            proc.stdin.write(f"{FLAGS.steps}\n")
            proc.stdin.flush()
            times.append(float(proc.stdout.readline()) / FLAGS.steps)
    rows = []
    for (model, mode, backend), (proc, times) in jobs.items():
        proc.stdin.close()
        proc.wait()
        median = sorted(times)[len(times) // 2]
        clips = 1 if mode == "inference" else FLAGS.train_batch
        rows.append({"model": model, "mode": mode, "backend": backend,
                     "ms_per_step": round(1000 * median, 1),
                     "clips_per_s": round(clips / median, 2)})
    print(f"{'model':20} {'mode':10} {'backend':11} {'ms/step':>9} {'clips/s':>8}")
    for r in rows:
        print(f"{r['model']:20} {r['mode']:10} {r['backend']:11} {r['ms_per_step']:9.1f} "
              f"{r['clips_per_s']:8.2f}")
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], *(int(v) for v in sys.argv[4:8]))
    else:
        app.run(main)
