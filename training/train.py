"""Train a 3D CNN with model.fit on a video dataset.

    python training/train.py --flagfile=training/flags/jester.flags --data_root=/data/jester
    python training/train.py --flagfile=training/flags/synthetic.flags   # the demo's gestures
    python training/train.py --flagfile=training/flags/jester.flags --data_root=/data/jester --resume

Every flag maps onto a field of `keras_efficient3d.trainer.TrainConfig` (``--output`` onto
``output_dir``, which is still accepted as ``--output_dir``); see
`python training/train.py --helpfull`. Bad input ends with one line on stderr and exit
status 2 (`keras_efficient3d.cli`).
"""

import dataclasses
import json
import math
import os
import sys
import typing

from absl import flags

from keras_efficient3d import allocators, cli
from keras_efficient3d.trainer import ARCHITECTURE_FLAGS, CHOICES, RANGES, TrainConfig

# TrainConfig fields whose flag follows the CLI vocabulary under another name.
_FLAG_NAMES = {"output_dir": "output"}

# Help of the fields that are not in the vocabulary (keras_efficient3d.cli.VOCABULARY).
_HELP = {
    "ucf101_fold": "UCF-101 split 1, 2 or 3",
    "crop": "training crop: random (multi-scale), corner or center",
    "hflip": "random horizontal flips; a mirrored clip of a class named with Left/Right or Clockwise/"
             "Counterclockwise (or Anticlockwise), words between spaces, _ or -, takes the mirror "
             "class (default: off for jester/synthetic, whose gestures the original mirrors without "
             "changing their labels; on otherwise, as the original)",
    "cache": "cache decoded videos in memory",
    "max_decode_failures": "unreadable samples skipped (with a warning) before stopping",
    "version": "SqueezeNet version",
    "dropout": "dropout before the classifier",
    "optimizer": "sgd (torch.optim.SGD semantics, as the original) or adam",
    "learning_rate": "initial learning rate", "lr_schedule": "steps, plateau, cosine or constant",
    "lr_steps": "epochs at which 'steps' multiplies the rate by lr_gamma",
    "lr_gamma": "decay factor", "lr_patience": "plateau patience (epochs)",
    "warmup_epochs": "epochs over which the rate rises linearly (per batch) to the schedule's",
    "momentum": "SGD momentum", "dampening": "SGD dampening (PyTorch semantics)",
    "nesterov": "Nesterov momentum",
    "weight_decay": "weight decay: sgd adds it as L2 to the gradient (PyTorch), adam decouples it (AdamW)",
    "epochs": "total epochs",
    "steps_per_epoch": "batches per epoch (default: one pass)",
    "resume": "continue the run in --output exactly (epoch, optimizer, rate)",
    "pretrained": "a .keras model to start from (e.g. a converted Kinetics checkpoint)",
    "ft_portion": "complete or last_layer",
    "checkpoint_every": "write last.keras every N epochs",
    "mixed_precision": "float16 compute on GPUs",
    "distribution": "none, mirrored (several GPUs) or multiworker (several machines)",
    "cpu_devices": "split the CPU into N logical devices (to try MirroredStrategy on a CPU)",
    "verbose": "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch",
}

# Notes appended to the vocabulary's help where training says more.
_NOTES = {
    "frames": "(the original's sample_duration)",
    "size": "(the original's sample_size)",
    "model": "The original's --model names work too (resnet + --depth, ...).",
    "num_classes": "Default: the dataset's; with --pretrained the head is replaced for another "
                   "class count or other class names (the original replaces it always), and "
                   "kept where the file names the run's classes.",
    "output": "A folder: checkpoints, logs and config.json.",
    "threads": "Training: N >= 2 gives a depthwise model (MobileNet, ShuffleNet) N//2 threads "
               "per operation, two operations at a time, and trains each batch's two halves "
               "side by side (faster than the default on 2 cores); others N per operation, "
               "one at a time.",
}


def _base_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _shown(value):
    """A value as its flag is written (lists comma-separated, a config as JSON)."""
    if isinstance(value, (list, tuple)):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return f"{value:g}"  # 5, not 5.0, as a flag is written
    return str(value)


def _numbers(values):
    try:
        return all(math.isfinite(float(v)) for v in values)
    except ValueError:
        return False


def define_flags(flag_values=flags.FLAGS):
    """One flag per TrainConfig field, with the field's default."""
    hints = typing.get_type_hints(TrainConfig)
    fv = {"flag_values": flag_values}
    for field in dataclasses.fields(TrainConfig):
        name = _FLAG_NAMES.get(field.name, field.name)
        kind = _base_type(hints[field.name])
        default = field.default
        if name in cli.VOCABULARY:
            check = cli.output_folder if name == "output" else None
            cli.define(name, default, _NOTES.get(name), check=check, **fv)
            continue
        help_text = _HELP.get(field.name, field.name)
        if kind is bool:
            flags.DEFINE_bool(name, default, help_text, **fv)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text, **fv)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, **fv)
        elif kind is tuple:
            flags.DEFINE_list(name, [str(v) for v in default], help_text, **fv)
            # at parse time: absl's error names the flag, and the flagfile line that set it
            flags.register_validator(name, _numbers, "must be comma-separated epochs", **fv)
        else:
            flags.DEFINE_string(name, default, help_text, **fv)
            if field.name in CHOICES:  # at parse time, as above
                values = CHOICES[field.name]
                flags.register_validator(name, lambda v, values=values: v in values,
                                         f"expected one of {', '.join(values)}", **fv)
    for field_name, (ok, expected) in RANGES.items():  # at parse time, as CHOICES
        flags.register_validator(_FLAG_NAMES.get(field_name, field_name), ok,
                                 f"expected {expected}", **fv)
    for field_name, name in _FLAG_NAMES.items():
        cli.define_alias(field_name, name, **fv)
    flags.DEFINE_string(
        "allocator", "auto",
        f"memory allocator of the training process: {', '.join(allocators.CHOICES)} or a "
        "library's path; auto: on JAX tcmalloc, else jemalloc, else mimalloc (XLA's per-step "
        "temporaries are then reused instead of mapped afresh: up to 1.2-1.5x faster), on "
        "PyTorch mimalloc (MobileNetV2 1.7x faster), where installed; glibc's otherwise. The "
        "command restarts itself under it (LD_PRELOAD).", **fv)
    flags.register_validator("allocator", allocators.check, **fv)


