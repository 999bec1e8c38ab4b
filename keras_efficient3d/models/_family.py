"""What a model family knows about itself, in one record (timm's per-module knowledge).

Each family module (``mobilenet_v2.py``...) ends with a `Family`: its builder and registry
names, the original's ``--model`` names, the paper's configurations, how its Keras layers
map onto the original's state-dict keys (timm's ``checkpoint_filter_fn``), how its
configuration is read back from a state dict, and the counting rules of the paper's
``thop``. The registry, the converter and the complexity counter keep the generic
machinery and ask the families for the rest.
"""

import dataclasses
import os
import re
from collections.abc import Callable, Mapping

# Widths tried when a checkpoint's width is inferred from its stem: every width of the paper.
PAPER_WIDTHS = (0.2, 0.25, 0.45, 0.5, 0.7, 1.0, 1.5, 2.0)


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture family.

    Attributes:
        name: family name ('mobilenetv2'); the prefix of its default model names, as
            `complexity.detect_family` reads them.
        builder: the Keras builder (``MobileNetV2_3D``).
        variants: registry name -> the builder's fixed kwargs (``{'resnet18': {'depth':
            18}}``); default: the family name alone.
        aliases: the original's ``--model``/``arch`` values that mean this family besides
            its name (``('mobilenet',)``); a family whose variants fix a depth is named with
            it (``resnet18``) or given ``depth=N``.
        paper_rows: the arch column of the paper's Table 8 (``resources/table8.csv``) ->
            (registry name, kwargs beyond the row's width and groups, note).
        key_rules: (pattern, template) pairs mapping a Keras layer name onto its PyTorch
            module path, tried in order; templates use the pattern's groups.
        key_mapping: ``model -> {layer name: module path}``, for families whose paths
            depend on the built model (MobileNetV2's nn.Sequential indices); replaces
            `key_rules`.
        classifier_key: the state-dict key of the classifier weight (rows = classes).
        infer_config: ``(state_dict, file_name, fixed) -> (kwargs, notes)``: the builder
            arguments a state dict implies, skipping the names in `fixed` (given by the
            user). Raises ValueError when the tensors fit no configuration.
        counted_global_pool: the global average pool is an ``nn.AvgPool3d`` module
            (counted by thop) rather than ``F.avg_pool3d`` in ``forward`` (not counted).
        int_kernel_pools: ``MaxPool3d`` modules were built with an int ``kernel_size``
            (thop: ``prod([3]) - 1 == 2`` per output, not 26).
        functional_relu: regex of the ReLU layers that are ``F.relu`` calls in the
            original (not counted), or None.
        params_exceptions: Table 8 rows whose printed params the original code does not
            give -> why.
        small_input: a small (frames, height, width, 3) clip that the classifier head
            accepts, for quick checks: heads that pool a fixed ``ceil(T/16) x
            ceil(S/32)^2`` grid and ShuffleNetV1's even frame counts need 16 frames,
            C3D's flattening head 112 pixels.
        depthwise: its blocks have depthwise 3D convolutions (`DepthwiseConv3D`): many
            thin, independent operations, which TensorFlow runs fastest two at a time with
            half the threads each (`keras_efficient3d.runtime.tf_thread_plan`).
    """

    name: str
    builder: Callable
    variants: Mapping[str, Mapping] | None = None
    aliases: tuple = ()
    paper_rows: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
    key_rules: tuple = ()
    key_mapping: Callable | None = None
    classifier_key: str = "classifier.1.weight"
    infer_config: Callable | None = None
    counted_global_pool: bool = False
    int_kernel_pools: bool = False
    functional_relu: str | None = None
    params_exceptions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    small_input: tuple = (8, 32, 32, 3)
    depthwise: bool = False

    def registry_names(self):
        """Registry name -> fixed builder kwargs."""
        return dict(self.variants) if self.variants is not None else {self.name: {}}

    def torch_paths(self, model):
        """Keras layer name -> PyTorch module path, for every layer of `model` with weights.

        Raises ValueError naming the first layer without a counterpart."""
        if self.key_mapping is not None:
            paths = self.key_mapping(model)
        else:
            paths = {}
            for layer in model.layers:
                for pattern, template in self.key_rules:
                    if re.fullmatch(pattern, layer.name):
                        paths[layer.name] = re.sub(pattern, template, layer.name)
                        break
        for layer in model.layers:
            if layer.weights and paths.get(layer.name) is None:
                raise ValueError(f"No PyTorch counterpart is known for layer '{layer.name}'.")
        return {layer.name: paths[layer.name] for layer in model.layers if layer.weights}

    def infer(self, state_dict, file_name, fixed=()):
        """`infer_config`, or nothing to infer."""
        if self.infer_config is None:
            return {}, []
        return self.infer_config(state_dict, file_name, frozenset(fixed))

    def is_functional_relu(self, layer_name):
        return bool(self.functional_relu and re.match(self.functional_relu, layer_name))


# A width in a file name: a token of its own with a decimal point, as the authors name
# their files ('jester_mobilenetv2_0.7x_RGB_16_best.pth'); '16x112' is a clip size.
_NAME_WIDTH = re.compile(r"(?:^|[_\-])(\d+\.\d+)x(?=[_\-.]|$)")


def infer_width(file_name, fixed, from_shapes):
    """(kwargs, notes) with ``width_mult`` from the tensor shapes (``from_shapes()``: the
    width they imply, None when they are absent), else from the file name ('..._0.45x_...').
    The shapes decide what the weights fit; a file name that says another width is refused
    (ValueError), since one of the two is wrong and the user must say which."""
    if "width_mult" in fixed:
        return {}, []
    match = _NAME_WIDTH.search(file_name)
    named = float(match[1]) if match else None
    try:
        width = from_shapes()
    except ValueError:
        if named is None:
            raise
        width = None  # a width the paper did not publish: the file name names it
    if width is not None and named is not None and width != named:
        raise ValueError(f"The file name says {named}x but the tensor shapes are those of "
                         f"{width}x; pass --width_mult={width} (the width the weights fit: the file "
                         f"{os.path.basename(file_name)} is misnamed)")
    if width is not None:
        return {"width_mult": width}, [f"width {width}x (from the tensor shapes)"]
    if named is not None:
        return {"width_mult": named}, [f"width {named}x (from the file name)"]
    return {}, []


def stem_width_inference(key, stem_channels):
    """An ``infer_config`` for a family whose only free choice is the width, read from the
    file name or else from the stem tensor `key` (``int(stem_channels * width)`` channels)."""
    def infer_config(state_dict, file_name, fixed):
        return infer_width(file_name, fixed, lambda: width_from_stem(state_dict, key, stem_channels))

    return infer_config


def width_from_stem(state_dict, key, stem_channels):
    """The paper width whose stem, ``int(stem_channels * width)`` channels, is the tensor
    `key`; None when the state dict has no such tensor."""
    tensor = state_dict.get(key)
    if tensor is None:
        return None
    for width in PAPER_WIDTHS:
        if int(stem_channels * width) == tensor.shape[0]:
            return width
    raise ValueError(
        f"Cannot infer the width from a {tensor.shape[0]}-channel stem; pass --width_mult.")

