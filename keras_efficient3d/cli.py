"""One vocabulary and one error contract for the project's command lines.

Every CLI (``training/*.py``, ``deployment/*.py``, ``python -m keras_efficient3d.*``) uses
absl flags, spells the same thing the same way and defines it through `define`, so that a
flag has one help text and one check everywhere:

=====================  ======================================================  ==================
flag                   meaning                                                 type
=====================  ======================================================  ==================
``--model``            registry name, alias or configuration name              string
``--models``           registry or configuration names (benchmarks)            comma list
``--model_file``       a saved model to read (.keras; .tflite/.onnx where the  existing file
                       tool runs them)
``--weights``          trained weights for ``--model`` (.weights.h5, .keras)   existing file
``--checkpoint``       PyTorch checkpoint (.pth) of Efficient-3DCNNs           existing file
``--num_classes``      classes of the classifier                               int >= 1
``--width_mult``       width multiplier (MobileNets, ShuffleNets)              float > 0
``--groups``           ShuffleNetV1 groups                                     int >= 1
``--shortcut``         ResNet/ResNeXt shortcut                                 A or B
``--cardinality``      ResNeXt cardinality                                     int >= 1
``--depth``            ResNet/ResNeXt depth                                    int >= 1
``--version``          SqueezeNet version                                      1.0 or 1.1
``--frames``           frames per clip (of the model's input, or of the        int >= 1
                       generated videos)
``--size``             frame height and width                                  int >= 1
``--normalization``    input normalisation preset (original, kinetics, unit)   string
``--labels``           class names: a text file, one per line (predict also    string
                       takes a preset name)
``--dataset``          dataset layout (jester, kinetics600, ucf101, ...)       string
``--data_root``        dataset folder                                          existing folder
``--annotations``      annotation files of the dataset                         string
``--downsample``       temporal stride between sampled frames                  int >= 1
``--batch_size``       clips per batch                                         int >= 1
``--batch_sizes``      batch sizes to time                                     ints >= 1, "1,8"
``--threads``          CPU threads of the runtime (0: its default); a comma    int >= 0
                       list in a benchmark that sweeps them
``--warmup``           untimed runs first                                      int >= 0
``--runs``             timed runs                                              int >= 1
``--rounds``           interleaved rounds: each setting timed once a round,    int >= 1
                       in turns (timing scripts)
``--precision``        TFLite precision: fp32, fp16, dynamic, int8             enum
``--openvino_precision``
                       OpenVINO float precision: f32, or auto (the CPU's       enum
                       default: bf16 on CPUs with bf16 units)
``--openvino_device``  OpenVINO device: CPU, GPU, NPU, AUTO or a list such     string
                       as AUTO:GPU,CPU (one this machine has)
``--seed``             random seed                                             int
``--videos_per_class`` synthetic videos per class                              int >= 1
``--output``           what the tool writes: a file or a folder (its help      path
                       says which; a file where a folder is needed, or the
                       reverse, is an error)
``--json_out``         also write the results as JSON to this file (its        path
                       folder must exist)
``--format``           the form of the output (export: onnx, savedmodel;       enum
                       complexity: table, json, csv)
``--peers_json``       rows of deployment/benchmark_pytorch.py measured on     existing file
                       this machine: the original model's timings (timing
                       scripts)
``--gemm_peak``        measure this machine's fp32 GEMM peak and show each     bool
                       model's MAC/s as a share of it (timing scripts)
=====================  ======================================================  ==================

Flags of one tool only (``--opset``, ``--lr_schedule``, ...) stay in that tool. Dashed
spellings (``--width-mult``) are accepted for every flag on the command line; absl reads a
flagfile's lines itself, so a dashed name there is refused naming the file and line.

Error contract: bad input (a missing or unreadable file, a flag value of the wrong type, a
wrong combination of flags, an unknown model name) ends the program with one line
``<prog>: error: <message>`` on stderr and exit status 2. `run` maps the project's
ValueError subclasses (DataError, ConversionError, CheckpointError, `UsageError`), OSError
and absl's flag errors to that line; anything else is a bug and keeps its traceback. Run
with ``-v 1`` to see the traceback of a mapped error too. Ctrl-C ends with
``<prog>: interrupted`` and status 130.

A CLI module has ``define_flags(flag_values)``, ``main(argv, flag_values)`` (mapping flags
to a plain function) and ends with ``cli.run(main, define_flags)``; tests call
``cli.invoke(main, define_flags, argv)``, which parses into fresh flag values and returns
the exit status. This module imports the standard library and absl only: a script that
runs without TensorFlow (``deployment/benchmark_pytorch.py``, in a PyTorch environment)
can load it by its path.
"""

