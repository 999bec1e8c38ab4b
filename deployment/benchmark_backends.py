r"""Inference and training speed of the models on Keras' TensorFlow, JAX and PyTorch backends,
against the original PyTorch code, in the same interleaved rounds.

    git clone https://github.com/okankop/Efficient-3DCNNs /tmp/Efficient-3DCNNs
    python deployment/benchmark_backends.py --repo=/tmp/Efficient-3DCNNs \
        --models=mobilenetv2_1.0x,shufflenetv2_1.0x --rounds=5 --json_out=backends.json
    python deployment/benchmark_backends.py --backends=jax,torch --modes=train   # ours only

One worker process per (model, mode, runtime) is started and warmed up (tracing, XLA
compilation) one at a time; then the rounds interleave them (A, B, C, A, B, C...) so that a
load change on the machine hits every runtime alike; each row gives the median over the
rounds and their min-max. Inference is the package's inference runtime at batch 1
(`runtime.KerasRunner`, what ``keras_efficient3d.predict`` runs: BatchNorm folded, compiled the
backend's way: a tf.function, a jax.jit, a frozen TorchScript trace); ``predict`` (not in the
default modes) is Keras' own ``model.predict_on_batch`` (no folding; PyTorch runs it eagerly;
compared with the original's inference row);
training is ``model.fit`` on ``--train_batch`` clips per step (SGD, momentum 0.9), ``--train_steps``
steps per call, timed (``--train_timing=steps``, the default) from fit's ``on_train_begin`` to
its ``on_train_end``: the steps and the epoch's data iterator, as over a long epoch, not fit's
conversion of the arrays before them nor the release of the iterator after them, where
TensorFlow waited on tf.data's autotuning for 0-2 s at random after an 8-step call (0.4 s of
MobileNetV2's step, as much as the step itself); ``--train_timing=fit`` times the whole call
(the result files before this option). With ``--repo`` (and PyTorch installed) the original model (built by
``benchmark_pytorch.py``'s functions from that checkout) is timed in the same rounds:
``model(x)`` under no_grad, and a forward, backward and SGD step of its own optimizer, and
each row says how many times faster than it ours is (``vs_original``). ``--json_out``
gets the rows, and the Markdown table beside it (.md).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

from keras_efficient3d import allocators, cli

# isort: split
# deployment/benchmark.py, beside this; imported after the package's cli, which it then
# shares (loaded first, it would load a copy of cli.py of its own)
from benchmark import check_original, load_original

BACKENDS = ("tensorflow", "jax", "torch")
MODES = ("inference", "train")
ALL_MODES = MODES + ("predict",)
TRAIN_TIMINGS = ("steps", "fit")
ORIGINAL = "original-pytorch"  # the runtime label of the original code's rows
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)


def define_flags(flag_values=flags.FLAGS):
    fv = {"flag_values": flag_values}
    cli.define("models", ["mobilenetv2_1.0x", "shufflenetv2_1.0x"], **fv)
    flags.DEFINE_list("backends", list(BACKENDS),
                      f"Keras backends, comma-separated ({', '.join(BACKENDS)}).", **fv)
    flags.register_validator("backends", cli.each_of(BACKENDS), **fv)
    flags.DEFINE_list("modes", list(MODES), "inference (the package's runtime), train "
                      "(model.fit) and/or predict (model.predict_on_batch).", **fv)
    flags.register_validator("modes", cli.each_of(ALL_MODES), **fv)
    flags.DEFINE_string("repo", None, "A checkout of the original Efficient-3DCNNs code: times "
                        "the original model in PyTorch in the same rounds.", **fv)
    flags.register_validator("repo", cli.existing_folder, **fv)
    cli.define("rounds", 5, **fv)
    cli.define("warmup", 3, "(per worker, before the rounds)", **fv)
    cli.define("runs", 3, "(inference calls per worker and round)", **fv)
    flags.DEFINE_integer("train_steps", 8, "Training steps per worker and round: one model.fit "
                         "call, whose own setup (10-30 ms: data adapter, callbacks) is then "
                         "spread as over an epoch.", lower_bound=1, **fv)
    flags.DEFINE_integer("train_batch", 4, "Clips per training step.", lower_bound=1, **fv)
    flags.DEFINE_enum("train_timing", "steps", TRAIN_TIMINGS, "steps: a fit call from its "
                      "on_train_begin to its on_train_end (the steps and the epoch's iterator); "
                      "fit: the whole call, with its conversion of the arrays and the release "
                      "of its iterator.", **fv)
    cli.define("threads", 2, "(at least 1: every runtime at the same count)", **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    cli.define("num_classes", 27, **fv)
    cli.define("json_out", None, **fv)
    flags.DEFINE_string("allocator", "auto", "Memory allocator of our workers, as "
                        "training/train.py's --allocator (auto: on JAX tcmalloc, else jemalloc, "
                        "else mimalloc, on PyTorch mimalloc, where installed); the original runs "
                        "under glibc's, as its users run it.", **fv)
    flags.register_validator("allocator", allocators.check, **fv)


def _worker_env(backend, threads):
    threads = str(threads)
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
                OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                # the user's flags kept; XLA has no thread-count flag (the bare word this
                # set was ignored): a JAX worker is held to `threads` CPUs (`_limit_cpus`)
                XLA_FLAGS=" ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                 "--xla_cpu_multi_thread_eigen=true"])),
                PYTHONPATH=os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")]))


def keras_step(name, mode, input_shape, num_classes, train_batch, runs, threads,
               train_timing="steps"):
    """A call of the registry model `name` on the current Keras backend: `runs` calls at
    batch 1 of the package's runtime (inference) or of ``model.predict_on_batch`` (predict),
    or `model.fit` over `runs` steps of `train_batch` random clips, which returns its
    seconds from fit's ``on_train_begin`` to ``on_train_end`` (`train_timing` "steps"; the
    module docstring) or None (the caller times the whole call)."""
    import keras
    import numpy as np

    import keras_efficient3d as k3
    from keras_efficient3d.runtime import KerasRunner, is_depthwise_model, set_keras_threads

    set_keras_threads(threads, is_depthwise_model(name))  # as the runtime does for users
    model = k3.create_model(name, input_shape=input_shape, num_classes=num_classes)
    rng = np.random.default_rng(0)
    if mode == "inference":
        one, _ = KerasRunner(model, threads=threads).timing_step()

        def step():
            for _ in range(runs):
                one()
        return step
    if mode == "predict":
        x = rng.normal(size=(1,) + tuple(input_shape)).astype(np.float32)

        def step():
            for _ in range(runs):
                model.predict_on_batch(x)
        return step
    x = rng.normal(size=(train_batch * runs,) + tuple(input_shape)).astype(np.float32)
    y = rng.integers(0, num_classes, len(x))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Span(keras.callbacks.Callback):
        # Train-level hooks only: a batch-level one makes Keras' JAX loop wait on each step.
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.start

    span = Span()

    def step():
        model.fit(x, y, batch_size=train_batch, epochs=1, shuffle=False, verbose=0,
                  callbacks=[span])
        return span.seconds if train_timing == "steps" else None
    return step


def original_step(repo, name, mode, input_shape, num_classes, train_batch, runs, threads):
    """The same call of the original model (`benchmark_pytorch.original_step`)."""
    import torch

    original = load_original()
    torch.set_num_threads(threads)
    frames, size = input_shape[0], input_shape[1]
    model = original.build(repo, name, num_classes, frames, size)
    mode = _peer_mode(mode)
    batch = 1 if mode == "inference" else train_batch
    one, _ = original.original_step(model, mode, batch, frames, size, num_classes)

    def step():
        for _ in range(runs):
            one()
    return step


def _limit_cpus(threads):
    """Holds this process to its first `threads` CPUs, before JAX starts: XLA sizes its
    thread pool by the CPUs it may run on and takes no count of its own."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:max(1, int(threads))])


