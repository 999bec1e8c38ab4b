"""Training and evaluation: optimizer semantics, schedules, fit/resume, CLIs, reports."""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from helpers import randomize_batchnorm
from keras_efficient3d import cli, evaluation, registry, trainer
from keras_efficient3d.artifacts import ModelMetadata, save_model
from keras_efficient3d.data import synthetic
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.optim import TorchSGD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torch_sgd_reference(w, grads, lr, momentum, dampening, nesterov, wd):
    """PyTorch's SGD update, written out from its documentation."""
    buf = None
    for g in grads:
        g = g + wd * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
    return w


@pytest.mark.parametrize("momentum,dampening,nesterov,wd", [
    (0.9, 0.9, False, 1e-3), (0.9, 0.0, True, 0.0), (0.0, 0.0, False, 1e-2), (0.5, 0.2, False, 0.0)])
def test_torch_sgd_matches_pytorch_semantics(momentum, dampening, nesterov, wd):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(4)]
    var = keras.Variable(w0)
    opt = TorchSGD(0.1, momentum, dampening, nesterov, wd)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), var)])
    expected = _torch_sgd_reference(w0.astype(np.float64), grads, 0.1, momentum, dampening, nesterov, wd)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_torch_sgd_momentum_turned_on_mid_run_starts_its_buffer_as_pytorch_does():
    """PyTorch holds no momentum buffer while momentum is 0: a run resumed with momentum
    starts it at the next gradient, undamped."""
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(4)]
    var = keras.Variable(w0)
    plain = TorchSGD(0.1, momentum=0.0)
    for g in grads[:2]:
        plain.apply_gradients([(tf.constant(g), var)])
    resumed = TorchSGD(0.1, momentum=0.9, dampening=0.9)
    resumed.build([var])
    resumed.iterations.assign(2)
    resumed.restart_momentum()
    for g in grads[2:]:
        resumed.apply_gradients([(tf.constant(g), var)])
    w = _torch_sgd_reference(w0.astype(np.float64), grads[:2], 0.1, 0.0, 0.0, False, 0.0)
    expected = _torch_sgd_reference(w, grads[2:], 0.1, 0.9, 0.9, False, 0.0)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_resuming_with_momentum_a_run_trained_without_restarts_the_buffer(one_epoch_run,
                                                                         tiny_gestures, tmp_path):
    out = _copy_run(one_epoch_run, tmp_path)
    path = out / "last.keras"
    config = _tiny_config(tiny_gestures, out, resume=True)
    assert config.optimizer == "sgd" and config.momentum > 0
    # the run's own momentum: its buffer goes on
    assert trainer.resume_model(config, str(path), 8).optimizer._momentum_from == 0
    # the same checkpoint as one trained without momentum (its compile config says 0)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    saved = json.loads(entries["config.json"])
    saved["compile_config"]["optimizer"]["config"]["momentum"] = 0.0
    entries["config.json"] = json.dumps(saved).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    optimizer = trainer.resume_model(config, str(path), 8).optimizer
    assert optimizer._momentum_from == int(optimizer.iterations.numpy()) > 0


def test_torch_sgd_validates_and_serialises():
    with pytest.raises(ValueError, match="Nesterov"):
        TorchSGD(0.1, momentum=0.9, dampening=0.9, nesterov=True)
    opt = TorchSGD(0.1, 0.9, 0.9, False, 1e-3)
    again = TorchSGD.from_config(opt.get_config())
    assert again.dampening == 0.9 and again.l2_weight_decay == 1e-3


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_decays_the_weights_decoupled_by_the_weight_decay_flag(weight_decay):
    config = trainer.TrainConfig(optimizer="adam", learning_rate=0.5, weight_decay=weight_decay)
    optimizer = trainer.make_optimizer(config)
    w = keras.Variable(np.full((3,), 2.0, np.float32))
    # A zero gradient moves nothing through Adam's moments: what changes is the decay alone.
    optimizer.apply_gradients([(np.zeros((3,), np.float32), w)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), 2.0 * (1 - 0.5 * weight_decay),
                               rtol=1e-6)


def test_flips_swap_the_labels_of_mirrored_gestures_only_when_flipping():
    classes = list(synthetic.CLASSES)
    on = trainer._flip_options(trainer.TrainConfig(dataset="synthetic", hflip=True), classes)
    mirror = on["hflip_labels"]
    assert on["hflip"] and [classes[i] for i in mirror[:2]] == ["Swiping Right", "Swiping Left"]
    assert classes[mirror[classes.index("Turning Clockwise")]] == "Turning Anticlockwise"
    assert classes[mirror[classes.index("Zooming In")]] == "Zooming In"
    # The original's default for Jester and the gestures: no flips, so no mirror labels.
    assert trainer._flip_options(trainer.TrainConfig(dataset="synthetic"), classes) == {
        "hflip": False, "hflip_labels": None}


def test_step_schedule_is_the_originals():
    config = trainer.TrainConfig(data_root="x", learning_rate=0.1, lr_steps=(40, 55))
    assert trainer.learning_rate_at(config, 1) == pytest.approx(0.1)
    assert trainer.learning_rate_at(config, 39) == pytest.approx(0.1)
    assert trainer.learning_rate_at(config, 40) == pytest.approx(0.01)
    assert trainer.learning_rate_at(config, 55) == pytest.approx(0.001)
    cosine = trainer.TrainConfig(data_root="x", learning_rate=0.1, lr_schedule="cosine", epochs=10)
    assert trainer.learning_rate_at(cosine, 1) == pytest.approx(0.1)
    assert trainer.learning_rate_at(cosine, 6) == pytest.approx(0.05)