import dataclasses
import logging
import os
import re
import select
import sys
import tempfile
import zipfile

from absl import app, flags
from absl import logging as absl_logging

__all__ = ["VOCABULARY", "UsageError", "define", "define_alias", "invoke", "normalize_argv", "run"]


class UsageError(ValueError):
    """A command line that cannot work: a wrong combination of flags, a missing input."""


# What `run` turns into one line and exit status 2; anything else is a bug.
EXPECTED_ERRORS = (ValueError, OSError, zipfile.BadZipFile, app.UsageError, flags.Error)


# --------------------------------------------------------------------------- checks


def each_of(choices):
    """A check of a list flag: at least one value, each of `choices`."""
    def check(values):
        if not values:  # "--backends=": the message of an unknown value would name none
            raise flags.ValidationError(f"needs at least one value, each of {', '.join(choices)}")
        unknown = [value for value in values if value not in choices]
        if unknown:
            raise flags.ValidationError(f"each of {', '.join(choices)}; not {', '.join(unknown)}")
        return True

    return check


# An empty string is unset, as None is (TrainConfig's data_root defaults to "").


def existing_file(value):
    """Check of a flag that names a file to read."""
    if value and not os.path.isfile(value):
        what = "a folder, not a file" if os.path.isdir(value) else "no such file"
        if os.path.isfile(os.path.join(value, "saved_model.pb")):
            # export.py --format=savedmodel's folder, for TF-TRT: no runner here takes one
            what = "a SavedModel folder (export.py --format=savedmodel's), not a file"
        raise flags.ValidationError(what)
    return True


def existing_folder(value):
    """Check of a flag that names a folder to read."""
    if value and not os.path.isdir(value):
        what = "a file, not a folder" if os.path.exists(value) else "no such folder"
        raise flags.ValidationError(what)
    return True


def _positive(value):
    if value is not None and value <= 0:
        raise flags.ValidationError("must be > 0")
    return True


def output_file(value):
    """Check of an ``--output`` that names a file: an existing folder there is an error."""
    if value and os.path.isdir(value):
        raise flags.ValidationError("is a folder; a file is needed")
    return True


def keras_output(value):
    """Check of an ``--output`` that names a model to write: a ``.keras`` file (a ``.h5`` name
    would hold a zip that no HDF5 reader, Keras' included, can open)."""
    output_file(value)
    if value and not value.endswith(".keras"):
        # Keras writes and reads the extension in lower case only: X.KERAS failed after the work
        case = " in lower case" if value.lower().endswith(".keras") else ""
        raise flags.ValidationError(f"expected a file name ending in .keras{case}")
    return True


def output_folder(value):
    """Check of an ``--output`` that names a folder: an existing file there is an error."""
    if value and os.path.isfile(value):
        raise flags.ValidationError("is an existing file; a folder is needed")
    return True


def output_parent(path, flag="--output"):
    """Checks, before a slow build, that the folder `path` goes into exists and can be
    written: a mistyped folder is reported, not created, as predict's --output and every
    --json_out do. Raises `UsageError` naming the user's path."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"{flag} {path}: {directory} is a file, not a folder")
    if not os.path.isdir(directory):
        raise UsageError(f"{flag} {path}: folder {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{flag} {path}: cannot write in folder {directory}")
    return path


def writable_folder(path, flag="--output"):
    """Checks, before a long evaluation, that results can be written into folder `path`
    (made later where missing): its nearest existing ancestor is a folder this process may
    write in. Raises `UsageError` naming the flag and the user's path."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"{flag} {path}: cannot write in folder {existing}")
    return path


def refuse_unused(flag_values, names, mode, why):
    """Refuses the flags of `names` given (on the command line, not by default) with `mode`
    (``--op_profile``), which does not read them: they would be silently ignored. `why`
    completes the message. Raises `UsageError` naming every one given."""
    given = [f"--{name}" for name in names if flag_values[name].present]
    if given:
        verb = "is" if len(given) == 1 else "are"
        raise UsageError(f"{' and '.join(given)} {verb} not used with {mode}: {why}")


