"""Argument handling and heads shared by every architecture builder."""

import functools
import math
import numbers
import os
import re
import types
import warnings

import keras
from keras import ops, tree

from keras_efficient3d import layers as video_layers
from keras_efficient3d.layers import Conv3D, batch_norm
from keras_efficient3d.layers._video import PACKAGE

DEFAULT_INPUT_SHAPE = (16, 112, 112, 3)


def is_integer(value):
    """An integer of any kind (NumPy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """A real number of any kind (NumPy's too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_width(width_mult):
    """`width_mult` as a Python float (a positive, finite number; a NumPy float32's 0.2 is
    0.2, not 0.20000000298023224, in the model's name), or one `ValueError`."""
    if not is_number(width_mult) or not math.isfinite(width_mult) or width_mult <= 0:
        raise ValueError(f"`width_mult` must be a positive number. Received: width_mult={width_mult!r}")
    return float(f"{float(width_mult):.6g}")


def validate_common(include_top, weights, pooling, num_classes, dropout):
    """Checks the arguments every builder takes; returns `num_classes` as a Python int
    (a NumPy integer would not serialize into the model's config)."""
    if not isinstance(include_top, bool):
        raise ValueError(f"`include_top` must be True or False. Received: include_top={include_top!r}")
    if (isinstance(weights, (str, os.PathLike))
            and os.fspath(weights).lower().endswith((".pth", ".pt", ".pth.tar", ".pkl"))):
        raise ValueError(
            "`weights` takes Keras weights (.weights.h5 or .keras); a PyTorch checkpoint of "
            "Efficient-3DCNNs is converted first: python -m keras_efficient3d.convert "
            f"--checkpoint={os.fspath(weights)} --output=model.keras (or "
            f"keras_efficient3d.convert.convert). Received: weights={weights!r}")
    if weights is not None and not (isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights)):
        raise ValueError(
            "`weights` must be None (random initialization) or the path to an existing "
            f"weights file (.weights.h5 or .keras). Received: weights={weights!r}"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top and (not is_integer(num_classes) or num_classes < 1):
        raise ValueError(
            f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}"
        )
    if not is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be a number in [0, 1). Received: dropout={dropout!r}")
    return int(num_classes) if is_integer(num_classes) else num_classes


def video_input(input_shape, input_tensor, min_frames=1, min_size=16):
    """Returns (inputs, x) for a channels-last video input of static shape."""
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            # Keras 3 makes no Input of a concrete tensor, and its error quotes the whole array
            raise ValueError("`input_tensor` must be a Keras tensor (from keras.Input or a "
                             "layer's output). Received: input_tensor of type "
                             f"{type(input_tensor).__name__}")
        shape = tuple(input_tensor.shape[1:])
        try:
            same = input_shape is None or tuple(input_shape) == shape
        except TypeError:  # a number
            same = False
        if not same:
            # Keras' applications refuse it too: one of the two would be silently dropped
            raise ValueError(f"`input_shape` {input_shape!r} is not the shape of "
                             f"`input_tensor` {shape!r}; give one of them. Received: "
                             f"input_shape={input_shape!r}")
        given, received = "the shape of `input_tensor`", f"input_tensor of shape {shape!r}"
    else:
        given, received = "`input_shape`", None
        try:
            shape = tuple(input_shape) if input_shape is not None else DEFAULT_INPUT_SHAPE
        except TypeError:  # a number, not a shape: the message below, not "not iterable"
            shape = (input_shape,)
    received = received or f"input_shape={shape!r}"
    if len(shape) != 4 or not all(is_number(s) and float(s).is_integer() for s in shape):
        raise ValueError(
            f"{given} must be a fully defined (frames, height, width, channels) tuple of "
            f"whole numbers. Received: {received}"
        )
    frames, height, width, channels = (int(s) for s in shape)
    if channels != 3:
        # (3, T, H, W) is PyTorch's layout: said, as the likely slip
        raise ValueError(f"Models take RGB clips (3 channels, last: (frames, height, width, 3)). "
                         f"Received: {received}")
    if frames < min_frames or height < min_size or width < min_size:
        noun = "frame" if min_frames == 1 else "frames"
        raise ValueError(
            f"This model needs at least {min_frames} {noun} of {min_size}x{min_size} pixels. "
            f"Received: {received}"
        )
    if input_tensor is None:
        inputs = keras.Input(shape=(frames, height, width, channels), name="input")
        return inputs, inputs
    return input_tensor, input_tensor