def worker(argv):
    """The worker process: builds its step, warms it up, prints 'ready', then answers each
    line of stdin with the seconds of one step (a call of `runs` inference calls or
    training steps): the seconds the step returns, else its wall time."""
    runtime, repo, name, mode, timing = argv[:5]
    preload = os.environ.get(allocators.ENV_MARKER)
    if preload and not allocators.loaded(preload):
        raise RuntimeError(f"{preload} was not preloaded (the dynamic linker refused it)")
    frames, size, num_classes, train_batch, runs, warmup, threads = (int(v) for v in argv[5:])
    if runtime == "jax":
        _limit_cpus(threads)
    shape = (frames, size, size, 3)
    if runtime == ORIGINAL:
        step = original_step(repo, name, mode, shape, num_classes, train_batch, runs, threads)
    else:
        step = keras_step(name, mode, shape, num_classes, train_batch, runs, threads, timing)
    for _ in range(max(1, warmup)):
        step()
    print("ready", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        seconds = step()
        print(time.perf_counter() - start if seconds is None else seconds, flush=True)


def _start(runtime, repo, name, mode, settings, threads, train_timing="steps", allocator=None):
    """Starts and warms up one worker (under `allocator`, a ``(name, path)`` of
    `allocators.resolve`, or None); returns the process. Its stderr goes to a temporary
    file (a pipe nobody reads during the rounds would fill up with the runtimes' logs and
    stall the worker), read back only to say why a worker failed."""
    args = [sys.executable, os.path.abspath(__file__), "--worker", runtime, repo or "", name,
            mode, train_timing] + [str(v) for v in settings]
    env = _worker_env("torch" if runtime == ORIGINAL else runtime, threads)
    if allocator:
        env = allocators.preload_env(*allocator, env)
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log, text=True)
    proc.log, proc.label = log, f"the {runtime} worker for {name} ({mode})"
    try:
        _answer(proc, lambda line: line == "ready")
    except BaseException:
        # Ctrl-C (or another worker's failure) during its warm-up: not among the jobs the
        # caller stops yet, it went on compiling for minutes after the script had ended
        proc.kill()
        proc.wait()
        raise
    return proc