def random_weights(flag_values):
    """Whether an exporter's flags name a registry model (``--model``) without ``--weights``."""
    return not flag_values["model_file"].value and not flag_values["weights"].value


def note_random_weights(flag_values, what, agreement=False):
    """A `note:` on stderr, once the file is written, for an export of a registry model
    (``--model``) without ``--weights``: its weights are random, which the user may not know
    (the README's first commands export such files to time them); `what` is what the file is
    good for. With `agreement` (an int8 file checked against the float model), the note says
    that figure means nothing either: random weights give near-equal logits, whose order no
    int8 model follows (the exporters warn of a low agreement only for real weights)."""
    if random_weights(flag_values):
        meaningless = ("its classes mean nothing, nor does its int8 top-1 agreement"
                       if agreement else "its classes mean nothing")
        print(f"note: --model={flag_values['model'].value} without --weights: random weights "
              f"({what}; {meaningless})", file=sys.stderr)


def refuse_beside_model_file(flag_values, names, carries):
    """`refuse_unused` for the flags of `names` that set up a registry model (--model), given
    beside ``--model_file``, whose .keras file fixes what they set (`carries`, in words)."""
    if flag_values["model_file"].value:
        refuse_unused(flag_values, names, "--model_file",
                      f"the .keras file carries its own {carries} (flags set them for --model)")


def _results_file(value):
    # A benchmark writes its JSON after minutes of timing: a path that cannot be written is
    # reported before anything is timed.
    output_file(value)
    if value and value.lower().endswith(".md"):
        # the Markdown table is written beside the JSON under the JSON's name with .md: the
        # table replaced the JSON ("wrote res.md, res.md")
        raise flags.ValidationError("is the name of the Markdown table, written beside the JSON "
                                    "(results.json and results.md): give the JSON's name")
    folder = os.path.dirname(os.path.abspath(value)) if value else None
    if folder and not os.path.isdir(folder):
        raise flags.ValidationError(f"no such folder: {folder}")
    # The folder alone: the file is replaced by a rename (atomic_write), not written into. A
    # file made and removed at once, not os.access, which says yes to root everywhere (a
    # benchmark into /proc timed everything, then could not write)
    if folder:
        try:
            handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        except OSError:
            raise flags.ValidationError(f"cannot write there (folder {folder})") from None
        os.close(handle)
        os.remove(probe)
    return True


class IntListParser(flags.ListParser):
    """Comma-separated integers (``--batch_sizes=1,8``), each at least ``minimum``."""

    def __init__(self, minimum=1):
        super().__init__()
        self.minimum = minimum

    def parse(self, argument):
        items = super().parse(argument)
        try:
            values = [int(item) for item in items]
        except (TypeError, ValueError):
            raise ValueError("expected comma-separated integers, e.g. 1,8") from None
        if not values:
            raise ValueError("expected at least one integer")
        if any(value < self.minimum for value in values):
            raise ValueError(f"every value must be >= {self.minimum}")
        return values

    def flag_type(self):
        return "comma separated list of integers"


# --------------------------------------------------------------------------- vocabulary


@dataclasses.dataclass(frozen=True)
class Flag:
    kind: str  # string, integer, float, bool, enum, list, int_list
    help: str
    check: object = None
    choices: tuple = ()
    minimum: int | None = None  # integer kinds
    maximum: int | None = None  # integer flags


