"""Times this checkout against an earlier commit, interleaved in the same run: the check that
a change made no model slower.

    python deployment/compare_commits.py --base=HEAD~1 --rounds=2 --json_out=/tmp/ab.json
    python deployment/compare_commits.py --base=e953038 --models=mobilenet_1.0x --what=keras

`--base` is checked out into a temporary git worktree; each round runs one timing process
per tree (the order alternates between rounds, since this machine's speed drifts), and the
table gives the best and median of each form over the rounds. Forms: `keras` (the training
form and the BatchNorm-folded form, batch 1, in a tf.function), `tflite` (fp32 and int8 by
the deployment graph, XNNPACK), `train` (a `train_on_batch` step, batch 8). The timing
process uses only names that every commit of the project has had since the deployment
graph existed (`create_model`, `fold_batchnorm`, `deploy.tflite.convert`, `optim.TorchSGD`).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

# cli.py is loaded by its path, not imported from the package: a worker must import the
# package of the tree it times (the base tree for 'base'), so nothing here may put this
# checkout on sys.path or import keras_efficient3d before the worker has set its path.
from benchmark import load_cli, write_rows  # deployment/benchmark.py, beside this (absl and stdlib only)

cli = load_cli()
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
WHAT = ("keras", "tflite", "train")
DEFAULT_MODELS = {
    "keras": "mobilenetv2_1.0x,shufflenetv2_1.0x,mobilenet_1.0x,shufflenet_1.0x_g3,squeezenet_1.1,resnet18_A",
    "tflite": "mobilenetv2_1.0x,shufflenetv2_1.0x,mobilenet_1.0x,shufflenet_1.0x_g3,squeezenet_1.1,mobilenetv2_0.2x",
    "train": "mobilenetv2_0.2x,mobilenetv2_1.0x",
}


def define_flags(flag_values=FLAGS):
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("base", "HEAD~1", "The git revision to compare this checkout with.", **fv)
    flags.DEFINE_list("what", list(WHAT), f"What to time: {', '.join(WHAT)}.", **fv)
    cli.define("models", None, "(default: per --what, the README's)", **fv)
    cli.define("rounds", 2, "(the two trees alternate)", **fv)
    cli.define("frames", 16, **fv)
    cli.define("size", 112, **fv)
    cli.define("runs", 15, **fv)
    cli.define("json_out", None, **fv)
    flags.DEFINE_string("worker", None, "(internal) time one form in this process, or 'names': "
                        "check --models.", **fv)
    flags.DEFINE_string("worker_tree", None, "(internal) the tree whose package --worker times.",
                        **fv)


def _import_package(tree):
    """keras_efficient3d from `tree`, which goes first on sys.path; raises UsageError when
    the package imported is another tree's (the figures would be that tree's)."""
    if "keras_efficient3d" in sys.modules:
        raise cli.UsageError(f"the worker for {tree} imported keras_efficient3d before its path "
                             "was set")
    sys.path.insert(0, tree)
    import keras_efficient3d as k3

    where = os.path.realpath(os.path.dirname(k3.__file__))
    if os.path.dirname(where) != os.path.realpath(tree):
        raise cli.UsageError(f"the worker for {tree} imported keras_efficient3d from {where}; "
                             f"expected {os.path.join(tree, 'keras_efficient3d')}")
    return k3


def check_names(models, tree=_HERE):
    """Raises the registry's ValueError for a name of `models` that `tree`'s package does not
    know."""
    _import_package(tree)
    from keras_efficient3d.registry import resolve_name

    for name in models:
        resolve_name(name)


def time_forms(what, models, frames, size, runs, tree=_HERE):
    """Rows (model, form, median ms) for one tree: the package of `tree` is imported
    (`_import_package`)."""
    k3 = _import_package(tree)
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        from keras_efficient3d.fold import fold_batchnorm
    except ImportError:  # commits before fold.py
        from keras_efficient3d.inference import fold_batchnorm

    # Fixed, not runtime.tf_thread_plan: the older trees compared have no plan, and both
    # trees must run alike.
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)

    def median_ms(step, warmup, n):
        for _ in range(warmup):
            step()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))

    rows = []
    for name in models:
        keras.utils.set_random_seed(0)
        model = k3.create_model(name, num_classes=600, input_shape=(frames, size, size, 3))
        if what == "keras":
            x = tf.constant(rng.normal(size=(1, frames, size, size, 3)).astype(np.float32))
            for form, net in (("keras", model), ("folded", fold_batchnorm(model))):
                call = tf.function(lambda v, net=net: net(v, training=False))
                rows.append((name, form, median_ms(lambda call=call, x=x: call(x).numpy(), 3, runs)))
        elif what == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            from keras_efficient3d.deploy.tflite import convert

            calibration = rng.normal(size=(8, frames, size, size, 3)).astype(np.float32)
            for precision in ("fp32", "int8"):
                data = calibration if precision == "int8" else None
                blob = convert(model, precision, representative_data=data, num_calibration=8)
                interpreter = Interpreter(model_content=blob, num_threads=2)
                interpreter.allocate_tensors()
                spec = interpreter.get_input_details()[0]
                clip = np.zeros(spec["shape"], spec["dtype"])

                def step(interpreter=interpreter, spec=spec, clip=clip):
                    interpreter.set_tensor(spec["index"], clip)
                    interpreter.invoke()

                rows.append((name, f"tflite-{precision}", median_ms(step, 5, runs)))
        else:
            from keras_efficient3d.optim import TorchSGD

            model.compile(optimizer=TorchSGD(0.01),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            xb = rng.normal(size=(8, frames, size, size, 3)).astype(np.float32)
            yb = rng.integers(0, 600, 8)
            rows.append((name, "train-step-b8",
                         median_ms(lambda m=model, xb=xb, yb=yb: m.train_on_batch(xb, yb), 2, max(2, runs // 2))))
    return rows


def _run_worker(tree, what, models, frames, size, runs):
    """The rows of `what` timed in a process of its own, which imports `tree`'s package
    (--worker_tree); with `what` 'names', the check of `models` there."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    args = [sys.executable, os.path.abspath(__file__), f"--worker={what}", f"--worker_tree={tree}",
            f"--models={','.join(models)}", f"--frames={frames}", f"--size={size}", f"--runs={runs}"]
    done = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, check=False)
    rows = [line for line in done.stdout.splitlines() if line.startswith("ROWS ")]
    if done.returncode or not rows:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        # The worker's own error line: relayed once under this program's prefix.
        last = last.removeprefix(f"{os.path.basename(__file__)}: error: ")
        if what == "names":
            raise cli.UsageError(f"--models: {last}")
        raise cli.UsageError(f"timing {what} in {tree} failed: {last}")
    return json.loads(rows[-1][5:])


