"""SavedModel export with a serving signature, for TF Serving, TF-TRT and the Jetson.

Three layers, as in Model Garden's MoViNet export: `export_saved_model` writes a built
model, `build_and_export_saved_model` builds one (registry name or ``.keras`` file) and
writes it, and ``deployment/export.py`` maps flags to the latter.

    from keras_efficient3d import create_model
    from keras_efficient3d.deploy.savedmodel import export_saved_model
    model = create_model("shufflenet_0.5x_g3", num_classes=27)
    export_saved_model(model, "/tmp/shufflenet_sm", batch_size=8)

    python deployment/export.py --model mobilenetv2_0.2x --num_classes 27 \
        --format savedmodel --batch_size 8 --output /tmp/mobilenetv2_sm

The signature ``serving_default`` takes ``input`` (batch, frames, height, width, 3) float32
and returns ``{"logits": (batch, classes)}``. By default the BatchNorm-folded inference form
(`keras_efficient3d.fold.fold_batchnorm`) is exported: the same function, fewer ops.

The weights are frozen into the graph, written as a variable-free SavedModel: one that the
Jetson's TensorFlow (JetPack 4.6: TF 2.7 at most, Python 3.6) loads. A TF2 SavedModel of the
Keras model's variables holds ops that old TensorFlow lacks (TF 2.6 stops at
`DisableCopyOnRead`, which TF 2.21's save/restore functions use), and inference needs no
variables.
"""