def _answer(proc, accept):
    """The worker's next line that `accept` takes (other lines, anything a library prints,
    are skipped); a worker that ended first raises RuntimeError with the last line of its
    stderr."""
    for line in iter(proc.stdout.readline, ""):
        if accept(line.strip()):
            return line.strip()
    proc.wait()
    proc.log.seek(0)
    last = [t for t in proc.log.read().splitlines() if t.strip()][-1:] or ["no output"]
    raise RuntimeError(f"{proc.label} failed: {last[0]}")


def _seconds(line):
    try:
        return float(line) >= 0
    except ValueError:
        return False


def _peer_mode(mode):
    """The original's mode that a mode of ours is compared with."""
    return "inference" if mode == "predict" else mode


def run_backends(models, backends=BACKENDS, modes=MODES, repo=None, rounds=5, warmup=3,
                 runs=3, train_batch=4, threads=2, frames=16, size=112, num_classes=27,
                 log=print, train_steps=8, train_timing="steps", allocator="auto"):
    """Times every (model, mode, runtime) of `backends` (and the original, with `repo`) in
    interleaved rounds; returns one row each: model, mode, runtime, batch, median ms per
    inference call or training step, min and max over the rounds, clips/s and, with
    `repo`, ``vs_original`` (the original's median / ours); training rows say how they were
    timed (`train_timing`, the module docstring). Our workers run under `allocator`
    (`allocators.resolve` per backend: the allocator training/train.py would choose); the
    rows name it (``allocator``: its name, or ``glibc``)."""
    if rounds < 1:
        raise ValueError(f"`rounds` must be >= 1. Received: rounds={rounds}")
    if train_timing not in TRAIN_TIMINGS:
        raise ValueError(f"`train_timing` must be one of {TRAIN_TIMINGS}. "
                         f"Received: train_timing={train_timing!r}")
    runtimes = list(backends) + ([ORIGINAL] if repo else [])
    preloads = {rt: allocators.resolve(allocator, rt) for rt in backends}
    jobs = {}
    try:
        for name in models:
            for mode in modes:
                for runtime in runtimes:
                    if runtime == ORIGINAL and mode == "predict" and "inference" in modes:
                        continue  # the original's call is the same as at inference
                    # One warm-up at a time: one's XLA compilation does not slow another's.
                    if log:
                        log(f"warming up {runtime} {name} {mode}")
                    calls = train_steps if mode == "train" else runs
                    settings = (frames, size, num_classes, train_batch, calls, warmup, threads)
                    jobs[(name, mode, runtime)] = (
                        _start(runtime, repo, name, mode, settings, threads, train_timing,
                               preloads.get(runtime)),
                        [], calls)
        for _ in range(rounds):
            for proc, times, calls in jobs.values():
                proc.stdin.write("1\n")
                proc.stdin.flush()
                times.append(float(_answer(proc, _seconds)) / calls)
    finally:
        for proc, _, _ in jobs.values():
            proc.kill()
            proc.wait()
            proc.log.close()
    from keras_efficient3d.runtime import is_depthwise_model, tf_thread_plan

    rows = []
    for (name, mode, runtime), (_, times, _) in jobs.items():
        median = statistics.median(times)  # of an even count of rounds, the mean of the middle two
        batch = train_batch if mode == "train" else 1
        rows.append({"model": name, "mode": mode, "runtime": runtime, "batch_size": batch,
                     "threads": threads, "input": f"{frames}x{size}x{size}",
                     "median_ms": 1000 * median, "min_ms": 1000 * min(times),
                     "max_ms": 1000 * max(times), "clips_per_s": batch / median,
                     "allocator": (preloads.get(runtime) or ("glibc",))[0]})
        if mode == "train":
            rows[-1]["train_timing"] = train_timing if runtime != ORIGINAL else "steps"
        if runtime == "tensorflow":  # the worker's (intra-op, inter-op) pair
            rows[-1]["tf_threads"] = list(tf_thread_plan(threads, is_depthwise_model(name)) or (0, 0))
    originals = {(r["model"], _peer_mode(r["mode"])): r["median_ms"] for r in rows
                 if r["runtime"] == ORIGINAL}
    for row in rows:
        key = (row["model"], _peer_mode(row["mode"]))
        if row["runtime"] != ORIGINAL and key in originals:
            row["vs_original"] = originals[key] / row["median_ms"]
    return rows