def compare(base, what=WHAT, models=None, rounds=2, frames=16, size=112, runs=15, log=print):
    """Times this checkout ('new') and `base` ('base') alternately; returns rows with the
    per-round medians of each tree."""
    here = _HERE
    if models:  # an unknown name is reported before the worktree and the timing start
        _run_worker(here, "names", models, frames, size, runs)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        base_tree = os.path.join(scratch, "base")
        made = subprocess.run(["git", "-C", here, "worktree", "add", "--detach", base_tree, base],
                              capture_output=True, text=True, check=False)
        if made.returncode:
            raise cli.UsageError(f"--base={base}: {made.stderr.strip().splitlines()[-1]}")
        try:
            for round_index in range(rounds):
                order = [("base", base_tree), ("new", here)]
                if round_index % 2:
                    order.reverse()
                for kind in what:
                    names = models or DEFAULT_MODELS[kind].split(",")
                    for tree_name, tree in order:
                        log(f"round {round_index + 1}: {kind} in {tree_name}")
                        for model, form, ms in _run_worker(tree, kind, names, frames, size, runs):
                            results.setdefault((model, form), {"base": [], "new": []})[tree_name].append(ms)
        finally:
            subprocess.run(["git", "-C", here, "worktree", "remove", "--force", base_tree],
                           capture_output=True, check=False)
    return [{"model": m, "form": f, "base_ms": v["base"], "new_ms": v["new"],
             "best_ratio": min(v["new"]) / min(v["base"])} for (m, f), v in results.items()]


def format_table(rows, base):
    lines = [f"| model | form | {base}, ms (best / median) | this checkout, ms (best / median) | best new/base |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        b, n = r["base_ms"], r["new_ms"]
        lines.append(f"| {r['model']} | {r['form']} | {min(b):.1f} / {statistics.median(b):.1f} | "
                     f"{min(n):.1f} / {statistics.median(n):.1f} | {r['best_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv, flag_values=FLAGS):
    del argv
    f = flag_values
    unknown = sorted(set(f.what) - set(WHAT))
    if unknown:
        raise cli.UsageError(f"--what: unknown {', '.join(unknown)}; expected some of {', '.join(WHAT)}")
    if f.worker == "names":
        check_names(f.models, f.worker_tree or _HERE)
        print("ROWS []")
        return
    if f.worker:
        rows = time_forms(f.worker, f.models or DEFAULT_MODELS[f.worker].split(","), f.frames,
                          f.size, f.runs, f.worker_tree or _HERE)
        print("ROWS " + json.dumps(rows))
        return
    rows = compare(f.base, f.what, f.models, f.rounds, f.frames, f.size, f.runs,
                   log=lambda line: print(line, file=sys.stderr))
    print(format_table(rows, f.base))
    write_rows(rows, f.json_out)


if __name__ == "__main__":
    cli.run(main, define_flags)