def test_warmup_rises_batch_by_batch_into_the_schedule():
    config = trainer.TrainConfig(data_root="x", learning_rate=0.1, lr_schedule="cosine",
                                 epochs=10, warmup_epochs=2)
    cosine = dataclasses.replace(config, warmup_epochs=0)
    assert trainer.learning_rate_at(config, 1, 0.5) == pytest.approx(
        0.25 * trainer.learning_rate_at(cosine, 1))
    assert trainer.learning_rate_at(config, 2, 1.0) == pytest.approx(
        trainer.learning_rate_at(cosine, 2))
    assert trainer.learning_rate_at(config, 3, 0.1) == pytest.approx(
        trainer.learning_rate_at(cosine, 3))

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    schedule = trainer.EpochSchedule(config, steps_per_epoch=4)
    schedule.set_model(model)
    schedule.set_params({"epochs": 10, "steps": None, "verbose": 0})  # steps unknown to Keras
    seen = []
    for epoch in range(3):
        schedule.on_epoch_begin(epoch)
        for batch in range(4):
            schedule.on_train_batch_begin(batch)
            seen.append(float(model.optimizer.learning_rate.numpy()))
    expected = [trainer.learning_rate_at(config, e + 1, (b + 1) / 4) for e in range(3)
                for b in range(4)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert seen[:8] == sorted(seen[:8]) and seen[0] < 0.02  # rising from near 0
    assert len(set(seen[8:])) == 1  # after the warm-up, one rate per epoch


def test_steps_per_epoch_beyond_the_data_is_said_with_what_happens():
    assert trainer.steps_per_epoch_warning(None, 10, 4) is None  # one pass
    assert trainer.steps_per_epoch_warning(2, 10, 4) is None
    assert trainer.steps_per_epoch_warning(5, 10, 4) == (
        "warning: --steps_per_epoch=5 is more than the 2 batches of the 10 training videos at "
        "--batch_size=4; the data does not repeat: each epoch is one pass, 2 steps")
    # ... and a single-worker run asks Keras for that one pass, so that the warm-up, which
    # counts on the epoch's length, reaches the schedule's rate by the epoch's end
    assert trainer.single_worker_steps(5, 10, 4) == (2, trainer.steps_per_epoch_warning(5, 10, 4))
    assert trainer.single_worker_steps(2, 10, 4) == (2, None)
    assert trainer.single_worker_steps(None, 10, 4) == (None, None)
    assert trainer.steps_per_epoch_warning(5, 10, 4, repeats=True).endswith(
        "; the data repeats: each epoch runs 5 steps, some videos twice")


def test_a_worker_without_a_whole_batch_is_refused_whatever_the_steps(tmp_path):
    """A worker whose share of the videos holds no whole batch would end its epochs at once
    while the others wait for it in the step's collective (--steps_per_epoch hid it)."""
    class Resolver:
        def cluster_spec(self):
            return tf.train.ClusterSpec({"worker": ["localhost:1", "localhost:2"]})

    class Cluster:  # two workers of one replica each
        cluster_resolver = Resolver()
        num_replicas_in_sync = 2

    records = [(f"v{i}", 0) for i in range(3)]
    for steps in (None, 5):
        config = trainer.TrainConfig(dataset="synthetic", batch_size=4, steps_per_epoch=steps,
                                     output_dir=str(tmp_path), distribution="multiworker")
        with pytest.raises(ValueError, match="3 training videos are too few for 2 workers at "
                                             "--batch_size=4: each worker reads 1, fewer than "
                                             "its 2 of a batch"):
            trainer.make_distributed_datasets(config, Cluster(), records, [])


def test_keras_ends_an_epoch_when_a_dataset_that_does_not_repeat_runs_out():
    """What the warning above says of the training pipeline (its last incomplete batch
    dropped by a filter, `data.make_dataset`): each epoch is one pass, then the next starts."""
    clips = np.zeros((10, 2), np.float32)
    data = tf.data.Dataset.from_tensor_slices((clips, np.zeros(10, np.int32))).batch(4)
    data = data.filter(lambda x, y: tf.shape(x)[0] == 4)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = []

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            steps[-1] += 1

    with trainer.quiet_end_of_data():
        model.fit(data, epochs=3, steps_per_epoch=5, verbose=0, callbacks=[Count()])
    assert steps == [2, 2, 2]


@pytest.mark.parametrize("field,value", [("dataset", "imagenet"), ("lr_schedule", "linear"),
                                          ("ft_portion", "half"), ("batch_size", 0),
                                          ("optimizer", "rmsprop"), ("warmup_epochs", 250),
                                          ("warmup_epochs", -1), ("threads", -1),
                                          ("normalization", "imagenet"), ("crop", "left"),
                                          ("ucf101_fold", 4), ("learning_rate", float("nan")),
                                          ("learning_rate", float("inf")),
                                          ("weight_decay", -1e-4), ("steps_per_epoch", -1),
                                          ("max_decode_failures", -1), ("verbose", 5),
                                          ("cpu_devices", -1), ("lr_patience", -1),
                                          ("lr_gamma", 0.0), ("lr_gamma", float("nan")),
                                          ("momentum", -0.9), ("dampening", float("nan")),
                                          ("momentum", 1.5), ("dampening", 2.0),
                                          ("dampening", -1.0),
                                          ("dropout", 1.0), ("num_classes", 0),
                                          ("frames", 1.5)])
def test_config_validation_names_the_option(field, value):
    config = trainer.TrainConfig(data_root="x")
    setattr(config, field, value)
    with pytest.raises(ValueError, match=rf"`{field}`.*Received: {field}="):
        config.validate()


def test_a_pretrained_file_of_the_run_folder_is_refused_for_a_new_run_there(tmp_path):
    # A new run moves the folder's run into previous/: its best.keras would be gone from
    # where config.json and the checkpoints' metadata say the run started.
    config = trainer.TrainConfig(data_root="x", output_dir=str(tmp_path),
                                 pretrained=str(tmp_path / "best.keras"))
    with pytest.raises(ValueError, match=r"`pretrained`: expected a file outside --output"):
        config.validate()
    config.pretrained = str(tmp_path / "converted.keras")  # another file there is no run's
    config.validate()


def test_the_plateau_schedule_lowers_the_rate():
    # Keras' ReduceLROnPlateau refused a factor of 1 or more, after the dataset was indexed
    config = trainer.TrainConfig(data_root="x", lr_schedule="plateau", lr_gamma=1.0)
    with pytest.raises(ValueError, match="`lr_gamma`: expected a number below 1 with the plateau"):
        config.validate()
    config.lr_schedule = "steps"  # a rate that climbs at the steps is the user's to choose
    config.validate()
    config.lr_gamma = 0.1
    config.validate()


def test_warmup_and_the_plateau_schedule_do_not_mix():
    config = trainer.TrainConfig(data_root="x", lr_schedule="plateau", warmup_epochs=1)
    with pytest.raises(ValueError, match="warmup_epochs.*plateau"):
        config.validate()


def test_config_normalization_is_a_preset_name_a_normalization_or_its_config():
    unit = Normalization.preset("unit")
    for given in ("unit", unit, unit.to_config()):
        config = trainer.TrainConfig(data_root="x", normalization=given)
        config.validate()
        assert trainer.model_metadata(config, ["a", "b"]).normalization == unit
    with pytest.raises(ValueError, match="`normalization`: expected one of"):
        trainer.TrainConfig(data_root="x", normalization="imagenet").validate()


def test_an_enum_flags_choice_is_the_fields_type(tmp_path):
    # --version is an enum flag (strings "1.0", "1.1"); the builder takes the number.
    module, values = _fresh_flags(["train", f"--data_root={tmp_path}", "--model=squeezenet",
                                   "--version=1.1"])
    config = module.config_from_flags(values).validate()
    assert config.version == 1.1 and isinstance(config.version, float)
    name, kwargs = trainer.model_kwargs(config, 5)
    model = registry.create_model(name, **{**kwargs, "input_shape": (8, 32, 32, 3)})
    assert model.output_shape == (None, 5)


def test_config_json_records_the_datas_paths_absolute(tmp_path, monkeypatch):
    # evaluate.py reads config.json's --data_root from wherever it runs: a relative one
    # named a folder of the training's working directory.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "csvs").mkdir()
    for dataset, annotations, wanted in [
            ("jester", "csvs", [tmp_path / "csvs"]),
            ("kinetics600", "csvs", [tmp_path / "csvs"]),
            # an empty part (a comma at the end) is no CSV, as training reads it
            ("kinetics600", "train.csv, val.csv,", [tmp_path / "train.csv", tmp_path / "val.csv"])]:
        config = trainer.TrainConfig(dataset=dataset, data_root="data", annotations=annotations,
                                     pretrained="models/k600.keras")
        saved = json.loads(config.to_json())
        assert saved["data_root"] == str(tmp_path / "data")
        assert saved["annotations"] == ",".join(str(path) for path in wanted)
        # as given: a resumed run compares its flagfile's with it, wherever the project is
        assert saved["pretrained"] == "models/k600.keras"
        assert config.data_root == "data"  # the run's own options are as given
    saved = json.loads(trainer.TrainConfig(dataset="synthetic").to_json())
    assert saved["data_root"] == "" and saved["annotations"] is None  # nothing to resolve


def test_config_validation_checks_the_model_before_any_data_is_read():
    trainer.TrainConfig(data_root="does-not-exist", model="resnet", depth=18).validate()
    with pytest.raises(ValueError, match="Unknown model 'mobilenetv9'"):
        trainer.TrainConfig(data_root="does-not-exist", model="mobilenetv9").validate()
    with pytest.raises(ValueError, match="needs a depth"):
        trainer.TrainConfig(data_root="does-not-exist", model="resnext").validate()


@pytest.fixture(scope="module")
def tiny_gestures(tmp_path_factory):
    root = tmp_path_factory.mktemp("gestures")
    return synthetic.generate(root, layout="jester", videos_per_class=3, seed=1, frames=16, size=40,
                              num_workers=2)


# The real-process and resume tests train this many times: the cost is tracing the train
# step, which grows with the layer count, so they use the family with the fewest layers
# (MobileNetV1 0.25x: 85 layers, ShuffleNetV2: 199). Every family is trained elsewhere.
TINY_MODEL, TINY_WIDTH = "mobilenetv1", 0.25
TINY_NAME = "mobilenet_0.25x"


def _tiny_config(data_root, output_dir, **overrides):
    config = trainer.TrainConfig(
        dataset="synthetic", data_root=str(data_root), model=TINY_MODEL, width_mult=TINY_WIDTH,
        frames=8, size=32, batch_size=4, epochs=2, learning_rate=0.01, lr_schedule="cosine",
        normalization="unit", output_dir=str(output_dir), verbose=0, seed=3)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture(scope="module")
def one_epoch_run(tiny_gestures, tmp_path_factory):
    """A run folder after one epoch: the tests that resume it work on copies."""
    out = tmp_path_factory.mktemp("one_epoch") / "run"
    trainer.train(_tiny_config(tiny_gestures, out, epochs=1))
    return out


def _copy_run(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


def test_train_writes_checkpoints_logs_and_resumes(tiny_gestures, one_epoch_run, tmp_path):
    out = _copy_run(one_epoch_run, tmp_path)
    config = _tiny_config(tiny_gestures, out, epochs=1)
    for name in ("config.json", "labels.txt", "last.keras", "best.keras", "train_state.json",
                 "log.csv", "curves.png"):
        assert (out / name).exists(), name
    state = json.loads((out / "train_state.json").read_text())
    assert state["epoch"] == 1
    train_records, _ = trainer.load_split(config, "train")
    first = keras.saving.load_model(out / "last.keras")
    steps = int(first.optimizer.iterations.numpy())
    # The optimizer state is in the checkpoint: one epoch's steps (Keras may count the
    # end-of-data probe of an epoch of unknown length as one more).
    assert len(train_records) // config.batch_size <= steps <= len(train_records) // config.batch_size + 1
    assert any(np.abs(v.numpy()).sum() > 0 for v in first.optimizer.variables[2:])
    assert json.loads((out / "config.json").read_text())["model"] == TINY_MODEL
    # the rate's column is named as the plateau schedule's is (it was `lr` here)
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert "learning_rate" in header and "lr" not in header, header
    assert (out / "labels.txt").read_text().split("\n")[0] == "Swiping Left"
    # The checkpoints say what they take and return: predict, evaluate and the exporters
    # read it from the model alone, away from the run folder.
    from keras_efficient3d.artifacts import read_metadata

    for name in ("last.keras", "best.keras"):
        meta = read_metadata(out / name)
        assert (meta.frames, meta.height_width, meta.downsample) == (8, (32, 32), 1)
        assert meta.normalization == Normalization.preset("unit") and meta.output == "logits"
        assert meta.labels == (out / "labels.txt").read_text().split("\n")[:-1]
        assert meta.model == {"model": TINY_MODEL, "width_mult": TINY_WIDTH,
                              "num_classes": len(meta.labels)}

    first_best = state["best_accuracy"]
    # A crashed multi-worker run's backups, resumed by one process: removed (a later
    # multi-worker run in the folder would restore them instead of last.keras)
    (out / "backup" / "worker-0").mkdir(parents=True)
    (out / "backup" / "worker-0" / "training_metadata.json").write_text('{"epoch": 0}')
    resumed = trainer.train(_tiny_config(tiny_gestures, out, epochs=2, resume=True))
    assert len(resumed["history"]["loss"]) == 1  # only epoch 2 ran
    assert not (out / "backup").exists()
    # the returned model saves the run's record, not last.keras' training state
    from keras_efficient3d.artifacts import read_metadata, save_model

    save_model(resumed["model"], tmp_path / "again.keras")
    again = read_metadata(tmp_path / "again.keras")
    assert again.labels == list(synthetic.CLASSES) and "training_state" not in again.extra
    # the run's pipeline, for a caller that goes on with the same data (the demo's QAT)
    clips, labels = next(iter(resumed["train_dataset"]))
    assert tuple(clips.shape[1:]) == (8, 32, 32, 3) and labels.shape[0] == clips.shape[0]
    # The run's best, epoch 1 included (what train.py's last line shows).
    assert resumed["best_accuracy"] == max(first_best, resumed["history"]["val_accuracy"][0])
    assert resumed["best_accuracy"] == json.loads((out / "train_state.json").read_text())[
        "best_accuracy"]
    assert int(resumed["model"].optimizer.iterations.numpy()) == 2 * steps
    assert json.loads((out / "train_state.json").read_text())["epoch"] == 2
    expected_lr = trainer.learning_rate_at(_tiny_config(tiny_gestures, out, epochs=2), 2)
    assert float(resumed["model"].optimizer.learning_rate.numpy()) == pytest.approx(expected_lr)
    rows = (out / "log.csv").read_text().strip().split("\n")
    assert len(rows) == 3  # header + two epochs, appended on resume
    # numbered from 1, as the progress bar, --lr_steps and train_state.json count them
    assert [row.split(",")[0] for row in rows] == ["epoch", "1", "2"]

    with pytest.raises(ValueError, match="already finished"):
        trainer.train(_tiny_config(tiny_gestures, out, epochs=2, resume=True))


def test_a_checkpoint_of_another_optimizer_is_refused_on_resume(tiny_gestures, one_epoch_run):
    """The model is compiled as the run's flags say and the checkpoint's optimizer state
    loaded into it: state of another optimizer (SGD's momenta into Adam) is refused, not
    skipped with a Keras warning and trained from fresh moments."""
    config = _tiny_config(tiny_gestures, one_epoch_run, optimizer="adam", resume=True)
    with pytest.raises(ValueError, match=r"last\.keras: its optimizer state \(TorchSGD\) does "
                                         r"not fit this run's \(--optimizer=adam, --momentum=0.9\)"
                       ) as refused:
        trainer.resume_model(config, str(one_epoch_run / "last.keras"), 8)
    assert ". ;" not in str(refused.value) and " ; " not in str(refused.value), refused.value
    # a GPU run's loss-scaled optimizer (mixed_float16) against a float32 one: said as such
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with pytest.raises(ValueError, match=r"the run trained in float32 and this process "
                                             r"trains under mixed precision"):
            trainer.resume_model(_tiny_config(tiny_gestures, one_epoch_run, resume=True),
                                 str(one_epoch_run / "last.keras"), 8)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    state = trainer.resume_model(_tiny_config(tiny_gestures, one_epoch_run, resume=True),
                                 str(one_epoch_run / "last.keras"), 8).optimizer
    assert int(state.iterations.numpy()) > 0 and any(
        np.abs(v.numpy()).max() > 0 for v in state.variables[2:])  # momenta, loaded


def test_a_mixed_precision_model_trains_with_the_runs_metrics(tiny_gestures, tmp_path):
    """Under mixed_float16 (--mixed_precision on a GPU) the logits are float16, which the
    top-5 metric's in_top_k refused at the first step; the compiled model saves and loads."""
    from keras_efficient3d import MobileNetV1_3D

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = MobileNetV1_3D(width_mult=TINY_WIDTH, num_classes=8, input_shape=(4, 32, 32, 3))
        trainer.compile_model(model, _tiny_config(tiny_gestures, tmp_path))
        clips = np.random.default_rng(0).random((4, 4, 32, 32, 3), dtype=np.float32)
        history = model.fit(clips, np.arange(4), batch_size=2, epochs=1, verbose=0).history
        model.save(tmp_path / "m.keras")
        again = keras.saving.load_model(tmp_path / "m.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert 0.0 <= history["top5"][0] <= 1.0 and np.isfinite(history["loss"][0])
    assert [m.name for m in again.metrics] == [m.name for m in model.metrics]


def test_resume_without_a_run_is_a_clear_error(tiny_gestures, tmp_path):
    with pytest.raises(ValueError, match=r"Nothing to resume in .*empty: no last.keras \("):
        trainer.train(_tiny_config(tiny_gestures, tmp_path / "empty", resume=True))
    # a last.keras of no run (copied in, or saved by other code) and no train_state.json
    out = tmp_path / "copied"
    out.mkdir()
    model = registry.create_model("mobilenetv2_0.2x", input_shape=(4, 32, 32, 3), num_classes=2)
    save_model(model, str(out / "last.keras"))
    config = _tiny_config(tiny_gestures, out, resume=True)
    with pytest.raises(ValueError, match="its last.keras records no training state, and it "
                                         "has no train_state.json"):
        trainer._resume_point(config, str(out / "train_state.json"), str(out / "last.keras"))
    # a run started without --resume moved the run into previous/ and saved no epoch yet
    # (stopped in its first): --resume names where the run is
    moved = tmp_path / "moved"
    (moved / "previous").mkdir(parents=True)
    (out / "last.keras").rename(moved / "previous" / "last.keras")
    config = _tiny_config(tiny_gestures, moved, resume=True)
    with pytest.raises(ValueError, match=f"no last.keras; the run before it is in "
                                         f"{moved / 'previous'}, moved there by a run started "
                                         f"without --resume: move its files back into {moved} "
                                         "to resume it"):
        trainer._resume_point(config, str(moved / "train_state.json"), str(moved / "last.keras"))


def test_run_metadata_names_the_model_or_the_pretrained_file(tmp_path):
    config = _tiny_config(tmp_path, tmp_path / "run")
    meta = trainer.model_metadata(config, ["a", "b"])
    assert meta.model == {"model": TINY_MODEL, "width_mult": TINY_WIDTH, "num_classes": 2}
    assert meta.labels == ["a", "b"] and meta.normalization.value_range == "0-1"
    # More outputs than classes: no class names (they would not be one per output).
    assert trainer.model_metadata(config, ["a", "b"], num_classes=3).labels is None
    config.pretrained = "base.keras"  # fine-tuning: the architecture is that file's
    assert trainer.model_metadata(config, ["a", "b"]).model == {"num_classes": 2,
                                                               "pretrained": "base.keras"}


def test_resume_with_other_clip_flags_is_refused_before_any_work(tiny_gestures, one_epoch_run,
                                                                  tmp_path, monkeypatch):
    out = _copy_run(one_epoch_run, tmp_path)
    indexed = []
    monkeypatch.setattr(trainer, "load_split", lambda *a, **k: indexed.append(1) or ([], []))
    config = _tiny_config(tiny_gestures, out, epochs=3, size=48, resume=True)
    with pytest.raises(ValueError, match=r"last.keras takes 8x32x32 clips .*--frames=8 --size=48 "
                                         r"do not match"):
        trainer.train(config)
    assert not indexed  # refused from the checkpoint's metadata, before the dataset


def test_a_new_run_over_a_finished_one_says_so(tiny_gestures, one_epoch_run, tmp_path, capsys):
    out = _copy_run(one_epoch_run, tmp_path)
    (out / "previous").mkdir()
    (out / "previous" / "older.txt").write_text("an older run")
    old = {name: (out / name).read_bytes() for name in ("last.keras", "train_state.json")}
    # A crashed multi-worker run's backup is not this (single-process) run's to restore.
    (out / "backup" / "worker-0").mkdir(parents=True)
    (out / "backup" / "worker-0" / "training_metadata.json").write_text('{"epoch": 5}')
    # evaluate.py's results of the old model (beside it by default) go with it
    (out / "eval_results.json").write_text("{}")
    (out / "eval_confusion.png").write_bytes(b"png")
    # --checkpoint_every above --epochs: the run's last epoch is written all the same.
    trainer.train(_tiny_config(tiny_gestures, out, epochs=1, checkpoint_every=5, seed=4))
    err = capsys.readouterr().err
    assert (f"warning: {out} holds a run (1 epochs); this new run moves its files into "
            f"{out / 'previous'}, in place of the older run there (--resume continues a run "
            "instead)") in err, err
    assert sorted(p.name for p in (out / "previous").iterdir()) == sorted(
        ["backup", "best.keras", "config.json", "curves.png", "eval_confusion.png",
         "eval_results.json", "labels.txt", "last.keras", "log.csv", "tensorboard",
         "train_state.json"])
    # the new run's TensorBoard events are its own (they went into the old run's folder)
    assert (out / "tensorboard").is_dir() and (out / "previous" / "tensorboard").is_dir()
    assert {name: (out / "previous" / name).read_bytes() for name in old} == old
    assert len((out / "log.csv").read_text().splitlines()) == 2  # its header and its epoch
    assert (out / "last.keras").read_bytes() != old["last.keras"]
    assert json.loads((out / "train_state.json").read_text())["epoch"] == 1
    # A folder without a run's checkpoints (a fresh one, or one of other files): nothing to
    # say, nothing moved (train() calls this before it writes anything; a second training
    # would only repeat it).
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "log.csv").write_text("not a run of ours")
    assert trainer._move_previous_run(str(fresh)) is None
    assert "holds a run" not in capsys.readouterr().err
    assert sorted(p.name for p in fresh.iterdir()) == ["log.csv"]
    # A caller that cannot resume (the demo) gets no --resume hint; a first previous/ no
    # "in place of" either.
    (fresh / "last.keras").write_bytes(b"a run")
    assert trainer._move_previous_run(str(fresh), hint=None) == str(fresh / "previous")
    err = capsys.readouterr().err
    assert err.strip().endswith(f"moves its files into {fresh / 'previous'}"), err


def _last_layer_run(data_root, tmp_path):
    """A 5-class model saved as --pretrained, and the config of a last_layer run from it."""
    import keras_efficient3d as k3

    base = k3.create_model(TINY_NAME, input_shape=(8, 32, 32, 3), num_classes=5)
    path = tmp_path / "pretrained.keras"
    base.save(path)
    return base, _tiny_config(data_root, tmp_path / "ft", pretrained=str(path),
                              ft_portion="last_layer")


def test_fine_tuning_replaces_the_head(tiny_gestures, tmp_path):
    base, config = _last_layer_run(tiny_gestures, tmp_path)
    model = trainer.build_model(config, num_classes=8)
    assert model.output_shape == (None, 8)
    trainable = {l.name for l in model.layers if l.trainable_weights}
    assert trainable == {"predictions"}
    # The trunk keeps the pretrained weights.
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(),
                                  base.get_layer("conv1").kernel.numpy())


def test_last_layer_fine_tuning_moves_batchnorms_statistics_as_the_original(tiny_gestures, tmp_path):
    """The original gives every weight but the classifier's a learning rate of 0 and trains in
    train() mode: BatchNorm normalises by the batch and updates its running statistics, and
    keeps its scale and offset. So does a last_layer run, and its resume."""
    _, config = _last_layer_run(tiny_gestures, tmp_path)
    model = trainer.build_model(config, num_classes=3)
    trainer.compile_model(model, config)
    bn = model.get_layer("conv1_bn")
    head = model.get_layer("predictions")
    assert {id(v) for v in model.trainable_variables} == {id(v) for v in head.trainable_weights}
    before = {v.path: v.numpy().copy() for v in model.weights}
    clips = np.random.default_rng(0).uniform(size=(4, 8, 32, 32, 3)).astype("float32")
    model.fit(clips, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    moved = {v.path for v in model.weights
             if not np.array_equal(before[v.path], v.numpy())}
    assert bn.moving_mean.path in moved and bn.moving_variance.path in moved
    assert head.kernel.path in moved
    assert bn.gamma.path not in moved and bn.beta.path not in moved
    assert model.get_layer("conv1").kernel.path not in moved
    assert moved <= {v.path for v in head.weights} | {
        v.path for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)}
    # A resumed run: the saved file has the layers' flags, not the variables'.
    model.save(tmp_path / "last.keras")
    resumed = trainer.resume_model(config, str(tmp_path / "last.keras"), 3)
    assert [v.path for v in resumed.trainable_variables] == [v.path for v in head.trainable_weights]
    assert resumed.get_layer("conv1_bn").trainable


def test_a_pretrained_file_is_checked_against_the_runs_clips(tmp_path, capsys):
    """A model with its preprocessing inside (convert --with_preprocessing) would normalise
    the run's normalised clips again: refused. One trained on other-normalised clips (RGB
    kinetics600.flags, fine-tuned as ucf101.flags does, BGR): a warning."""
    import keras_efficient3d as k3
    from keras_efficient3d.artifacts import ModelMetadata, save_model
    from keras_efficient3d.data.normalization import Normalization
    from keras_efficient3d.preprocessing import with_preprocessing

    base = k3.create_model(TINY_NAME, input_shape=(8, 32, 32, 3), num_classes=5)
    kinetics = Normalization.preset("kinetics")
    wrapped = save_model(with_preprocessing(base, kinetics), tmp_path / "raw.keras",
                         ModelMetadata(frames=8, size=32, normalization=kinetics,
                                       preprocessing_included=True))
    config = _tiny_config(tmp_path, tmp_path / "ft", pretrained=str(wrapped), normalization="kinetics")
    with pytest.raises(ValueError, match=r"raw.keras includes its preprocessing .* convert the "
                                         r"checkpoint without --with_preprocessing"):
        trainer.check_pretrained(config)
    plain = save_model(base, tmp_path / "rgb.keras",
                       ModelMetadata(frames=8, size=32, normalization=Normalization.preset("original")))
    config.pretrained = str(plain)
    capsys.readouterr()
    trainer.check_pretrained(config)
    out = capsys.readouterr().out
    assert out.startswith(f"warning: --pretrained={plain} was trained on clips normalised as "
                          "'original' (0-255 RGB"), out
    assert "this run normalises as 'kinetics' (0-255 BGR" in out
    config.normalization = "original"  # the same clips: nothing to say
    trainer.check_pretrained(config)
    assert capsys.readouterr().out == ""
    # refused before the dataset is indexed, not by Keras' loader after it
    upper = tmp_path / "RGB.KERAS"
    shutil.copy(plain, upper)
    config.pretrained = str(upper)
    with pytest.raises(ValueError, match=r"RGB.KERAS: --pretrained needs a .keras model \(got .KERAS: "
                                         r"Keras reads the extension in lower case only"):
        trainer.check_pretrained(config)


def _load_script(script):
    """A training/ script as a module, without running its main."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{script[:-3]}_cli",
                                                  os.path.join(ROOT, "training", script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fresh_flags(argv):
    module = _load_script("train.py")
    values = flags.FlagValues()
    module.define_flags(values)
    values(argv)
    return module, values


@pytest.mark.parametrize("flagfile", ["jester", "kinetics600", "ucf101", "synthetic"])
def test_shipped_flagfiles_parse(flagfile, tmp_path):
    path = os.path.join(ROOT, "training", "flags", f"{flagfile}.flags")
    module, values = _fresh_flags(["train", f"--flagfile={path}", f"--data_root={tmp_path}"])
    config = module.config_from_flags(values).validate()
    assert config.dataset == ("synthetic" if flagfile == "synthetic" else flagfile)
    assert config.frames == 16
    assert module.unused_flags(values) == []  # every flag a shipped file sets is read
    if flagfile == "jester":
        assert config.hflip is False and config.downsample == 2 and config.dampening == 0.9
    if flagfile == "synthetic":  # it documents the demo's training: they must not drift apart
        from keras_efficient3d.demo import demo_config

        demo = demo_config("out", "/data")
        for field in ("model", "width_mult", "frames", "size", "downsample", "crop", "hflip",
                      "normalization", "optimizer", "learning_rate", "lr_schedule",
                      "weight_decay", "batch_size", "epochs"):
            assert getattr(config, field) == getattr(demo, field), field


def test_a_batch_larger_than_the_training_set_is_refused(tiny_gestures, tmp_path):
    """No full batch: the epochs had no step and best.keras was the untrained model."""
    config = _tiny_config(tiny_gestures, tmp_path / "run", batch_size=10_000)
    with pytest.raises(ValueError, match=r"--batch_size=10000 is more than the \d+ training "
                                         r"videos: .* at most \d+"):
        trainer.train(config)
    assert not (tmp_path / "run" / "best.keras").exists()


def test_flags_a_run_does_not_read_are_noted(tmp_path, capsys):
    """--momentum with Adam, --lr_steps with another schedule, an architecture flag with
    --pretrained: accepted, and silently without effect."""
    module, values = _fresh_flags(["train", f"--data_root={tmp_path}", "--optimizer=adam",
                                   "--momentum=0.5", "--nesterov", "--lr_schedule=cosine",
                                   "--lr_steps=3,4", "--lr_patience=2",
                                   f"--pretrained={tmp_path / 'k.keras'}", "--width_mult=0.5"])
    assert module.unused_flags(values) == [
        "note: --momentum, --nesterov are not used with --optimizer=adam (they are SGD's)",
        "note: --lr_steps is not used with --lr_schedule=cosine (the steps schedule reads them)",
        "note: --lr_patience is not used with --lr_schedule=cosine (the plateau schedule reads it)",
        "note: --width_mult is not used with --pretrained (the architecture is the pretrained "
        "file's, and a replaced head's dropout 0.9, as the original's)"]
    module, values = _fresh_flags(["train", f"--data_root={tmp_path}", "--lr_schedule=plateau",
                                   "--lr_patience=2", "--lr_gamma=0.5", "--momentum=0.5"])
    assert module.unused_flags(values) == []
    module, values = _fresh_flags(["train", f"--data_root={tmp_path}", "--nesterov",
                                   "--dampening=0.9"])
    assert module.unused_flags(values) == [
        "note: --dampening is not used with --nesterov (Nesterov momentum has none, as torch's)"]
    # on stderr, with the other notes and warnings (stdout is the run's progress)
    import keras_efficient3d.trainer as trainer_module

    stub = {"best_accuracy": 0.5, "seconds": 1.0, "output_dir": "run"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "train", lambda config: stub)
        capsys.readouterr()
        module.main([], values)
    out, err = capsys.readouterr()
    assert "note: --dampening" in err and "note:" not in out, (out, err)


def _cli(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "training", script), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_train_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    # In this process, with the program's own error mapping (`cli.invoke`): the real program
    # runs in the mirrored test below and in test_cli.py's real-program rows.
    from keras_efficient3d import cli

    module = _load_script("train.py")

    def run(*args):
        status = cli.invoke(module.main, module.define_flags, ["train.py", *args])
        return status, capsys.readouterr().err

    status, err = run("--dataset=jester", f"--data_root={tmp_path / 'missing'}",
                      f"--output={tmp_path / 'out'}")
    assert status == 2
    assert err.strip().splitlines() == [
        f"train.py: error: flag --data_root={tmp_path / 'missing'}: no such folder"]
    status, err = run("--dataset=jester", f"--data_root={tmp_path}", "--lr_schedule=linear")
    assert status == 2 and "lr_schedule" in err
    assert "Traceback" not in err


def test_train_cli_with_mirrored_strategy_on_two_cpu_devices(tiny_gestures, tmp_path):
    # A batch that does not split over the replicas: one line, and the run already in the
    # folder stays (it was moved to previous/ before a 40-line traceback of an AddN)
    earlier = tmp_path / "mirrored"
    earlier.mkdir()
    (earlier / "train_state.json").write_text("{}")
    proc = _cli("train.py", "--dataset=synthetic", f"--data_root={tiny_gestures}",
                f"--model={TINY_MODEL}", f"--width_mult={TINY_WIDTH}", "--frames=8", "--size=64",
                "--batch_size=3", "--epochs=1", "--distribution=mirrored", "--cpu_devices=2",
                "--normalization=unit", f"--output={earlier}", "--verbose=0")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "train.py: error: --batch_size=3 does not split over the 2 replicas: give a multiple "
        "of 2"], proc.stderr[-2000:]
    assert (earlier / "train_state.json").read_text() == "{}"
    assert not (earlier / "previous").exists()
    proc = _cli("train.py", "--dataset=synthetic", f"--data_root={tiny_gestures}",
                f"--model={TINY_MODEL}", f"--width_mult={TINY_WIDTH}", "--frames=8", "--size=64",
                "--batch_size=4", "--epochs=1", "--distribution=mirrored", "--cpu_devices=2",
                "--normalization=unit", f"--output={tmp_path / 'mirrored'}", "--verbose=0",
                "--threads=2", "--learning_rate=0.01")
    # 64 pixels, not 32: at 32 the last stages are 1x1 pixel, so each BatchNorm channel of a
    # replica's two clips normalised two values, and a channel of two nearly equal ones
    # multiplies its gradient by up to 1/sqrt(eps): the loss turned NaN in about one run in
    # twenty (validation losses of 1e10-1e15 in the others; about 2.09 at 64 pixels). The
    # run ended as it should, with "training diverged", but that is not what is tested.
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done in" in proc.stdout
    assert "distribution: mirrored, 2 replicas (CPU:0, CPU:1 on this worker)\n" in proc.stdout
    # TensorFlow's INFO lines (each all-reduce plan, twice) tell a user nothing
    assert "INFO" not in proc.stderr and "Reduce to" not in proc.stderr, proc.stderr[-2000:]
    # a depthwise model: TensorFlow took the thread plan before its first op; two replicas
    # keep the whole batch's call (its halves' weights turned NaN under the strategy)
    assert "TensorFlow threads: 1 per operation, 2 operations at a time\n" in proc.stdout
    assert "halves" not in proc.stdout
    assert (tmp_path / "mirrored" / "last.keras").exists()
    # log lines for people: the message, without absl's level letter, time and source line
    indexed = [line for line in proc.stderr.splitlines() if "videos indexed" in line]
    assert indexed and all(line.startswith("synthetic [") for line in indexed), indexed


def test_evaluation_counts_clip_and_video_accuracy(tiny_gestures):
    config = _tiny_config(tiny_gestures, "unused")
    records, classes = trainer.load_split(config, "validation")
    def always_class_2(clips):
        # A constant prediction: both accuracies must equal that class's share of the videos.
        return np.tile(np.eye(len(classes))[2] * 5, (len(clips), 1))

    results = evaluation.evaluate(always_class_2, records, classes, frames=8, size=32,
                                  normalization="unit", batch_size=4)
    share = sum(r.label == 2 for r in records) / len(records)
    assert results["clip_top1"] == pytest.approx(share)
    assert results["video_top1"] == pytest.approx(share)
    assert results["num_videos"] == len(records)
    assert results["num_windows"] == 2 * len(records)  # 16 frames, 8-frame windows
    cm = np.asarray(results["confusion_matrix"])
    assert cm[:, 2].sum() == len(records) and cm.sum() == len(records)
    assert results["per_class"]["Swiping Up"]["accuracy"] == 1.0
    report = evaluation.format_report(results)
    assert "clip accuracy" in report and "video accuracy" in report
    assert "top-5" in report and "failed to decode" not in report
    assert results["failed_videos"] == []
    # Five classes or fewer: top-5 is 100% whatever the model does, and not shown.
    assert "top-5" not in evaluation.format_report({**results, "classes": classes[:5],
                                                    "num_outputs": 5})
    # ... but a head with more outputs than the classes can miss: shown.
    assert "top-5" in evaluation.format_report({**results, "classes": classes[:5]})

    def always_an_unused_output(clips):  # a head with two outputs more than the classes
        return np.tile(np.eye(len(classes) + 2)[-1] * 5, (len(clips), 1))

    results = evaluation.evaluate(always_an_unused_output, records, classes, frames=8, size=32,
                                  normalization="unit", batch_size=4)
    assert results["video_top1"] == 0.0 and np.asarray(results["confusion_matrix"]).sum() == 0
    assert {v["videos"] for v in results["per_class"].values()} == {1}
    assert {v["accuracy"] for v in results["per_class"].values()} == {0.0}


@pytest.mark.parametrize("outputs, expected", [
    (lambda n, c: np.full((n, c), np.nan), "NaN or infinite for 4 of 4 clips"),
    # +inf on the right class: its softmax row is NaN, which ranked class 0 first
    (lambda n, c: np.where(np.arange(c) == 2, np.inf, 0.0)[None].repeat(n, 0), "NaN or infinite"),
    (lambda n, c: np.zeros((n, c - 1)), "expected (4, 8) (one score per class"),
    (lambda n, c: np.zeros(n), "expected (4, 8)"),
])
def test_evaluation_refuses_outputs_it_cannot_score(tiny_gestures, outputs, expected):
    """A diverged model (NaN) scored 1 / classes and a head with fewer outputs than classes
    was scored as if it never predicted them; a 1-D output was numpy's AxisError."""
    config = _tiny_config(tiny_gestures, "unused")
    records, classes = trainer.load_split(config, "validation")
    with pytest.raises(ValueError, match=re.escape(expected)):
        evaluation.evaluate(lambda clips: outputs(len(clips), len(classes)), records, classes,
                            frames=8, size=32, normalization="unit", batch_size=4)


def test_a_confusion_figure_of_many_classes_stays_drawable(tmp_path):
    """600 Kinetics classes at 0.45 inch each: a 30,000-pixel square that took about 35 GB to
    draw. Past 60 classes the figure keeps its 60-class size and names no class; drawing it
    leaves the pyplot backend of the caller's session as it was."""
    import matplotlib
    from PIL import Image

    backend = matplotlib.get_backend()
    n = 600
    rng = np.random.default_rng(0)
    results = {"classes": [f"class number {i}" for i in range(n)], "video_top1": 0.5,
               "confusion_matrix": rng.integers(0, 3, (n, n)).tolist()}
    png = evaluation.plot_confusion(results, str(tmp_path / "cm.png"))
    width, height = Image.open(png).size
    assert max(width, height) <= 110 * (0.45 * evaluation.NAMED_CLASSES + 2) + 1, (width, height)
    assert matplotlib.get_backend() == backend


def test_video_accuracy_averages_each_videos_own_windows(tmp_path):
    """Video accuracy is the mean softmax over each video's own windows, clip accuracy its
    centre clip: a model that reads which video and which frames a clip holds (solid frames
    whose red says the video, green the frame) and answers per window shows whether the
    windows reach their videos. Even videos: the first window right (weakly), the second
    wrong (strongly), the centre clip right; odd ones the other way round."""
    import cv2

    from keras_efficient3d import data

    classes = ["a", "b", "c"]
    for v in range(6):
        folder = tmp_path / "val" / classes[v % 3] / f"v{v}"
        folder.mkdir(parents=True)
        for f in range(16):
            frame = np.full((24, 24, 3), (20 * v + 10, 12 * f + 10, 128), np.uint8)
            cv2.imwrite(str(folder / f"{f + 1:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    records, found = data.index_folders(tmp_path, "val", classes=classes)
    assert found == classes and len(records) == 6

    def reads_the_clip(clips):
        logits = np.zeros((len(clips), 3), np.float32)
        for n, clip in enumerate(clips):
            v = int(round((clip[0, ..., 0].mean() * 255 - 10) / 20))
            start = int(round((clip[0, ..., 1].mean() * 255 - 10) / 12))
            label, wrong = v % 3, (v % 3 + 1) % 3
            right_first = v % 2 == 0
            if start == 4:  # the centre clip
                logits[n, label if right_first else wrong] = 2.0
            elif (start == 0) == right_first:
                logits[n, label if right_first else wrong] = 0.5  # the weak window
            else:
                logits[n, wrong if right_first else label] = 4.0  # the strong window
        return logits

    results = evaluation.evaluate(reads_the_clip, records, classes, frames=8, size=16,
                                  normalization="unit", batch_size=4)
    # video: the strong window decides (right for the odd videos); clip: the even ones
    assert results["num_windows"] == 12 and results["num_videos"] == 6
    assert results["video_top1"] == pytest.approx(0.5)
    assert results["clip_top1"] == pytest.approx(0.5)
    cm = np.zeros((3, 3), int)
    for v in range(6):
        label = v % 3
        cm[label, label if v % 2 else (label + 1) % 3] += 1
    assert results["confusion_matrix"] == cm.tolist()


def test_evaluation_leaves_out_and_names_a_video_that_fails_to_decode(tiny_gestures, tmp_path,
                                                                      caplog):
    import logging

    from keras_efficient3d.data import VideoRecord

    config = _tiny_config(tiny_gestures, "unused")
    records, classes = trainer.load_split(config, "validation")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    records = [*records, VideoRecord(str(broken), 1, "broken", "video", None)]
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        results = evaluation.evaluate(lambda clips: np.zeros((len(clips), len(classes))), records,
                                      classes, frames=8, size=32, normalization="unit",
                                      batch_size=4)
    assert caplog.text.count("skipping ") == 1 and "broken.mp4" in caplog.text  # both passes
    # its class by name, which the caller knows ("label 1" was an index to look up)
    assert f"skipping {broken} (class {classes[1]!r}): " in caplog.text
    assert results["failed_videos"] == [str(broken)]
    assert results["num_videos"] == len(records) - 1
    assert (f"{len(records) - 1} videos, {2 * (len(records) - 1)} windows; 1 more failed to "
            "decode and are left out") in evaluation.format_report(results)


def test_evaluate_cli_writes_json_and_confusion_png(tiny_gestures, tmp_path):
    import dataclasses

    import keras_efficient3d as k3

    # A run folder as train() leaves it (config.json beside the model), without training.
    out = tmp_path / "run"
    out.mkdir()
    config = _tiny_config(tiny_gestures, out)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    k3.create_model(TINY_NAME, input_shape=(8, 32, 32, 3), num_classes=8).save(
        out / "best.keras")
    proc = _cli("evaluate.py", f"--model_file={out / 'best.keras'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "video accuracy" in proc.stdout
    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["video_top1"] <= 1.0 and len(results["classes"]) == 8
    assert (out / "eval_confusion.png").stat().st_size > 1000
    proc = _cli("evaluate.py", f"--model_file={tmp_path / 'nope.keras'}")
    assert proc.returncode == 2 and "nope.keras: no such file" in proc.stderr


def test_fit_on_a_pipeline_of_unknown_length_does_not_warn_each_epoch():
    """Pipelines that skip broken videos have no known length: Keras warns at the end of
    every pass unless `trainer.quiet_end_of_data` is in force."""
    import warnings

    data = tf.data.Dataset.from_tensor_slices((np.ones((8, 3), np.float32), np.zeros(8)))
    data = data.filter(lambda x, y: True).batch(4)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def messages(quiet):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if quiet:
                with trainer.quiet_end_of_data():
                    model.fit(data, epochs=2, verbose=0, shuffle=False)
            else:
                model.fit(data, epochs=2, verbose=0, shuffle=False)
        return [str(w.message) for w in caught if "ran out of data" in str(w.message)]

    assert messages(quiet=False)
    assert messages(quiet=True) == []


@pytest.mark.parametrize("data", ["arrays", "dataset"])
def test_a_compiled_model_traces_its_training_step_once(data, tmp_path):
    """`VideoModel.fit` creates the optimizer's and the compiled metrics' variables first;
    left to the first trace, they make TensorFlow trace the whole training step twice (the
    trainer's fits: a dataset, accuracy among the metrics). A saved model still loads
    compiled."""
    import tensorflow as tf

    from keras_efficient3d import MobileNetV1_3D

    # the family with the fewest layers (TINY_MODEL): a trace's cost grows with them
    model = MobileNetV1_3D(width_mult=TINY_WIDTH, num_classes=3, input_shape=(4, 32, 32, 3))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    traces = []
    step = model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    clips = np.random.default_rng(0).random((4, 4, 32, 32, 3), dtype=np.float32)
    labels = np.arange(4) % 3
    if data == "arrays":
        history = model.fit(clips, labels, batch_size=2, epochs=2, verbose=0)
    else:
        history = model.fit(tf.data.Dataset.from_tensor_slices((clips, labels)).batch(2),
                            epochs=2, verbose=0, shuffle=False)  # Keras' shuffle only warns
    assert len(traces) == 1
    assert len(history.history["accuracy"]) == 2  # the metrics built before still count
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert int(again.optimizer.iterations) == int(model.optimizer.iterations) == 4


def test_a_train_step_of_its_own_fits_a_dataset_of_clips_alone():
    """Labels made inside the step: the symbolic build before fit (for a step traced once)
    needs labels to build the metrics with, and is left to Keras here."""
    import tensorflow as tf

    from keras_efficient3d import MobileNetV1_3D
    from keras_efficient3d.models import VideoModel

    class SelfLabelled(VideoModel):
        def train_step(self, clips):
            labels = tf.zeros(tf.shape(clips)[:1], tf.int64)
            with tf.GradientTape() as tape:
                logits = self(clips, training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True))
            self.optimizer.apply(tape.gradient(loss, self.trainable_variables),
                                 self.trainable_variables)
            return self.compute_metrics(clips, labels, logits)

    base = MobileNetV1_3D(width_mult=TINY_WIDTH, num_classes=3, input_shape=(4, 32, 32, 3))
    model = SelfLabelled(base.inputs, base.outputs)
    model.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    clips = np.random.default_rng(0).random((4, 4, 32, 32, 3), dtype=np.float32)
    history = model.fit(tf.data.Dataset.from_tensor_slices(clips).batch(2), epochs=1, verbose=0,
                        shuffle=False)
    assert len(history.history["accuracy"]) == 1 and int(model.optimizer.iterations) == 2


def test_keras_predict_fn_runs_the_folded_form_of_the_same_function(monkeypatch):
    from keras_efficient3d import fold as folding

    folded = []
    fold = folding.fold_batchnorm
    monkeypatch.setattr(folding, "fold_batchnorm", lambda m: folded.append(m) or fold(m))
    shape = (4, 32, 32, 3)
    inner = trainer.registry.create_model("mobilenetv2_0.2x", input_shape=shape, num_classes=3)
    randomize_batchnorm(inner, seed=5, spread=0.2)
    rng = np.random.default_rng(5)
    # Nested in a Sequential model (as with_preprocessing nests it in a functional one), the
    # network is folded inside the outer model's folded form.
    outer = keras.Sequential([keras.Input(shape), inner])
    clips = rng.normal(size=(2,) + shape).astype(np.float32)
    for net in (inner, outer):
        expected = net(clips, training=False).numpy()
        np.testing.assert_allclose(evaluation.keras_predict_fn(net)(clips), expected,
                                   rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert folded == [inner, outer, inner]
    nested = evaluation.keras_predict_fn(outer).model.layers[-1]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in nested.layers)


# ---------------------------------------------------------------------------------------
# Mismatches are refused before work starts; checkpoints survive a failed or killed save.


def test_num_classes_below_the_datasets_is_refused_before_training(tiny_gestures, tmp_path,
                                                                   monkeypatch):
    # No --data_root with the synthetic layout: the demo's cached set (here the tiny one).
    asked = []
    monkeypatch.setattr(synthetic, "cached_gestures",
                        lambda log=None: asked.append(log) or str(tiny_gestures))
    config = _tiny_config("", tmp_path / "run", num_classes=3)
    with pytest.raises(ValueError, match="--num_classes=3 is fewer than the 8 classes of the "
                                         f"dataset in {tiny_gestures}"):
        trainer.train(config)
    assert asked and not (tmp_path / "run" / "last.keras").exists()


def _save_run_model(folder, classes=8, frames=8, size=32, metadata=None):
    import keras_efficient3d as k3
    from keras_efficient3d.artifacts import save_model

    model = k3.create_model(TINY_NAME, input_shape=(frames, size, size, 3),
                            num_classes=classes)
    folder.mkdir(exist_ok=True)
    return save_model(model, folder / "m.keras", metadata)


@pytest.fixture(autouse=True)
def _evaluations_write_in_a_temporary_folder(request, tmp_path_factory, monkeypatch):
    """evaluate.py writes the results of a model away from a run into the current folder:
    the evaluation tests' go to a folder of their own, not into the repository."""
    if "evaluat" in request.node.name:
        monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def _evaluate_module():
    return _load_script("evaluate.py")


def test_evaluate_refuses_a_model_that_does_not_fit_the_data(tiny_gestures, tmp_path):
    evaluate = _evaluate_module()
    common = dict(dataset="synthetic", data_root=str(tiny_gestures), normalization="unit")
    five = _save_run_model(tmp_path / "five", classes=5)
    with pytest.raises(ValueError, match="has 5 outputs but the dataset has 8 classes"):
        evaluate.evaluate_file(five, frames=8, size=32, **common)
    # More outputs than classes (--num_classes above the dataset's): scored, with a note.
    ten = _save_run_model(tmp_path / "ten", classes=10)
    notes = []
    results, _, _ = evaluate.evaluate_file(ten, frames=8, size=32, log=notes.append, **common)
    assert notes == [f"note: {ten} has 10 outputs, the dataset 8 classes: its first 8 outputs "
                     "are taken as the classes"]
    assert results["num_videos"] == 8
    assert sum(v["videos"] for v in results["per_class"].values()) == 8
    eight = _save_run_model(tmp_path / "eight")
    with pytest.raises(ValueError, match=r"takes 8x32x32 clips .* --frames=8 --size=40"):
        evaluate.evaluate_file(eight, frames=8, size=40, **common)
    (tmp_path / "eight" / "labels.txt").write_text("\n".join([*synthetic.CLASSES[:7], "Waving"]))
    with pytest.raises(ValueError, match=r"class names in .*labels.txt differ from the dataset's "
                                         r"\(class 7: 'Waving' vs "):
        evaluate.evaluate_file(eight, frames=8, size=32, **common)


def test_evaluate_scores_a_model_of_another_class_order_by_the_class_names(tiny_gestures,
                                                                          tmp_path):
    """The authors' Jester checkpoints number the classes alphabetically (the original's
    categories.txt), jester-v1-labels.csv does not: a model that names the dataset's classes
    in another order (or as the original's JSON writes them, "Swiping_Left") is scored by the
    names, with a note. Its outputs and names permuted together score as the model does."""
    import keras

    from keras_efficient3d.artifacts import ModelMetadata

    evaluate = _evaluate_module()
    common = dict(dataset="synthetic", data_root=str(tiny_gestures), normalization="unit",
                  frames=8, size=32)
    plain = _save_run_model(tmp_path / "plain", metadata=ModelMetadata(labels=synthetic.CLASSES))
    model = keras.saving.load_model(plain, compile=False)
    head = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, _ = head.get_weights()
    # distinct biases: a random model's near-equal logits would leave its choices to rounding
    bias = np.array([0.3, 1.2, 0.0, 0.9, 2.1, 0.6, 1.5, 1.8], np.float32)
    head.set_weights([kernel, bias])
    save_model(model, plain, ModelMetadata(labels=synthetic.CLASSES))
    order = [3, 7, 0, 5, 1, 6, 2, 4]
    head.set_weights([kernel[:, order], bias[order]])
    names = [synthetic.CLASSES[i].replace(" ", "_") for i in order]
    folder = tmp_path / "permuted"
    folder.mkdir()
    permuted = save_model(model, folder / "m.keras", ModelMetadata(labels=names))
    notes = []
    expected, _, _ = evaluate.evaluate_file(plain, **common)
    results, _, _ = evaluate.evaluate_file(permuted, log=notes.append, **common)
    assert notes == [f"note: {permuted} numbers the dataset's classes in another order (its "
                     "metadata): each video's label is taken by its class name"]
    assert results["classes"] == names
    assert (results["video_top1"], results["clip_top1"]) == (expected["video_top1"],
                                                             expected["clip_top1"])
    assert {name.replace("_", " "): row for name, row in results["per_class"].items()} == \
        expected["per_class"]
    # the mapping itself (the model above answers one class for every video: a wrong mapping
    # could score it the same)
    from keras_efficient3d.data import VideoRecord

    records = [VideoRecord(f"v{i}", label, f"v{i}", "frames", 4) for i, label in
               enumerate((0, 1, 2, 1, -1))]
    mapped, classes = evaluate._in_the_models_order(
        records, ["Swiping Left", "Thumb Up", "No gesture"],
        ["No_gesture", "Swiping_Left", "Thumb_Up"], "m.keras", "its metadata", notes.append)
    assert [r.label for r in mapped] == [1, 2, 0, 2, -1] and classes == [
        "No_gesture", "Swiping_Left", "Thumb_Up"]
    with pytest.raises(ValueError, match=r"class 0: 'Waving' vs 'Swiping Left'"):
        evaluate._in_the_models_order(records, ["Swiping Left", "Thumb Up", "No gesture"],
                                      ["Waving", "Swiping Left", "Thumb Up"], "m.keras",
                                      "its metadata", notes.append)


def test_a_pretrained_head_of_the_runs_classes_in_another_order_is_put_in_the_runs_order(
        tiny_gestures, tmp_path, capsys):
    """An authors' Jester checkpoint (outputs in the original's alphabetical order) fine-tuned
    on Jester's CSVs (another order) with its head kept: each output now means the run's
    class of its index; the head's weights are its own, permuted by name."""
    import keras

    from keras_efficient3d.artifacts import ModelMetadata

    order = [3, 7, 0, 5, 1, 6, 2, 4]
    names = [synthetic.CLASSES[i].replace(" ", "_") for i in order]  # as the original's JSON
    path = _save_run_model(tmp_path / "pre", metadata=ModelMetadata(labels=names))
    pretrained = keras.saving.load_model(path, compile=False)
    x = np.random.default_rng(0).normal(size=(2, 8, 32, 32, 3)).astype(np.float32)
    before = np.asarray(pretrained(x, training=False))
    config = _tiny_config(tiny_gestures, tmp_path / "run", pretrained=str(path))
    model = trainer.build_model(config, 8, list(synthetic.CLASSES))
    after = np.asarray(model(x, training=False))
    # output i is the run's class i, which the file had at position order.index(i)
    np.testing.assert_allclose(after, before[:, [order.index(i) for i in range(8)]], rtol=1e-6)
    assert "its head's outputs are put in the run's order, by name" in capsys.readouterr().err
    same = trainer.build_model(config, 8, names)  # the file's own order: left as it is
    np.testing.assert_allclose(np.asarray(same(x, training=False)), before, rtol=1e-6)
    # the reordered model keeps no record of the file's order for a later save to write
    from keras_efficient3d.artifacts import read_metadata, save_model

    save_model(model, tmp_path / "reordered.keras")
    assert read_metadata(tmp_path / "reordered.keras") is None


def test_a_pretrained_head_of_other_classes_is_replaced_as_the_original_does(tiny_gestures,
                                                                           tmp_path, capsys):
    """Eight gestures fine-tuned from a model of eight other classes kept its head without a
    word: output 0, the file's 'Other 0', trained as the run's 'Swiping Left'. The original
    replaces the classifier whenever it fine-tunes: so here, where the names differ."""
    import keras

    from keras_efficient3d.artifacts import ModelMetadata

    path = _save_run_model(tmp_path / "pre", metadata=ModelMetadata(
        labels=[f"Other {i}" for i in range(8)]))
    head = keras.saving.load_model(path, compile=False).get_layer("predictions").get_weights()[0]
    config = _tiny_config(tiny_gestures, tmp_path / "run", pretrained=str(path))
    model = trainer.build_model(config, 8, list(synthetic.CLASSES))
    assert model.output_shape == (None, 8)
    assert not np.allclose(model.get_layer("predictions").get_weights()[0], head)
    assert (f"note: --pretrained={path} was trained on other classes (class 0: its 'Other 0', the "
            "run's 'Swiping Left'): its head is replaced, as for another class count"
            in capsys.readouterr().err)
    # a file that names the run's classes first, then more (--num_classes above them): kept
    more = _save_run_model(tmp_path / "more", classes=10, metadata=ModelMetadata(
        labels=list(synthetic.CLASSES) + ["extra 1", "extra 2"]))
    head = keras.saving.load_model(more, compile=False).get_layer("predictions").get_weights()[0]
    config = _tiny_config(tiny_gestures, tmp_path / "run", pretrained=str(more), num_classes=10)
    model = trainer.build_model(config, 10, list(synthetic.CLASSES))
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[0], head)
    # a file that names no classes: kept, and said
    bare = _save_run_model(tmp_path / "bare")
    head = keras.saving.load_model(bare, compile=False).get_layer("predictions").get_weights()[0]
    config = _tiny_config(tiny_gestures, tmp_path / "run", pretrained=str(bare))
    model = trainer.build_model(config, 8, list(synthetic.CLASSES))
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[0], head)
    assert "records no class names: its head is kept" in capsys.readouterr().err


def test_evaluate_of_a_model_away_from_its_run_takes_the_dataset_it_records(tiny_gestures,
                                                                           tmp_path, monkeypatch):
    """A model copied out of its run folder (no config.json) was evaluated as Jester, on fold
    1 of UCF-101 whatever fold it trained on: its metadata records what it was trained on.
    The results say what was scored, and go to the current folder, named after the model
    (not into a shipped model's folder); a training split's go to their own files, and a
    frame step or normalisation other than the model's is refused, as predict refuses it."""
    from keras_efficient3d.artifacts import read_metadata

    monkeypatch.chdir(tmp_path)

    evaluate = _evaluate_module()
    config = _tiny_config(tiny_gestures, tmp_path / "run")
    metadata = trainer.model_metadata(config, list(synthetic.CLASSES))
    assert metadata.extra[trainer.TRAINED_ON] == {"dataset": "synthetic"}
    ucf = trainer.model_metadata(dataclasses.replace(config, dataset="ucf101", ucf101_fold=2),
                                 list(synthetic.CLASSES))
    assert ucf.extra[trainer.TRAINED_ON] == {"dataset": "ucf101", "ucf101_fold": 2}
    path = _save_run_model(tmp_path / "away", metadata=metadata)
    assert read_metadata(path).extra[trainer.TRAINED_ON] == {"dataset": "synthetic"}
    notes = []
    results, json_path, _ = evaluate.evaluate_file(path, data_root=str(tiny_gestures),
                                                   log=notes.append)
    assert "dataset synthetic" in notes[0], notes
    assert results["evaluated"] == {
        "dataset": "synthetic", "split": "validation", "data_root": str(tiny_gestures),
        "frames": 8, "size": 32, "downsample": 1, "normalization": "unit",
        "model_file": os.path.abspath(path)}
    assert json_path == str(tmp_path / "m_eval_results.json")
    assert not [n for n in os.listdir(tmp_path / "away") if n.startswith("eval")]
    results, json_path, png = evaluate.evaluate_file(path, data_root=str(tiny_gestures),
                                                     split="train", log=notes.append)
    assert results["evaluated"]["split"] == "train"
    assert (os.path.basename(json_path), os.path.basename(png)) == (
        "m_eval_train_results.json", "m_eval_train_confusion.png")
    for flag, value, shown in (("normalization", "original", "'unit'"), ("downsample", 2, "1")):
        with pytest.raises(cli.UsageError, match=rf"^{path} records its .* \({shown}\); "
                                                 rf"--{flag}={value} differs: leave it out$"):
            evaluate.evaluate_file(path, data_root=str(tiny_gestures), **{flag: value})


def test_evaluate_records_the_model_and_its_epoch_and_keeps_two_models_results_apart(
        tiny_gestures, one_epoch_run, tmp_path):
    """best.keras records its epoch; evaluate.py's results name the file and the epoch they
    score, and last.keras' go to last_eval_*, not over best.keras'. A model copied into
    another run's folder is scored on the clips it records, not on that run's config.json."""
    import shutil

    from keras_efficient3d.artifacts import load_model, read_metadata, save_model

    out = _copy_run(one_epoch_run, tmp_path)
    best = read_metadata(out / "best.keras").extra["best_checkpoint"]
    assert best["epoch"] == 1 and best["val_accuracy"] == pytest.approx(
        json.loads((out / "train_state.json").read_text())["best_accuracy"])
    evaluate = _evaluate_module()
    results, json_path, _ = evaluate.evaluate_file(str(out / "best.keras"))
    assert json_path == str(out / "eval_results.json")
    assert results["evaluated"]["model_file"] == str(out / "best.keras")
    assert results["evaluated"]["epoch"] == 1
    last, last_path, png = evaluate.evaluate_file(str(out / "last.keras"))
    assert (last_path, png) == (str(out / "last_eval_results.json"),
                                str(out / "last_eval_confusion.png"))
    assert last["evaluated"]["epoch"] == 1  # last.keras' training state
    assert json.loads((out / "eval_results.json").read_text())["evaluated"]["model_file"] == \
        str(out / "best.keras")
    # a resave is another file: it records no checkpoint's epoch
    save_model(load_model(out / "best.keras"), tmp_path / "again.keras")
    assert "best_checkpoint" not in read_metadata(tmp_path / "again.keras").extra
    # the model in another run's folder, whose config.json says another frame step and
    # normalisation: the model's own are used, as away from any run
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(out / "best.keras", other / "best.keras")
    saved = json.loads((out / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(saved, downsample=2,
                                                       normalization="original")))
    notes = []
    moved, _, _ = evaluate.evaluate_file(str(other / "best.keras"), log=notes.append)
    assert [n for n in notes if "config.json: 2" in n] == [
        f"note: {other / 'best.keras'} records downsample 1 (config.json: 2), normalization "
        "'unit' (config.json: 'original'), which its clips are made with: it is not the model "
        "of the run beside it?"]
    assert (moved["evaluated"]["downsample"], moved["evaluated"]["normalization"]) == (1, "unit")
    # the same clips and windows (16-frame windows of a frame step of 2 are fewer)
    for key in ("num_windows", "clip_top1", "video_top1", "confusion_matrix"):
        assert moved[key] == results[key], key


def test_evaluate_scores_an_exported_file_as_its_keras_model(tmp_path):
    """An x86 or phone engineer's question, the int8 file's accuracy on the validation set:
    evaluate.py took .keras models alone. The shipped fp32 TFLite file scores as its .keras
    model does; its int8 file, and the file of uint8 frames (fed the frames), within a
    video of it."""
    from keras_efficient3d.deploy import tflite

    root = synthetic.generate(str(tmp_path / "data"), layout="jester", videos_per_class=2,
                              seed=5, frames=32, size=64)
    evaluate = _evaluate_module()
    saved = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "saved_models")
    keras_file = os.path.join(saved, "synthetic_gestures.keras")
    results = {}
    for name in ("synthetic_gestures.keras", "synthetic_gestures_fp32.tflite",
                 "synthetic_gestures_int8.tflite"):
        results[name], json_path, _ = evaluate.evaluate_file(
            os.path.join(saved, name), data_root=root, output_dir=str(tmp_path / "out"))
    keras_results = results["synthetic_gestures.keras"]
    fp32, int8 = results["synthetic_gestures_fp32.tflite"], results["synthetic_gestures_int8.tflite"]
    assert fp32["evaluated"]["model_file"].endswith("synthetic_gestures_fp32.tflite")
    for key in ("num_videos", "num_windows", "clip_top1", "video_top1"):
        assert fp32[key] == keras_results[key], key
    videos = keras_results["num_videos"]
    assert abs(int8["video_top1"] - keras_results["video_top1"]) * videos <= 1
    assert {n for n in os.listdir(tmp_path / "out") if n.endswith("_results.json")} == {
        "synthetic_gestures_eval_results.json", "synthetic_gestures_fp32_eval_results.json",
        "synthetic_gestures_int8_eval_results.json"}
    # the file of frames: the pipeline's 0-255 pixels, fed as uint8
    from keras_efficient3d.artifacts import load_model, read_metadata

    model = load_model(keras_file)
    frames_file = str(tmp_path / "frames.tflite")
    metadata = read_metadata(keras_file)
    calibration = np.stack([np.asarray(c) for c, _ in _first_clips(root, metadata, 8)])
    blob = tflite.convert(model, "int8", representative_data=calibration,
                          frames=metadata.normalization)
    with open(frames_file, "wb") as handle:
        handle.write(blob)
    from keras_efficient3d.artifacts import frames_metadata, write_sidecar

    write_sidecar(frames_file, frames_metadata(metadata, metadata.normalization))
    frames, _, _ = evaluate.evaluate_file(frames_file, data_root=root,
                                          output_dir=str(tmp_path / "out"))
    assert frames["evaluated"]["normalization"] == "none"
    assert abs(frames["video_top1"] - keras_results["video_top1"]) * videos <= 1


