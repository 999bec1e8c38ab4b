"""The command lines share one vocabulary and one error contract (keras_efficient3d.cli).

Bad input of any CLI ends with exactly one line ``<prog>: error: <message>`` on stderr,
naming the flag or the file, and exit status 2. Most rows call ``main`` in this process
through `cli.invoke` (the same parsing and error mapping as ``cli.run``); a few run the real
program. A new CLI is a line in `CLIS` and rows in `BAD_INPUT`.
"""

import functools
import glob
import importlib
import importlib.util
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from keras_efficient3d import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (how it is run, program name in its messages); `POSITIONAL` take arguments
# besides flags (``cli.run(main, define_flags, positional=True)``).
POSITIONAL = {"predict"}
CLIS = {
    "train": ("training/train.py", "train.py"),
    "evaluate": ("training/evaluate.py", "evaluate.py"),
    "export": ("deployment/export.py", "export.py"),
    "export_tflite": ("deployment/export_tflite.py", "export_tflite.py"),
    "convert": ("keras_efficient3d.convert", "keras_efficient3d.convert"),
    "complexity": ("keras_efficient3d.complexity", "keras_efficient3d.complexity"),
    "synthetic": ("keras_efficient3d.data.synthetic", "keras_efficient3d.data.synthetic"),
    "data_benchmark": ("keras_efficient3d.data.benchmark", "keras_efficient3d.data.benchmark"),
    "predict": ("keras_efficient3d.predict", "keras_efficient3d.predict"),
    "demo": ("keras_efficient3d.demo", "keras_efficient3d.demo"),
    "benchmark": ("deployment/benchmark.py", "benchmark.py"),
    "benchmark_tflite": ("deployment/benchmark_tflite.py", "benchmark_tflite.py"),
    "benchmark_onnx": ("deployment/benchmark_onnx.py", "benchmark_onnx.py"),
    "benchmark_openvino": ("deployment/benchmark_openvino.py", "benchmark_openvino.py"),
    "benchmark_targets": ("deployment/benchmark_targets.py", "benchmark_targets.py"),
    "benchmark_pytorch": ("deployment/benchmark_pytorch.py", "benchmark_pytorch.py"),
    "benchmark_backends": ("deployment/benchmark_backends.py", "benchmark_backends.py"),
}

# A package run with -m whose command line lives in a module of its own.
MAIN_MODULES = {"predict": "keras_efficient3d.predict.command"}


@functools.cache
def load(name):
    target = CLIS[name][0]
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"{name}_cli", os.path.join(ROOT, target))
        module = importlib.util.module_from_spec(spec)
        # Scripts import their siblings (benchmark_pytorch.py: `from benchmark import ...`).
        sys.path.insert(0, os.path.dirname(spec.origin))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.pop(0)
        return module
    return importlib.import_module(MAIN_MODULES.get(name, target))


def command(name):
    target = CLIS[name][0]
    if target.endswith(".py"):
        return [sys.executable, os.path.join(ROOT, target)]
    return [sys.executable, "-m", target]


def is_alias(flag):
    return flag.help.startswith("Alias for --")  # what absl's DEFINE_alias writes


def is_former(flag):
    """An alias, or a former flag kept for scripts (predict's --json sets --format=json)."""
    return is_alias(flag) or flag.help.startswith("Deprecated: ")


def fresh_flags(name):
    values = flags.FlagValues()
    load(name).define_flags(values)
    return values


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "folder").mkdir()
    files = {"file": "plain.txt", "junk_keras": "junk.keras", "junk_pth": "junk.pth",
             "junk_h5": "junk.weights.h5", "upper_keras": "M.KERAS", "junk_tflite": "m.tflite", "junk_onnx": "m.onnx",
             "junk_xml": "m.xml"}
    for name in files.values():
        (root / name).write_text("not what it claims to be")
    out = {key: str(root / name) for key, name in files.items()}
    (root / "sm").mkdir()  # export.py --format=savedmodel's folder
    (root / "sm" / "saved_model.pb").write_bytes(b"")
    out.update(dir=str(root / "folder"), missing=str(root / "missing.bin"), tmp=str(root),
               savedmodel=str(root / "sm"))
    return out


def _fill(args, paths):
    return [arg.format(**paths) for arg in args]