def config_from_flags(flag_values=flags.FLAGS):
    hints = typing.get_type_hints(TrainConfig)
    values = {}
    for field in dataclasses.fields(TrainConfig):
        value = flag_values[_FLAG_NAMES.get(field.name, field.name)].value
        if field.name == "lr_steps":
            value = tuple(float(v) for v in value)  # numbers: checked as the flags are parsed
        elif value is not None and _base_type(hints[field.name]) is float:
            value = float(value)  # an enum flag's choice (--version=1.1) is a string
        values[field.name] = value
    return TrainConfig(**values)


def unused_flags(flag_values=flags.FLAGS, config=None):
    """One ``note:`` line per setting whose flags were given (command line or flagfile) but
    are not read by this run: they would otherwise change nothing, silently. `config`: the
    run's options where they are not the flags' (a resumed run's, from its config.json)."""
    f = config if config is not None else flag_values
    schedule = f"--lr_schedule={f.lr_schedule}"
    rules = [
        (f.optimizer == "adam", ("momentum", "dampening", "nesterov"), "--optimizer=adam",
         "they are SGD's"),
        (f.optimizer != "adam" and f.nesterov, ("dampening",), "--nesterov",
         "Nesterov momentum has none, as torch's"),
        (f.lr_schedule != "steps", ("lr_steps",), schedule, "the steps schedule reads them"),
        (f.lr_schedule not in ("steps", "plateau"), ("lr_gamma",), schedule,
         "the steps and plateau schedules read it"),
        (f.lr_schedule != "plateau", ("lr_patience",), schedule, "the plateau schedule reads it"),
        (bool(f.pretrained) and not f.resume,
         (*ARCHITECTURE_FLAGS[1:], "dropout"),
         "--pretrained", "the architecture is the pretrained file's, and a replaced head's "
         "dropout 0.9, as the original's"),
    ]
    notes = []
    for applies, names, mode, why in rules:
        given = [f"--{name}" for name in names if flag_values[name].present]
        if applies and given:
            verb = "is" if len(given) == 1 else "are"
            notes.append(f"note: {', '.join(given)} {verb} not used with {mode} ({why})")
    return notes


def use_allocator(choice, backend=None):
    """Restarts the command under the allocator of `choice` where it needs one
    (`keras_efficient3d.allocators.reexec`); says which allocator runs."""
    import keras

    line = allocators.reexec(choice, backend or keras.backend.backend())
    if line:
        print(line)


def main(argv, flag_values=flags.FLAGS):
    del argv
    from keras_efficient3d import trainer

    given = {field.name for field in dataclasses.fields(TrainConfig)
             if flag_values[_FLAG_NAMES.get(field.name, field.name)].present}
    config = config_from_flags(flag_values)
    # --resume: the options left out are the run's (before the checks: its --dataset's
    # --data_root is the run's too)
    taken = trainer.take_run_options(config, given) if config.resume else {}
    try:
        config.validate()
    except ValueError as err:
        named = next((name for name in taken if f"`{name}`" in str(err)), None)
        if named is None:
            raise
        # a hand-edited config.json's value: said where it comes from
        raise ValueError(f"{err} (the run's own, from "
                         f"{os.path.join(config.output_dir, 'config.json')})") from None
    # before minutes of indexing a large dataset (as evaluate.py checks its --output)
    cli.writable_folder(config.output_dir)
    if __name__ == "__main__":  # a command of its own: restartable (not a test's call)
        # first: a process restarted under its allocator says the notes below once, not twice
        use_allocator(flag_values.allocator)
    for line in unused_flags(flag_values, config):
        print(line, file=sys.stderr, flush=True)  # beside the other notes and warnings
    lines = []
    if taken:
        shown = " ".join(f"--{_FLAG_NAMES.get(name, name)}={_shown(value)}"
                         for name, value in taken.items())
        lines.append(f"note: the run's own, from its config.json (not given): {shown}")
    if config.pretrained and not config.resume:
        lines += [trainer.another_architecture(config) if "model" in given else None,
                  None if "normalization" in given
                  else trainer.adopt_pretrained_normalization(config)]
    for line in filter(None, lines):
        print(line, file=sys.stderr, flush=True)
    result = trainer.train(config)
    # The run's best (a resumed run's earlier epochs included), not this session's alone.
    best = max(result["best_accuracy"], 0.0)
    epoch = f" (epoch {result['best_epoch']})" if result.get("best_epoch") else ""
    print(f"done in {result['seconds']:.0f} s; best clip accuracy {100 * best:.2f}%{epoch}; "
          f"checkpoints in {result['output_dir']}")


if __name__ == "__main__":
    cli.run(main, define_flags)