def _first_clips(root, metadata, n):
    from keras_efficient3d import data as kdata

    records, _ = kdata.index_dataset(root, "train")
    dataset = kdata.make_dataset(records, "val", sample_duration=16, sample_size=64, batch_size=1,
                                 **metadata.pipeline_arguments())
    return [(clips[0], labels) for clips, labels in dataset.take(n)]


def test_evaluate_refuses_an_unknown_dataset(tmp_path):
    with pytest.raises(cli.UsageError, match=r"^--dataset=kinetics: expected one of jester, "
                                             r"kinetics600, ucf101, folders, synthetic$"):
        _evaluate_module().evaluate_file(str(tmp_path / "m.keras"), dataset="kinetics")


def test_evaluate_of_a_split_without_videos_names_the_folder(tiny_gestures, tmp_path):
    import shutil

    root = tmp_path / "csvs_only"
    root.mkdir()
    for csv in pathlib.Path(tiny_gestures).glob("*.csv"):
        shutil.copy(csv, root)  # the annotations, none of the frame folders they list
    with pytest.raises(ValueError, match=rf"^no videos to evaluate in the synthetic dataset's "
                                         rf"validation split under {root}$"):
        _evaluate_module().evaluate_file(_save_run_model(tmp_path / "m"), dataset="synthetic",
                                         data_root=str(root), frames=8, size=32)


