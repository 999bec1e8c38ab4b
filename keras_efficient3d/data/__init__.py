"""Video data: dataset indexers, decoding, the original's sampling and augmentation,
the tf.data pipeline and the synthetic gesture dataset.

    from keras_efficient3d import data
    from keras_efficient3d.data import synthetic
    root = synthetic.generate("/tmp/gestures")                 # or a real Jester download
    train_records, classes = data.index_jester(root, "train")
    val_records, _ = data.index_jester(root, "validation")
    train = data.make_dataset(train_records, "train", batch_size=8, seed=0)
    val = data.make_dataset(val_records, "val", batch_size=8)
    test = data.make_dataset(val_records, "test", batch_size=8)  # (clips, labels, video_indices)

Modules: ``decode`` (OpenCV video / JPEG folders), ``temporal`` and ``spatial``
(index and box computations), ``normalization``, ``jester``, ``kinetics``,
``ucf101``, ``folders`` (indexers), ``pipeline``, ``synthetic``, ``benchmark``.
"""

from keras_efficient3d.data import spatial, temporal
from keras_efficient3d.data.decode import (
    DataError,
    TruncatedVideoError,
    count_frames,
    list_frame_files,
    read_frame_folder,
    read_video,
)
from keras_efficient3d.data.folders import agreement_records, index_dataset, index_folders
from keras_efficient3d.data.jester import index_jester
from keras_efficient3d.data.kinetics import index_kinetics
from keras_efficient3d.data.normalization import PRESETS as NORMALIZATION_PRESETS
from keras_efficient3d.data.normalization import Normalization
from keras_efficient3d.data.records import IndexSummary, VideoRecord
from keras_efficient3d.data.ucf101 import index_ucf101

__all__ = [
    "DataError",
    "DecodeFailures",
    "IndexSummary",
    "NORMALIZATION_PRESETS",
    "Normalization",
    "TruncatedVideoError",
    "VideoRecord",
    "aggregate_video_predictions",
    "agreement_records",
    "count_frames",
    "index_dataset",
    "index_folders",
    "index_jester",
    "index_kinetics",
    "index_ucf101",
    "list_frame_files",
    "make_dataset",
    "read_frame_folder",
    "read_video",
    "spatial",
    "temporal",
    "video_level_accuracy",
]

# The tf.data pipeline imports TensorFlow: loaded on first use, so that the modules beside it
# (normalisation presets the checkpoint converter reads) import without it on JAX and PyTorch.
_PIPELINE = ("DecodeFailures", "aggregate_video_predictions", "make_dataset",
             "video_level_accuracy")


def __getattr__(name):
    if name in _PIPELINE:
        from keras_efficient3d.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
