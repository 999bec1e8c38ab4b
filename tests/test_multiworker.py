"""--distribution=multiworker for real: two worker processes on localhost with TF_CONFIG.

One test, because starting a cluster is the expensive part (about 5 minutes on a loaded
2-core machine): the two workers train the tiny synthetic set, worker 1 is killed (SIGKILL)
in the middle of epoch 2, the cluster is restarted as a cluster manager would (a collective
strategy's surviving workers fail or wait when a peer is lost), and the restarted workers
continue at epoch 2 from `BackupAndRestore`'s backup instead of starting over. The result is
compared with one process (a cluster of one, killed and resumed with --resume) trained on
the same data with the same global batch.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from keras_efficient3d import evaluation, trainer
from keras_efficient3d.artifacts import load_model
from keras_efficient3d.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multiworker_worker.py")
EPOCHS = 3


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _start_cluster(config, folder, kill_at=None):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        args = [sys.executable, WORKER, json.dumps(config)]
        if kill_at and index == 1:
            args.append(kill_at)
        out = open(folder / f"worker{index}.out", "w")
        err = open(folder / f"worker{index}.err", "w")
        procs.append((subprocess.Popen(args, env=env, stdout=out, stderr=err, cwd=ROOT), out, err))
    return procs


def _run_alone(config, folder, name, kill_at=None):
    """One process of --distribution=multiworker without TF_CONFIG: a cluster of one."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    args = [sys.executable, WORKER, json.dumps(config)] + ([kill_at] if kill_at else [])
    with open(folder / f"{name}.out", "w") as out, open(folder / f"{name}.err", "w") as err:
        return subprocess.run(args, env=env, stdout=out, stderr=err, cwd=ROOT, timeout=900,
                              check=False).returncode


def _result(folder, index):
    lines = (folder / f"worker{index}.out").read_text().strip().splitlines()
    assert lines and lines[-1].startswith("{"), (folder / f"worker{index}.err").read_text()[-3000:]
    return json.loads(lines[-1])


def _config(data_root, output_dir, **overrides):
    # The family with the fewest layers: each of the five trainings traces its train step.
    config = dict(dataset="synthetic", data_root=str(data_root), model="mobilenetv1",
                  width_mult=0.25, frames=8, size=32, batch_size=4, epochs=EPOCHS,
                  optimizer="adam", learning_rate=0.01, lr_schedule="constant",
                  normalization="unit", cache=True, output_dir=str(output_dir), verbose=2, seed=3,
                  distribution="multiworker")
    config.update(overrides)
    return config