def test_evaluate_refuses_an_output_it_cannot_write_before_evaluating(tiny_gestures, tmp_path,
                                                                     monkeypatch):
    from keras_efficient3d import cli

    scored = []
    monkeypatch.setattr(evaluation, "evaluate", lambda *a: scored.append(1) or {})
    eight = _save_run_model(tmp_path / "eight")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(cli.UsageError, match=rf"^--output {tmp_path / 'a_file' / 'sub'}: "
                                             rf"{tmp_path / 'a_file'} is a file, not a folder"):
        _evaluate_module().evaluate_file(eight, dataset="synthetic", data_root=str(tiny_gestures),
                                         output_dir=str(tmp_path / "a_file" / "sub"))
    assert not scored
    assert cli.writable_folder(str(tmp_path / "new" / "deeper")) == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # made when the results are written, not before


def test_evaluate_names_the_config_json_of_a_data_folder_gone(tiny_gestures, tmp_path):
    """The run's config.json records where it trained; a folder since moved is named with
    the file that records it, and --data_root given instead is taken."""
    from keras_efficient3d import cli

    model = _save_run_model(tmp_path / "run")
    config = _tiny_config(tmp_path / "moved", tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(config.to_json())
    with pytest.raises(cli.UsageError, match=rf"^the data folder {tmp_path / 'moved'} that "
                                             rf"{tmp_path / 'run' / 'config.json'} records does "
                                             r"not exist; give --data_root$"):
        _evaluate_module().evaluate_file(model)
    results, _, _ = _evaluate_module().evaluate_file(model, data_root=str(tiny_gestures))
    assert results["num_videos"] == 8


def test_evaluate_takes_unset_options_from_the_models_metadata(tiny_gestures, tmp_path):
    from keras_efficient3d.artifacts import ModelMetadata

    evaluate = _evaluate_module()
    meta = ModelMetadata(frames=8, size=32, downsample=1, labels=list(synthetic.CLASSES),
                         normalization=Normalization.preset("unit"))
    path = _save_run_model(tmp_path / "meta", metadata=meta)
    notes = []
    results, _, _ = evaluate.evaluate_file(path, dataset="synthetic",
                                           data_root=str(tiny_gestures), log=notes.append)
    assert notes == [f"note: no config.json beside {path}: frames 8, downsample 1, size 32, "
                     "normalization 'unit' from its metadata"]
    assert results["num_videos"] == 8


def test_a_truncated_keras_file_is_not_a_valid_archive(tmp_path):
    from keras_efficient3d.artifacts import ModelFileError, check_keras_archive

    path = _save_run_model(tmp_path / "ok")
    data = open(path, "rb").read()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.keras: not a valid .keras archive"):
        check_keras_archive(tmp_path / "cut.keras")
    assert check_keras_archive(path) == path


def test_a_checkpoint_write_that_fails_midway_keeps_the_previous_and_resume_works(
        tiny_gestures, one_epoch_run, tmp_path, monkeypatch):
    out = _copy_run(one_epoch_run, tmp_path)
    before = {name: (out / name).read_bytes()
              for name in ("last.keras", "best.keras", "train_state.json")}

    real_save = keras.Model.save

    def save_then_die(self, path, *args, **kwargs):
        with open(path, "wb") as handle:  # half an archive, then the writer dies
            handle.write(before["last.keras"][:1000])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(keras.Model, "save", save_then_die)
    with pytest.raises(OSError, match="simulated"):
        trainer.train(_tiny_config(tiny_gestures, out, epochs=2, resume=True))
    for name, content in before.items():
        assert (out / name).read_bytes() == content, name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]

    monkeypatch.setattr(keras.Model, "save", real_save)
    resumed = trainer.train(_tiny_config(tiny_gestures, out, epochs=2, resume=True))
    assert len(resumed["history"]["loss"]) == 1
    assert json.loads((out / "train_state.json").read_text())["epoch"] == 2


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_continues_at_that_epoch_exactly(tiny_gestures, tmp_path):
    """A training process killed (SIGKILL) in the middle of epoch 2 resumes at epoch 2 with
    the optimizer state and learning rate of the end of epoch 1."""
    import signal

    out = tmp_path / "run"
    config = _tiny_config(tiny_gestures, out, epochs=3, lr_schedule="steps", lr_steps=(2, 3),
                          optimizer="sgd")
    fields = {k: v for k, v in dataclasses.asdict(config).items()}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "multiworker_worker.py"),
                           json.dumps(fields), "1,1"], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert json.loads((out / "train_state.json").read_text())["epoch"] == 1
    steps = int(keras.saving.load_model(out / "last.keras").optimizer.iterations.numpy())

    resumed = trainer.train(_tiny_config(tiny_gestures, out, epochs=3, lr_schedule="steps",
                                         lr_steps=(2, 3), optimizer="sgd", resume=True))
    assert len(resumed["history"]["loss"]) == 2  # epochs 2 and 3, not 1
    assert int(resumed["model"].optimizer.iterations.numpy()) == 3 * steps
    assert resumed["history"]["learning_rate"] == pytest.approx([0.001, 0.0001])


