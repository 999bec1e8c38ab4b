"""The baselines every speed target is measured against ("the peers"): the original models
(github okankop/Efficient-3DCNNs) timed on this machine in PyTorch, and their plain ONNX
export run by ONNX Runtime and by OpenVINO, what a user who takes the original model runs.

    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy absl-py \
        onnx onnxruntime openvino          # the last three optional: their peers are skipped
    git clone https://github.com/okankop/Efficient-3DCNNs /tmp/Efficient-3DCNNs
    /tmp/torch/bin/python deployment/benchmark_pytorch.py --repo=/tmp/Efficient-3DCNNs \
        --threads=2 --batch_sizes=1 --json_out=peers.json [--mode=train --batch_sizes=8]
    python deployment/benchmark_tflite.py --threads=2 --peers_json=peers.json

The ONNX peers are the original model exported by a plain ``torch.onnx.export`` (opset 17,
TorchScript exporter, fixed shapes, nothing tuned), run by ONNX Runtime (CPU provider,
``intra_op_num_threads``) and by OpenVINO (``Core().compile_model(onnx, "CPU")`` with
``INFERENCE_NUM_THREADS``), both at ``--threads``, timed like PyTorch; inference only.
OpenVINO runs twice: ``openvino`` in fp32 (``INFERENCE_PRECISION_HINT=f32``, the issue's
"OpenVINO fp32") and ``openvino-auto`` at the CPU's own default precision, what a user who
passes nothing gets: bf16 on CPUs with bf16 units (AVX512_BF16, AMX), where it runs
1.5-2.5x faster than fp32; elsewhere the two are the same.

Neither PyTorch nor the original code is a dependency of this project: this script only
imports the original's ``models/`` package from ``--repo``. Inference is the median of
``model(x)`` under ``torch.no_grad()`` in eval mode; training the median of a forward,
cross-entropy backward and SGD step (momentum 0.9, dampening 0.9, weight decay 1e-3, the
original's optimizer) in train mode. Configuration names are those of `benchmark.py`,
written with the original's ``--model`` names (mobilenet_1.0x, shufflenet_1.0x_g3,
squeezenet_1.1, resnet18_A); the models are built by the original's own
``model.generate_model`` with its ``opts.py`` defaults for what a name leaves out.
"""

import importlib
import importlib.util
import json
import os
import re
import sys
import tempfile

from absl import flags

# deployment/benchmark.py, beside this; it loads keras_efficient3d/cli.py without the package.
from benchmark import cli, define_timing_flags, timed, write_rows

# The row forms this script writes (keras_efficient3d.deploy.benchmark.PEER_FORMS, which
# this PyTorch-only script cannot import).
PEERS = ("pytorch", "onnxruntime", "openvino", "openvino-auto")



def define_flags(flag_values=flags.FLAGS):
    define_timing_flags(flag_values, "(torch.set_num_threads, ONNX Runtime's intra-op "
                        "threads, OpenVINO's INFERENCE_NUM_THREADS; at least 1)")
    # defined in benchmark.py: --help listed only this script's own three flags
    flags.adopt_module_key_flags(sys.modules[define_timing_flags.__module__],
                                 flag_values=flag_values)
    flags.DEFINE_string("repo", None, "A checkout of the original Efficient-3DCNNs code.",
                        required=True, flag_values=flag_values)
    flags.register_validator("repo", cli.existing_folder, flag_values=flag_values)
    flags.DEFINE_list("peers", list(PEERS), "What runs the original model, comma-separated "
                      f"({', '.join(PEERS)}); a runtime that is not installed is skipped.",
                      flag_values=flag_values)
    flags.register_validator("peers", cli.each_of(PEERS), flag_values=flag_values)
    flags.DEFINE_string("onnx_dir", None, "Where the original's ONNX exports are written "
                        "(default: a temporary folder).", flag_values=flag_values)
    # a file there ended the run in "error: m.onnx: File exists", from the folder's making
    flags.register_validator("onnx_dir", cli.output_folder, flag_values=flag_values)


# A configuration name of the registry ('shufflenet_1.5x_g3', 'resnet18_A') whose
# architecture is the original's --model name, and the original's option of each part.
_CONFIG_NAME = re.compile(
    r"(?P<model>[a-z]+?(?:v\d)?|c3d)(?P<model_depth>\d+)?(?:_(?P<width_mult>\d+(?:\.\d+)?)x)?"
    r"(?:_g(?P<groups>\d+))?(?:_(?P<version>\d\.\d))?(?:_(?P<resnet_shortcut>[AB]))?")
_OPTION_TYPES = {"model_depth": int, "width_mult": float, "groups": int, "version": float,
                 "resnet_shortcut": str}


