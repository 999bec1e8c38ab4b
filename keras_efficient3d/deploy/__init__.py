"""Edge deployment: the TFLite-friendly deployment graph, TFLite conversion (fp32, fp16,
dynamic range, full int8) and quantization-aware training."""

from keras_efficient3d.deploy.graph import DeploymentGraph, build_deployment_graph
from keras_efficient3d.deploy.quantize import QuantizedGraph, calibrate_ranges, convert_qat, quantize_model
from keras_efficient3d.deploy.tflite import (
    PRECISIONS,
    TFLiteRunner,
    benchmark,
    convert,
    export_tflite,
    float_op_types,
    op_summary,
    representative_dataset,
)

__all__ = [
    "PRECISIONS",
    "DeploymentGraph",
    "QuantizedGraph",
    "TFLiteRunner",
    "benchmark",
    "build_deployment_graph",
    "calibrate_ranges",
    "convert",
    "convert_qat",
    "export_tflite",
    "float_op_types",
    "op_summary",
    "quantize_model",
    "representative_dataset",
]