def format_backends(rows):
    """The rows as a Markdown table."""
    lines = ["| model | mode | runtime | batch | ms (min-max) | clips/s | vs original |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['vs_original']:.2f}x" if "vs_original" in r else "-"
        runtime = r["runtime"] + (f" ({r['allocator']})" if r.get("allocator", "glibc") != "glibc" else "")
        lines.append(f"| {r['model']} | {r['mode']} | {runtime} | {r['batch_size']} | "
                     f"{r['median_ms']:.1f} ({r['min_ms']:.1f}-{r['max_ms']:.1f}) | "
                     f"{r['clips_per_s']:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv, flag_values=flags.FLAGS):
    del argv

    from keras_efficient3d import registry
    from keras_efficient3d.deploy.benchmark import write_report

    f = flag_values
    for name in f.models:  # an unknown name is reported before anything starts
        registry.resolve_name(name)
    if f.threads < 1:  # a worker's OMP_NUM_THREADS=0 and torch.set_num_threads(0) are errors
        raise cli.UsageError(f"--threads={f.threads}: every runtime is timed at the same "
                             "thread count, at least 1")
    if f.repo:  # the original's worker would fail only after ours had warmed up
        check_original(f.repo, f.models)
    rows = run_backends(f.models, f.backends, f.modes, f.repo, f.rounds, f.warmup, f.runs,
                        f.train_batch, f.threads, f.frames, f.size, f.num_classes,
                        log=lambda line: print(line, file=sys.stderr), train_steps=f.train_steps,
                        train_timing=f.train_timing, allocator=f.allocator)
    write_report(rows, format_backends(rows), f.json_out)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        cli.run(main, define_flags)