VOCABULARY = {
    "model": Flag("string", "Registry name, alias or configuration name (mobilenetv2, "
                  "shufflenet_0.5x_g3, resnet18, ...)."),
    "models": Flag("list", "Registry or configuration names, comma-separated."),
    "model_file": Flag("string", "A saved model to read.", existing_file),
    "weights": Flag("string", "Trained weights for --model (.weights.h5 or .keras).",
                    existing_file),
    "checkpoint": Flag("string", "PyTorch checkpoint (.pth) written by Efficient-3DCNNs.",
                       existing_file),
    "num_classes": Flag("integer", "Classes of the classifier.", minimum=1),
    "width_mult": Flag("float", "Width multiplier (MobileNets, ShuffleNets).", _positive),
    "groups": Flag("integer", "ShuffleNetV1 groups.", minimum=1),
    "shortcut": Flag("enum", "ResNet/ResNeXt shortcut type.", choices=("A", "B")),
    "cardinality": Flag("integer", "ResNeXt cardinality.", minimum=1),
    "depth": Flag("integer", "ResNet/ResNeXt depth.", minimum=1),
    "version": Flag("enum", "SqueezeNet version.", choices=("1.0", "1.1")),
    "frames": Flag("integer", "Frames per clip.", minimum=1),
    "size": Flag("integer", "Frame height and width.", minimum=1),
    "normalization": Flag("string", "Input normalisation preset: original (ActivityNet mean, "
                          "0-255, RGB), kinetics (the same in BGR), unit, none, ..."),
    "labels": Flag("string", "Class names: a text file, one name per line."),
    "dataset": Flag("string", "Dataset layout: jester, kinetics600, ucf101, folders "
                    "(<root>/<split>/<class>/...) or synthetic."),
    "data_root": Flag("string", "Dataset folder (frames or videos).", existing_folder),
    "annotations": Flag("string", "Annotation files: Jester CSV folder or JSON, Kinetics CSV folder "
                        "(train.csv and validate.csv, or val.csv, kinetics-600_val.csv...), CSV "
                        "or comma-separated CSVs, "
                        "UCF-101 list folder."),
    "downsample": Flag("integer", "Temporal stride between sampled frames.", minimum=1),
    "batch_size": Flag("integer", "Clips per batch.", minimum=1),
    "batch_sizes": Flag("int_list", "Batch sizes to time, comma-separated.", minimum=1),
    "threads": Flag("integer", "CPU threads of the runtime (0: its default).", minimum=0),
    "warmup": Flag("integer", "Untimed runs first.", minimum=0),
    "runs": Flag("integer", "Timed runs.", minimum=1),
    "rounds": Flag("integer", "Interleaved rounds: every setting is timed once a round, in "
                   "turns, so that a change of the machine's load hits them alike.", minimum=1),
    "precision": Flag("enum", "TFLite precision.", choices=("fp32", "fp16", "dynamic", "int8")),
    "openvino_precision": Flag("enum", "OpenVINO .xml models: f32 (what the Keras model "
                               "computes) or auto (the device's default: bf16 on CPUs with bf16 "
                               "units, 1.5-2.4x faster there; f16 on Intel GPUs).",
                               choices=("f32", "auto")),
    "openvino_device": Flag("string", "OpenVINO .xml models: the device that runs them: CPU, "
                            "GPU (Intel graphics), NPU, AUTO (OpenVINO picks), or a list such "
                            "as AUTO:GPU,CPU; one this machine has (--threads sets the "
                            "CPU's threads)."),
    # NumPy's and Keras' seeds are 32-bit unsigned
    "seed": Flag("integer", "Random seed.", minimum=0, maximum=2**32 - 1),
    "videos_per_class": Flag("integer", "Synthetic videos per class.", minimum=1),
    "output": Flag("string", "Where the result is written."),
    "json_out": Flag("string", "Also write the results as JSON to this file (in an existing "
                     "folder).", _results_file),
    "format": Flag("enum", "Form of the output."),  # each tool gives its choices
    "peers_json": Flag("string", "Rows of deployment/benchmark_pytorch.py measured on this "
                       "machine: the original model in PyTorch, ONNX Runtime and OpenVINO, "
                       "and our speed-up against the best of them.", existing_file),
    "gemm_peak": Flag("bool", "Measure this machine's fp32 GEMM peak at the timed thread "
                      "counts and show each model's achieved MAC/s as a share of it."),
}