@pytest.mark.slow
def test_two_workers_survive_a_lost_worker_and_train_like_one_process(tmp_path):
    data_root = synthetic.generate(tmp_path / "data", videos_per_class=3, seed=1, frames=16,
                                   size=40, num_workers=2)
    out = tmp_path / "cluster"
    config = _config(data_root, out)
    # a finished run in the folder: the chief moves it into previous/ whole (another worker
    # wrote its config.json before the chief moved the run, which put it there instead)
    out.mkdir()
    (out / "train_state.json").write_text('{"epoch": 9}')
    (out / "config.json").write_text('{"the": "earlier run"}')

    # Worker 1 dies in the middle of epoch 2 (0-based epoch 1, after its second batch).
    first = _start_cluster(config, tmp_path, kill_at="1,1")
    doomed, survivor = first[1][0], first[0][0]
    assert doomed.wait(timeout=900) == -signal.SIGKILL, (tmp_path / "worker1.err").read_text()[-3000:]
    assert (out / "killed").exists()
    try:  # the survivor fails when its peer is gone, or waits for it: restart it either way
        survivor.wait(timeout=60)
    except subprocess.TimeoutExpired:
        survivor.kill()
        survivor.wait()
    for _, *files in first:
        for handle in files:
            handle.close()
    state = json.loads((out / "train_state.json").read_text())
    assert state["epoch"] == 1  # epoch 1 was complete and checkpointed, epoch 2 was not
    assert (out / "previous" / "config.json").read_text() == '{"the": "earlier run"}'
    assert json.loads((out / "config.json").read_text())["epochs"] == EPOCHS
    for index in range(2):  # each said what it waited for, before the cluster was up
        assert (tmp_path / f"worker{index}.out").read_text().startswith(
            f"worker-{index}: waiting for the cluster's other tasks (localhost:")

    # The restarted cluster continues at epoch 2: two epochs run, not three.
    second = _start_cluster(config, tmp_path)
    for proc, *files in second:
        assert proc.wait(timeout=900) == 0, [p.read_text()[-3000:] for p in tmp_path.glob("*.err")]
        for handle in files:
            handle.close()
    results = [_result(tmp_path, index) for index in range(2)]
    # the workers end together: worker 1 gone while the chief still wrote its checkpoints
    # ended the chief's log in "BaseCollectiveExecutor::StartAbort UNAVAILABLE" (1 run in 5:
    # a weak guard, which the old code passed 4 times in 5)
    assert "StartAbort" not in (tmp_path / "worker0.err").read_text()
    for result in results:
        assert result["initial_epoch"] == 1 and result["epochs_run"] == EPOCHS - 1, result
    # One model: the gradients were all-reduced, so both workers hold the same trainable
    # weights (BatchNorm's moving statistics are each replica's own).
    assert results[0]["weights_l1"] == pytest.approx(results[1]["weights_l1"], rel=1e-6)
    assert json.loads((out / "train_state.json").read_text())["epoch"] == EPOCHS
    assert not (out / "backup").exists()  # a folder left would keep the next run's move

    # The same data, the same global batch, one process: a cluster of one (its logged values
    # are not reduced over workers), in a folder holding a finished run with an empty
    # backup/, which it moves aside. Killed in epoch 2 and resumed with --resume, it
    # continues from last.keras, not from the backup of epoch 1 (made to say epoch 0).
    single = tmp_path / "single"
    (single / "backup").mkdir(parents=True)
    for name in ("last.keras", "train_state.json"):
        (single / name).write_bytes((out / name).read_bytes())
    config = _config(data_root, single, checkpoint_every=1)
    assert _run_alone(config, tmp_path, "alone", kill_at="1,1") == -signal.SIGKILL, \
        (tmp_path / "alone.err").read_text()[-3000:]
    assert (single / "previous" / "train_state.json").exists()
    metadata = single / "backup" / "worker-0" / "training_metadata.json"
    assert json.loads(metadata.read_text())["epoch"] == 1
    metadata.write_text(json.dumps({"epoch": 0, "batch": -1}))
    assert _run_alone(dict(config, resume=True), tmp_path, "resumed") == 0, \
        (tmp_path / "resumed.err").read_text()[-3000:]
    lines = (tmp_path / "resumed.out").read_text().strip().splitlines()
    resumed = json.loads(lines[-1])
    assert resumed["initial_epoch"] == 1 and resumed["epochs_run"] == EPOCHS - 1, resumed
    assert "--resume continues from" in (tmp_path / "resumed.out").read_text()
    assert not (single / "backup").exists()
    records, classes = trainer.load_split(trainer.TrainConfig(**config), "train")

    def accuracy(path):
        model = load_model(path, compile=False)
        return evaluation.evaluate(evaluation.keras_predict_fn(model), records, classes, 8, 32,
                                   normalization="unit", batch_size=4)["video_top1"]

    two, one = accuracy(out / "last.keras"), accuracy(single / "last.keras")
    # Not equal: each worker shuffles its own half and normalises its own 2-clip batches
    # (BatchNorm statistics are per replica), so the two runs see different batches. Within
    # 3 of the 16 training videos after 3 epochs.
    assert abs(two - one) <= 3 / len(records) + 1e-9, (two, one)


def test_workers_started_with_different_options_are_refused_in_one_line(tmp_path):
    """Worker 1 with another learning rate trained apart from worker 0 without a word (each
    its own weights, the chief saving its own); with another batch size both ended in a
    70-line "Shape mismatch in the collective". Refused before anything is trained."""
    data_root = synthetic.generate(tmp_path / "data", videos_per_class=2, seed=1, frames=16,
                                   size=40, num_workers=1)
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    procs = []
    for index, rate in enumerate(("0.01", "0.5")):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        args = [sys.executable, os.path.join(ROOT, "training", "train.py"), "--dataset=synthetic",
                f"--data_root={data_root}", "--model=mobilenetv1", "--width_mult=0.25",
                "--frames=8", "--size=32", "--batch_size=4", "--epochs=1",
                "--distribution=multiworker", f"--learning_rate={rate}", "--verbose=0",
                f"--output={tmp_path / 'run'}"]
        procs.append(subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 2, err[-3000:]
        assert err.strip().splitlines()[-1] == (
            "train.py: error: the workers were started with different options (a flag or a "
            "flagfile differs; only the paths of --data_root, --output, --annotations and "
            "--pretrained, --threads and --verbose may): start every worker with the same "
            "command"), err[-3000:]
        assert "Traceback" not in err
    assert not (tmp_path / "run" / "config.json").exists()