def test_the_flagfile_and_the_demo_share_one_synthetic_dataset(tmp_path):
    from keras_efficient3d import demo

    values = flags.FlagValues()
    demo.define_flags(values)
    values(["demo"])
    assert values.videos_per_class == synthetic.GESTURES["videos_per_class"] == 100
    module, values = _fresh_flags(["train", "--flagfile=" + os.path.join(
        ROOT, "training", "flags", "synthetic.flags")])
    config = module.config_from_flags(values).validate()  # no --data_root needed
    assert config.data_root == "" and config.dataset == "synthetic"


def test_an_error_mid_epoch_starts_on_a_line_of_its_own(tiny_gestures, tmp_path, capsys):
    """Keras' progress bar ends its line only with its epoch: an error (here a Ctrl-C) in
    the middle of one printed `train.py: interrupted` right after the bar."""
    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:  # the bar shows the first batch (it is called after this)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.train(_tiny_config(tiny_gestures, tmp_path / "run", epochs=1, verbose=1),
                      extra_callbacks=[Interrupt()])
    out = capsys.readouterr().out
    assert "1/" in out.splitlines()[-1] and out.endswith("\n"), repr(out[-200:])


def test_cached_gestures_are_generated_once_and_never_half(tmp_path, monkeypatch):
    tiny = dict(synthetic.GESTURES, videos_per_class=1, frames=4, size=32)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    real_generate = synthetic.generate

    def interrupted(output, **kwargs):
        os.makedirs(os.path.join(output, "1"))
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic.cached_gestures(tiny)
    cache = tmp_path / "home" / "datasets"
    assert list(cache.iterdir()) == []  # nothing that could pass for a dataset

    monkeypatch.setattr(synthetic, "generate", real_generate)
    lines = []
    root = synthetic.cached_gestures(tiny, log=lines.append)
    again = synthetic.cached_gestures(tiny, log=lines.append)
    assert root == again and os.path.dirname(root) == str(cache)
    assert lines == [f"synthetic gestures: generating 8 videos once into {root}",
                     f"synthetic gestures: using the cached set in {root}"]
    records, classes = trainer.load_split(trainer.TrainConfig(dataset="synthetic",
                                                              data_root=root), "train")
    assert classes == list(synthetic.CLASSES)


def test_threads_set_too_late_are_reported_not_ignored(capsys):
    """In this process TensorFlow has run ops already: `--threads` cannot take effect, and
    the trainer says so; the default (0) says nothing."""
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow's threads are fixed from here on
    assert trainer._set_threads(trainer.TrainConfig(data_root="x", threads=2)) is None
    assert "--threads=2 not applied" in capsys.readouterr().err
    assert trainer._set_threads(trainer.TrainConfig(data_root="x")) is None
    assert capsys.readouterr() == ("", "")


def _kinetics_frames(root, split, label, key, frames=2):
    """A Kinetics video as a frame folder: <root>/<split>/<label>/<key>/00001.jpg..."""
    from PIL import Image

    folder = root / split / label / key
    folder.mkdir(parents=True)
    for i in range(frames):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i + 1:05d}.jpg")


def _tiny_kinetics(root, train_rows, val_rows):
    """Writes train.csv and validate.csv (rows: (label, youtube_id)) and their videos."""
    root.mkdir(parents=True, exist_ok=True)
    for name, split, rows in (("train.csv", "train", train_rows),
                              ("validate.csv", "val", val_rows)):
        lines = ["label,youtube_id,time_start,time_end,split"]
        for label, vid in rows:
            lines.append(f"{label},{vid},0,10,{'train' if split == 'train' else 'validate'}")
            _kinetics_frames(root, split, label, f"{vid}_000000_000010")
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def test_kinetics_validation_labels_index_the_training_classes(tmp_path, capsys):
    import shutil

    from keras_efficient3d.data import DataError

    # validate.csv lacks class "a": its labels must still be those of training (b=1, c=2).
    root = _tiny_kinetics(tmp_path / "k", [("a", "x1"), ("b", "x2"), ("c", "x3")],
                          [("b", "y1"), ("c", "y2")])
    config = trainer.TrainConfig(dataset="kinetics600", data_root=str(root))
    train_records, val_records, classes = trainer.load_splits(config)
    assert classes == ["a", "b", "c"]
    assert sorted(r.label for r in val_records) == [1, 2]
    # a class whose videos are all missing: still an output, never trained, and said
    shutil.rmtree(root / "train" / "c")
    assert trainer.load_splits(config)[2] == ["a", "b", "c"]
    assert capsys.readouterr().err.splitlines()[-1] == \
        "warning: 1 of the 3 classes have no training video (c)"
    # A validation class that training never saw: refused with the file and line.
    with open(root / "validate.csv", "a") as handle:
        handle.write("d,y3,0,10,validate\n")
    _kinetics_frames(root, "val", "d", "y3_000000_000010")
    with pytest.raises(DataError, match=r"validate.csv.*4.*'d' is not in the class list"):
        trainer.load_splits(config)


def test_validation_videos_that_are_training_videos_are_said(tiny_gestures, tmp_path, capsys):
    """A training video listed in the validation list too (a list mixed up, a folder copied)
    trained on and scored as validation, without a word."""
    import shutil

    root = tmp_path / "g"
    shutil.copytree(tiny_gestures, root)
    config = trainer.TrainConfig(dataset="jester", data_root=str(root))
    _, val_records, _ = trainer.load_splits(config)
    assert "training videos too" not in capsys.readouterr().err
    first = (root / "jester-v1-train.csv").read_text().splitlines()[:2]
    with open(root / "jester-v1-validation.csv", "a") as handle:
        handle.write("\n".join(first) + "\n")
    trainer.load_splits(config)
    video = root / first[0].split(";")[0]
    assert (f"warning: 2 of the {len(val_records) + 2} validation videos are training videos "
            f"too (first: {video}): their accuracy is not a validation's") in \
        capsys.readouterr().err


