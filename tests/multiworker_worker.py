"""One worker of the multi-worker tests (tests/test_multiworker.py), run as a process:

    TF_CONFIG=... python tests/multiworker_worker.py CONFIG_JSON [KILL_AT]

CONFIG_JSON holds `TrainConfig` fields; KILL_AT (``epoch,batch``, 0-based) makes this
worker SIGKILL itself there, the first time only (a marker file in the output folder
says it happened). Prints one JSON line: the epoch it started from, the epochs it ran and
the L1 norm of the trainable weights.
"""

import json
import os
import signal
import sys

import keras

from keras_efficient3d import trainer


class KillAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch, marker):
        super().__init__()
        self.epoch, self.batch, self.marker, self.current = epoch, batch, marker, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch and not os.path.exists(self.marker):
            with open(self.marker, "w") as handle:
                handle.write(f"{self.epoch},{self.batch}\n")
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
    config = trainer.TrainConfig(**json.loads(argv[1]))
    extra = []
    if len(argv) > 2:
        epoch, batch = (int(v) for v in argv[2].split(","))
        extra.append(KillAt(epoch, batch, os.path.join(config.output_dir, "killed")))
    result = trainer.train(config, extra_callbacks=extra)
    # Trainable weights: BatchNorm's moving statistics are each replica's own.
    weights = sum(float(abs(w.numpy()).sum()) for w in result["model"].trainable_weights)
    print(json.dumps({"worker": result["worker"], "initial_epoch": result["initial_epoch"],
                      "epochs_run": len(result["history"]["loss"]),
                      "loss": result["history"]["loss"], "weights_l1": weights}), flush=True)


if __name__ == "__main__":
    main(sys.argv)