def parse_name(name):
    """'mobilenetv2_1.0x' -> ('mobilenetv2', {'width_mult': 1.0}): the original's --model
    name and the options the name sets, in the original's own option names (its opts.py);
    ResNets as 'resnet18_A'. What a name leaves out takes the original's defaults."""
    match = _CONFIG_NAME.fullmatch(name)
    if not match:
        raise ValueError(f"Unknown configuration '{name}'. Expected e.g. mobilenetv2_1.0x, "
                         "shufflenet_1.0x_g3, squeezenet_1.1, resnet18_A.")
    options = {key: _OPTION_TYPES[key](value) for key, value in match.groupdict().items()
               if key != "model" and value is not None}
    return match["model"], options


def check_repo(repo):
    """Raises `cli.UsageError` when `repo` is not a checkout of the original code."""
    if not os.path.isfile(os.path.join(repo, "models", "mobilenetv2.py")):
        raise cli.UsageError(f"--repo={repo} is not a checkout of the original Efficient-3DCNNs "
                             "code: it has no models/mobilenetv2.py.")


def original_name(repo, name):
    """`parse_name` of a name whose model the original code at `repo` has; raises
    ValueError naming the models it has otherwise."""
    try:
        model, options = parse_name(name)
    except ValueError:
        model = None
    if model is None or not os.path.isfile(os.path.join(repo, "models", f"{model}.py")):
        known = sorted(os.path.splitext(entry)[0] for entry in os.listdir(os.path.join(repo, "models"))
                       if entry.endswith(".py") and not entry.startswith("_"))
        raise ValueError(f"Unknown configuration '{name}': the original code has the models "
                         f"{', '.join(known)}, named as mobilenetv2_1.0x, shufflenet_1.0x_g3, "
                         "squeezenet_1.1, resnet18_A.")
    return model, options


def check_models(repo, models):
    """Refuses, before anything is built or timed, a `repo` that is not the original's
    checkout and a name of `models` it has no model for: the first would otherwise fail
    only after the names before it were timed."""
    check_repo(repo)
    for name in models:
        original_name(repo, name)


def original_options(repo, name, num_classes, frames, size):
    """The original's options (its ``opts.parse_opts()``, defaults included) for a
    configuration name, on the CPU."""
    model, options = original_name(repo, name)
    argv = [f"--model={model}", f"--n_classes={num_classes}", f"--sample_size={size}",
            f"--sample_duration={frames}", "--no_cuda"]
    argv += [f"--{key}={value}" for key, value in options.items()]
    opts = importlib.import_module("opts")
    saved, sys.argv = sys.argv, [os.path.join(repo, "main.py"), *argv]
    try:
        return opts.parse_opts()
    finally:
        sys.argv = saved


def build(repo, name, num_classes, frames, size):
    """The original model for a configuration name, built by the original's own
    ``model.generate_model`` from ``repo``, so that this script knows no architecture."""
    check_repo(repo)
    if repo not in sys.path:
        sys.path.insert(0, repo)
    opt = original_options(repo, name, num_classes, frames, size)
    model, _ = importlib.import_module("model").generate_model(opt)
    return model


def export_onnx(model, example, path):
    """The user's plain export: ``torch.onnx.export`` at opset 17 with the TorchScript
    exporter (the torch.export one needs onnxscript and opset 18), fixed shapes."""
    import inspect
    import warnings

    import torch

    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    model.eval()
    # the TorchScript exporter's DeprecationWarning (two lines per model) is the point here:
    # the plain export a user of the original runs today
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), path, opset_version=17, input_names=["clips"],
                          output_names=["logits"], **kwargs)
    return path


def onnxruntime_step(path, clips, threads, spinning=True):
    """A call of the ONNX file under ONNX Runtime's CPU provider at `threads`, and its version
    (`spinning`: as `keras_efficient3d.runtime.onnx_session`'s)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda: session.run(None, {name: clips})), ort.__version__


def openvino_step(path, clips, threads, precision="f32"):
    """A call of the ONNX file compiled by OpenVINO for the CPU at `threads` and inference
    `precision` (None: the CPU's default), and its version with the precision it runs at
    ('2026.4.1 bf16'). The call is the inference alone, on `clips` set once, as our
    runners' timing steps are (`keras_efficient3d.runtime.OpenVINORunner.timing_step`):
    passing the clip to each call copies it into the request, which only this side would
    pay: 0.09 ms for a 16x112x112 clip in a tight loop, 0.2-0.35 ms in interleaved rounds
    (MobileNetV2 0.2x 1.99 against 1.78 ms, ShuffleNetV2 1.0x 3.81 against 3.47)."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(path, "CPU", config)
    request = compiled.create_infer_request()
    request.infer([clips])
    ran_at = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return request.infer, f"{ov.__version__.split('-')[0]} {ran_at}"


def openvino_auto_step(path, clips, threads):
    """`openvino_step` at the CPU's default inference precision."""
    return openvino_step(path, clips, threads, precision=None)


_ONNX_PEERS = {"onnxruntime": onnxruntime_step, "openvino": openvino_step,
               "openvino-auto": openvino_auto_step}


def _missing(form):
    """Why peer `form` cannot run here, or None."""
    needs = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino"),
             "openvino-auto": ("onnx", "openvino")}
    for module in needs.get(form, ()):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