def test_kinetics_annotations_name_a_folder_one_csv_or_several(tmp_path):
    root = _tiny_kinetics(tmp_path / "k", [("a", "x1"), ("b", "x2")], [("b", "y1")])
    csvs = tmp_path / "csv"
    csvs.mkdir()
    for name in ("train.csv", "validate.csv"):
        os.replace(root / name, csvs / name)
    both = csvs / "both.csv"
    both.write_text((csvs / "train.csv").read_text()
                    + (csvs / "validate.csv").read_text().split("\n", 1)[1])
    for annotations in (str(csvs), str(both), f"{csvs / 'train.csv'},{csvs / 'validate.csv'}"):
        config = trainer.TrainConfig(dataset="kinetics600", data_root=str(root),
                                     annotations=annotations)
        train_records, val_records, classes = trainer.load_splits(config)
        assert (len(train_records), classes) == (2, ["a", "b"]), annotations
        assert [r.label for r in val_records] == [1], annotations


def test_kinetics_csvs_go_by_the_names_of_each_release(tmp_path, monkeypatch):
    """A folder of CVDF's val.csv or the ActivityNet crawler's kinetics-600_*.csv is read as
    one of DeepMind's train.csv and validate.csv; a folder of none of them is said before the
    training split is indexed (minutes for Kinetics), with the names looked for."""
    from keras_efficient3d import data
    from keras_efficient3d.data import DataError

    root = _tiny_kinetics(tmp_path / "k", [("a", "x1"), ("b", "x2")], [("b", "y1")])
    config = trainer.TrainConfig(dataset="kinetics600", data_root=str(root))
    os.replace(root / "validate.csv", root / "val.csv")
    assert [r.label for r in trainer.load_splits(config)[1]] == [1]
    os.replace(root / "train.csv", root / "kinetics-600_train.csv")
    os.replace(root / "val.csv", root / "kinetics-600_val.csv")
    assert [r.label for r in trainer.load_splits(config)[1]] == [1]
    os.replace(root / "kinetics-600_val.csv", root / "kinetics-600_test.csv")
    indexed = []
    monkeypatch.setattr(data, "index_kinetics", lambda *a, **k: indexed.append(a) or ([], []))
    with pytest.raises(DataError, match=rf"^{root}: no validation CSV \(looked for validate.csv, "
                                        r"val.csv, .*\): name the CSVs with "
                                        r"--annotations=TRAIN.csv,VAL.csv$"):
        trainer.load_splits(config)
    assert indexed == []


def test_an_empty_validation_split_is_refused_before_training(tmp_path):
    root = _tiny_kinetics(tmp_path / "k", [("a", "x1"), ("b", "x2")], [])
    config = trainer.TrainConfig(dataset="kinetics600", data_root=str(root),
                                 output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"^No validation videos in the kinetics600 dataset's "
                                         rf"validation split \(looked in {root / 'validate.csv'}\)"):
        trainer.train(config)
    assert not (tmp_path / "run" / "config.json").exists()