def define(name, default=None, note=None, *, flag_values=flags.FLAGS, required=False,
           check=None, choices=None, multiple=False):
    """Defines vocabulary flag ``name`` on ``flag_values``.

    Args:
        name: a key of `VOCABULARY`.
        default: the tool's default.
        note: appended to the shared help text (the tool's specifics, e.g. "(default: the
            run's)").
        required: the flag must be given.
        check: an extra check (``existing_file``, ``output_file``, ``output_folder``, ...)
            that returns True or raises ``flags.ValidationError``.
        choices: enum values, when the tool accepts fewer than the vocabulary.
        multiple: an integer flag that takes a comma-separated list (a benchmark sweeping
            ``--threads=1,2,4``).
    """
    if name not in VOCABULARY:
        raise ValueError(f"`name` must be a flag of the vocabulary ({sorted(VOCABULARY)}). "
                         f"Received: name={name!r}")
    spec = VOCABULARY[name]
    kind = spec.kind
    if multiple:
        if kind != "integer":
            raise ValueError(f"`multiple` applies to integer flags. Received: name={name!r}")
        kind = "int_list"
    help_text = f"{spec.help} {note}" if note else spec.help
    kwargs = {"flag_values": flag_values, "required": required,
              "module_name": _calling_module()}
    if kind == "string":
        flags.DEFINE_string(name, default, help_text, **kwargs)
    elif kind == "integer":
        flags.DEFINE_integer(name, default, help_text, lower_bound=spec.minimum,
                             upper_bound=spec.maximum, **kwargs)
    elif kind == "float":
        flags.DEFINE_float(name, default, help_text, **kwargs)
    elif kind == "bool":
        flags.DEFINE_bool(name, default, help_text, **kwargs)
    elif kind == "enum":
        flags.DEFINE_enum(name, default, list(choices or spec.choices), help_text, **kwargs)
    elif kind == "list":
        flags.DEFINE_list(name, default, help_text, **kwargs)
    else:  # int_list
        parser = IntListParser(-sys.maxsize if spec.minimum is None else spec.minimum)
        flags.DEFINE(parser, name, default, help_text, serializer=flags.CsvListSerializer(","),
                     **kwargs)
    for checker in (spec.check, check):
        if checker is not None:
            flags.register_validator(name, checker, flag_values=flag_values)


# flag name -> the former spellings `define_alias` keeps, for errors in the words typed
_ALIASES: dict[str, set] = {}


def define_alias(old, new, flag_values=flags.FLAGS):
    """Keeps a former spelling (flagfiles, scripts) working: ``--old`` sets ``--new``."""
    flags.DEFINE_alias(old, new, flag_values=flag_values, module_name=_calling_module())
    _ALIASES.setdefault(new, set()).add(old)


def _calling_module():
    # absl's --help lists the flags of the main module: register them under the CLI that
    # asked for them, not under this helper.
    name = sys._getframe(2).f_globals.get("__name__", "")
    return sys.argv[0] if name == "__main__" else name


# --------------------------------------------------------------------------- running


def normalize_argv(argv):
    """Accepts ``--width-mult`` for ``--width_mult``; values and the part after ``--`` stay.
    Flagfiles are checked first (`check_flagfile`), in each form absl reads: ``--flagfile=PATH``,
    ``--flagfile PATH`` and their one-dash spellings."""
    out = list(argv[:1])
    for arg, flagfile in _command_line(argv):
        if flagfile is not None:
            check_flagfile(flagfile)
        out.append(arg)
    return out


# What absl takes for a flagfile directive: one or two dashes; "=PATH", or PATH as the next
# argument on the command line (inside a file, each line is one argument).
_FLAGFILE = re.compile(r"--?flagfile(?P<sep>=|\s+|$)(?P<path>.*)")


def _command_line(argv):
    """Yields ``(argument, flagfile)`` for each argument after the program's name, the flag's
    name with dashes as underscores, and flagfile the path it names (``--flagfile=PATH``, or
    PATH after ``--flagfile``), else None. What follows ``--`` absl does not read: it comes
    unchanged."""
    path_follows = False
    for i, arg in enumerate(argv[1:], 1):
        if path_follows:  # absl takes the next argument as the path, whatever it looks like
            path_follows = False
            yield arg, arg
            continue
        if arg == "--":
            yield from ((rest, None) for rest in argv[i:])
            return
        # absl takes one dash as two (-width_mult=0.5): its dashed spelling too
        dashes = 2 if arg.startswith("--") else 1 if arg[:1] == "-" and arg[1:2].isalpha() else 0
        if dashes and not arg.startswith("---"):
            name, sep, value = arg[dashes:].partition("=")
            arg = "-" * dashes + name.replace("-", "_") + sep + value
        directive = _FLAGFILE.fullmatch(arg)
        # one argument "--flagfile PATH" is no directive
        path_follows = bool(directive) and not directive["sep"]
        yield arg, directive["path"] if directive and directive["sep"] == "=" else None


def check_flagfile(path):
    """Refuses, naming the file and line, what absl would misread in a flagfile: a line that
    is not a flag (absl passes ``epochs=1`` on as an argument: "unexpected arguments"), and a
    comment after a flag (absl takes it into the value: "invalid literal for int()")."""
    for _ in _flagfile_args(path):
        pass


