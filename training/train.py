"""Train a 3D CNN with model.fit on a video dataset.

    python training/train.py --flagfile=training/flags/jester.flags --data_root=/data/jester
    python training/train.py --flagfile=training/flags/synthetic.flags
    python training/train.py --flagfile=training/flags/jester.flags --data_root=... --resume

Every flag maps onto a field of `keras_efficient3d.trainer.TrainConfig`; see
`python training/train.py --helpfull`.
"""

import dataclasses
import sys
import typing

from absl import app, flags

from keras_efficient3d.trainer import TrainConfig

_HELP = {
    "dataset": "jester, kinetics600, ucf101, folders (<root>/<split>/<class>/...) or synthetic",
    "data_root": "dataset folder (frames or videos)",
    "annotations": "annotation files: Jester CSV folder or JSON, Kinetics CSV, UCF-101 list folder",
    "ucf101_fold": "UCF-101 split 1, 2 or 3",
    "frames": "frames per clip (the original's sample_duration)",
    "size": "clip height and width (sample_size)",
    "downsample": "temporal stride between sampled frames",
    "crop": "training crop: random (multi-scale), corner or center",
    "hflip": "random horizontal flips (default: off for jester/synthetic, on otherwise)",
    "normalization": "input normalisation preset: original, kinetics, unit, none...",
    "cache": "cache decoded videos in memory",
    "max_decode_failures": "unreadable samples skipped (with a warning) before stopping",
    "model": "registry name or alias: mobilenetv2, shufflenet, resnet (+ --depth)...",
    "width_mult": "width multiplier", "groups": "ShuffleNetV1 groups",
    "version": "SqueezeNet version", "depth": "ResNet/ResNeXt depth",
    "shortcut": "ResNet shortcut A or B", "cardinality": "ResNeXt cardinality",
    "dropout": "dropout before the classifier",
    "num_classes": "classes of the head (default: the dataset's; with --pretrained the head "
                   "is replaced when they differ, like the original's n_finetune_classes)",
    "optimizer": "sgd (torch.optim.SGD semantics, as the original) or adam",
    "learning_rate": "initial learning rate", "lr_schedule": "steps, plateau, cosine or constant",
    "lr_steps": "epochs at which 'steps' multiplies the rate by lr_gamma",
    "lr_gamma": "decay factor", "lr_patience": "plateau patience (epochs)",
    "momentum": "SGD momentum", "dampening": "SGD dampening (PyTorch semantics)",
    "nesterov": "Nesterov momentum", "weight_decay": "L2 weight decay (PyTorch SGD semantics)",
    "batch_size": "clips per batch", "epochs": "total epochs",
    "steps_per_epoch": "batches per epoch (default: one pass)",
    "resume": "continue the run in --output_dir exactly (epoch, optimizer, rate)",
    "pretrained": "a .keras model to start from (e.g. a converted Kinetics checkpoint)",
    "ft_portion": "complete or last_layer", "output_dir": "where checkpoints and logs go",
    "checkpoint_every": "write last.keras every N epochs", "seed": "random seed",
    "mixed_precision": "float16 compute on GPUs",
    "distribution": "none, mirrored (several GPUs) or multiworker (several machines)",
    "cpu_devices": "split the CPU into N logical devices (to try MirroredStrategy on a CPU)",
    "verbose": "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch",
}


def _base_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def define_flags(flag_values=flags.FLAGS):
    """One flag per TrainConfig field, with the field's default."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        kind = _base_type(hints[field.name])
        default = field.default
        help_text = _HELP.get(field.name, field.name)
        if kind is bool:
            flags.DEFINE_bool(field.name, default, help_text, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(field.name, default, help_text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(field.name, default, help_text, flag_values=flag_values)
        elif kind is tuple:
            flags.DEFINE_list(field.name, [str(v) for v in default], help_text,
                              flag_values=flag_values)
        else:
            flags.DEFINE_string(field.name, default, help_text, flag_values=flag_values)


def config_from_flags(flag_values=flags.FLAGS):
    values = {}
    for field in dataclasses.fields(TrainConfig):
        value = flag_values[field.name].value
        if field.name == "lr_steps":
            value = tuple(float(v) for v in value)
        values[field.name] = value
    return TrainConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from keras_efficient3d.data import DataError
    from keras_efficient3d.trainer import train

    try:
        config = config_from_flags().validate()
        result = train(config)
    except (ValueError, DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    history = result["history"]
    best = max(history.get("val_accuracy", history.get("accuracy", [0.0])))
    print(f"done in {result['seconds']:.0f} s; best clip accuracy {100 * best:.2f}%; "
          f"checkpoints in {result['output_dir']}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
