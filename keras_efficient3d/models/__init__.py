"""One module per architecture family of the paper.

Each module ends with its `Family` record (configurations, the original's names, checkpoint
key mapping, configuration inference, complexity rules); `keras_efficient3d.registry`
registers them.
"""

from keras_efficient3d.models._base import VideoModel
from keras_efficient3d.models._family import Family
from keras_efficient3d.models.c3d import C3D
from keras_efficient3d.models.mobilenet_v1 import MobileNetV1_3D
from keras_efficient3d.models.mobilenet_v2 import MobileNetV2_3D
from keras_efficient3d.models.resnet import ResNet3D, ResNeXt3D
from keras_efficient3d.models.shufflenet_v1 import ShuffleNetV1_3D
from keras_efficient3d.models.shufflenet_v2 import ShuffleNetV2_3D
from keras_efficient3d.models.squeezenet import SqueezeNet_3D

__all__ = [
    "C3D",
    "Family",
    "MobileNetV1_3D",
    "MobileNetV2_3D",
    "ResNet3D",
    "ResNeXt3D",
    "ShuffleNetV1_3D",
    "ShuffleNetV2_3D",
    "SqueezeNet_3D",
    "VideoModel",
]