def _flagfile_args(path, _seen=(), _where=""):
    """Yields ``(flag, "PATH:LINE")`` for each flag in flagfile `path`, a nested flagfile's in
    its place, after `check_flagfile`'s checks of each line (flags.Error)."""
    if path in _seen:
        return
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:  # as absl opens it
            lines = handle.read().splitlines()
    except OSError as err:
        raise flags.Error(f"{_where}--flagfile={path}: "
                          f"{err.strerror.lower() if err.strerror else err}") from None
    except UnicodeDecodeError:
        raise flags.Error(f"{_where}--flagfile={path}: not a text file (UTF-8), as a flagfile "
                          "is") from None
    if lines and lines[0].startswith("\ufeff"):
        # an editor's UTF-8 signature: absl opens the file as UTF-8 and keeps it in the flag
        raise flags.Error(f"{path}:1: starts with a byte-order mark (U+FEFF), which absl reads "
                          "as part of the first flag: save the file as UTF-8 without one")
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        # absl skips a comment only from the line's first character; an indented one it
        # passes on as an argument
        if not line or raw.startswith(("#", "//")):
            continue
        if not line.startswith("-"):
            raise flags.Error(f"{path}:{number}: expected a flag such as --name=value, "
                              f"got {line!r}")
        dashed = re.match(r"--?([A-Za-z_][A-Za-z0-9_]*-[A-Za-z0-9_-]*)(=|$)", line)
        if dashed:
            raise flags.Error(f"{path}:{number}: write --{dashed[1].replace('-', '_')} in a "
                              f"flagfile (absl reads its lines as they are; dashed names work "
                              f"on the command line only): {line!r}")
        if re.search(r"\s(#|//)", line):
            # A value with " #" in it (a path) reads the same as a trailing comment: it
            # goes on the command line, where the shell's quoting says which it is.
            raise flags.Error(f"{path}:{number}: a comment goes on a line of its own, not after "
                              f"a flag (a value with ' #' or ' //' in it goes on the command "
                              f"line): {line!r}")
        quoted = re.fullmatch(r"(--?[A-Za-z_][A-Za-z0-9_]*=)(['\"])(.*)\2", line)
        if quoted:
            # a shell's quotes: absl keeps them in the value (an --output of '"runs/a b"'
            # made a folder named '"runs')
            raise flags.Error(f"{path}:{number}: write {quoted[1]}{quoted[3]} without quotes (a "
                              "flagfile's value is the rest of its line, spaces and quotes "
                              f"included): {line!r}")
        directive = _FLAGFILE.fullmatch(line)
        if directive and directive["sep"] != "=":
            raise flags.Error(f"{path}:{number}: a flagfile inside a file is --flagfile=PATH, on "
                              f"one line: {line!r}")
        if directive:
            # absl reads a nested flagfile relative to the working folder, as on the command line
            yield from _flagfile_args(directive["path"], (*_seen, path), f"{path}:{number}: ")
        else:
            yield line, f"{path}:{number}"


def flag_origin(argv, name, value=None):
    """``"PATH:LINE"`` of the flagfile line that set flag `name` (to `value`, where given:
    the last such line, as absl keeps the last value; else the first line that names it, as
    absl stops at the first unknown flag), or None where that was the command line or
    nothing: absl's own errors name the flag, not the file a user has to fix."""
    origin, found, last = None, False, None
    for arg, where in _given_args(argv):
        given, _, given_value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or name not in (given, given.removeprefix("no")):
            continue
        last = where
        if value is None and not found or value is not None and given_value == value:
            origin, found = where, True
    # absl shows a parsed value ("0.0" for a line's --width_mult=0): the last line naming
    # the flag, the one absl kept
    return origin if found or value is None else last


def _given_args(argv):
    """``(argument, where)`` for each argument absl reads: the command line's (where None)
    and each flagfile line's in its place (where ``"PATH:LINE"``)."""
    for arg, flagfile in _command_line(argv):
        if flagfile is None:
            yield arg, None
            continue
        try:
            yield from _flagfile_args(flagfile)
        except flags.Error:  # a flagfile absl could not read has no line to show
            pass


def _spelling(argv, name):
    """The former spelling (`define_alias`) that set flag `name` last, or None where that was
    its own name: absl's errors name the flag an alias sets (`--window=0` was "flag
    --frames=0")."""
    typed = None
    for arg, _ in _given_args(argv):
        given = arg.lstrip("-").partition("=")[0]
        if arg.startswith("-") and (given == name or given in _ALIASES.get(name, ())):
            typed = None if given == name else given
    return typed