def runnable_peers(peers, mode, log=print):
    """The peers of `peers` that can be timed here in `mode`: an ONNX one is skipped, with a
    log line, outside inference or where its runtime is not installed. A choice that leaves
    none is refused, as a run that times nothing would end as if it had succeeded."""
    kept, skipped = [], {}
    for form in peers:
        reason = None
        if form in _ONNX_PEERS:
            reason = "timed at inference only" if mode != "inference" else _missing(form)
        if reason:
            skipped[form] = reason
        else:
            kept.append(form)
    if not kept:
        raise cli.UsageError(f"--peers={','.join(peers)} leaves nothing to time at --mode={mode} "
                             f"({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
    for form, reason in skipped.items():
        log(f"{form} peer skipped: {reason}")
    return kept


def original_step(model, mode, batch, frames, size, num_classes):
    """One timed call of the original `model` and its random input clip ``(batch, 3,
    frames, size, size)``: at inference ``model(x)`` under ``torch.no_grad()`` in eval mode;
    in training a forward, cross-entropy backward and SGD step (the original's optimizer:
    momentum 0.9, dampening 0.9, weight decay 1e-3) in train mode."""
    import torch

    x = torch.rand(batch, 3, frames, size, size)
    if mode == "inference":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
        return step, x
    model.train()
    y = torch.randint(0, num_classes, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, dampening=0.9,
                          weight_decay=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return step, x


def run(repo, models, mode="inference", batch_sizes=(1, 8), frames=16, size=112,
        num_classes=600, threads=2, warmup=3, runs=15, peers=PEERS, onnx_dir=None, log=print):
    """Times each model in each of `peers` (`PEERS`; the ONNX ones at inference only, each
    skipped with a log line where its runtime is not installed); returns the rows."""
    check_models(repo, models)
    peers = runnable_peers(peers, mode, log)
    try:
        import torch
    except ImportError as err:
        raise cli.UsageError(f"this script runs where PyTorch is installed ({err})") from None

    if threads < 1:
        raise ValueError(f"--threads must be at least 1 for PyTorch. Received: {threads}")
    torch.set_num_threads(threads)
    onnx_peers = [p for p in peers if p in _ONNX_PEERS]
    temporary = tempfile.TemporaryDirectory(prefix="peers_") if onnx_peers and not onnx_dir else None
    folder = onnx_dir or (temporary.name if temporary else None)
    if folder:
        os.makedirs(folder, exist_ok=True)
    rows = []

    def add(name, form, batch, seconds, **versions):
        row = {"model": name, "form": form, "mode": mode, "batch_size": batch,
               "threads": threads, "input": f"{frames}x{size}x{size}",
               "median_ms": 1000 * seconds, "clips_per_s": batch / seconds,
               "torch": torch.__version__, **versions}
        rows.append(row)
        log(f"{name:20s} {form:13s} {mode:9s} batch {batch:2d}: {row['median_ms']:8.1f} ms  "
            f"{row['clips_per_s']:7.1f} clips/s")

    try:
        for name in models:
            model = build(repo, name, num_classes, frames, size)
            for batch in batch_sizes:
                step, x = original_step(model, mode, batch, frames, size, num_classes)
                if "pytorch" in peers:
                    add(name, "pytorch", batch, timed(step, warmup, runs))
                if onnx_peers:
                    path = export_onnx(model, x, os.path.join(folder, f"{name}_b{batch}.onnx"))
                    for form in onnx_peers:
                        call, version = _ONNX_PEERS[form](path, x.numpy(), threads)
                        add(name, form, batch, timed(call, warmup, runs), **{form: version})
    finally:
        if temporary:
            temporary.cleanup()
    return rows


def main(argv, flag_values=flags.FLAGS):
    del argv
    f = flag_values
    rows = run(f.repo, f.models, f.mode, f.batch_sizes, f.frames, f.size, f.num_classes,
               f.threads, f.warmup, f.runs, f.peers, f.onnx_dir,
               log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(rows, indent=1))  # its one output besides the log lines
    write_rows(rows, f.json_out)


if __name__ == "__main__":
    cli.run(main, define_flags)