import dataclasses
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from keras_efficient3d import artifacts
from keras_efficient3d.backends import require_tensorflow_backend
from keras_efficient3d.fold import inference_form
from keras_efficient3d.layers import forms
from keras_efficient3d.registry import create_model
from keras_efficient3d.runtime import check_close, quiet_stderr, random_clips

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def clip_spec(model, batch_size=None, name=INPUT_NAME):
    """`tf.TensorSpec` of the model's clip input with a fixed (`batch_size`) or free batch."""
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)
                                   or batch_size < 1):
        raise ValueError(
            f"`batch_size` must be None (dynamic) or a positive integer. Received: batch_size={batch_size}"
        )
    if len(model.inputs) != 1:
        raise ValueError(
            f"Export expects a model with one clip input. Received: {len(model.inputs)} inputs"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(s is None for s in shape):
        raise ValueError(
            f"Export needs a static clip shape (frames, height, width, channels). Received: input_shape={shape}"
        )
    return tf.TensorSpec((batch_size,) + shape, tf.float32, name=name)


def load_or_build_model(model_name=None, keras_file=None, num_frames=16, image_size=112,
                        num_classes=None, **model_kwargs):
    """Builds `model_name` from the registry for (num_frames, image_size, image_size, 3)
    clips, or loads `keras_file` (exactly one of the two). ``None`` kwargs keep defaults."""
    if (model_name is None) == (keras_file is None):
        raise ValueError(
            "Give exactly one of `model_name` and `keras_file`. "
            f"Received: model_name={model_name}, keras_file={keras_file}"
        )
    model_kwargs = {k: v for k, v in model_kwargs.items() if v is not None}
    if keras_file is not None:
        if model_kwargs:
            raise ValueError(
                f"A .keras file carries its own configuration and weights. Received: {model_kwargs}"
            )
        # Keras reports a truncated archive as "File not found", and an exported .tflite or
        # .onnx file with a page about TFSMLayer: both are one line naming the file here.
        return artifacts.load_model(artifacts.keras_model_file(keras_file, "the export"),
                                    compile=False)
    return create_model(model_name, input_shape=(num_frames, image_size, image_size, 3),
                        num_classes=num_classes, **model_kwargs)


def export_saved_model(model, export_dir, batch_size=None, fold_bn=True,
                       signature_name=SIGNATURE_NAME, output_name=OUTPUT_NAME, check=None,
                       metadata=None):
    """Writes `model` as a SavedModel with one serving signature.

    Args:
        model: a built `keras.Model` with one static-shaped clip input.
        export_dir: directory to write (created; an existing SavedModel is overwritten).
        batch_size: None for a dynamic batch, or the fixed batch of the signature
            (TF-TRT builds its engines for the shapes it sees; a fixed batch avoids rebuilds).
        fold_bn: export the BatchNorm-folded inference form (default) or the model as is.
        signature_name: key of the signature.
        output_name: key of the signature's output.
        check: ``check(path)``, run on the written SavedModel before it replaces the one in
            `export_dir` (`verify_saved_model`): an export that fails it leaves the earlier.
        metadata: a `ModelMetadata` (or its dict) written inside the SavedModel as
            ``assets.extra/keras_efficient3d.json`` (`artifacts.read_metadata` of the folder
            reads it); an earlier export's is removed either way.

    Returns:
        `export_dir`.
    """
    require_tensorflow_backend("SavedModel export")
    spec = clip_spec(model, batch_size)
    served = inference_form(model, fold_bn)

    @tf.function(input_signature=[spec])
    def serve(clips):
        return {output_name: served(clips, training=False)}

    # Traced with the ops every runtime takes (TF-TRT on the Jetson, TF without oneDNN).
    # The INFO lines of the save tell a user nothing (a failure still raises). Grappler's
    # "empty op name" errors were no noise: they were the remapper failure that dropped the
    # whole function's optimisation (`layers.DepthwiseConv3D`), checked by tests/test_fold.py
    # for the models.
    made = not os.path.isdir(export_dir)  # a folder made here goes again if the export fails
    os.makedirs(export_dir, exist_ok=True)  # as before: into a folder that may hold more
    try:
        _export_into(export_dir, serve, signature_name, output_name, check, metadata)
    except BaseException:
        if made:
            shutil.rmtree(export_dir, ignore_errors=True)
        raise
    return export_dir


def _export_into(export_dir, serve, signature_name, output_name, check, metadata):
    """`export_saved_model`'s writing into the existing folder `export_dir`."""
    if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        # A folder of the user's own that happens to bear a SavedModel entry's name (a
        # variables/ of theirs in --output=.) is not an earlier export to replace.
        for name in ("variables", "assets", "fingerprint.pb"):
            if os.path.exists(os.path.join(export_dir, name)):
                raise FileExistsError(
                    f"{os.path.join(export_dir, name)} exists, and {export_dir} holds no "
                    "SavedModel (no saved_model.pb) whose entry it would be: not replaced; "
                    "export into a new folder")
    # Written whole in a folder of its own inside, then moved entry by entry over the
    # SavedModel's own (saved_model.pb, variables/, fingerprint.pb): an export that fails
    # or is interrupted while writing leaves the earlier one, and nothing else is touched.
    with tempfile.TemporaryDirectory(prefix=".savedmodel-", dir=export_dir,
                                     ignore_cleanup_errors=True) as staging:
        with forms.consumer("savedmodel"), quiet_stderr():
            frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
            written = os.path.join(staging, "savedmodel")  # the builder makes its folder
            try:
                _write_frozen(frozen, written, signature_name, output_name)
            except tf.errors.OpError as err:
                if staging not in err.message:  # not a write of the export's files
                    raise
                # a full disk or a size limit: TensorFlow's error names the staging
                # folder's file ("<staging>/savedmodel/saved_model.pb; File too large"),
                # which the user never chose
                reason = err.message.rsplit(";", 1)[-1].strip() or type(err).__name__
                raise OSError(f"cannot write the SavedModel {export_dir} ({reason})") from None
        if check is not None:
            check(written)
        staged = None
        if metadata is not None:
            staged = artifacts.write_metadata(os.path.join(staging, artifacts.METADATA_ENTRY),
                                              metadata)
        # the earlier export's metadata goes first: an interruption in between leaves a model
        # that records nothing, never one described by another's record. Only the file: the
        # user's own files in assets.extra (a serving warm-up) stay
        recorded = os.path.join(export_dir, artifacts.SAVED_MODEL_METADATA)
        if os.path.isfile(recorded):
            os.remove(recorded)
        artifacts.move_entries(written, export_dir)
        if staged is not None:
            os.makedirs(os.path.dirname(recorded), exist_ok=True)
            os.replace(staged, recorded)


def _write_frozen(frozen, export_dir, signature_name, output_name):
    """Writes the frozen function `frozen` as a SavedModel without variables (the module
    docstring says why), default-valued attributes stripped as old TensorFlow needs."""
    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session:
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        signature = v1.saved_model.signature_def_utils.predict_signature_def(
            {INPUT_NAME: graph.get_tensor_by_name(frozen.inputs[0].name)},
            {output_name: graph.get_tensor_by_name(frozen.outputs[0].name)})
        builder = v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING],
                                             signature_def_map={signature_name: signature},
                                             strip_default_attrs=True)
        builder.save()
    try:  # what tf.saved_model.save writes too: without it every load warns of its absence
        from tensorflow.python.saved_model.fingerprinting_utils import write_fingerprint
    except ImportError:
        return
    write_fingerprint(export_dir)