def _flag_error(err, argv, flag_values=None):
    """`err` (an absl flags.Error) with the flagfile line of its flag before it, where a
    flagfile set it; a required flag left out, said as such (absl: "flag --output=None: Flag
    --output must have a value other than None.") with its help (`flag_values`' flag)."""
    lines = str(err).splitlines()
    missing = [re.fullmatch(r"flag --(\w+)=None: Flag --\1 must have a value other than None\.",
                            line.strip()) for line in lines]
    if lines and all(missing):  # absl says each required flag left out on a line of its own

        def required(name):
            flag = flag_values[name] if flag_values is not None and name in flag_values else None
            about = f" ({flag.help.strip().rstrip('.')})" if flag is not None and flag.help else ""
            return f"--{name} is required{about}"

        return flags.Error("; ".join(required(match.group(1)) for match in missing))
    name, value = getattr(err, "flagname", None), None
    if name is None:
        match = (re.match(r"flag --(\w+)=(.*?): ", str(err)) or
                 re.match(r"--(\w+)=(.*) does not take an argument", str(err)))
        name, value = (match.group(1), match.group(2)) if match else (None, None)
    # absl shows a bad boolean's ValueError as a tuple
    text = re.sub(r"\('Non-boolean argument to boolean flag', '.*'\)",
                  "expected true or false", str(err))
    alias = name and _spelling(argv, name)
    if alias:
        text = text.replace(f"--{name}=", f"--{alias}=", 1)
        name = alias
    where = name and flag_origin(argv, name, value)
    return flags.Error(f"{where}: {text}" if where else text)


def program_name(main):
    """``train.py`` for a script, ``keras_efficient3d.convert`` for a module run with -m."""
    module = main.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else ""
    if module.startswith("keras_efficient3d."):
        # A package run with -m (predict) keeps its command line in its `command` module.
        return module.removesuffix(".command")
    return os.path.basename(main.__code__.co_filename)


