"""keras_efficient3d: resource-efficient 3D CNNs for video classification in Keras 3.

    from keras_efficient3d import MobileNetV2_3D, create_model
    model = MobileNetV2_3D(width_mult=0.45, num_classes=27)
    model = create_model("shufflenet_0.5x_g3", num_classes=27)
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter would otherwise precede every CLI's own messages.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# FFmpeg's own lines about a bad video ("moov atom not found"), read by OpenCV when it first
# opens one: the decoders say which file failed and why, in one line of ours.
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def _module_run():
    """The module of ``python -m MODULE`` (its programs' name, as `cli.run` gives it), read
    from the interpreter's own arguments: sys.argv[0] is "-m" while its package imports."""
    import sys

    argv = getattr(sys, "orig_argv", [])
    for i, arg in enumerate(argv[1:-1], 1):
        if arg == "-m":
            return argv[i + 1]
    return "keras_efficient3d"


def _our_program():
    """The name `cli.run` gives the running program if it is one of the project's
    (training/*.py, deployment/*.py, ``python -m keras_efficient3d.predict``), else None."""
    import sys

    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if sys.argv[:1] == ["-m"]:  # "-m" while runpy imports the package of a module
        module = _module_run()
        return module if module.split(".")[0] == __name__ else None
    repository = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    if script is not None and \
            _os.path.dirname(_os.path.dirname(_os.path.abspath(script))) == repository:
        return _os.path.basename(script)
    return None


# What Keras 3 accepts in KERAS_BACKEND; the project's models run on the first three.
_KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")


def _check_keras_backend():
    """A misspelt KERAS_BACKEND ("jaxx", "pytorch", "Torch") made Keras' own import fail with
    a traceback ending in "Unable to import backend". One of the project's programs ends with
    one line and exit status 2, as for its other bad input; other importers get an
    ImportError that names what is accepted."""
    import sys

    value = _os.environ.get("KERAS_BACKEND", "")
    name = _our_program()
    if not value:  # Keras ignores an empty one
        return
    if value in _KERAS_BACKENDS[:3]:
        import importlib.util

        if value == "tensorflow" or importlib.util.find_spec(value) is not None:
            return
        # Keras' own import ended in a traceback through the package's imports
        message = (f"KERAS_BACKEND={value}, but {value} is not installed: pip install "
                   f"'keras_efficient3d[{value}]'" + (
                       " --extra-index-url https://download.pytorch.org/whl/cpu (PyPI's torch "
                       "is the CUDA build)" if value == "torch" else "") +
                   ", or set another backend")
    elif value in _KERAS_BACKENDS:
        if name is None:  # Keras itself runs there; the project's runners and training do not
            return
        # numpy and openvino: Keras' inference-only backends, on which the programs failed
        # with a KeyError or NotImplementedError (after a new run had moved an old one aside)
        message = (f"KERAS_BACKEND={value} is a Keras backend the project's programs do not "
                   "run on: set tensorflow, jax or torch, or unset it for tensorflow")
        if value == "openvino":
            message += " (to run a model in OpenVINO: deployment/export.py --format=openvino)"
    else:
        import difflib

        typed = value.strip().lower()
        guess = ["tensorflow"] if typed == "tf" else difflib.get_close_matches(typed, _KERAS_BACKENDS, 1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        message = (f"KERAS_BACKEND={value} is not a Keras backend{hint}: set tensorflow, jax or "
                   "torch, or unset it for tensorflow")
    if name is None:
        raise ImportError(message)
    sys.stderr.write(f"{name}: error: {message}\n")
    raise SystemExit(2)  # through the imports without a traceback


def _quiet_interrupt_of_our_programs():
    """A Ctrl-C during the seconds this import takes (TensorFlow's) ends one of the project's
    programs with ``<prog>: interrupted``, as `cli.run` ends them later, not a traceback
    through the imports. Other programs that import the package keep Python's own report."""
    import sys

    name = _our_program()
    if name is None:
        return
    report = sys.excepthook
    # imported here: the hooks below may run while the interpreter shuts down
    import _thread
    import signal
    import threading
    import time

    # A Ctrl-C inside a C extension's import can reach Python as another error: during
    # numpy's, its datetime import fails and numpy raises an ImportError, the interrupt gone
    # (a traceback and status 1). The signal is noted as it arrives.
    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        signal.default_int_handler(signum, frame)  # KeyboardInterrupt, as Python's own

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)

    def hook(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):  # Python still exits as by SIGINT (130)
            sys.stderr.write(f"{name}: interrupted\n")
            return
        if interrupted:  # the interrupt, turned into another error on its way
            sys.stderr.write(f"{name}: interrupted\n")
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.raise_signal(signal.SIGINT)  # the status of a Ctrl-C, as Python's own
            return
        report(kind, value, traceback)

    sys.excepthook = hook

    unraisable = sys.unraisablehook
    main_thread = threading.main_thread().ident

    def resend():
        time.sleep(0.01)
        # a real SIGINT: it wakes a blocking call (a camera's read, a sleep), where a flag
        # set by _thread.interrupt_main would wait for it to return
        signal.pthread_kill(main_thread, signal.SIGINT)

    def lost(event):
        # A Ctrl-C that lands in a garbage-collector callback (JAX's, which TensorFlow's import
        # installs when JAX is there) or a __del__ is "ignored" by Python: a traceback, then
        # the program went on. Sent again once this hook has returned (raised in it, it would
        # be ignored again), it stops the program where it is. A bare thread: a Timer takes
        # threading's lock, which the collection may have interrupted a holder of.
        if issubclass(event.exc_type, KeyboardInterrupt) and not sys.is_finalizing() and \
                threading.get_ident() == main_thread:
            _thread.start_new_thread(resend, ())
            return
        unraisable(event)

    sys.unraisablehook = lost


_check_keras_backend()
_quiet_interrupt_of_our_programs()


def _import_tensorflow_with_onednn():
    """Imports TensorFlow with its oneDNN kernels on, unless the user has decided.

    TensorFlow turns them on by default only on CPUs with AVX-512 VNNI/BF16/AMX; on AVX2
    machines they still make these models 1.2-2x faster (MobileNetV2 1.0x inference 94 ->
    79 ms, training 2.0 -> 3.9 clips/s, 2 threads). The switch is read once, when TensorFlow
    is first imported: set TF_ENABLE_ONEDNN_OPTS=0 (or import TensorFlow first) to opt out.
    The variable is removed again so that child processes (TensorFlow-only scripts) start as
    the user's environment says.
    """
    import sys

    if "tensorflow" in sys.modules or "TF_ENABLE_ONEDNN_OPTS" in _os.environ or \
            _os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    _os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    try:
        import_tensorflow_quietly()
    finally:
        del _os.environ["TF_ENABLE_ONEDNN_OPTS"]


# Optional imports that TensorFlow's own import makes where the package is installed, which no
# program of the project uses: JAX for TFLite's JAX converter and for Keras' Orbax callback,
# scikit-learn (which NNCF installs) for Keras' scikit-learn wrappers, matplotlib's pyplot for
# Keras' image galleries. Together they were 1.5 s of a program's 5 s start-up on 2 cores
# (`python -X importtime`).
_UNUSED_IMPORTS = {
    "jax": ("tensorflow.lite.", "keras.src.callbacks.orbax_checkpoint"),
    "sklearn": ("keras.src.wrappers.",),
    "matplotlib": ("keras.src.visualization.",),
}


class _SkipUnusedImports:
    """A finder that answers "not installed" for `_UNUSED_IMPORTS` (and their submodules) to
    those importers only, which treat the package as optional: an import by anything else
    (the JAX backend, NNCF's use of scikit-learn, the project's plots) goes through."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        importers = _UNUSED_IMPORTS.get(name.partition(".")[0])
        if importers is None:
            return None
        import sys

        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(
                ("importlib", "_frozen_importlib")):
            frame = frame.f_back
        if frame is not None and frame.f_globals.get("__name__", "").startswith(importers):
            raise ModuleNotFoundError(f"{name} is not imported by this program", name=name)
        return None


class _skipping_unused_imports:
    """While one of the project's programs imports Keras and TensorFlow (on any backend), the
    imports they would make for `_UNUSED_IMPORTS` are skipped. A user's program keeps them
    (Keras' scikit-learn wrappers work in it)."""

    def __enter__(self):
        import sys

        self.active = _our_program() is not None
        if self.active:
            sys.meta_path.insert(0, _SkipUnusedImports)

    def __exit__(self, *exc):
        import sys

        if self.active:
            sys.meta_path.remove(_SkipUnusedImports)


def import_tensorflow_quietly():
    """Imports TensorFlow, if installed and not yet imported, without the notices it prints on
    file descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says (oneDNN's, on CPUs where it is on by
    default); other start-up output is passed on. The CLIs' one-line messages stay one line,
    on any Keras backend: on PyTorch and JAX, Keras imports TensorFlow too, the first time it
    serialises a layer's config (loading or folding a .keras model)."""
    import sys

    if "tensorflow" in sys.modules:
        return
    import importlib.util
    import tempfile

    if importlib.util.find_spec("tensorflow") is None:
        return
    try:
        sys.stderr.flush()
        saved = _os.dup(2)
    except (OSError, ValueError):
        saved = None
    with tempfile.TemporaryFile() as captured:
        if saved is not None:
            _os.dup2(captured.fileno(), 2)
        try:
            with _skipping_unused_imports():
                import tensorflow  # noqa: F401
        finally:
            if saved is not None:
                _os.dup2(saved, 2)
                _os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines()
    kept = [line for line in lines if "oneDNN custom operations are on" not in line
            and "before absl::InitializeLog() is called" not in line]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")


# Keras' own import (on JAX and PyTorch, before TensorFlow's) skips them too.
with _skipping_unused_imports():
    _import_tensorflow_with_onednn()

    # These imports register every class the project writes into .keras files (the layers,
    # VideoModel, Folded, TorchSGD, VideoPreprocessing), so that any file it saved loads after
    # this import alone.
    from keras_efficient3d import backends, layers, presets
    from keras_efficient3d import fold as _fold  # noqa: F401  Folded (BatchNorm-folded models)
    from keras_efficient3d import optim as _optim  # noqa: F401  TorchSGD (training checkpoints)
    from keras_efficient3d import preprocessing as _preprocessing  # noqa: F401  VideoPreprocessing
    from keras_efficient3d.models import (
        C3D,
        MobileNetV1_3D,
        MobileNetV2_3D,
        ResNet3D,
        ResNeXt3D,
        ShuffleNetV1_3D,
        ShuffleNetV2_3D,
        SqueezeNet_3D,
        VideoModel,
    )
    from keras_efficient3d.registry import create_model, list_models, register_model

# `MobileNetV2_3D.from_preset(...)`, as keras-hub's models have.
presets.attach_to_builders()

__all__ = [
    "C3D",
    "MobileNetV1_3D",
    "MobileNetV2_3D",
    "ResNet3D",
    "ResNeXt3D",
    "ShuffleNetV1_3D",
    "ShuffleNetV2_3D",
    "SqueezeNet_3D",
    "VideoModel",
    "backends",
    "create_model",
    "layers",
    "list_models",
    "presets",
    "register_model",
]