def conv_bn(x, filters, kernel_size, strides, padding, name, activation="relu", groups=1,
            use_bias=False, bn_name=None, act_name=None):
    """Conv3D -> BatchNorm -> activation, each layer named after `name`."""
    x = Conv3D(filters, kernel_size, strides, padding, groups=groups, use_bias=use_bias,
               name=name)(x)
    x = batch_norm(bn_name or f"{name}_bn")(x)
    if activation is not None:
        x = keras.layers.Activation(activation, name=act_name or f"{name}_{activation}")(x)
    return x


def pooled_head(x, include_top, pooling, num_classes, dropout, classifier_activation):
    """Global average pool -> dropout -> Dense, the head of every efficient model.

    The original pools with ``avg_pool3d(x, x.size()[-3:])``, a global average."""
    if include_top:
        x = keras.layers.GlobalAveragePooling3D(data_format="channels_last", name="avg_pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        return keras.layers.Dense(num_classes, activation=classifier_activation,
                                  name="predictions")(x)
    return feature_pooling(x, pooling)


def feature_pooling(x, pooling):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling3D(data_format="channels_last", name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling3D(data_format="channels_last", name="max_pool")(x)
    return x


def finish(inputs, input_tensor, outputs, name, weights):
    if input_tensor is not None and keras.backend.is_keras_tensor(input_tensor):
        # As keras.applications: a tensor made by other layers (a Rescaling of an Input)
        # keeps them, the model starting at their Input; a Functional model given that
        # tensor itself as input would start at a clone of it instead.
        inputs = keras.utils.get_source_inputs(input_tensor)
        if len(inputs) == 1:  # one tensor, not a list of one: Keras warns at every call
            inputs = inputs[0]  # that a clip does not match the structure [clip]
    model = VideoModel(inputs, outputs, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def _describe(model):
    shape = "x".join(str(d) for d in model.inputs[0].shape[1:4])
    what = "classes" if _has_classifier(model) else "features"  # include_top=False
    return f"{model.name} ({shape} clips, {model.outputs[0].shape[-1]} {what})"


def _has_classifier(model):
    """Whether `model` was built with its classifier (include_top=True)."""
    return any(layer.name == "predictions" for layer in flat_layers(model))


def flat_layers(model):
    """The layers of `model`, a nested model's (`with_preprocessing`) in its place."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from flat_layers(layer)
        else:
            yield layer


def load_weights(model, path):
    """Loads `path` (``.weights.h5``, or a ``.keras`` model) into `model`.

    A ``.keras`` archive is loaded as a model and copied layer by layer by name, because
    Keras' own ``load_weights`` of an archive matches its variables by object path: a file
    saved when the builders made Keras' ``BatchNormalization`` holds none of the paths the
    project's ``BatchNorm`` asks for, although the variables are the same.

    Raises:
        ModelFileError: an unreadable file, or weights of another model (one line naming
            the file and both models; not the variable's value Keras prints).
    """
    from keras_efficient3d import artifacts

    path = os.fspath(path)
    if path.lower().endswith(".keras"):
        source = artifacts.load_model(path, compile=False)
        _copy_weights(source, model, path)
        return
    # A failed load warns of each container it skipped before it raises: kept for a load
    # that succeeds (those layers keep random weights), dropped for one that fails.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except (ValueError, KeyError) as err:
            raise artifacts.ModelFileError(
                f"{path}: these weights do not fit the built model {_describe(model)} "
                f"({_weights_error(err)})") from None
        except OSError as err:  # h5py's, for a file that is not HDF5 ("file signature not found")
            raise artifacts.ModelFileError(
                f"{path}: not a readable weights file ({' '.join(str(err).split())})") from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)


def _weights_error(err):
    """Keras' load error without the target variable's values, which it quotes in full."""
    text = " ".join(str(err).split())
    layer = re.search(r"for object <\w+ name=([^,>]+)", text)
    # a shape as Keras prints it: (1280, 5), or on PyTorch torch.Size([1280, 5])
    shape = r"(\([^)]*\)|torch\.Size\(\[[^\]]*\]\))"
    shapes = re.search(rf"variable\.shape={shape}, Received: value\.shape={shape}", text)
    if shapes:
        where = f"layer {layer.group(1)}: " if layer else ""
        wanted, held = (re.sub(r"torch\.Size\(\[(.*)\]\)", r"(\1)", shapes.group(i)) for i in (1, 2))
        return f"{where}weights of shape {held}, expected {wanted}"
    unmatched = re.search(r"A total of (\d+) objects could not be loaded", text)
    if unmatched:  # Keras then lists every object: the count says it, the list does not fit
        return (f"{unmatched.group(1)} of the model's layers find no weights in the file: "
                "weights of another model, or saved from one of Keras' BatchNormalization "
                "layers, as older releases built them (load that model's .keras file instead)")
    text = text.split("Target variable:")[0].strip()
    return text if len(text) <= 300 else text[:299] + "…"


def _copy_weights(source, model, path):
    from keras_efficient3d.artifacts import ModelFileError

    def mismatch(detail):
        return ModelFileError(f"{path}: its model {_describe(source)} does not fit the built "
                              f"model {_describe(model)} ({detail})")

    from keras_efficient3d.fold import Folded

    layers = list(flat_layers(source))
    if any(isinstance(layer, Folded) for layer in layers):
        raise ModelFileError(
            f"{path}: its model {_describe(source)} has BatchNorm folded into its convolutions "
            "(an inference form, as runners and exports make): it is not weights for a "
            "trainable model. Load the model it was folded from, or run this one itself "
            "(keras_efficient3d.runtime.load_runner)")
    held = {layer.name: layer for layer in layers if layer.weights}
    wanted = [layer for layer in flat_layers(model) if layer.weights]
    missing = [layer.name for layer in wanted if layer.name not in held]
    if missing:
        raise mismatch(f"no layer {missing[0]} in the file")
    # by name, the file's classifier (its Dense layers, and SqueezeNet's 1x1x1 convolution
    # "predictions") left out for a model built with include_top=False; any other layer
    # more (a deeper model's) is another model
    headless = not _has_classifier(model)
    names = {layer.name for layer in wanted}
    extra = [name for name in held if name not in names
             and not (headless and (isinstance(held[name], keras.layers.Dense)
                                    or name == "predictions"))]
    if extra:
        raise mismatch(f"layer {extra[0]} of the file is not in the built model")
    assignments = []
    for layer in wanted:
        values = held[layer.name].get_weights()
        if len(values) != len(layer.weights) or any(
                tuple(v.shape) != tuple(w.shape) for v, w in zip(values, layer.weights)):
            raise mismatch(f"layer {layer.name}: weights of shapes "
                           f"{[tuple(v.shape) for v in values]}, expected "
                           f"{[tuple(w.shape) for w in layer.weights]}")
        assignments.append((layer, values))
    # Checked in full first: a mismatch leaves the built model as it was.
    for layer, values in assignments:
        layer.set_weights(values)


# Layers that make a mask out of no mask: a graph holding one needs Keras' own calls.
_MASK_MAKERS = (keras.layers.Embedding, keras.layers.Masking)

# Layers whose outputs for one clip depend on that clip alone (BatchNorm in training is the
# one layer of the builders that mixes the clips of a batch): `VideoModel`'s halves call.
# Exact types: a subclass may hold batch-wide state.
_PER_CLIP = (keras.layers.InputLayer, keras.layers.Activation, keras.layers.ReLU,
             keras.layers.Dense, keras.layers.Flatten, keras.layers.Permute,
             keras.layers.Add, keras.layers.Concatenate,
             keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling3D,
             video_layers.Conv3D, video_layers.DepthwiseConv3D, video_layers.MaxPool3D,
             video_layers.AvgPool3D, video_layers.ChannelShuffle, video_layers.ChannelSplit,
             video_layers.ZeroPadChannels)
# Per-clip layers that draw random numbers: the halves call runs them once on the whole
# batch, so that they draw what the whole batch's call draws.
_WHOLE_BATCH = (keras.layers.Dropout,)


def _halves_layer(layer):
    """Whether the halves call can run `layer` (`VideoModel.halves_call`)."""
    if getattr(layer, "activity_regularizer", None) is not None:
        return False  # its loss would be made inside a tf.cond branch
    if type(layer) is video_layers.BatchNorm:
        return not layer.trainable or layer.takes_parts(layer.input)
    if type(layer) is keras.layers.Concatenate and layer.axis in (0, -len(layer.input[0].shape)):
        return False  # along the batch
    return type(layer) in _PER_CLIP + _WHOLE_BATCH


def _unpack_singleton(values):
    """A one-element list or tuple of outputs as its element, as Keras' functional call
    returns it."""
    if isinstance(values, (list, tuple)) and len(values) == 1:
        return values[0]
    return values


class _Halves:
    """A tensor of `VideoModel`'s halves call, held as its batch's two halves (a leaf to
    keras.tree, so that the functional graph carries it as one value)."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = list(parts)


@keras.saving.register_keras_serializable(package=PACKAGE)
class VideoModel(keras.Model):
    """The functional model of every builder: Keras' functional model (same config,
    weights and results; a file saved from it loads wherever this package is imported)
    with keras-hub's ``save_to_preset`` and a cheaper eager call on PyTorch.

    PyTorch runs each training step eagerly, layer by layer, and Keras' `Layer.__call__`
    (argument conversion, call-spec parsing, training and mask resolution, name and
    autocast scopes) costs ~0.1 ms a layer there: 23 of ShuffleNetV2's 56 ms forward pass
    at 32x32 pixels, 14% of its training step at 112x112. When none of it applies (no
    mask, every layer computing in its variables' dtype and in the inputs', no activity
    regularizer, every layer built) the graph calls each layer's ``call`` directly, with
    the same ``training``. TensorFlow and JAX trace the call once, so they keep Keras'."""

    def call(self, inputs, training=None, mask=None, **kwargs):
        if training and mask is None and not kwargs and self.halves_call():
            return self._call_in_halves(inputs)
        if mask is not None or kwargs or not self.direct_calls():
            return super().call(inputs, training=training, mask=mask, **kwargs)

        def layer_call(layer):
            if training is None or not layer._call_has_training_arg:
                return layer.call
            return lambda *args, **kw: layer.call(*args, **dict(kw, training=training))

        outputs = self._run_through_graph(self._standardize_inputs(inputs),
                                          operation_fn=layer_call)
        return _unpack_singleton(outputs)

    def fit(self, x=None, y=None, *args, **kwargs):
        # Not in `compile`: Keras does not compile a model with its own `compile` on loading.
        build_for_fit(self, x, y, kwargs.get("sample_weight"))
        return super().fit(x, y, *args, **kwargs)

    def compile_from_config(self, config):
        # Keras compiles a loaded model as its file says, and the file says it the way the
        # backend that wrote it does: PyTorch names its own Adam (whose steps then run torch
        # ops on JAX or TensorFlow arrays), JAX records jit_compile=True (PyTorch then goes
        # into torch.compile, TensorFlow into XLA, ~100x slower for these convolutions on a
        # CPU). Both are written here the backend-neutral way: Keras' optimizer of that name
        # for the loading backend, and that backend's own default compilation ("auto").
        config = dict(config, optimizer=_backend_neutral(config.get("optimizer")))
        if config.get("jit_compile") is True:
            config["jit_compile"] = "auto"
        return super().compile_from_config(config)

    def halves_call(self):
        """Whether a training call runs the graph on the two halves of the batch side by side
        (`_call_in_halves`): on TensorFlow, with threads that run operations side by side
        (`runtime.tf_side_by_side`: the thread plan of `--threads`), and a graph of layers
        that compute each clip alone but BatchNorm (which takes the parts)."""
        from keras_efficient3d.runtime import tf_side_by_side

        if keras.backend.backend() != "tensorflow" or not tf_side_by_side():
            return False
        import tensorflow as tf

        # Under a strategy of several replicas the halves' weights turned NaN within an epoch
        # (MirroredStrategy on two CPU devices, batch 4); the replicas run side by side there.
        if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            return False
        return len(self.inputs) == 1 and all(_halves_layer(layer) for layer in self.layers)

    def _call_in_halves(self, inputs):
        """A training call with the batch in two halves: each layer runs once per half, so
        that the halves' operations are independent and TensorFlow runs them side by side,
        except BatchNorm, which normalises both by the whole batch's statistics
        (`BatchNorm.call_parts`), and Dropout, which runs on the whole batch (the random
        numbers of the whole batch's call); the logits are the halves' concatenated. The
        same outputs, gradients and moving statistics as the whole batch's call, within
        float rounding. Inside a traced function only (eagerly, nothing runs side by side).
        TensorFlow's executor runs operations that do not wait on each other at the same
        time, and one batch's graph is mostly a chain, so that with one thread per operation
        a core idled most of the step: batch 4, 2 cores, per step, ShuffleNetV2 1.0x 92
        against 118 ms, MobileNetV2 1.0x 380 against 575 (458 at TensorFlow's default
        threads)."""

        def halves(x):
            middle = ops.shape(x)[0] // 2
            return _Halves([x[:middle], x[middle:]])

        def part(value, i):
            return value.parts[i] if isinstance(value, _Halves) else value

        def whole_batch(layer, args, kwargs):
            """`layer` called once on the halves concatenated, its outputs split again."""
            first = [ops.shape(v.parts[0])[0] for v in tree.flatten((args, kwargs))
                     if isinstance(v, _Halves)][0]

            def join(v):
                return ops.concatenate(v.parts, axis=0) if isinstance(v, _Halves) else v

            outputs = layer(*tree.map_structure(join, args), **tree.map_structure(join, kwargs))
            return tree.map_structure(lambda y: _Halves([y[:first], y[first:]]), outputs)

        def operation_fn(layer):
            def call(*args, **kwargs):
                if "training" in getattr(layer, "_call_context_args", {}):
                    kwargs["training"] = True
                batch_norm = isinstance(layer, video_layers.BatchNorm) and layer.trainable
                if (batch_norm and len(args) == 1 and isinstance(args[0], _Halves)
                        and all(v is None for k, v in kwargs.items() if k != "training")):
                    return _Halves(layer.call_parts(args[0].parts))
                if batch_norm or isinstance(layer, _WHOLE_BATCH):
                    return whole_batch(layer, args, kwargs)
                outputs = [layer(*tree.map_structure(functools.partial(part, i=i), args),
                                 **tree.map_structure(functools.partial(part, i=i), kwargs))
                           for i in range(2)]
                return tree.map_structure(lambda *halves: _Halves(halves), *outputs)
            return call

        def run(inputs):
            values = self._run_through_graph([halves(x) for x in inputs],
                                             operation_fn=operation_fn)
            # as Keras' own call returns them, so that both tf.cond branches match
            return _unpack_singleton(
                tree.map_structure(lambda v: ops.concatenate(v.parts, axis=0), values))

        def whole(structure):
            return super(VideoModel, self).call(structure, training=True)

        import tensorflow as tf

        flat = self._standardize_inputs(inputs)
        batch = flat[0].shape[0]
        if tf.executing_eagerly() or any(keras.backend.is_keras_tensor(x) for x in flat):
            return whole(inputs)  # eager: nothing runs side by side; symbolic: shapes only
        if batch is not None:
            return run(flat) if batch > 1 else whole(inputs)
        # A batch of one clip has no halves (and an empty half breaks oneDNN's kernels)
        return tf.cond(tf.shape(flat[0])[0] > 1, lambda: run(flat), lambda: whole(inputs))

    def direct_calls(self):
        """Whether `call` runs the layers' ``call`` directly (see the class docstring)."""
        if keras.backend.backend() != "torch":
            return False
        dtypes = {x.dtype for x in self.inputs}
        for layer in self.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if (not layer.built or isinstance(layer, _MASK_MAKERS)
                    or getattr(layer, "activity_regularizer", None) is not None
                    or layer.compute_dtype != layer.variable_dtype):
                return False
            dtypes.add(layer.compute_dtype)
        return len(dtypes) == 1

    def save(self, filepath, overwrite=True, **kwargs):
        """Keras' ``save``; a model made from a preset (`from_preset`) or loaded from a
        ``.keras`` file (`artifacts.load_model`) writes the metadata it records into the
        archive too (`artifacts.save_model`), so that predict, evaluation and the exporters
        read its clip, normalisation and labels from the file: without it, a preset saved
        with ``model.save`` lost them."""
        metadata = getattr(self, "_recorded_metadata", None)
        if metadata is not None and not kwargs and os.fspath(filepath).endswith(".keras") and \
                not getattr(self, "_saving_with_metadata", False):
            from keras_efficient3d import artifacts

            if not overwrite and os.path.exists(filepath):
                return super().save(filepath, overwrite=overwrite)  # Keras' refusal
            # save_model writes the archive with Keras' save (this method, flagged) and adds
            # the metadata the model records
            artifacts.save_model(self, filepath)
            return None
        return super().save(filepath, overwrite=overwrite, **kwargs)

    def save_to_preset(self, preset_dir, metadata=None):
        """Saves the model in keras-hub's preset layout
        (`keras_efficient3d.presets.save_to_preset`)."""
        from keras_efficient3d import presets

        return presets.save_to_preset(self, preset_dir, metadata)


def _backend_neutral(config):
    """A serialized optimizer (LossScaleOptimizer's inner one too) with any backend-specific
    class (``keras.src.backend.torch.optimizers...``) replaced by Keras' public one of the
    same name, which each backend resolves to its own."""
    if isinstance(config, list):
        return [_backend_neutral(item) for item in config]
    if not isinstance(config, dict):
        return config
    config = {key: _backend_neutral(value) for key, value in config.items()}
    if str(config.get("module", "")).startswith("keras.src.backend.") and "class_name" in config:
        config.update(module="keras.optimizers", registered_name=None)
    return config


def build_for_fit(model, x=None, y=None, sample_weight=None):
    """Creates the state that the first training step of a compiled, built `model` would
    create, before `fit` (or `evaluate`) on TensorFlow traces it: the optimizer's variables
    and those of the compiled metrics and loss. Without a distribution strategy Keras'
    TensorFlow trainer leaves them to the trace, and TensorFlow then traces the step a second
    time (a function may create variables on its first trace only): half the start-up of
    every run (a tiny MobileNet's two-epoch run 20 -> 10 s on this machine's two cores).
    `x`: the data given to `fit`: a tf.data dataset (its element spec is used) or arrays
    (with `y`); other kinds get the optimizer's variables only."""
    optimizer = getattr(model, "optimizer", None)
    # With a strategy, Keras builds all of it itself, in the strategy's scope.
    if not model.built or getattr(model, "_distribute_strategy", None) is not None:
        return
    spec = None
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):
            # (clips, labels[, weights]); clips alone are for a train_step of its own, whose
            # metrics Keras' build cannot know
            spec = x.element_spec
            if not (isinstance(spec, tuple) and len(spec) in (2, 3) and spec[1] is not None):
                spec = None
        elif x is not None and y is not None and all(
                hasattr(v, "shape") and hasattr(v, "dtype") for v in tree.flatten((x, y))):
            spec = (x, y) if sample_weight is None else (x, y, sample_weight)
    if spec is not None and getattr(model, "compiled", False):
        # Keras' own build under a strategy: symbolic tensors of one batch, traced abstractly
        # (the model once, without gradients), the optimizer built last.
        model._symbolic_build(data_batch=spec)
    elif optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def single_input(model):
    """The model's input tensor, not a list of one: a model built on the list warns at every
    call that a clip does not match the structure [clip] (Keras' "The structure of `inputs`
    doesn't match")."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def video_model(model):
    """`model` as a `VideoModel`: a functional model (one loaded from a file saved before
    the class existed) is rebuilt from its layers, sharing their weights; another kind of
    model gets keras-hub's ``save_to_preset`` on the instance (outside Keras' attribute
    tracking)."""
    if isinstance(model, VideoModel):
        return model
    if type(model).__name__ == "Functional":
        return VideoModel(single_input(model), model.outputs, name=model.name)
    object.__setattr__(model, "save_to_preset",
                       types.MethodType(VideoModel.save_to_preset, model))
    return model