def error_line(err):
    """The message of ``err`` on one line: its lines joined by "; " (a space after a line
    that ends in ":" or ",", which the next one continues), so that the sections of a
    multi-line message stay apart."""
    lines = [line.strip() for line in _message(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    for line in lines[1:]:
        text += (" " if text.endswith((":", ",", ";")) else "; ") + line
    return text


def _message(err):
    """str(err), but an OSError of the standard library's form ("[Errno 28] No space left on
    device: 'a.onnx'") as people read it: the file, then what went wrong."""
    if not isinstance(err, OSError) or not err.strerror or not str(err).startswith("[Errno"):
        return str(err)
    # a file descriptor's error names its number
    files = [os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)
             for name in (err.filename, err.filename2) if name is not None]
    return f"{' -> '.join(files)}: {err.strerror}" if files else err.strerror


def _fail(prog, err):
    print(f"{prog}: error: {error_line(err)}", file=sys.stderr)
    return 2


def _stdout_reader_gone():
    """Whether stdout is a pipe whose reader has closed it (poll reports POLLERR on the write
    end of such a pipe)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or a stdout without a file
        return False


def _call(main, argv, flag_values, prog, positional):
    try:
        if not positional and len(argv) > 1:
            raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        status = main(argv, flag_values)
    except BrokenPipeError as err:
        if not _stdout_reader_gone():  # another pipe (a worker's stdin): an error like any
            if absl_logging.get_verbosity() >= 1:
                raise
            return _fail(prog, err)
        # The reader of stdout went away (`predict ... | head -3`): quiet, as a command
        # killed by SIGPIPE is; stdout goes to /dev/null, or Python's flush at exit raises
        # again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except EXPECTED_ERRORS as err:
        if absl_logging.get_verbosity() >= 1:  # -v 1: the traceback, for debugging
            raise
        return _fail(prog, err)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as err:  # noqa: BLE001 - only `_recognised_error`'s are mapped
        reported = _recognised_error(err)
        if reported is None or absl_logging.get_verbosity() >= 1:
            raise
        return _fail(prog, reported)
    return 0 if status is None else status


def _recognised_error(err):
    """The error to report in one line for `err`, which is of none of `EXPECTED_ERRORS`'
    classes; None for a bug. Recognised by their modules, which import Keras or TensorFlow
    (this one imports neither): a TensorFlow-only step (TFLite, SavedModel, the taps form's
    ONNX) on JAX or PyTorch, the user's choice of backend (`backends.BackendError`), and a
    project error carried out of a tf.data pipeline (`unwrap_pipeline_error`)."""
    if type(err).__module__ == "keras_efficient3d.backends" and type(err).__name__ == "BackendError":
        return err
    return unwrap_pipeline_error(err)


# The project's errors keep their class name in the message of the TensorFlow error that
# carries them out of a tf.data map (a numpy_function of the input pipeline).
_PIPELINE_ERROR = re.compile(r"\b(?:DataError|ConversionError|CheckpointError): ([^\n]+)")


def unwrap_pipeline_error(err):
    """The project error (as a ValueError) that a TensorFlow error `err` carries out of an
    input pipeline, e.g. a `DataError` for too many undecodable videos; None for any other
    error. This module imports no TensorFlow: the error is recognised by its module."""
    if not type(err).__module__.startswith("tensorflow"):
        return None
    match = _PIPELINE_ERROR.search(str(err))
    return ValueError(match.group(1).strip()) if match else None


def invoke(main, define_flags, argv, positional=False):
    """Runs a CLI in this process on fresh flag values; returns its exit status.

    ``argv[0]`` is the program; errors are reported exactly as `run` reports them.
    """
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    prog = program_name(main)
    try:
        argv = flag_values(normalize_argv(list(argv)))
    except (flags.Error, ValueError) as err:  # absl: a bare ValueError for --nobool=x
        return _fail(prog, _flag_error(err, argv, flag_values))
    return _call(main, argv, flag_values, prog, positional)


def run(main, define_flags, positional=False):
    """The ``if __name__ == "__main__"`` of a CLI: absl's app.run with the error contract.

    Args:
        main: ``main(argv, flag_values)``; returns None or an exit status.
        define_flags: ``define_flags(flag_values)``.
        positional: whether the program takes arguments besides flags.
    """
    define_flags(flags.FLAGS)
    # --help lists the flags of the program's file; ``python -m package`` runs
    # package/__main__.py while `main` and its flags live in another module (predict, demo).
    for flag in flags.FLAGS.flags_by_module_dict().get(main.__module__, []):
        flags.FLAGS.register_flag_by_module(sys.argv[0], flag)
    prog = program_name(main)

    def parse(argv):
        try:
            return flags.FLAGS(normalize_argv(argv))
        except (flags.Error, ValueError) as err:  # absl: a bare ValueError for --nobool=x
            sys.exit(_fail(prog, _flag_error(err, argv, flags.FLAGS)))

    def start(argv):
        if absl_logging.get_verbosity() < 1:  # -v 1 keeps absl's timestamped lines
            absl_logging.get_absl_handler().setFormatter(_PlainFormatter())
            # absl shows INFO lines, the libraries' too: JAX's "Unable to initialize backend
            # 'tpu'" for each accelerator it looks for and does not find tells a user nothing.
            logging.getLogger("jax").setLevel(logging.WARNING)
            # TensorFlow's distribution strategies log each all-reduce plan at INFO ("Reduce
            # to .../CPU:0 then broadcast to ..."), twice: imported before absl configured
            # the root logger, TensorFlow's logger has a handler of its own as well.
            tf_logger = logging.getLogger("tensorflow")
            tf_logger.setLevel(logging.WARNING)
            for handler in list(tf_logger.handlers):
                tf_logger.removeHandler(handler)
        return _call(main, argv, flags.FLAGS, prog, positional)

    try:
        app.run(start, flags_parser=parse)
    except SystemExit as done:
        # absl ends --help with status 1; asking for help is no failure
        if done.code == 1 and any(arg.split("=")[0].lstrip("-") in HELP_NAMES
                                  for arg in sys.argv[1:] if arg.startswith("-")):
            raise SystemExit(0) from None
        if done.code not in (0, None):
            # A run stopped by an error can leave a tf.data iterator in a reference cycle;
            # freed at interpreter exit, its threads hang or abort the process ("terminate
            # called without an active exception"). Freed now, the process ends cleanly.
            import gc

            gc.collect()
        raise


HELP_NAMES = ("help", "helpshort", "helpfull", "helpxml", "?")  # absl takes -help, -? too


class _PlainFormatter(logging.Formatter):
    """Log lines for people: the message alone, 'warning: ' or 'error: ' before the ones
    that are, without absl's level letter, timestamp, thread id and source line."""

    def format(self, record):
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return text