def build_and_export_saved_model(export_dir, model_name=None, keras_file=None, num_frames=16,
                                 image_size=112, num_classes=None, batch_size=None,
                                 fold_bn=True, verify=True, normalization=None, downsample=None,
                                 **model_kwargs):
    """Builds (`load_or_build_model`), exports and, with `verify`, loads the SavedModel back
    and compares it with the Keras model. Returns a dict: path, input_shape, max_rel_error.
    `normalization` and `downsample`: how a model that records none was trained
    (`artifacts.export_metadata`)."""
    model = load_or_build_model(model_name, keras_file, num_frames, image_size, num_classes,
                                **model_kwargs)
    metadata = dataclasses.replace(
        artifacts.export_metadata(model, keras_file, model_name, weights=model_kwargs.get("weights"),
                                  normalization=normalization, downsample=downsample),
        batch=batch_size or "dynamic")
    errors = []
    export_saved_model(model, export_dir, batch_size=batch_size, fold_bn=fold_bn,
                       check=(lambda path: errors.append(verify_saved_model(path, model)))
                       if verify else None, metadata=metadata)
    error = errors[0] if errors else None
    return {
        "path": export_dir,
        "input_shape": (batch_size,) + tuple(model.inputs[0].shape[1:]),
        "max_rel_error": error,
        "metadata": os.path.join(export_dir, artifacts.SAVED_MODEL_METADATA),
    }


def verify_saved_model(export_dir, model, clips=None, rtol=1e-4, atol=1e-6,
                       signature_name=SIGNATURE_NAME, output_name=OUTPUT_NAME):
    """Loads `export_dir`, runs its signature on `clips` (random by default, batch fixed by
    the signature when it has one) and compares with `model` in inference mode. Returns the
    relative error; raises `AssertionError` beyond the tolerance."""
    with quiet_stderr():  # "Saver not created because there are no variables": none are
        loaded = tf.saved_model.load(export_dir)
    if signature_name not in loaded.signatures:
        raise ValueError(
            f"SavedModel has no signature '{signature_name}'. Received: {sorted(loaded.signatures)}"
        )
    fn = loaded.signatures[signature_name]
    (key, spec), = fn.structured_input_signature[1].items()
    if clips is None:
        clips = random_clips(model, spec.shape[0] or 2)
    with quiet_stderr():  # Grappler's noise again, on the signature's first run
        got = fn(**{key: tf.constant(clips)})[output_name].numpy()
    expected = keras.ops.convert_to_numpy(model(clips, training=False))
    return check_close(got, expected, rtol, atol, what="SavedModel")