def test_curves_skip_the_values_the_csv_logger_writes_as_na(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,NA,NA\n1,0.6,1.0,0.4,1.1\n")
    assert trainer.plot_curves(log, tmp_path / "curves.png") == tmp_path / "curves.png"
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_curves_show_the_learning_rate_where_it_is_logged(tmp_path):
    """A third panel, the rate (a step of --lr_steps shows there); a diverged epoch's NaN is
    left out, not drawn."""
    import struct

    def width(png):
        return struct.unpack(">I", png.read_bytes()[16:20])[0]

    log = tmp_path / "log.csv"
    log.write_text("epoch,accuracy,learning_rate,loss,top5,val_accuracy,val_loss,val_top5\n"
                   "1,0.5,0.1,1.2,0.9,0.4,1.3,0.8\n2,0.6,0.01,1.0,0.95,0.5,1.1,0.9\n"
                   "3,nan,0.01,nan,nan,nan,nan,nan\n")
    assert trainer.plot_curves(log, tmp_path / "rate.png") == tmp_path / "rate.png"
    log.write_text("epoch,accuracy,loss\n1,0.5,1.2\n2,0.6,1.0\n")
    trainer.plot_curves(log, tmp_path / "plain.png")
    assert width(tmp_path / "rate.png") == 1500 and width(tmp_path / "plain.png") == 1000


def test_a_diverged_epoch_writes_no_checkpoint(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    checkpointer = trainer.Checkpointer(str(tmp_path), 1, saved_epoch=4)
    checkpointer.set_model(model)
    checkpointer.on_epoch_end(4, {"loss": 0.5, "val_accuracy": 0.5})
    assert (tmp_path / "last.keras").exists() and checkpointer.saved_epoch == 5
    for path in tmp_path.iterdir():
        path.unlink()
    # A finite loss but NaN weights, then a NaN loss: neither is written.
    model.layers[0].kernel.assign(np.full((3, 2), np.nan, np.float32))
    checkpointer.on_epoch_end(5, {"loss": 0.4, "val_accuracy": 0.9})
    assert checkpointer.diverged == (6, "weights not finite, loss 0.4") and model.stop_training
    model.layers[0].kernel.assign(np.zeros((3, 2), np.float32))
    checkpointer.on_epoch_end(6, {"loss": float("nan"), "val_accuracy": 0.9})
    assert checkpointer.diverged[0] == 7 and checkpointer.saved_epoch == 5
    assert not any(tmp_path.iterdir())


def test_training_that_diverges_keeps_the_last_good_checkpoints(tiny_gestures, one_epoch_run,
                                                                tmp_path, capfd):
    out = _copy_run(one_epoch_run, tmp_path)
    before = {name: (out / name).read_bytes() for name in ("last.keras", "best.keras",
                                                           "train_state.json")}
    config = _tiny_config(tiny_gestures, out, epochs=2, resume=True, learning_rate=1e30,
                          lr_schedule="constant")
    (out / "curves.png").unlink()
    with pytest.raises(ValueError, match=r"^training diverged at epoch 2 \(loss nan\); the "
                                         r"checkpoints of epoch 1 are kept; lower --learning_rate"):
        trainer.train(config)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert (out / "curves.png").stat().st_size > 0  # the epochs until then, to look at
    # that one line alone: not Keras' "Batch 2: Invalid loss, terminating training" before it
    assert "Invalid loss" not in "".join(capfd.readouterr())


def test_an_epoch_whose_validation_loss_is_not_finite_writes_no_checkpoint(tmp_path):
    """Finite weights, a finite training loss, but NaN outputs in inference mode (BatchNorm's
    moving statistics grown past what the activations can hold): best.keras gave NaN for
    every clip. The epoch diverged, and the reason names what was not finite."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpointer = trainer.Checkpointer(str(tmp_path), every=1, epochs=3)
    checkpointer.set_model(model)
    checkpointer.on_epoch_end(0, {"loss": 1.25, "val_loss": float("nan"), "val_accuracy": 0.5})
    assert checkpointer.diverged == (1, "validation loss nan") and model.stop_training
    assert os.listdir(tmp_path) == []
    model.stop_training = False
    checkpointer = trainer.Checkpointer(str(tmp_path), every=1, epochs=3)
    checkpointer.set_model(model)
    model.layers[0].kernel.assign([[float("inf")], [0.0]])
    checkpointer.on_epoch_end(0, {"loss": 1.25, "val_loss": 0.5, "val_accuracy": 0.5})
    assert checkpointer.diverged == (1, "weights not finite, loss 1.25")  # not "loss 1.25" alone
    assert os.listdir(tmp_path) == []


def test_a_model_option_the_builder_refuses_leaves_the_run_in_the_folder(
        tiny_gestures, one_epoch_run, tmp_path):
    out = _copy_run(one_epoch_run, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    config = _tiny_config(tiny_gestures, out, model="shufflenetv2", width_mult=0.3)
    with pytest.raises(ValueError, match=r"`width_mult` must be one of"):
        trainer.train(config)
    # Nothing moved into previous/, nothing rewritten: --resume still continues the run.
    assert not (out / "previous").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_resume_on_a_dataset_of_other_class_names_is_refused(tiny_gestures, one_epoch_run,
                                                             tmp_path):
    """The class count matched, so each output went on training as another class (and
    last.keras was saved with the new names, best.keras keeping the old)."""
    import shutil

    out = _copy_run(one_epoch_run, tmp_path)
    renamed = shutil.copytree(tiny_gestures, tmp_path / "renamed")
    for csv in renamed.glob("*.csv"):
        csv.write_text(csv.read_text().replace("Zooming Out", "Zooming Away"))
    before = (out / "last.keras").read_bytes()
    with pytest.raises(ValueError, match=rf"^{out / 'last.keras'} was trained on other classes "
                                         rf"than those of {renamed} \(Zooming Out not in the "
                                         r"dataset, Zooming Away new in it\): resuming would "
                                         "train its outputs as other classes"):
        trainer.train(_tiny_config(str(renamed), out, epochs=3, resume=True))
    assert (out / "last.keras").read_bytes() == before
    with pytest.raises(ValueError, match=r"\(the same names in another order\)"):
        trainer._check_same_classes(ModelMetadata(labels=["a", "b"]), ["b", "a"], "l.keras", "d")


def test_a_dataset_of_one_class_is_refused(tmp_path):
    """Its loss is 0 from the first step: "best clip accuracy 100.00%" and nothing learnt."""
    import cv2

    from helpers import moving_square

    for split in ("train", "val"):
        (tmp_path / "one" / split / "cats").mkdir(parents=True)
        writer = cv2.VideoWriter(str(tmp_path / "one" / split / "cats" / "a.avi"),
                                 cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
        for frame in moving_square(8):
            writer.write(frame)
        writer.release()
    config = trainer.TrainConfig(dataset="folders", data_root=str(tmp_path / "one"),
                                 output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"the dataset has one class \(cats\); a classifier "
                                         r"needs two or more \(is --data_root the folder above "
                                         r"the class folders\?\)$"):
        trainer.load_splits(config)
    # Kinetics' classes are its training CSV's: the folder hint was wrong there
    root = _tiny_kinetics(tmp_path / "k", [("a", "x1"), ("a", "x2")], [("a", "y1")])
    config = trainer.TrainConfig(dataset="kinetics600", data_root=str(root))
    with pytest.raises(ValueError, match=r"one class \(a\); a classifier needs two or more "
                                         rf"\(its training CSV names one: {root / 'train.csv'}\)$"):
        trainer.load_splits(config)


def test_resume_from_a_checkpoint_of_another_model_is_refused(tiny_gestures, one_epoch_run,
                                                              tmp_path, monkeypatch):
    from keras_efficient3d.artifacts import ModelMetadata

    out = _copy_run(one_epoch_run, tmp_path)
    # config.json and the flags agree; last.keras was copied in from another run.
    other = ModelMetadata(frames=8, size=32, model={"model": "mobilenetv2", "width_mult": 0.2,
                                                    "num_classes": 8})
    os.replace(_save_run_model(tmp_path / "other", metadata=other), out / "last.keras")
    indexed = []
    monkeypatch.setattr(trainer, "load_split", lambda *a, **k: indexed.append(1) or ([], []))
    with pytest.raises(ValueError, match=rf"^{out / 'last.keras'} holds a model with "
                                         r"model=mobilenetv2 width_mult=0.2, not the run's "
                                         rf"model={TINY_MODEL} width_mult={TINY_WIDTH}; it is "
                                         r"not this run's checkpoint"):
        trainer.train(_tiny_config(tiny_gestures, out, epochs=3, resume=True))
    assert not indexed
    # A fine-tuned run records its source file, not an architecture: nothing to compare.
    trainer._check_same_model({"num_classes": 8, "pretrained": "base.keras"},
                              _tiny_config(tiny_gestures, out), "last.keras")

    def check(recorded, **flags):
        trainer._check_same_model(recorded, trainer.TrainConfig(data_root="x", **flags), "l.keras")

    # Both sides resolved with their builder's defaults: aliases, case and configuration
    # names of one model agree ...
    check({"model": "mobilenet", "num_classes": 3}, model="mobilenetv1")
    check({"model": "MobileNetV2"}, model="mobilenetv2_1.0x")
    check({"model": "mobilenetv2_0.5x"}, model="mobilenetv2", width_mult=0.5)
    check({"model": "squeezenet_1.0"}, model="squeezenet", version=1.0)
    check({"model": "resnet18", "num_classes": 3}, model="resnet", depth=18)
    # ... and a 0.5x checkpoint is not the 1.0x a plain --model names.
    with pytest.raises(ValueError, match=r"holds a model with width_mult=0.5, not the run's "
                                         r"width_mult=1.0"):
        check({"model": "mobilenetv2", "width_mult": 0.5}, model="mobilenetv2")


def test_resume_drops_the_log_rows_of_epochs_after_the_checkpoint(tmp_path):
    log = tmp_path / "log.csv"
    log.write_bytes(b"epoch,accuracy,loss\r\n1,0.5,1.2\r\n2,0.6,1.0\r\n3,0.4,nan\r\n")
    trainer._trim_log(str(log), 2)  # last.keras is epoch 2's: the row of epoch 3 goes
    assert log.read_bytes() == b"epoch,accuracy,loss\r\n1,0.5,1.2\r\n2,0.6,1.0\r\n"
    trainer._trim_log(str(log), 5)
    assert log.read_bytes() == b"epoch,accuracy,loss\r\n1,0.5,1.2\r\n2,0.6,1.0\r\n"
    # a log of an older version, which counted from 0: numbered as the resumed rows are
    log.write_bytes(b"epoch,accuracy,loss\r\n0,0.5,1.2\r\n1,0.6,1.0\r\n2,0.4,nan\r\n")
    trainer._trim_log(str(log), 2)
    assert log.read_bytes() == b"epoch,accuracy,loss\r\n1,0.5,1.2\r\n2,0.6,1.0\r\n"
    # a multi-worker run restored from its backup appends to it too: renumbered, all kept
    log.write_bytes(b"epoch,accuracy,loss\r\n0,0.5,1.2\r\n1,0.6,1.0\r\n")
    trainer._trim_log(str(log), sys.maxsize)
    assert log.read_bytes() == b"epoch,accuracy,loss\r\n1,0.5,1.2\r\n2,0.6,1.0\r\n"
    trainer._trim_log(str(tmp_path / "none.csv"), 1)  # no log yet: nothing to do
    assert not (tmp_path / "none.csv").exists()


@pytest.mark.parametrize("num_classes,logged", [(3, ["accuracy", "loss"]), (5, ["accuracy", "loss"]),
                                                (6, ["accuracy", "loss", "top5"])])
def test_top5_is_logged_only_where_it_can_miss(tiny_gestures, tmp_path, num_classes, logged):
    # Of five classes or fewer every label is among the top five: a top5 of 1.0000 each epoch.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(num_classes)])
    trainer.compile_model(model, _tiny_config(tiny_gestures, tmp_path))
    logits = np.eye(2, num_classes, dtype=np.float32)
    results = model.compute_metrics(None, np.array([1, 0]), logits)
    assert sorted(results) == logged


def test_resume_of_five_classes_drops_the_top5_columns_older_versions_logged(tmp_path):
    log = tmp_path / "log.csv"
    log.write_bytes(b"epoch,accuracy,learning_rate,loss,top5,val_accuracy,val_loss,val_top5\r\n"
                    b"0,0.5,0.1,1.2,1.0,0.4,1.3,1.0\r\n1,0.6,0.1,1.0,1.0,0.5,1.1,1.0\r\n")
    trainer._trim_log(str(log), 5, dropped=trainer._TOP5_LOGS)
    assert log.read_bytes() == (b"epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\r\n"
                                b"1,0.5,0.1,1.2,0.4,1.3\r\n2,0.6,0.1,1.0,0.5,1.1\r\n")
    # with an `lr` column too, and of more classes, where they stay
    log.write_bytes(b"epoch,accuracy,loss,lr,top5\r\n0,0.5,1.2,0.1,0.9\r\n")
    trainer._trim_log(str(log), 5, dropped=trainer._TOP5_LOGS)
    assert log.read_bytes() == b"epoch,accuracy,learning_rate,loss\r\n1,0.5,0.1,1.2\r\n"
    log.write_bytes(b"epoch,accuracy,loss,top5\r\n1,0.5,1.2,0.9\r\n")
    trainer._trim_log(str(log), 5)
    assert log.read_bytes() == b"epoch,accuracy,loss,top5\r\n1,0.5,1.2,0.9\r\n"


def test_resume_renames_an_older_logs_lr_column_to_the_order_keras_appends_in(tmp_path):
    # The steps, cosine and constant schedules logged the rate as `lr`, the plateau schedule
    # as `learning_rate`; a resumed run's rows come as epoch, then the names sorted.
    log = tmp_path / "log.csv"
    log.write_bytes(b"epoch,accuracy,loss,lr,val_loss\r\n0,0.5,1.2,0.1,1.3\r\n"
                    b"1,0.6,1.0,0.1,1.1\r\n")
    trainer._trim_log(str(log), 5)
    assert log.read_bytes() == (b"epoch,accuracy,learning_rate,loss,val_loss\r\n"
                                b"1,0.5,0.1,1.2,1.3\r\n2,0.6,0.1,1.0,1.1\r\n")


def test_best_keras_records_its_epoch_and_what_its_accuracy_is_of(tmp_path):
    """Without validation clips, best.keras goes by the training accuracy: recorded under
    its own name, not as a validation accuracy."""
    from keras_efficient3d.artifacts import ModelMetadata, read_metadata

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    checkpointer = trainer.Checkpointer(str(tmp_path), 5, metadata=ModelMetadata(frames=8))
    checkpointer.set_model(model)
    checkpointer.on_epoch_end(2, {"loss": 0.5, "accuracy": 0.25})
    assert read_metadata(tmp_path / "best.keras").extra["best_checkpoint"] == {
        "epoch": 3, "accuracy": 0.25}
    checkpointer.on_epoch_end(3, {"loss": 0.4, "val_accuracy": 0.5})
    assert read_metadata(tmp_path / "best.keras").extra["best_checkpoint"] == {
        "epoch": 4, "val_accuracy": 0.5}


def test_a_new_best_between_checkpoints_is_in_the_state_a_resume_reads(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.25), loss="mse")
    checkpointer = trainer.Checkpointer(str(tmp_path), 2)
    checkpointer.set_model(model)
    state = tmp_path / "train_state.json"
    checkpointer.on_epoch_end(0, {"loss": 0.5, "val_accuracy": 0.5})
    assert (tmp_path / "best.keras").exists() and not state.exists()  # nothing to resume yet
    checkpointer.on_epoch_end(1, {"loss": 0.4, "val_accuracy": 0.4})
    assert json.loads(state.read_text()) == {"epoch": 2, "best_accuracy": 0.5,
                                             "learning_rate": 0.25, "plateau": None}
    checkpointer.on_epoch_end(2, {"loss": 0.3, "val_accuracy": 0.75})  # best.keras, no last
    assert json.loads(state.read_text()) == {"epoch": 2, "best_accuracy": 0.75,
                                             "learning_rate": 0.25, "plateau": None}


def test_a_resumed_plateau_schedule_waits_as_the_run_it_continues(tmp_path):
    from keras_efficient3d.artifacts import ModelMetadata

    def plateau(model, restored=None):
        schedule = trainer.PlateauSchedule("loss", factor=0.5, patience=2, restored=restored)
        schedule.set_model(model)
        schedule.on_train_begin()
        return schedule

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.25), loss="mse")
    schedule = plateau(model)
    checkpointer = trainer.Checkpointer(str(tmp_path), 1, metadata=ModelMetadata(frames=8),
                                        schedule=schedule)
    checkpointer.set_model(model)
    for epoch, loss in enumerate([1.0, 1.1]):  # one epoch without improvement: waited 1
        logs = {"loss": loss, "val_accuracy": 0.5}
        schedule.on_epoch_end(epoch, logs)
        checkpointer.on_epoch_end(epoch, logs)
    config = _tiny_config(tmp_path, tmp_path, resume=True, epochs=10)
    epoch, _, rate, counters = trainer._resume_point(config, str(tmp_path / "train_state.json"),
                                                     str(tmp_path / "last.keras"))
    assert (epoch, rate, counters) == (2, 0.25, {"best": 1.0, "wait": 1, "cooldown": 0})
    # the resumed run's next epochs without improvement are the run's second and third:
    # the rate halves after the third (more than patience, as PyTorch's)
    resumed = plateau(model, counters)
    resumed.on_epoch_end(2, {"loss": 1.2})
    assert float(model.optimizer.learning_rate.numpy()) == 0.25 and resumed.wait == 2
    resumed.on_epoch_end(3, {"loss": 1.2})
    assert float(model.optimizer.learning_rate.numpy()) == 0.125
    fresh = plateau(model)  # (Keras' own starts afresh, and would wait two more)
    fresh.on_epoch_end(2, {"loss": 1.3})
    assert fresh.wait == 0 and float(model.optimizer.learning_rate.numpy()) == 0.125


@pytest.mark.parametrize("monitor, patience, cooldown", [("loss", 2, 0), ("loss", 1, 2),
                                                        ("val_accuracy", 0, 1)])
def test_the_plateau_schedule_steps_as_pytorch_s_reduce_lr_on_plateau(monitor, patience, cooldown):
    """The original's --lr_patience option is PyTorch's ReduceLROnPlateau: a relative
    threshold, a reduction after more than `patience` bad epochs, none counted in the
    cooldown (Keras' callback reduced a patience earlier, and took the threshold as absolute)."""
    import torch

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    schedule = trainer.PlateauSchedule(monitor, factor=0.5, patience=patience, cooldown=cooldown)
    schedule.set_model(model)
    schedule.on_train_begin()
    weight = torch.nn.Parameter(torch.zeros(1))
    reference_optimizer = torch.optim.SGD([weight], lr=1.0)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(
        reference_optimizer, mode="max" if "acc" in monitor else "min", factor=0.5,
        patience=patience, cooldown=cooldown)
    rng = np.random.default_rng(0)
    # flat stretches, gains below and above the 1e-4 relative threshold, at a small loss
    values = [0.05, 0.05, 0.049999, 0.05, 0.04, 0.04, 0.04, 0.0399999, 0.03, 0.03, 0.03, 0.03]
    values += list(0.03 + rng.normal(0, 1e-3, 12))
    ours, theirs = [], []
    for epoch, value in enumerate(values):
        schedule.on_epoch_end(epoch, {monitor: value})
        reference.step(value)
        ours.append(float(model.optimizer.learning_rate.numpy()))
        theirs.append(reference_optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours[-1] < 1.0  # it did reduce


def _stopping_at(monkeypatch, name):
    """Ctrl-C at the write of `name` (its atomic write leaves the file as it was)."""
    saves, writes = trainer.save_model, trainer.atomic_write_json

    def save(model, path, metadata=None):
        if os.path.basename(path) == name:
            raise KeyboardInterrupt
        return saves(model, path, metadata)

    def write(path, value):
        if os.path.basename(path) == name:
            raise KeyboardInterrupt
        return writes(path, value)

    monkeypatch.setattr(trainer, "save_model", save)
    monkeypatch.setattr(trainer, "atomic_write_json", write)


def _dense_checkpointer(tmp_path, rate=0.25):
    from keras_efficient3d.artifacts import ModelMetadata

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(rate), loss="mse")
    checkpointer = trainer.Checkpointer(str(tmp_path), 1, metadata=ModelMetadata(frames=8, size=32))
    checkpointer.set_model(model)
    return checkpointer, model


def test_a_run_stopped_inside_a_checkpoint_resumes_from_what_the_files_hold(tmp_path,
                                                                            monkeypatch):
    checkpointer, model = _dense_checkpointer(tmp_path)
    checkpointer.on_epoch_end(0, {"loss": 0.5, "val_accuracy": 0.5})
    config = _tiny_config(tmp_path, tmp_path, resume=True, epochs=10)
    assert trainer._resume_point(config, str(tmp_path / "train_state.json"),
                                 str(tmp_path / "last.keras")) == (1, 0.5, 0.25, None)
    # Stopped at last.keras, after best.keras of epoch 2: the state has the new best, so a
    # resume from epoch 1 keeps this best.keras unless it does better than 0.9.
    with monkeypatch.context() as patch:
        _stopping_at(patch, "last.keras")
        with pytest.raises(KeyboardInterrupt):
            checkpointer.on_epoch_end(1, {"loss": 0.4, "val_accuracy": 0.9})
    assert trainer._resume_point(config, str(tmp_path / "train_state.json"),
                                 str(tmp_path / "last.keras")) == (1, 0.9, 0.25, None)
    # Stopped at train_state.json, after last.keras of epoch 3: the resume starts at epoch 3
    # (last.keras holds it) with that epoch's rate, not at epoch 1 for a second time.
    model.optimizer.learning_rate.assign(0.125)
    with monkeypatch.context() as patch:
        _stopping_at(patch, "train_state.json")
        with pytest.raises(KeyboardInterrupt):
            checkpointer.on_epoch_end(2, {"loss": 0.3, "val_accuracy": 0.7})
    assert json.loads((tmp_path / "train_state.json").read_text())["epoch"] == 1
    assert trainer._resume_point(config, str(tmp_path / "train_state.json"),
                                 str(tmp_path / "last.keras")) == (3, 0.9, 0.125, None)
    # train_state.json lost, or damaged: last.keras' own record is enough
    (tmp_path / "train_state.json").unlink()
    assert trainer._resume_point(config, str(tmp_path / "train_state.json"),
                                 str(tmp_path / "last.keras")) == (3, 0.9, 0.125, None)
    (tmp_path / "train_state.json").write_text('{"epoch": 3, "best_acc')
    assert trainer._resume_point(config, str(tmp_path / "train_state.json"),
                                 str(tmp_path / "last.keras")) == (3, 0.9, 0.125, None)


@pytest.mark.parametrize("content, detail", [
    ('{"epoch": 2, "best_acc', "Unterminated string"),
    ('{"best_accuracy": 0.1}', "no 'epoch'"),
    ('{"epoch": "two", "best_accuracy": 0.1}', "epoch 'two' is not a positive integer"),
    ("[1, 2]", "list indices must be integers"),
])
def test_a_damaged_train_state_is_named_in_one_line(tmp_path, capsys, content, detail):
    (tmp_path / "train_state.json").write_text(content)
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(tmp_path / "last.keras")
    config = _tiny_config(tmp_path, tmp_path, resume=True, epochs=10)
    with pytest.raises(ValueError) as info:
        trainer._resume_point(config, str(tmp_path / "train_state.json"),
                              str(tmp_path / "last.keras"))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'train_state.json'}: not a valid train_state.json (")
    assert detail in message and "\n" not in message
    # a new run over it says so, and moves it with the rest
    assert trainer._move_previous_run(str(tmp_path)) == str(tmp_path / "previous")
    assert "holds a run (an unreadable train_state.json)" in capsys.readouterr().err


def test_a_damaged_config_json_is_named_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{'dataset': 'jester'}")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'config.json'}: not a valid run "
                                         r"config.json \(Expecting property name"):
        trainer._check_same_run(_tiny_config(tmp_path, tmp_path, resume=True))


def test_resume_takes_the_runs_pretrained_flag_and_refuses_another(tmp_path):
    # ucf101.flags names --pretrained: resuming with that flagfile is resuming the run
    config = _tiny_config(tmp_path, tmp_path, resume=True, pretrained="pre/k600.keras")
    config.validate()
    (tmp_path / "config.json").write_text(json.dumps({"pretrained": "pre/k600.keras"}))
    trainer._check_same_run(config)
    config = _tiny_config(tmp_path, tmp_path, resume=True)  # or without it
    trainer._check_same_run(config)
    assert config.pretrained == "pre/k600.keras"  # recorded in the checkpoints it writes
    config = _tiny_config(tmp_path, tmp_path, resume=True, pretrained="pre/other.keras")
    with pytest.raises(ValueError, match=r"trained with --pretrained=pre/k600.keras, not "
                                         r"--pretrained=pre/other.keras"):
        trainer._check_same_run(config)


def test_a_fine_tuned_run_resumes_with_the_architecture_it_trained(tmp_path):
    """config.json keeps --model and its arguments as given, which --pretrained overrides
    (noted as not used): resuming with the architecture trained, the pretrained file's,
    was refused as "trained with --model=mobilenetv2 --width_mult=1.0"."""
    (tmp_path / "config.json").write_text(json.dumps({
        "pretrained": "pre/jester_snv2.keras", "model": "mobilenetv2", "width_mult": 1.0,
        "dataset": "synthetic"}))
    for given in ({"model": "shufflenetv2", "width_mult": 0.25},  # what it trained
                  {"model": "mobilenetv2", "width_mult": 1.0}):  # the run's own command
        config = _tiny_config(tmp_path, tmp_path, resume=True, **given)
        trainer._check_same_run(config)
    with pytest.raises(ValueError, match=r"trained with --dataset=synthetic, not --dataset=folders"):
        trainer._check_same_run(_tiny_config(tmp_path, tmp_path, resume=True, model="shufflenetv2",
                                             dataset="folders"))
    # without --pretrained (or with --pretrained= to train from scratch) the flags are the
    # architecture, and another is refused
    for pretrained in ({}, {"pretrained": ""}):
        (tmp_path / "config.json").write_text(json.dumps({"model": "mobilenetv2", "width_mult": 1.0,
                                                          **pretrained}))
        with pytest.raises(ValueError, match=r"trained with --model=mobilenetv2 "
                                             r"--width_mult=1.0, not --model=shufflenetv2 "
                                             r"--width_mult=0.25"):
            trainer._check_same_run(_tiny_config(tmp_path, tmp_path, resume=True,
                                                 model="shufflenetv2", width_mult=0.25))


def test_resume_with_another_model_is_refused_before_any_work(tiny_gestures, one_epoch_run,
                                                              tmp_path, monkeypatch):
    out = _copy_run(one_epoch_run, tmp_path)
    indexed = []
    monkeypatch.setattr(trainer, "load_split", lambda *a, **k: indexed.append(1) or ([], []))
    config = _tiny_config(tiny_gestures, out, epochs=3, resume=True, width_mult=0.5,
                          normalization="original")
    with pytest.raises(ValueError, match=rf"^The run in {out} was trained with --width_mult=0.25 "
                                         r"--normalization=unit, not --width_mult=0.5 "
                                         r"--normalization=original; resume with the run's"):
        trainer.train(config)
    assert not indexed
    assert json.loads((out / "config.json").read_text())["width_mult"] == TINY_WIDTH
    # another optimizer: its state is not last.keras' (refused before the data is read too)
    config = _tiny_config(tiny_gestures, out, epochs=3, resume=True, optimizer="adam")
    with pytest.raises(ValueError, match=rf"^The run in {out} was trained with --optimizer=sgd, "
                                         r"not --optimizer=adam; resume with the run's"):
        trainer.train(config)
    # --ft_portion: last.keras keeps its frozen layers (a last_layer run resumed as complete
    # trained the head alone, and config.json then said complete); a fold's other videos
    for name, value, was in (("ft_portion", "last_layer", "complete"), ("ucf101_fold", 2, 1)):
        config = _tiny_config(tiny_gestures, out, epochs=3, resume=True, **{name: value})
        with pytest.raises(ValueError, match=rf"^The run in {out} was trained with --{name}="
                                             rf"{was}, not --{name}={value}; resume with"):
            trainer.train(config)
    assert not indexed


def test_evaluate_indexes_the_split_with_the_models_class_names(tmp_path, monkeypatch):
    from keras_efficient3d.artifacts import ModelMetadata

    root = _tiny_kinetics(tmp_path / "k", [("a", "x1"), ("b", "x2"), ("c", "x3")],
                          [("b", "y1"), ("c", "y2")])
    meta = ModelMetadata(frames=8, size=32, downsample=1, labels=["a", "b", "c"])
    path = _save_run_model(tmp_path / "run", classes=3, metadata=meta)
    (tmp_path / "run" / "config.json").write_text(json.dumps(
        {"dataset": "kinetics600", "frames": 8, "size": 32, "max_decode_failures": 3}))
    scored = []
    monkeypatch.setattr(evaluation, "evaluate",
                        lambda fn, records, classes, *a, **k: scored.append((records, classes, k)) or {})
    monkeypatch.setattr(evaluation, "write_results", lambda *a: (None, None))
    # validate.csv alone has classes b and c: indexed alone they would be labels 0 and 1.
    _evaluate_module().evaluate_file(path, dataset="kinetics600", data_root=str(root),
                                     log=lambda line: None)
    records, classes, options = scored[0]
    assert classes == ["a", "b", "c"] and sorted(r.label for r in records) == [1, 2]
    # the run's own tolerance of undecodable videos (config.json), not always 100
    assert options == {"max_decode_failures": 3}
    # The run's --annotations were its own data's: another --data_root is read by its own
    # lists, with a note (the run's CSVs were scored, without a word).
    old = _tiny_kinetics(tmp_path / "old", [("a", "z0"), ("b", "z1"), ("c", "z3")], [("a", "z2")])
    (tmp_path / "run" / "config.json").write_text(json.dumps(
        {"dataset": "kinetics600", "frames": 8, "size": 32, "annotations": str(old),
         "data_root": str(old)}))
    notes = []
    _evaluate_module().evaluate_file(path, data_root=str(root), log=notes.append)
    records, classes, _ = scored[-1]
    assert sorted(r.label for r in records) == [1, 2], records
    assert any(f"({old}) are not used for another --dataset or --data_root" in n for n in notes)
    _evaluate_module().evaluate_file(path, log=notes.append)  # the run's own data: its lists
    assert [r.label for r in scored[-1][0]] == [0]
    notes.clear()  # the run's own folder, spelled otherwise: still its lists
    _evaluate_module().evaluate_file(path, data_root=str(old) + os.sep, log=notes.append)
    assert [r.label for r in scored[-1][0]] == [0] and not any("not used" in n for n in notes)


def test_a_model_with_a_replaced_head_takes_a_clip_without_keras_structure_warnings():
    """Rebuilt on `model.inputs` (a list of one), the fine-tuned model warned at every call
    that a clip does not match the structure [clip]: on every export of it."""
    import warnings

    import keras

    import keras_efficient3d as k3
    from keras_efficient3d.models import _base

    model = k3.create_model(TINY_NAME, input_shape=(8, 32, 32, 3), num_classes=8)
    functional = keras.Model(model.inputs, model.outputs)  # as an older file loads
    x = np.zeros((1, 8, 32, 32, 3), np.float32)
    for rebuilt in (trainer.replace_head(model, 3), _base.video_model(functional)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            rebuilt(x)


def test_a_model_flag_of_another_architecture_than_the_pretrained_file_is_noted(tmp_path):
    """--model=mobilenetv2_1.0x with a ShuffleNetV2 file trained the file's architecture,
    silently, and config.json records the flag: a note says which is trained (train.py says
    it for a --model given; --width_mult has its own note)."""
    from keras_efficient3d.artifacts import ModelMetadata

    recorded = {"model": TINY_MODEL, "width_mult": TINY_WIDTH, "num_classes": 8}
    path = _save_run_model(tmp_path / "pre", metadata=ModelMetadata(model=recorded))
    for model, noted in (("shufflenetv2", True), ("resnet18", True), (TINY_NAME, False),
                         (TINY_MODEL, False)):
        line = trainer.another_architecture(trainer.TrainConfig(model=model, pretrained=path))
        assert (line is not None) == noted, (model, line)
        if noted:
            assert line == (f"note: --model={model} is not used: --pretrained={path} holds "
                            f"model={TINY_MODEL} width_mult={TINY_WIDTH}, which is trained")
    assert trainer.another_architecture(trainer.TrainConfig(
        model="shufflenetv2", pretrained=_save_run_model(tmp_path / "bare"))) is None


def test_an_unset_normalization_is_the_pretrained_files(tmp_path, capsys, monkeypatch):
    """A --pretrained file trained on 'kinetics' clips, fine-tuned without --normalization:
    the run normalised as the default, 'original', with a warning that its features would
    see other inputs. It takes the file's, with a note; a --normalization given stays."""
    from keras_efficient3d import cli
    from keras_efficient3d.artifacts import ModelMetadata

    kinetics = Normalization.preset("kinetics")
    path = _save_run_model(tmp_path / "pre", metadata=ModelMetadata(normalization=kinetics))
    config = trainer.TrainConfig(pretrained=path)
    assert trainer.adopt_pretrained_normalization(config) == (
        f"note: clips are normalised as --pretrained={path} was trained: 'kinetics' (0-255 "
        "BGR, mean (114.7748, 107.7354, 99.475)); --normalization sets another")
    assert config.normalization == "kinetics"
    assert trainer.adopt_pretrained_normalization(config) is None  # already the file's
    custom = Normalization(value_range="0-1", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    config.pretrained = _save_run_model(tmp_path / "own", metadata=ModelMetadata(
        normalization=custom))
    assert trainer.adopt_pretrained_normalization(config).startswith("note: clips are")
    assert Normalization.coerce(config.normalization) == custom  # no preset: its config
    config.pretrained = _save_run_model(tmp_path / "bare")  # records none: the default
    assert trainer.adopt_pretrained_normalization(config) is None

    module = _load_script("train.py")
    seen = []
    monkeypatch.setattr(trainer, "train", lambda config: seen.append(config) or {
        "best_accuracy": 0.5, "seconds": 1.0, "output_dir": config.output_dir})
    for given, wanted in (([], "kinetics"), (["--normalization=original"], "original")):
        status = cli.invoke(module.main, module.define_flags, [
            "train", "--dataset=synthetic", f"--pretrained={path}",
            f"--output={tmp_path / 'run'}", *given])
        err = capsys.readouterr().err
        assert status == 0 and seen[-1].normalization == wanted, err
        assert ("note: clips are normalised as" in err) == (not given), err
    # --resume with the same flags goes on with the normalisation the run took (its
    # config.json's), which the default would contradict; one given is the user's
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    for recorded in ("kinetics", custom.to_config()):
        (run / "config.json").write_text(json.dumps({"normalization": recorded}))
        for given, wanted in (([], recorded), (["--normalization=unit"], "unit")):
            assert cli.invoke(module.main, module.define_flags, [
                "train", "--dataset=synthetic", f"--pretrained={path}", f"--output={run}",
                "--resume", *given]) == 0, capsys.readouterr().err
            assert seen[-1].normalization == wanted
    # and the run's check of its config.json takes a recorded normalisation's config for
    # the same normalisation as the preset's name
    (run / "config.json").write_text(json.dumps({"normalization": kinetics.to_config()}))
    trainer._check_same_run(trainer.TrainConfig(output_dir=str(run), normalization="kinetics"))
    with pytest.raises(ValueError, match="trained with --normalization="):
        trainer._check_same_run(trainer.TrainConfig(output_dir=str(run), normalization="unit"))
    # a damaged file is check_pretrained's to name (its reason), not this step's
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(b"not a zip")
    assert trainer.adopt_pretrained_normalization(
        trainer.TrainConfig(pretrained=str(damaged))) is None


def test_resume_takes_the_options_not_given_from_the_run(tmp_path, capsys, monkeypatch):
    """`--resume` without --learning_rate resumed a run trained at 0.01 at the default's 0.1
    (its loss went from 1.8 to 3.1), without a word. The options left out are the run's;
    those given stay, and are checked against the run as before."""
    from keras_efficient3d import cli

    run = tmp_path / "run"
    run.mkdir()
    # lr_steps as train.py writes them (floats); the machine's and session's options
    # (threads, a cluster) are not the run's to take
    trained = trainer.TrainConfig(dataset="folders", data_root=str(tmp_path / "ds"),
                                  learning_rate=0.01, lr_steps=(5.0, 8.0), model="shufflenetv2",
                                  normalization="unit", epochs=3, output_dir=str(run),
                                  distribution="multiworker", threads=16, cpu_devices=4,
                                  verbose=2, cache=True, annotations=str(tmp_path / "lists"))
    (run / "config.json").write_text(trained.to_json())
    module = _load_script("train.py")
    seen = []
    monkeypatch.setattr(trainer, "train", lambda config: seen.append(config) or {
        "best_accuracy": 0.5, "seconds": 1.0, "output_dir": config.output_dir})
    assert cli.invoke(module.main, module.define_flags,
                      ["train", f"--output={run}", "--resume", "--epochs=5"]) == 0
    err = capsys.readouterr().err
    config = seen[-1]
    assert (config.learning_rate, config.lr_steps, config.model, config.dataset) == (
        0.01, (5.0, 8.0), "shufflenetv2", "folders")
    assert (config.data_root, config.normalization, config.epochs) == (
        str(tmp_path / "ds"), "unit", 5)
    assert (config.distribution, config.threads, config.cpu_devices, config.verbose,
            config.cache) == ("none", 0, 0, 1, False)
    assert config.annotations == str(tmp_path / "lists")
    note = [line for line in err.splitlines() if line.startswith("note: the run's own")]
    assert len(note) == 1 and "--learning_rate=0.01" in note[0] and "--lr_steps=5,8" in note[0]
    assert "--epochs" not in note[0] and "--output" not in note[0], note
    assert cli.invoke(module.main, module.define_flags, [
        "train", f"--output={run}", "--resume", "--learning_rate=0.001"]) == 0
    assert seen[-1].learning_rate == 0.001 and seen[-1].epochs == 3
    assert "--learning_rate" not in capsys.readouterr().err
    # another --data_root: the run's lists were of its own data
    assert cli.invoke(module.main, module.define_flags, [
        "train", f"--output={run}", "--resume", f"--data_root={tmp_path}"]) == 0
    assert seen[-1].annotations is None and seen[-1].model == "shufflenetv2"
    capsys.readouterr()
    # the notes of flags not read go by the run's options: a plateau run's --lr_patience is
    # read (it was "not used with --lr_schedule=steps", the flag's default), an Adam run's
    # --momentum is not
    (run / "config.json").write_text(dataclasses.replace(
        trained, lr_schedule="plateau", lr_gamma=0.5, optimizer="adam").to_json())
    assert cli.invoke(module.main, module.define_flags, [
        "train", f"--output={run}", "--resume", "--lr_patience=3", "--momentum=0.5"]) == 0
    err = capsys.readouterr().err
    assert seen[-1].lr_schedule == "plateau" and seen[-1].lr_patience == 3
    assert "--lr_patience is not used" not in err, err
    assert "note: --momentum is not used with --optimizer=adam" in err, err
    # a hand-edited config.json's bad value names the file
    (run / "config.json").write_text(json.dumps({"learning_rate": "0.01"}))
    assert cli.invoke(module.main, module.define_flags,
                      ["train", f"--output={run}", "--resume", "--dataset=synthetic"]) == 2
    err = capsys.readouterr().err
    assert "`learning_rate`" in err and f"(the run's own, from {run / 'config.json'})" in err
    # the demo's cached set, gone (another machine): made again, not taken
    (run / "config.json").write_text(json.dumps({"dataset": "synthetic",
                                                 "data_root": str(tmp_path / "gone")}))
    assert cli.invoke(module.main, module.define_flags, ["train", f"--output={run}",
                                                         "--resume"]) == 0
    assert seen[-1].dataset == "synthetic" and seen[-1].data_root == ""
    # a new run (no --resume) takes nothing from the folder's run
    assert cli.invoke(module.main, module.define_flags, [
        "train", f"--output={run}", "--dataset=synthetic"]) == 0
    assert seen[-1].learning_rate == 0.1 and seen[-1].model == "mobilenetv2"


def test_evaluate_says_what_it_assumes_and_warns_of_another_fold(tiny_gestures, tmp_path,
                                                                  capsys):
    from keras_efficient3d.artifacts import ModelMetadata
    from keras_efficient3d.data import DataError

    evaluate = _evaluate_module()
    bare = _save_run_model(tmp_path / "bare", metadata=ModelMetadata(frames=8, size=32))
    notes = []
    with pytest.raises(DataError, match="jester-v1-labels.csv"):  # not that layout
        evaluate.evaluate_file(bare, data_root=str(tmp_path), log=notes.append)
    assert f"note: {bare} records no dataset: the jester layout is assumed (--dataset)" in notes
    # fold 2's model scored on fold 1's test list: videos it trained on, said
    config = _tiny_config(tiny_gestures, tmp_path / "run")
    ucf = trainer.model_metadata(dataclasses.replace(config, dataset="ucf101", ucf101_fold=2),
                                 list(synthetic.CLASSES))
    folded = _save_run_model(tmp_path / "folded", metadata=ucf)
    with pytest.raises(DataError, match="classInd.txt"):  # no UCF-101 there
        evaluate.evaluate_file(folded, data_root=str(tmp_path), ucf101_fold=1, log=notes.append)
    assert (f"warning: {folded} was trained on UCF-101 fold 2; fold 1's test list holds videos "
            "it trained on") in capsys.readouterr().err


@pytest.mark.parametrize("tf_config, said", [
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0',
     "TF_CONFIG is not JSON (Expecting ',' delimiter"),
    ("[]", 'TF_CONFIG: expected {"cluster": {"worker": ["host:port", ...]}, "task": '),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "TF_CONFIG: its task index 2 is none of the cluster's 2 'worker' tasks (0 to 1)"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "TF_CONFIG: its task type 'chief' is not in its cluster (which has 'worker')"),
    ('{"cluster": {"worker": "a:1,b:2"}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG: the cluster's 'worker' tasks must be a list of 'host:port' addresses"),
])
def test_a_tf_config_that_is_wrong_is_named_in_one_line(tf_config, said):
    """TensorFlow said "Expecting ',' delimiter" or "The task_id 2 exceeds the maximum id of
    worker" without naming TF_CONFIG, and trained a TF_CONFIG of [] as a cluster of one."""
    with pytest.raises(ValueError) as raised:
        trainer.cluster_of({"TF_CONFIG": tf_config})
    assert str(raised.value).startswith(said), raised.value


def test_cluster_of_a_good_tf_config():
    spec = {"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:2"]},
            "task": {"type": "worker", "index": 1}}
    assert trainer.cluster_of({"TF_CONFIG": json.dumps(spec)}) == ("worker-1", "b:2", ["c:1", "a:1"])
    assert trainer.cluster_of({}) is None and trainer.cluster_of({"TF_CONFIG": " "}) is None
    # as TensorFlow reads them: an index as a string; "{}" (some launchers) a cluster of one
    spec["task"]["index"] = "0"
    assert trainer.cluster_of({"TF_CONFIG": json.dumps(spec)})[0] == "worker-0"
    assert trainer.cluster_of({"TF_CONFIG": "{}"}) is None


_STRATEGY_PROBE = """
import json, signal, sys
from keras_efficient3d import trainer
try:
    trainer._strategy(trainer.TrainConfig(distribution="multiworker"))
except ValueError as err:
    print("error:", err)
    sys.exit(0)
status = open("/proc/self/status").read()
caught = int(next(l for l in status.splitlines() if l.startswith("SigCgt")).split()[1], 16)
print("SIGTERM caught" if caught >> (signal.SIGTERM - 1) & 1 else "SIGTERM default")
"""


def test_a_worker_says_it_waits_stops_on_sigterm_and_names_a_port_in_use(tmp_path):
    """A worker of a cluster: its wait for the others said (it printed nothing, for ever);
    SIGTERM (kill, timeout, a scheduler's first signal) ends it, where TensorFlow's cluster
    set-up had made it ignore SIGTERM; an address it cannot listen on is one line, not 39."""
    import socket

    with socket.socket() as held, socket.socket() as free:
        held.bind(("localhost", 0))
        held.listen()
        free.bind(("localhost", 0))
        ports = held.getsockname()[1], free.getsockname()[1]
        free.close()

        def probe(index, hosts):
            spec = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(spec), TF_CPP_MIN_LOG_LEVEL="3",
                       PYTHONPATH=ROOT)
            return subprocess.run([sys.executable, "-c", _STRATEGY_PROBE], env=env, cwd=ROOT,
                                  capture_output=True, text=True, timeout=300)

        run = probe(0, [f"localhost:{ports[1]}"])  # a cluster of one task: no wait
        assert run.stdout.strip() == "SIGTERM default", run.stdout + run.stderr[-2000:]
        run = probe(0, [f"localhost:{ports[0]}", f"localhost:{ports[1]}"])
        assert run.stdout.splitlines() == [
            f"worker-0: waiting for the cluster's other tasks (localhost:{ports[1]}); while it "
            "waits only SIGKILL stops this process",
            f"error: TF_CONFIG: worker-0 cannot listen on localhost:{ports[0]} (its address in "
            "the cluster): is the port in use, or the host not this machine?"], \
            run.stdout + run.stderr[-2000:]


def test_a_lost_peer_is_one_line_saying_to_restart_the_cluster(tmp_path):
    """The survivor of a lost worker ended in TensorFlow's 50-line "Collective ops is
    aborted" traceback, which did not say what to do."""
    import types

    backup = types.SimpleNamespace(backup_dir=str(tmp_path / "backup" / "worker-0"))
    lost = tf.errors.UnavailableError(None, None, "Collective ops is aborted by: The tasks "
                                      "have crashed.\n\t[[{{node CollectiveReduceV2}}]]")
    with pytest.raises(trainer.WorkerLost) as raised:
        with trainer._lost_worker_said(backup):
            raise lost
    assert str(raised.value) == (
        "a worker of the cluster was lost (Collective ops is aborted by: The tasks have crashed. "
        "[[{{node CollectiveReduceV2}}]]); restart every worker with the same command: each "
        f"continues at its last completed epoch (the backups in {tmp_path / 'backup'})")
    assert isinstance(raised.value, cli.EXPECTED_ERRORS)  # train.py says it in one line
    with pytest.raises(tf.errors.UnavailableError):  # not a multi-worker run: as it was
        with trainer._lost_worker_said(None):
            raise lost
