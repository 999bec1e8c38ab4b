"""keras_efficient3d: resource-efficient 3D CNNs for video classification in Keras 3.

    from keras_efficient3d import MobileNetV2_3D, create_model
    model = MobileNetV2_3D(width_mult=0.45, num_classes=27)
    model = create_model("shufflenet_0.5x_g3", num_classes=27)
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter would otherwise precede every CLI's own messages.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_efficient3d import layers
from keras_efficient3d.models import (
    C3D,
    MobileNetV1_3D,
    MobileNetV2_3D,
    ResNet3D,
    ResNeXt3D,
    ShuffleNetV1_3D,
    ShuffleNetV2_3D,
    SqueezeNet_3D,
)
from keras_efficient3d.registry import create_model, list_models, register_model

__all__ = [
    "C3D",
    "MobileNetV1_3D",
    "MobileNetV2_3D",
    "ResNet3D",
    "ResNeXt3D",
    "ShuffleNetV1_3D",
    "ShuffleNetV2_3D",
    "SqueezeNet_3D",
    "create_model",
    "layers",
    "list_models",
    "register_model",
]
