"""keras_efficient3d: resource-efficient 3D CNNs for video classification in Keras 3."""

from setuptools import find_packages, setup

# mimalloc: the allocator JAX training preloads where no system one is installed, and PyTorch
# training always (keras_efficient3d/allocators.py); cmeel-mimalloc is its shared library as a
# wheel, built for Linux on x86-64 and ARM64 (manylinux_2_28: glibc 2.28 or newer).
MIMALLOC = ("cmeel-mimalloc>=2.1; platform_system=='Linux' and "
            "(platform_machine=='x86_64' or platform_machine=='aarch64')")

setup(
    name="keras_efficient3d",
    version="0.1.0",
    description=(
        "Keras 3 / TensorFlow implementation of 'Resource Efficient 3D Convolutional "
        "Neural Networks' (Kopuklu et al., ICCVW 2019), with TFLite and TensorRT deployment"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_efficient3d", "keras_efficient3d.*"]),
    package_data={"keras_efficient3d": ["resources/*.csv", "resources/*.txt", "resources/*.json",
                                       "resources/labels/*.txt"]},
    python_requires=">=3.10",
    install_requires=[
        # The 2.21 series: the version every figure in the README was measured with.
        "tensorflow-cpu>=2.21,<2.22; platform_machine=='x86_64'",
        "tensorflow>=2.21,<2.22; platform_machine!='x86_64'",
        "keras>=3.15,<4",
        "numpy>=1.26",
        # Video decoding (tensorflow-io does not load on TF 2.21).
        "opencv-python-headless>=4.9",
        "absl-py>=2.0",
        # Training logs (tensorflow-cpu does not pull it in).
        "tensorboard>=2.21,<2.22",
        "matplotlib>=3.8",
    ],
    extras_require={
        "litert": ["ai-edge-litert>=2.0"],
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "tf2onnx>=1.16"],
        # OpenVINO IR export goes through ONNX; NNCF is its post-training quantization.
        "openvino": ["openvino>=2025.0", "nncf>=2.16", "onnx>=1.16", "tf2onnx>=1.16"],
        # Other Keras backends (KERAS_BACKEND=jax / torch). PyPI's plain torch is the CUDA
        # build: take the CPU wheel (pip's --index-url https://download.pytorch.org/whl/cpu,
        # or CI's .ci/constraints.txt).
        "jax": ["jax[cpu]>=0.4.34",
                MIMALLOC],
        "torch": ["torch>=2.1",
                  MIMALLOC],
        "dev": [
            "jax[cpu]>=0.4.34",
            MIMALLOC,
            "torch>=2.1",
            "pytest>=8",
            "pytest-xdist>=3.5",
            "ruff>=0.15",
            "ai-edge-litert>=2.0",
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "tf2onnx>=1.16",
            "openvino>=2025.0",
            "nncf>=2.16",
        ],
    },
)