# (cli, arguments, text the one line must contain: the flag or the file)
BAD_INPUT = [
    ("train", ["--batch_size=abc"], "--batch_size=abc"),
    ("train", ["--dataset=jester", "--data_root={missing}"], "missing.bin: no such folder"),
    ("train", ["--output={file}"], "a folder is needed"),
    ("train", ["--frames=0"], "--frames=0"),
    ("train", ["--lr_steps=a,b"], "--lr_steps"),
    ("train", ["extra"], "unexpected arguments: extra"),
    ("train", ["--no_such_flag=1"], "no_such_flag"),
    ("train", ["--allocator=hoard"], "--allocator=hoard: expected one of auto, system"),
    ("train", ["--allocator={missing}"], "missing.bin: no such file"),
    ("train", ["--data_root={dir}", "--lr_schedule=linear"], "lr_schedule"),
    ("train", ["--data_root={dir}", "--epochs=3", "--warmup_epochs=3"], "warmup_epochs"),
    ("train", ["--data_root={dir}", "--output={tmp}/run"], "jester-v1-labels.csv"),
    # ucf101.flags names a converted checkpoint to make first: how, in the message
    ("train", ["--flagfile=training/flags/ucf101.flags", "--data_root={dir}",
               "--annotations={dir}", "--output={tmp}/run"],
     "--pretrained=pretrained/kinetics_mobilenetv2_1.0x.keras: file not found (a .keras model "
     "to fine-tune: convert the authors' checkpoint with python -m keras_efficient3d.convert"),
    ("train", ["--data_root={dir}", "--pretrained={junk_pth}", "--output={tmp}/run"],
     "junk.pth: a PyTorch checkpoint; fine-tuning starts from a .keras model: convert the "
     "authors' checkpoint with python -m keras_efficient3d.convert --checkpoint=FILE.pth"),
    ("train", ["--dataset=jester", "--output={tmp}/run"], "data_root"),
    ("train", ["--data_root={dir}", "--pretrained={junk_keras}", "--dataset=folders"],
     "junk.keras: not a valid .keras archive"),
    ("evaluate", [], "--model_file"),
    ("evaluate", ["--model_file={missing}"], "missing.bin: no such file"),
    ("evaluate", ["--model_file={dir}"], "a folder, not a file"),
    ("evaluate", ["--model_file={junk_keras}", "--output={file}"], "a folder is needed"),
    ("evaluate", ["--model_file={junk_keras}", "--split=test"], "--split"),
    ("evaluate", ["--model_file={junk_keras}", "--batch_size=-1"], "--batch_size"),
    ("evaluate", ["--model_file={junk_keras}", "--data_root={dir}"],
     "junk.keras: not a valid .keras archive"),
    ("evaluate", ["--model_file={file}"], "--model_file must be a .keras model"),
    ("evaluate", ["--model_file={junk_h5}"], "--model_file must be a .keras model"),
    ("evaluate", ["--model_file={upper_keras}"], "--model_file must be a .keras model (the "
     "extension in lower case)"),
    ("export", ["--model=x", "--model_file={junk_keras}", "--output={tmp}/x.onnx"],
     "exactly one of --model and --model_file"),
    # absl said "flag --output=None: Flag --output must have a value other than None."
    ("export", ["--model=mobilenetv2"], "error: --output is required (Where the result is "
     "written. An .onnx file, a SavedModel folder or an OpenVINO .xml file)"),
    ("export", ["--model=nosuchnet", "--output={tmp}/x.onnx"], "nosuchnet"),
    ("export", ["--model_file={junk_keras}", "--output={tmp}/x.onnx"],
     "junk.keras: not a valid .keras archive"),
    ("export", ["--model_file={junk_tflite}", "--output={tmp}/x.onnx"],
     "m.tflite: export.py needs a .keras model (got .tflite)"),
    ("export", ["--model_file={upper_keras}", "--output={tmp}/x.onnx"],
     "M.KERAS: export.py needs a .keras model (got .KERAS: Keras reads the extension in lower "
     "case only; rename the file)"),
    ("export", ["--model_file={junk_keras}", "--frames=8", "--output={tmp}/x.onnx"],
     "--frames is not used with --model_file: the .keras file carries its own weights, classes "
     "and clip shape (flags set them for --model)"),
    ("export", ["--model_file={junk_keras}", "--num_classes=3", "--output={tmp}/x.onnx"],
     "--num_classes is not used with --model_file"),
    ("export", ["--model=mobilenetv1_0.25x", "--output={dir}"], "a file is needed"),
    ("export", ["--model=mobilenetv2_0.2x", "--output={tmp}/x.tflite"],
     "--format=onnx writes an .onnx file"),
    ("export", ["--model=mobilenetv2_0.2x", "--format=savedmodel", "--output={tmp}/sm.onnx"],
     "--format=savedmodel writes a folder; a name ending in .onnx"),
    ("export", ["--model=mobilenetv2_0.2x", "--format=openvino", "--output={tmp}/m.onnx"],
     "an OpenVINO IR is an .xml file"),
    ("export", ["--model=mobilenetv2_0.2x", "--output={tmp}/nofolder/x.onnx"],
     "nofolder/x.onnx: folder"),
    ("export", ["--model=mobilenetv2_0.2x", "--format=savedmodel", "--output={tmp}/nofolder/sm"],
     "nofolder does not exist"),
    ("export", ["--model=mobilenetv1_0.25x", "--format=savedmodel", "--output={file}"],
     "a folder is needed"),
    ("export", ["--model=mobilenetv1", "--format=tflite", "--output={tmp}/x"], "--format"),
    ("export", ["--model_file={junk_keras}", "--weights={junk_h5}", "--output={tmp}/x.onnx"],
     "--weights is not used with --model_file: the .keras file carries its own weights"),
    ("export", ["--model_file={junk_keras}", "--weights={junk_h5}", "--size=32",
                "--output={tmp}/x.onnx"], "--weights and --size are not used with --model_file"),
    ("export", ["--keras_file={missing}", "--output={tmp}/x.onnx"], "missing.bin: no such file"),
    ("export", ["--model=mobilenetv2", "--format=openvino", "--quantize=ptq", "--output={tmp}/x.xml"],
     "--quantize needs --data_root"),
    ("export", ["--model=mobilenetv2", "--format=openvino", "--output={tmp}/x.onnx"],
     "an OpenVINO IR is an .xml file"),
    ("export", ["--model=mobilenetv2", "--compress_to_fp16", "--output={tmp}/x.onnx"],
     "go with --format=openvino"),
    ("export", ["--model=mobilenetv2", "--format=openvino", "--quantize=int4", "--output={tmp}/x.xml"],
     "--quantize"),
    ("export_tflite", ["--precision=int8"], "--precision=int8 needs --data_root"),
    ("export_tflite", ["--precision=int4"], "--precision"),
    ("export_tflite", ["--int8_io"], "--int8_io needs --precision=int8"),
    ("export_tflite", ["--data_root={tmp}"], "--data_root is read for --precision=int8 alone"),
    ("export_tflite", ["--output={tmp}/m.onnx"], "expected a file name ending in .tflite"),
    ("export_tflite", ["--num_calibration=8", "--output={tmp}/m.tflite"],
     "--num_calibration is not used with --precision=fp32"),
    ("export_tflite", ["--pack_channels=-1"], "--pack_channels"),
    ("export_tflite", ["--weights={missing}"], "missing.bin: no such file"),
    ("export_tflite", ["--model=nosuchnet", "--output={tmp}/x.tflite"], "nosuchnet"),
    ("export_tflite", ["--model=mobilenetv2_0.2x", "--frames=4", "--size=32", "--num_classes=2",
                       "--weights={junk_h5}", "--output={tmp}/x.tflite"], "junk.weights.h5"),
    ("export_tflite", ["--output={dir}"], "a file is needed"),
    ("export_tflite", ["--output={tmp}/nofolder/x.tflite"], "nofolder does not exist"),
    ("export_tflite", ["--output={file}/x.tflite"], "plain.txt is a file, not a folder"),
    ("export_tflite", ["--model_file={junk_keras}", "--frames=8", "--output={tmp}/x.tflite"],
     "--frames is not used with --model_file: the .keras file carries its own architecture"),
    ("export_tflite", ["--model_file={junk_tflite}", "--output={tmp}/x.tflite"],
     "m.tflite: export_tflite.py needs a .keras model (got .tflite)"),
    ("export_tflite", ["--model_file={junk_keras}", "--output={tmp}/x.tflite"],
     "junk.keras: not a valid .keras archive"),
    ("export_tflite", ["--model=mobilenetv2_0.2x", "--frames=4", "--size=32", "--num_classes=2",
                       "--weights={junk_keras}", "--output={tmp}/x.tflite"],
     "junk.keras: not a valid .keras archive"),
    ("export_tflite", ["--precision=int8", "--data_root={file}"], "a file, not a folder"),
    ("convert", ["--output={tmp}/x.keras"], "--checkpoint"),
    ("convert", ["--checkpoint={missing}", "--output={tmp}/x.keras"], "missing.bin: no such file"),
    ("convert", ["--checkpoint={junk_pth}", "--output={tmp}/x.keras"], "junk.pth"),
    ("convert", ["--checkpoint={junk_pth}", "--output={dir}"], "a file is needed"),
    ("convert", ["--checkpoint={junk_pth}", "--output={tmp}/m.h5"],
     "m.h5: expected a file name ending in .keras"),
    # refused before the conversion: Keras writes X.KERAS as no .keras file
    ("convert", ["--checkpoint={junk_pth}", "--output={tmp}/M.KERAS"],
     "M.KERAS: expected a file name ending in .keras in lower case"),
    ("convert", ["--checkpoint={junk_pth}", "--output={tmp}/x.keras", "--labels={dir}"],
     "--labels"),
    ("convert", ["--checkpoint={junk_pth}", "--output={tmp}/x.keras", "--shortcut=C"],
     "--shortcut"),
    ("convert", ["--checkpoint={junk_pth}", "--output={tmp}/x.keras", "--width_mult=abc"],
     "--width_mult=abc"),
    ("complexity", ["--model=nonexistent"], "nonexistent"),
    ("complexity", [], "--model or --paper_table"),
    ("complexity", ["--paper_table", "--model=mobilenetv2"], "--paper_table and --model"),
    ("complexity", ["--model=mobilenetv2", "--format=xml"], "--format"),
    ("complexity", ["--model=mobilenetv2", "--width-mult=-0.5"], "--width_mult"),
    ("complexity", ["--model=mobilenetv2", "--size=abc"], "--size=abc"),
    ("complexity", ["--model=mobilenetv2", "--groups=3"], "groups"),
    ("synthetic", [], "--output"),
    ("synthetic", ["--output={file}"], "a folder is needed"),
    ("synthetic", ["--output={tmp}/gestures", "--frames=1"], "frames"),
    ("synthetic", ["--output={tmp}/gestures", "--layout=kinetics"], "--layout"),
    ("synthetic", ["--output={tmp}/gestures", "--videos_per_class=0"], "--videos_per_class"),
    ("data_benchmark", ["--data_root={dir}"], "--data_root needs a single --layout"),
    ("data_benchmark", ["--modes=train,foo"], "--modes"),
    ("data_benchmark", ["--batch-size=x"], "--batch_size=x"),
    ("data_benchmark", ["--json_out={dir}"], "a file is needed"),
    ("data_benchmark", ["--layout=jester", "--data_root={missing}"], "missing.bin: no such folder"),
    ("data_benchmark", ["--json_out={tmp}/nofolder/rows.json"], "no such folder"),
    ("predict", [], "give a SOURCE"),
    ("predict", ["7", "--json", "--format=text"], "--format=text contradicts it"),
    ("benchmark_tflite", ["--packing", "--stacking"], "--packing and --stacking are separate"),
    ("predict", ["a.mp4", "b.mp4"], "a.mp4: no such file or folder"),
    ("predict", ["{dir}", "0"], "0: a camera index or a stream URL is given alone"),
    ("predict", ["7", "--model_file={missing}"], "missing.bin: no such file"),
    ("predict", ["7", "--model_file={dir}"], "a folder, not a file"),
    ("predict", ["7", "--model_file={savedmodel}"],
     "a SavedModel folder (export.py --format=savedmodel's), not a file"),
    ("predict", ["{missing}", "--model_file={junk_tflite}"], "missing.bin"),
    ("predict", ["7", "--model_file={junk_tflite}"], "m.tflite: cannot load the TFLite model"),
    ("predict", ["7", "--model_file={junk_onnx}"], "m.onnx: cannot load the ONNX model"),
    ("predict", ["7", "--model_file={junk_keras}"], "junk.keras: not a valid .keras archive"),
    ("predict", ["7", "--model_file={junk_xml}"], "m.xml: its weights"),
    ("predict", ["7", "--labels={missing}"], "missing.bin: labels file not found"),
    ("predict", ["7", "--labels={dir}"], "a folder, not a labels file"),
    ("predict", ["7", "--format=xml"], "--format"),
    ("predict", ["7", "--threads=x"], "--threads=x"),
    ("predict", ["7", "--threads=-1"], "--threads"),
    ("predict", ["7", "--output={dir}"], "a file is needed"),
    ("predict", ["7", "--frames=0"], "--frames=0"),
    ("demo", ["--output={file}"], "a folder is needed"),
    ("demo", ["--publish={file}"], "a folder is needed"),
    ("demo", ["--model=nosuchnet"], "nosuchnet"),
    ("demo", ["--nodeploy", "--publish={tmp}/pub"], "--publish is not used with --nodeploy"),
    ("demo", ["--nodeploy", "--qat_epochs=1"], "--qat_epochs is not used with --nodeploy"),
    ("demo", ["--qat_epochs=-1"], "--qat_epochs"),
    ("demo", ["--frames=x"], "--frames=x"),
    ("demo", ["--videos_per_class=0"], "--videos_per_class"),
    ("demo", ["extra"], "unexpected arguments: extra"),
    ("benchmark", ["--models=nosuchnet"], "nosuchnet"),
    ("benchmark", ["--threads=x"], "--threads=x"),
    ("benchmark", ["--batch_sizes=0,8"], "--batch_sizes"),
    ("benchmark", ["--mode=fast"], "--mode"),
    ("benchmark", ["--pytorch_json={missing}"], "missing.bin: no such file"),
    ("benchmark", ["--pytorch_json={file}"], "plain.txt"),
    ("benchmark", ["--json_out={tmp}/nofolder/rows.json"], "no such folder"),
    ("benchmark", ["--json_out={dir}"], "a file is needed"),
    ("benchmark_tflite", ["--precisions=fp32,int4"], "--precisions"),
    ("benchmark_tflite", ["--threads=1,x"], "--threads"),
    ("benchmark_tflite", ["--models=mobilenetv2_1.0x,nosuchnet"], "nosuchnet"),
    ("benchmark_tflite", ["--json_out={dir}"], "a file is needed"),
    ("benchmark_tflite", ["--output={tmp}/nofolder/t.json"], "no such folder"),
    ("benchmark_tflite", ["--pytorch_json={file}"], "plain.txt"),
    ("benchmark_tflite", ["--runs=0"], "--runs"),
    ("benchmark_onnx", [], "error: --model_file is required (A saved model to read. The .onnx "
     "file to time)"),
    ("convert", [], "error: --checkpoint is required (PyTorch checkpoint (.pth) written by "
     "Efficient-3DCNNs); --output is required ("),
    ("benchmark_onnx", ["--model_file={missing}"], "missing.bin: no such file"),
    ("benchmark_onnx", ["--model_file={junk_onnx}"], "m.onnx: cannot load the ONNX model"),
    ("benchmark_onnx", ["--model_file={junk_onnx}", "--runs=0"], "--runs"),
    ("benchmark_onnx", ["--model_file={junk_onnx}", "--batch_sizes=1,x"], "--batch_sizes"),
    ("benchmark_onnx", ["--model_file={junk_onnx}", "--json_out={tmp}/nofolder/r.json"],
     "no such folder"),
    ("benchmark_openvino", ["--precisions=fp32,int4"], "--precisions"),
    ("benchmark_openvino", ["--models=mobilenetv2_1.0x,nosuchnet"], "nosuchnet"),
    ("benchmark_openvino", ["--model_file={junk_onnx}"], "an OpenVINO IR .xml file is needed"),
    ("benchmark_openvino", ["--model_file={junk_xml}"], "m.xml: its weights"),
    ("benchmark_openvino", ["--model_file={junk_xml}", "--precisions=int8"],
     "--precisions is not used with --model_file: nothing is exported, the file is timed as it "
     "is (its clip, classes and precision are the file's)"),
    ("benchmark_openvino", ["--model_file={junk_xml}", "--models=mobilenetv2_0.2x",
                            "--stem_folds=1,2"],
     "--models and --stem_folds are not used with --model_file: nothing is exported"),
    ("benchmark_openvino", ["--threads=1,x"], "--threads"),
    ("benchmark_openvino", ["--json_out={tmp}/nofolder/t.json"], "no such folder"),
    ("benchmark_targets", ["--models=mobilenetv2_0.2x,nosuchnet"], "nosuchnet"),
    ("benchmark_targets", ["--repo={missing}"], "missing.bin: no such folder"),
    ("benchmark_targets", ["--repo={file}"], "a file, not a folder"),
    ("benchmark_targets", ["--runtimes=tflite-fp32,tensorrt"], "--runtimes"),
    ("benchmark_targets", ["--peers=original-tensorrt"], "--peers"),
    ("benchmark_targets", ["--work_dir={file}"], "plain.txt: a file, not a folder"),
    ("benchmark_targets", ["--rounds=0"], "--rounds"),
    ("benchmark_targets", ["--peers_json={file}"], "plain.txt"),
    ("benchmark_targets", ["--repo={dir}", "--peers_json={file}"], "not both"),
    ("benchmark_targets", ["--json_out={tmp}/nofolder/t.json"], "no such folder"),
    ("benchmark_pytorch", [], "--repo"),
    ("benchmark_pytorch", ["--repo={missing}"], "missing.bin: no such folder"),
    ("benchmark_pytorch", ["--repo={file}"], "a file, not a folder"),
    ("benchmark_pytorch", ["--repo={dir}", "--threads=x"], "--threads=x"),
    ("benchmark_pytorch", ["--repo={dir}", "--warmup=-1"], "--warmup"),
]


