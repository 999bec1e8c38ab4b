"""3D building blocks with PyTorch semantics.

Every layer takes and returns channels-last video tensors (batch, frames, height, width,
channels). Padding is explicit and symmetric as in ``torch.nn.Conv3d(padding=p)``; average
pooling counts padded zeros (PyTorch's ``count_include_pad=True`` default) and max pooling
ignores them, so converted PyTorch checkpoints compute the same numbers.

Each formulation is written once: `taps` (2D kernels over temporal taps, on frames tensors
``(batch * frames, H, W, C)``; TFLite, exports, TensorFlow without oneDNN) and `native`
(one Conv3D / grouped Conv2D, as oneDNN and cuDNN run them). `forms` is the table saying
which consumer takes which. The layers here and the TFLite deployment graph
(`keras_efficient3d.deploy.graph`) both compute through `taps`.
"""

from keras_efficient3d.layers import forms, native, taps
from keras_efficient3d.layers.channels import ChannelShuffle, ChannelSplit, ZeroPadChannels
from keras_efficient3d.layers.convolution import Conv3D, DepthwiseConv3D
from keras_efficient3d.layers.forms import native_kernels, portable_ops
from keras_efficient3d.layers.normalization import BatchNorm, batch_norm
from keras_efficient3d.layers.pooling import AvgPool3D, MaxPool3D
from keras_efficient3d.layers.taps import bias_tap, depthwise_plan, live_taps, tap_windows

__all__ = [
    "AvgPool3D", "BatchNorm", "ChannelShuffle", "ChannelSplit", "Conv3D", "DepthwiseConv3D",
    "MaxPool3D", "ZeroPadChannels", "batch_norm", "bias_tap", "depthwise_plan", "forms",
    "live_taps", "native", "native_kernels", "portable_ops", "tap_windows", "taps",
]