def _assert_one_line(name, status, err, expected):
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{CLIS[name][1]}: error: "), lines[0]
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("name, args, expected", BAD_INPUT,
                         ids=[f"{row[0]}:{' '.join(row[1]) or 'no-flags'}" for row in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(name, args, expected, paths, capsys):
    module = load(name)
    status = cli.invoke(module.main, module.define_flags, [name, *_fill(args, paths)],
                        positional=name in POSITIONAL)
    _, err = capsys.readouterr()
    _assert_one_line(name, status, err, expected)


def test_train_refuses_an_output_it_cannot_write_before_indexing(paths, tmp_path, capsys,
                                                                 monkeypatch):
    """A read-only --output was said after the dataset's indexing (minutes for Kinetics) and
    the model's build. The tests run as root, whom no folder's mode stops: os.access answers
    as it does for a read-only mount."""
    locked = tmp_path / "ro"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(cli.os, "access", lambda path, mode, **kw: False if str(path) == str(
        locked) and mode == os.W_OK else real(path, mode, **kw))
    module = load("train")
    # --data_root={dir} alone would fail at indexing ("jester-v1-labels.csv")
    status = cli.invoke(module.main, module.define_flags,
                        ["train", f"--data_root={paths['dir']}", f"--output={locked}"])
    _assert_one_line("train", status, capsys.readouterr().err,
                     f"--output {locked}: cannot write in folder {locked}")


# One row per program: the in-process rows above check every message; these check that the
# real program, started as users start it, keeps to the contract (no import or converter noise).
@pytest.mark.parametrize("name, args, expected", [
    ("train", ["--batch_size=abc"], "--batch_size=abc"),
    ("export", ["--model=mobilenetv2", "--format=openvino", "--quantize=ptq", "--output={tmp}/x.xml"],
     "--quantize needs --data_root"),
    ("export_tflite", ["--precision=int8"], "--precision=int8 needs --data_root"),
    ("convert", ["--checkpoint={missing}", "--output={tmp}/x.keras"], "missing.bin: no such file"),
    ("synthetic", ["--output={file}"], "a folder is needed"),
    ("predict", ["7", "--model_file={junk_onnx}"], "m.onnx: cannot load the ONNX model"),
    ("benchmark_pytorch", ["--repo={missing}"], "missing.bin: no such folder"),
])
def test_bad_input_of_the_real_program(name, args, expected, paths):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([*command(name), *_fill(args, paths)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300, check=False)
    _assert_one_line(name, proc.returncode, proc.stderr, expected)
    assert proc.stdout == ""


@pytest.mark.parametrize("name,ask", [("export", "--help"), ("train", "--helpfull"),
                                       ("predict", "--help"), ("train", "-help"),
                                       ("demo", "-?")])
def test_asking_for_help_is_no_failure(name, ask):
    proc = subprocess.run([*command(name), ask], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--output" in proc.stdout + proc.stderr  # the flags are listed


@pytest.mark.parametrize("name", ["predict", "train"])
def test_ctrl_c_while_the_program_starts_is_one_line(name, tmp_path):
    """SIGINT during the imports (TensorFlow's take seconds), before `cli.run` is reached:
    `<prog>: interrupted`, no traceback through the imports, and the status of a Ctrl-C."""
    import signal
    import time

    proc = subprocess.Popen([*command(name), str(tmp_path / "none.mp4")] if name == "predict"
                            else [*command(name), f"--output={tmp_path / 'run'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
                            # Ctrl-C as a terminal delivers it: a suite started in the
                            # background (`cmd &`) passes SIGINT on ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGINT, err
    assert err == f"{CLIS[name][1]}: interrupted\n", err  # python -m: the module's name


def test_an_interrupt_that_an_import_turns_into_another_error_is_one_line(monkeypatch, capsys):
    """A Ctrl-C during numpy's C import (0.4 s into predict once its start-up was shorter)
    made numpy raise an ImportError ("PyCapsule_Import could not import module datetime"),
    the interrupt gone: a traceback, status 1. The signal is noted as it arrives."""
    import signal

    import keras_efficient3d as package

    monkeypatch.setattr(package, "_our_program", lambda: "keras_efficient3d.predict")
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    raised = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)  # not this test's process
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        package._quiet_interrupt_of_our_programs()
        sys.excepthook(ValueError, ValueError("a bug"), None)  # no interrupt: Python's report
        assert "ValueError: a bug" in capsys.readouterr().err and not raised
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # the Ctrl-C, as delivered
        error = ImportError('PyCapsule_Import could not import module "datetime"')
        sys.excepthook(ImportError, error, None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err == "keras_efficient3d.predict: interrupted\n"
    assert raised == [signal.SIGINT]  # the status of a Ctrl-C


@pytest.mark.parametrize("name,backend,hint", [("train", "pytorch", " (did you mean torch?)"),
                                               ("predict", "jaxx", " (did you mean jax?)"),
                                               ("export", "cntk", "")])
def test_a_misspelt_keras_backend_is_one_line_before_the_imports(name, backend, hint, tmp_path):
    """Keras' own import raised "Unable to import backend" with a traceback: a program of the
    project says what is accepted in one line, before TensorFlow's import (no model runs)."""
    proc = subprocess.run([*command(name), "--help"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND=backend), timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"{CLIS[name][1]}: error: KERAS_BACKEND={backend} is not a Keras "
                           f"backend{hint}: set tensorflow, jax or torch, or unset it for "
                           "tensorflow\n")
    # a library import is no program, nor another package's module run with -m: an
    # ImportError that says the same
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "__init__.py").write_text("import keras_efficient3d\n")
    (tmp_path / "theirs" / "tool.py").write_text("")
    for args in (["-c", "import keras_efficient3d"], ["-m", "theirs.tool"]):
        lib = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60, env=dict(
                                 os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]),
                                 KERAS_BACKEND=backend))
        assert lib.returncode == 1 and lib.stderr.splitlines()[-1] == (
            f"ImportError: KERAS_BACKEND={backend} is not a Keras backend{hint}: set "
            "tensorflow, jax or torch, or unset it for tensorflow"), (args, lib.stderr)


@pytest.mark.parametrize("backend,installed,message", [
    ("jax", False, "KERAS_BACKEND=jax, but jax is not installed: pip install "
                   "'keras_efficient3d[jax]', or set another backend"),
    ("torch", False, "KERAS_BACKEND=torch, but torch is not installed: pip install "
                     "'keras_efficient3d[torch]' --extra-index-url "
                     "https://download.pytorch.org/whl/cpu (PyPI's torch is the CUDA build), or "
                     "set another backend"),
    ("numpy", True, "KERAS_BACKEND=numpy is a Keras backend the project's programs do not run "
                    "on: set tensorflow, jax or torch, or unset it for tensorflow"),
    ("openvino", True, "KERAS_BACKEND=openvino is a Keras backend the project's programs do not "
                       "run on: set tensorflow, jax or torch, or unset it for tensorflow (to run "
                       "a model in OpenVINO: deployment/export.py --format=openvino)"),
])
def test_a_keras_backend_the_programs_cannot_use_is_one_line(backend, installed, message,
                                                             monkeypatch, capsys):
    """A backend not installed ended in Keras' traceback through the package's imports;
    Keras' numpy and openvino backends in a KeyError (predict) or after train.py had moved
    an earlier run aside (NotImplementedError of fit)."""
    import importlib.util

    import keras_efficient3d as package

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == backend and not installed
                        else find_spec(name, *a))
    monkeypatch.setenv("KERAS_BACKEND", backend)
    monkeypatch.setattr(package, "_our_program", lambda: "train.py")
    with pytest.raises(SystemExit) as ended:
        package._check_keras_backend()
    assert ended.value.code == 2 and capsys.readouterr().err == f"train.py: error: {message}\n"
    monkeypatch.setattr(package, "_our_program", lambda: None)  # a program of the user's
    if installed:
        package._check_keras_backend()  # Keras runs there, for what the user does with it
    else:
        with pytest.raises(ImportError, match=re.escape(message)):
            package._check_keras_backend()


def test_a_ctrl_c_that_python_would_ignore_still_stops_the_program():
    """A Ctrl-C in a garbage-collector callback (JAX's, installed by TensorFlow's import when
    JAX is there) is "ignored" by Python: a traceback, and the program went on (the test
    above failed so when its signal landed there). One of ours stops, in one line."""
    code = ("import sys; sys.argv[0] = '-m'\n"  # as runpy sets it while `-m` imports the package
            "import gc, time, keras_efficient3d\n"
            "fired = []\n"
            "def collecting(phase, info):\n"
            "    if not fired:\n"
            "        fired.append(phase)\n"
            "        raise KeyboardInterrupt\n"
            "gc.callbacks.append(collecting)\n"
            "gc.collect()\n"
            "time.sleep(60)\n"  # a blocking call: woken by the signal sent again
            "print('went on')\n")
    import signal

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, timeout=50,
                          # as a terminal runs it: a suite started in the background passes
                          # SIGINT on ignored
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout == "" and proc.stderr == "keras_efficient3d: interrupted\n", proc.stderr
    assert proc.returncode == -2


# --------------------------------------------------------------------------- the helper


def _define_nothing(flag_values):
    cli.define("batch_sizes", [1, 8], flag_values=flag_values)


def test_bugs_keep_their_traceback():
    def main(argv, flag_values):
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        cli.invoke(main, _define_nothing, ["prog"])


def test_verbosity_shows_the_traceback_of_expected_errors(monkeypatch):
    def main(argv, flag_values):
        raise cli.UsageError("bad")

    assert cli.invoke(main, _define_nothing, ["prog"]) == 2
    monkeypatch.setattr(cli.absl_logging, "get_verbosity", lambda: 1)
    with pytest.raises(cli.UsageError):
        cli.invoke(main, _define_nothing, ["prog"])


def test_ctrl_c_is_status_130(capsys):
    def main(argv, flag_values):
        raise KeyboardInterrupt

    assert cli.invoke(main, _define_nothing, ["prog"]) == 130
    assert capsys.readouterr().err == "test_cli.py: interrupted\n"


@pytest.mark.parametrize("name, args", [
    ("export_tflite", ["--output={tmp}/m.tflite", "--precision=fp32"]),
    ("export", ["--format=savedmodel", "--output={tmp}/sm_jax"])])
def test_a_tensorflow_only_export_on_another_backend_is_one_line(name, args, paths, monkeypatch,
                                                                 capsys):
    """export_tflite.py, or export.py --format=savedmodel, run with KERAS_BACKEND=jax: the
    backend is the user's choice, said in one line with status 2, not a traceback."""
    from keras_efficient3d import backends

    monkeypatch.setattr(backends, "backend", lambda: "jax")
    module = load(name)
    model = ["--model=mobilenetv2_0.2x", "--frames=4", "--size=32", "--num_classes=3"]
    status = cli.invoke(module.main, module.define_flags, [name, *model, *_fill(args, paths)])
    _, err = capsys.readouterr()
    _assert_one_line(name, status, err, "needs the TensorFlow backend of Keras (it traces the "
                                        "model into a TensorFlow graph); this process runs "
                                        "KERAS_BACKEND=jax: run it with KERAS_BACKEND=tensorflow.")


def test_multiline_messages_become_one_line(capsys):
    def main(argv, flag_values):
        raise ValueError("The checkpoint does not fit:\n  missing keys: a\n  unexpected keys: b")

    assert cli.invoke(main, _define_nothing, ["prog"]) == 2
    line = capsys.readouterr().err
    # Its sections stay apart: "; " where a line does not continue the one before it.
    assert line == ("test_cli.py: error: The checkpoint does not fit: missing keys: a; "
                    "unexpected keys: b\n")


def test_int_list_flag():
    seen = {}

    def main(argv, flag_values):
        seen["batch_sizes"] = flag_values.batch_sizes

    assert cli.invoke(main, _define_nothing, ["prog"]) == 0 and seen["batch_sizes"] == [1, 8]
    assert cli.invoke(main, _define_nothing, ["prog", "--batch_sizes=2,16"]) == 0
    assert seen["batch_sizes"] == [2, 16]
    for bad in ("1,x", "0,8", ""):
        assert cli.invoke(main, _define_nothing, ["prog", f"--batch_sizes={bad}"]) == 2


def test_a_list_flag_of_choices_needs_at_least_one(capsys):
    from absl import flags

    def define(flag_values):
        flags.DEFINE_list("backends", ["jax"], "Backends.", flag_values=flag_values)
        flags.register_validator("backends", cli.each_of(("jax", "torch")), flag_values=flag_values)

    assert cli.invoke(lambda argv, flag_values: None, define, ["prog", "--backends="]) == 2
    assert capsys.readouterr().err.endswith(": error: flag --backends=[]: needs at least one "
                                       "value, each of jax, torch\n")
    assert cli.invoke(lambda argv, flag_values: None, define, ["prog", "--backends=jax,tf"]) == 2
    assert capsys.readouterr().err.endswith("each of jax, torch; not tf\n")


def test_integer_flag_of_a_sweep_takes_a_list():
    seen = {}

    def define_flags(flag_values):
        cli.define("threads", [1, 2, 4], flag_values=flag_values, multiple=True)
        cli.define("frames", 16, flag_values=flag_values)

    def main(argv, flag_values):
        seen.update(threads=flag_values.threads, frames=flag_values.frames)

    assert cli.invoke(main, define_flags, ["prog"]) == 0 and seen["threads"] == [1, 2, 4]
    assert cli.invoke(main, define_flags, ["prog", "--threads=0,3"]) == 0
    assert seen["threads"] == [0, 3]
    for bad in ("--threads=1,x", "--threads=-1", "--frames=0", "--frames=2.5"):
        assert cli.invoke(main, define_flags, ["prog", bad]) == 2, bad
    with pytest.raises(ValueError, match="multiple"):
        cli.define("model", None, flag_values=flags.FlagValues(), multiple=True)


def test_normalize_argv_accepts_dashes():
    assert cli.normalize_argv(["p", "--width-mult=0.5", "--paper-table", "-x", "--out=a-b",
                               "-lr-steps=3,4", "-", "-1", "my-clip.mp4", "--", "--keep-this"]) == [
        "p", "--width_mult=0.5", "--paper_table", "-x", "--out=a-b", "-lr_steps=3,4", "-", "-1",
        "my-clip.mp4", "--", "--keep-this"]


def test_define_rejects_names_outside_the_vocabulary():
    with pytest.raises(ValueError, match="num_frames"):
        cli.define("num_frames", 16, flag_values=flags.FlagValues())


def test_helper_imports_only_absl_and_the_standard_library():
    import ast

    with open(cli.__file__, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= {"absl", *sys.stdlib_module_names}, imported


def test_vocabulary_table_lists_every_flag():
    for name in cli.VOCABULARY:
        assert f"``--{name}``" in cli.__doc__, name


# --------------------------------------------------------------------------- the CLIs


@pytest.mark.parametrize("name", sorted(CLIS))
def test_clis_define_vocabulary_flags_through_the_helper(name):
    values = fresh_flags(name)
    modules = values.flags_by_module_dict()
    assert "keras_efficient3d.cli" not in modules  # --help lists the tool's own flags
    for flag_name in values:
        if flag_name in cli.VOCABULARY and not is_alias(values[flag_name]):
            assert cli.VOCABULARY[flag_name].help in values[flag_name].help, flag_name
    # The spellings the vocabulary replaced are aliases at most.
    for old in ("num_frames", "image_size", "sample_duration", "sample_size", "keras_file",
                "output_dir", "data_dir", "json", "onnx", "iterations"):
        if old in values:
            assert is_former(values[old]), f"--{old} is a flag of {name}, not an alias"


@pytest.mark.parametrize("name, old, new, value, others", [
    ("train", "output_dir", "output", "runs/x", []),
    ("evaluate", "output_dir", "output", "runs/x", [f"--model_file={__file__}"]),
    ("export", "keras_file", "model_file", __file__, ["--output=x.onnx"]),
    ("data_benchmark", "data-dir", "data_root", ROOT, ["--layout=video"]),
    ("data_benchmark", "json", "json_out", "rows.json", []),
    ("data_benchmark", "sample-duration", "frames", "8", []),
    ("predict", "model", "model_file", __file__, []),
    ("predict", "window", "frames", "8", []),
    ("predict", "output_video", "output", "x.mp4", []),
    ("demo", "output_dir", "output", "runs/x", []),
    ("benchmark_tflite", "output", "json_out", "t.json", []),
    ("benchmark_onnx", "onnx", "model_file", __file__, []),
    ("benchmark_onnx", "iterations", "runs", "7", [f"--model_file={__file__}"]),
    ("benchmark_onnx", "json", "json_out", "r.json", [f"--model_file={__file__}"]),
])
def test_former_spellings_still_work(name, old, new, value, others):
    values = fresh_flags(name)
    values(cli.normalize_argv(["prog", f"--{old}={value}", *others]))
    assert str(values[new].value) == value


def _documented_commands(text, target):
    """The argument lists of the `python ... <target>` commands in ``text``."""
    joined = re.sub(r"\\\s*\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        if target not in line or "python" not in line:
            continue
        tail = line.split(target, 1)[1].split("#", 1)[0].split("|", 1)[0].split("`", 1)[0]
        commands.append(tail.replace("[", " ").replace("]", " ").split())
    return commands


def _flag_names(args):
    return [arg[2:].split("=", 1)[0].replace("-", "_") for arg in args if arg.startswith("--")]


@pytest.mark.parametrize("name", sorted(CLIS))
def test_documented_examples_use_defined_flags(name):
    values = fresh_flags(name)
    module = load(name)
    target = CLIS[name][0]
    commands = _documented_commands(module.__doc__, target)
    for path in [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "*.md"))]:
        with open(path, encoding="utf-8") as handle:
            commands += _documented_commands(handle.read(), target)
    assert commands, f"no documented example of {target}"
    for args in commands:
        for flag_name in _flag_names(args):
            known = (flag_name in values or flag_name in ("flagfile", "helpfull", "help")
                     or (flag_name.startswith("no") and flag_name[2:] in values))
            assert known, f"--{flag_name} in a documented use of {target} is not a flag"
            assert flag_name not in values or not is_former(values[flag_name]), (
                f"a documented use of {target} spells {values[flag_name].help[10:-1]} "
                f"the former way, --{flag_name}")


@pytest.mark.parametrize("flagfile", ["jester", "kinetics600", "ucf101", "synthetic"])
def test_shipped_flagfiles_use_current_names(flagfile):
    values = fresh_flags("train")
    with open(os.path.join(ROOT, "training", "flags", f"{flagfile}.flags")) as handle:
        names = _flag_names(line.strip() for line in handle if not line.startswith("#"))
    for flag_name in names:
        base = flag_name[2:] if flag_name.startswith("no") and flag_name not in values else \
            flag_name
        assert not is_alias(values[base]), f"{flagfile}.flags uses the former --{flag_name}"


@pytest.mark.parametrize("args, as_json", [([], False), (["--format=json"], True),
                                           (["--json"], True), (["--nojson"], False)])
def test_predict_json_is_a_format(monkeypatch, args, as_json):
    module = load("predict")
    seen = {}
    monkeypatch.setattr(module, "run", lambda source, **options: seen.update(options) or 0)
    assert cli.invoke(module.main, module.define_flags, ["predict", "clip.mp4", *args],
                      positional=True) == 0
    assert seen["as_json"] is as_json


# --------------------------------------------------------------------------- errors inside tf.data

_PIPELINE_PROGRAM = '''
import numpy as np
from keras_efficient3d import cli


def main(argv, flag_values):
    import keras
    import tensorflow as tf
    from keras_efficient3d.data.decode import DataError
    from keras_efficient3d.data.pipeline import DecodeFailures
    from keras_efficient3d.data.records import VideoRecord

    failures = DecodeFailures(1)

    def load(i):
        if i >= 2:  # every clip after the second fails to decode
            path = f"clip{i}.mp4"
            failures.add(VideoRecord(path, 0, path, "video"), DataError("cannot open video", path))
        return np.ones(4, np.float32), np.int32(0)

    clips = tf.data.Dataset.range(64).map(
        lambda i: tf.numpy_function(load, [i], (tf.float32, tf.int32)), num_parallel_calls=4)
    clips = clips.map(lambda x, y: (tf.ensure_shape(x, [4]), tf.ensure_shape(y, [])))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(clips.batch(2).prefetch(2), epochs=1, verbose=0)


if __name__ == "__main__":
    cli.run(main, lambda flag_values: None)
'''


def test_a_data_error_inside_fit_ends_in_one_line_and_exits(tmp_path):
    # Too many undecodable videos stop the pipeline with a DataError, which tf.data hands
    # back as a TensorFlow error: one line, status 2, and the process must end (it used to
    # hang, or abort at exit with "terminate called without an active exception").
    program = tmp_path / "prog.py"
    program.write_text(_PIPELINE_PROGRAM)
    proc = subprocess.run([sys.executable, str(program)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), cwd=tmp_path, timeout=240,
                          check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("prog.py: error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and "more than max_decode_failures=1" in errors[0]
    # the path once: the DataError's own message names it
    assert re.search(r"the last: clip\d+\.mp4: cannot open video \(repair or remove them, or "
                     r"raise --max_decode_failures to skip more\)$", errors[0]), errors[0]
    assert "Traceback" not in proc.stderr and "terminate called" not in proc.stderr


def test_only_project_errors_are_unwrapped_from_tensorflow_errors():
    tf = pytest.importorskip("tensorflow")
    carried = tf.errors.InvalidArgumentError(
        None, None, "Graph execution error:\nError in user-defined function: DataError: "
                    "a.mp4: cannot open video\nTraceback ...")
    assert str(cli.unwrap_pipeline_error(carried)) == "a.mp4: cannot open video"
    assert cli.unwrap_pipeline_error(tf.errors.InvalidArgumentError(None, None, "shape")) is None
    assert cli.unwrap_pipeline_error(RuntimeError("DataError: not from TensorFlow")) is None


# --------------------------------------------------------------------------- flagfiles


@pytest.mark.parametrize("text, expected", [
    ("--epochs=1\nepochs=2\n", "run.flags:2: expected a flag such as --name=value, got 'epochs=2'"),
    ("# a comment\n\n--epochs=1  # one epoch\n", "run.flags:3: a comment goes on a line of "
     "its own, not after a flag (a value with ' #' or ' //' in it goes on the command line)"),
    ("\ufeff--epochs=1\n", "run.flags:1: starts with a byte-order mark (U+FEFF), which absl "
     "reads as part of the first flag: save the file as UTF-8 without one"),
    # a shell's quotes, which absl kept: --output="runs/a b" made a folder named '"runs'
    ("--epochs=1\n--output=\"runs/a b\"\n", "run.flags:2: write --output=runs/a b without "
     "quotes (a flagfile's value is the rest of its line, spaces and quotes included)"),
    ("--model='mobilenetv2'\n", "run.flags:1: write --model=mobilenetv2 without quotes"),
    ("--flagfile={nested}\n", "inner.flags:1: expected a flag"),
    ("-flagfile={nested}\n", "inner.flags:1: expected a flag"),
    ("--flagfile {nested}\n", "run.flags:1: a flagfile inside a file is --flagfile=PATH, on one line"),
    ("--epochs=1\n  # an indented comment\n", "run.flags:2: expected a flag such as --name=value, "
                                              "got '# an indented comment'"),
    # absl's own errors name the flag; the line that set it is prefixed
    ("--epochs=1\n--epoch=2\n", "run.flags:2: Unknown command line flag 'epoch'"),
    # absl reads a flagfile's lines as they are: the dashed spelling of the command line
    # is not read there
    ("--epochs=1\n--width-mult=0.5\n", "run.flags:2: write --width_mult in a flagfile (absl "
     "reads its lines as they are; dashed names work on the command line only)"),
    ("\n--epochs=two\n", "run.flags:2: flag --epochs=two: invalid literal for int()"),
    ("--hflip=maybe\n", "run.flags:1: flag --hflip=maybe: expected true or false"),
    # checked as absl parses (it was TrainConfig's, with no line: "Invalid training option")
    ("--epochs=1\n--lr_schedule=cosin\n", "run.flags:2: flag --lr_schedule=cosin: expected "
     "one of steps, plateau, cosine, constant"),
    ("--crop=centre\n", "run.flags:1: flag --crop=centre: expected one of"),
    ("--epochs=1\n--flagfile={nested}.none\n", "run.flags:2: --flagfile="),
    ("--flagfile={nested}.none\n", "inner.flags.none: no such file or directory"),
    ("--nohflip=x\n", "run.flags:1: --nohflip=x does not take an argument"),
    # absl shows the parsed value (0.0 for 0): the line is found all the same
    ("--epochs=1\n--width_mult=0\n", "run.flags:2: flag --width_mult=0.0: must be > 0"),
    ("--lr_steps=10,x\n", "run.flags:1: flag --lr_steps=['10', 'x']: must be comma-separated "
                           "epochs"),
    ("--seed=-1\n", "run.flags:1: flag --seed=-1: -1 is not an integer in the range "
                     "[0, 4294967295]"),
    # unchecked before: Keras' own error after indexing (--verbose=5), a CPU split into -1
    # devices, a plateau that never waited, a rate multiplied by 0
    ("--epochs=1\n--verbose=5\n", "run.flags:2: flag --verbose=5: expected 0 (silent), 1 (a "
                                   "progress bar) or 2 (one line per epoch)"),
    ("--cpu_devices=-1\n", "run.flags:1: flag --cpu_devices=-1: expected 0 (the CPU as one "
                           "device) or a positive integer"),
    ("--lr_patience=-1\n", "run.flags:1: flag --lr_patience=-1: expected 0 or a positive integer"),
    ("--lr_gamma=0\n", "run.flags:1: flag --lr_gamma=0.0: expected a positive number"),
    ("--lr_gamma=nan\n", "run.flags:1: flag --lr_gamma=nan: expected a positive number"),
    ("--momentum=-0.9\n", "run.flags:1: flag --momentum=-0.9: expected a number from 0 up to 1 (not 1)"),
    ("--dropout=1\n", "run.flags:1: flag --dropout=1.0: expected a rate from 0 up to 1 (not 1)"),
])
def test_a_flagfile_mistake_names_its_file_and_line(tmp_path, capsys, text, expected):
    (tmp_path / "inner.flags").write_text("batch_size 4\n")
    flagfile = tmp_path / "run.flags"
    flagfile.write_text(text.format(nested=tmp_path / "inner.flags"))
    module = load("train")
    status = cli.invoke(module.main, module.define_flags, ["train", f"--flagfile={flagfile}"])
    _assert_one_line("train", status, capsys.readouterr().err, expected)


# Every spelling absl reads a flagfile from; the two-word ones went to absl unchecked.
FLAGFILE_FORMS = [lambda path: [f"--flagfile={path}"], lambda path: ["--flagfile", str(path)],
                  lambda path: [f"-flagfile={path}"], lambda path: ["-flagfile", str(path)]]
FORM_IDS = ["--flagfile=PATH", "--flagfile PATH", "-flagfile=PATH", "-flagfile PATH"]


@pytest.mark.parametrize("form", FLAGFILE_FORMS, ids=FORM_IDS)
def test_every_form_of_flagfile_is_checked(tmp_path, capsys, form):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--epochs=1\nepochs=2\n")
    module = load("train")
    status = cli.invoke(module.main, module.define_flags, ["train", *form(flagfile)])
    _assert_one_line("train", status, capsys.readouterr().err,
                     "run.flags:2: expected a flag such as --name=value, got 'epochs=2'")


def test_a_results_file_that_cannot_be_written_is_refused_before_any_timing(tmp_path):
    target = str(tmp_path / "rows.json")
    assert cli._results_file(target)
    assert os.listdir(tmp_path) == []  # the probe leaves nothing
    # A folder that takes no file (/proc here): access(2) says yes to root there, and the
    # benchmark timed everything before it failed to write
    with pytest.raises(flags.ValidationError, match=r"cannot write there \(folder /proc\)"):
        cli._results_file("/proc/rows.json")
    # a JSON named .md: the Markdown table beside it took its name and replaced it
    with pytest.raises(flags.ValidationError, match=r"is the name of the Markdown table"):
        cli._results_file(str(tmp_path / "rows.md"))


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path):
    # `predict ... --format=json | head -3`: no "error: [Errno 32] Broken pipe", the status
    # of a command ended by SIGPIPE.
    script = tmp_path / "lines.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {ROOT!r})\nfrom keras_efficient3d import cli\n"
        "def main(argv, flag_values):\n    for i in range(10 ** 6):\n        print(i)\n"
        "sys.exit(cli.invoke(main, lambda values: None, ['lines']))\n")
    done = subprocess.run(f"{sys.executable} {script} | head -2; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "0\n1\n" and done.stderr == "", done.stderr
    assert done.returncode == 141


def test_a_broken_pipe_other_than_stdout_is_an_error(capsys):
    # A worker that died before its stdin was written (benchmark_backends.py's workers):
    # an error line and status 2, not the quiet end of a reader that closed stdout.
    def main(argv, flag_values):
        worker = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE)
        worker.wait()
        worker.stdin.write(b"x" * 65536)
        worker.stdin.flush()

    assert cli.invoke(main, lambda values: None, ["prog"]) == 2
    assert capsys.readouterr().err.endswith(": error: Broken pipe\n")


@pytest.mark.parametrize("err, line", [
    (OSError(28, "No space left on device", "out/m.onnx"), "out/m.onnx: No space left on device"),
    (OSError(18, "Invalid cross-device link", "a.xml", None, "/mnt/b.xml"),
     "a.xml -> /mnt/b.xml: Invalid cross-device link"),
    (OSError(5, "Input/output error"), "Input/output error"),
    (OSError("cannot write m.onnx (File too large)"), "cannot write m.onnx (File too large)"),
    (ValueError("[Errno 1] a message of its own"), "[Errno 1] a message of its own"),
    (OSError(9, "Bad file descriptor", 999), "999: Bad file descriptor")],
    ids=["file", "two files", "no file", "ours", "not an OSError", "a descriptor"])
def test_an_os_error_reads_file_then_reason(err, line):
    """Python's "[Errno 28] No space left on device: 'out/m.onnx'", as the system's own
    tools say it."""
    assert cli.error_line(err) == line


def test_a_flagfile_that_is_not_text_is_one_line(tmp_path, capsys):
    flagfile = tmp_path / "run.flags"
    flagfile.write_bytes(b"\xff\xfe--epochs=1\n")
    module = load("train")
    status = cli.invoke(module.main, module.define_flags, ["train", f"--flagfile={flagfile}"])
    _assert_one_line("train", status, capsys.readouterr().err,
                     f"--flagfile={flagfile}: not a text file (UTF-8)")


def test_a_flag_set_on_the_command_line_is_reported_without_a_file(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--epochs=two\n--batch_size=4\n")
    argv = ["train", f"--flagfile={flagfile}", "--epochs=3", "--batch-size=x"]
    assert cli.flag_origin(argv, "epochs", "two") == f"{flagfile}:1"
    assert cli.flag_origin(argv, "epochs", "3") is None  # the command line's own
    assert cli.flag_origin(argv, "epochs") == f"{flagfile}:1"  # absl stops at the first
    assert cli.flag_origin(argv, "batch_size", "4") == f"{flagfile}:2"
    assert cli.flag_origin(argv, "batch_size", "x") is None
    argv.append("--batch_size=4")  # the file's value again, later: the command line's
    assert cli.flag_origin(argv, "batch_size", "4") is None
    assert cli.flag_origin(argv, "seed") is None


def test_the_path_after_a_two_word_flagfile_is_left_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "--odd-name.flags").write_text("--epochs=1\n")
    assert cli.normalize_argv(["train", "--flagfile", "--odd-name.flags", "--batch-size=2"]) == [
        "train", "--flagfile", "--odd-name.flags", "--batch_size=2"]


@pytest.mark.parametrize("form", FLAGFILE_FORMS, ids=FORM_IDS)
def test_a_missing_flagfile_is_one_plain_line(tmp_path, capsys, form):
    module = load("train")
    status = cli.invoke(module.main, module.define_flags,
                        ["train", *form(tmp_path / "none.flags")])
    err = capsys.readouterr().err
    _assert_one_line("train", status, err, "none.flags: no such file or directory")
    assert "ERROR" not in err  # absl's own message doubled it: "error: ERROR:: Unable to open"


def test_a_flagfile_under_home_is_found_as_absl_finds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "inner.flags").write_text("--epochs=2\n")
    (tmp_path / "run.flags").write_text("--flagfile=~/inner.flags\n")
    cli.check_flagfile("~/run.flags")
    (tmp_path / "inner.flags").write_text("epochs=2\n")
    with pytest.raises(flags.Error, match="inner.flags:1: expected a flag"):
        cli.check_flagfile("~/run.flags")


@pytest.mark.parametrize("flagfile", ["jester", "kinetics600", "ucf101", "synthetic"])
def test_shipped_flagfiles_pass_the_flagfile_check(flagfile):
    cli.check_flagfile(os.path.join(ROOT, "training", "flags", f"{flagfile}.flags"))


def test_error_line_keeps_the_sections_of_a_message_apart():
    err = ValueError("The checkpoint does not fit model 'm':\n  missing keys (2): a, b\n"
                     "  unexpected keys (1): c")
    assert cli.error_line(err) == ("The checkpoint does not fit model 'm': missing keys (2): a, b; "
                                   "unexpected keys (1): c")
    assert cli.error_line(ValueError("one line")) == "one line"
    assert cli.error_line(ValueError("\n ")) == "ValueError"
