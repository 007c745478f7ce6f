"""Export of a λ-conditioned model as a SavedModel for TF Serving.

The SavedModel has one endpoint, `serving_default`, built with
`keras.export.ExportArchive`:

    inputs:  image         float32 [-1, H, W, C], pixels in [0, 1]
             lambda_value  float32 [-1], one λ in [0, 1] per image
    outputs: logits        float32 [-1, K]
             probabilities float32 [-1, K], softmax of the logits
             classes       int64   [-1], argmax of the logits

The model runs with `training=False`, and any batch size is accepted. λ is an
input (its encoder is a layer of the model), so one export serves every
trade-off between standard and robust accuracy.

A slimmable network (`oat_tf.models.SlimmableNetwork`, OATS and PGD-ATS)
is exported with one signature per width, all with the inputs and outputs
above and the same checks: `serving_default` runs the full width (1.0) and
`width_0_5`, `width_0_75`, ... the narrower ones (`width_signature_name`;
`signature_widths` reads the widths of an export back). Each runs the
functional view `network.width_model(α)`, so a narrower signature computes
only its own channels. The variables are stored once and shared.

Inputs are validated inside the graph, so TF Serving answers a bad request with
an `InvalidArgumentError` (HTTP 400 over REST) whose message names the input,
never with a silently wrong answer:

- `image` must have shape [N, H, W, C] with the exported H, W, C. The
  `TensorSpec` alone does not enforce this: neither TF Serving nor a loaded
  signature called eagerly checks a request against it (measured with TF 2.21:
  a [2, 9, 8, 1] image reached the model's Flatten, and a rank-3 image aborted
  the whole process inside the oneDNN convolution). The check compares the
  shape padded with -1 to a fixed length, so it also holds for a wrong rank,
  which TF's graph optimizer would fold away in a plain `tf.rank` check.
  `tf.ensure_shape` runs after it as a second guard before the model.
- `image` values must be finite and in [0, 1], up to `IMAGE_RANGE_TOLERANCE`
  (1e-5, about 1/400 of an 8-bit grey level): float round-off of a client's
  preprocessing is accepted and passed on unchanged; a wrong scale (0..255, or
  mean/std normalisation) is rejected.
- `lambda_value` must have shape [N], with N the batch size of `image`, and
  its values must be finite and in [0, 1], exactly (no tolerance).

Why `lambda_value` and not `lambda`: TensorFlow turns every signature input
name into a Python keyword argument of the signature function, both when
saving (`tf.saved_model.save` re-wraps each signature as `fn(**inputs)`) and
when loading (`tf.saved_model.load` rebuilds the function type from the
names). `lambda` is a Python keyword, which `inspect.Parameter` rejects, so a
signature input named `lambda` can be neither saved nor loaded. TF Serving
clients therefore send `{"image": ..., "lambda_value": ...}`.

Next to the SavedModel, `assets.extra/` holds:

- `tf_serving_warmup_requests`: a TFRecord file of `PredictionLog` records
  (one `PredictRequest` per signature, batch size in `WARMUP_BATCH_SIZES`
  and λ in `WARMUP_LAMBDAS`, mid-grey images) that TF Serving replays on
  load.
- `model_card.json`, when `export_saved_model` is given a `model_card`: a plain
  JSON file (e.g. the measured SA/RA table), read back with `load_model_card`.
  `copy_with_model_card` writes a copy of an export (or updates it in place)
  with a new card, e.g. once `python -m oat_tf.calibrate` has chosen a λ.

The export is atomic: the SavedModel and `assets.extra/` are written to a
temporary sibling directory, then renamed to `export_dir`. An existing export
at `export_dir` is first renamed aside and deleted only once the new one is in
place, so `export_dir` never holds a half-written export (between the two
renames it briefly does not exist). `export_dir` must be the export's own
directory: new, empty or an earlier export; any other directory is refused
before anything is built (`output_paths.check_export_target`). Files get
modes 0644 / 0755 less the umask. `copy_with_model_card` gives the same
guarantees.

`predict_rest_json` documents the REST contract: it turns a REST `predict`
request in the row format into batched tensors as TF Serving does, calls the
signature and returns TF Serving's response.

Example:

```python
path = saved_model.export_saved_model(
    model, "saved_models/oat/1", image_shape=(32, 32, 3), model_card={"sa_ra": table}
)
serve = saved_model.load_serving_fn(path)
outputs = serve(image=images, lambda_value=tf.fill([n], 0.2))
outputs["probabilities"], outputs["classes"]
```

The REST request for the same model (`POST /v1/models/oat:predict`):

```json
{"signature_name": "serving_default",
 "instances": [{"image": [[[0.1, 0.2, 0.3], ...], ...], "lambda_value": 0.2}]}
```
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from oat_tf import output_paths
from oat_tf.layers import slimmable
from oat_tf.models import slimmable_network

SIGNATURE_KEY = "serving_default"
IMAGE_INPUT_NAME = "image"
LAMBDA_INPUT_NAME = "lambda_value"
LOGITS_OUTPUT_NAME = "logits"
PROBABILITIES_OUTPUT_NAME = "probabilities"
CLASSES_OUTPUT_NAME = "classes"
IMAGE_RANGE_TOLERANCE = 1e-5
ASSETS_EXTRA_DIR = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"
MODEL_CARD_FILENAME = "model_card.json"
WARMUP_BATCH_SIZES = (1, 4)
WARMUP_LAMBDAS = (0.0, 1.0)
WIDTH_SIGNATURE_PREFIX = "width_"


def width_signature_name(width: float) -> str:
    """Returns the signature name of `width`: `serving_default` for 1.0, else `width_0_5`...

    Args:
        width: float in (0, 1].

    Returns:
        str, `SIGNATURE_KEY` for the full width, else `width_` followed by the
        width's shortest decimal form with "_" for "." (0.75 → `width_0_75`).
    """
    width = float(width)
    if not 0.0 < width <= 1.0:
        raise ValueError(f"`width` must be in (0, 1]. Received: width={width}")
    if width == slimmable.FULL_WIDTH:
        return SIGNATURE_KEY
    return WIDTH_SIGNATURE_PREFIX + repr(width).replace(".", "_")


def signature_width(name: str) -> Optional[float]:
    """Inverse of `width_signature_name`: the width a signature name serves.

    Args:
        name: str, a signature name.

    Returns:
        float in (0, 1], or None for a name `width_signature_name` does not make.
    """
    if name == SIGNATURE_KEY:
        return slimmable.FULL_WIDTH
    if not name.startswith(WIDTH_SIGNATURE_PREFIX):
        return None
    try:
        width = float(name[len(WIDTH_SIGNATURE_PREFIX):].replace("_", "."))
    except ValueError:
        return None
    if not 0.0 < width < 1.0 or width_signature_name(width) != name:
        return None
    return width


def signature_defs(export_dir: str) -> Mapping[str, Any]:
    """The SignatureDefs of an export, read from its saved_model.pb without loading it.

    Args:
        export_dir: str, a SavedModel directory.

    Returns:
        Mapping {signature name: SignatureDef proto} of its first meta graph.
    """
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(os.fspath(export_dir), "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto.meta_graphs[0].signature_def


def signature_widths(export_dir: str) -> Dict[str, float]:
    """Returns {signature name: width} of an export, narrowest width first.

    Args:
        export_dir: str, a directory written by `export_saved_model`.

    Returns:
        dict, e.g. `{"width_0_5": 0.5, "width_0_75": 0.75,
        "serving_default": 1.0}`; `{"serving_default": 1.0}` for a model
        that is not slimmable.
    """
    widths = {}
    for name in signature_defs(export_dir):
        width = signature_width(name)
        if width is not None:
            widths[name] = width
    return dict(sorted(widths.items(), key=lambda item: item[1]))


def _export_widths(model: keras.Model, widths: Optional[Sequence[float]]) -> Tuple[float, ...]:
    """The widths to export: all of a slimmable network's by default, else 1.0."""
    if isinstance(model, slimmable_network.SlimmableNetwork):
        if widths is None:
            return tuple(model.widths)
        checked = tuple(sorted({slimmable.check_width(w, model.widths) for w in widths}))
        if slimmable.FULL_WIDTH not in checked:
            raise ValueError(
                "`widths` must contain 1.0 (the `serving_default` signature). "
                f"Received: widths={list(widths)}"
            )
        return checked
    if widths is not None and tuple(float(w) for w in widths) != (slimmable.FULL_WIDTH,):
        raise ValueError(
            "`widths` other than [1.0] need a slimmable network "
            "(`oat_tf.models.SlimmableNetwork`). "
            f"Received: widths={list(widths)} for a {type(model).__name__}"
        )
    return (slimmable.FULL_WIDTH,)


def validate_image_shape(image_shape) -> Tuple[int, int, int]:
    """Returns `image_shape` as (H, W, C) positive ints, or raises ValueError naming it."""
    try:
        dims = tuple(int(d) for d in image_shape)
        valid = len(dims) == 3 and all(d > 0 for d in dims) and dims == tuple(image_shape)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            "`image_shape` must be three positive ints (H, W, C). "
            f"Received: image_shape={image_shape!r}"
        )
    return dims


def serialize_model_card(model_card: Optional[Mapping[str, Any]]) -> Optional[str]:
    if model_card is None:
        return None
    if not isinstance(model_card, Mapping):
        raise ValueError(
            "`model_card` must be a dict (or None). "
            f"Received: model_card of type {type(model_card).__name__}"
        )
    try:
        return json.dumps(dict(model_card), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as error:
        raise ValueError(
            "`model_card` must be serializable as plain JSON (dicts, lists, str, "
            f"finite numbers, bool, None). Received: model_card with {error}"
        ) from error


def checked_inputs(
    image: tf.Tensor, lambda_value: tf.Tensor, image_shape: Tuple[int, int, int]
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Returns the inputs behind in-graph checks that name the failing input."""
    height, width, channels = image_shape
    # Shapes padded with -1 to a fixed length: a wrong rank then fails the
    # comparison instead of breaking it, and nothing here is static.
    padded_image_shape = tf.concat([tf.shape(image), tf.fill([5], -1)], axis=0)
    padded_lambda_shape = tf.concat([tf.shape(lambda_value), tf.fill([2], -1)], axis=0)
    image_range = f"[{-IMAGE_RANGE_TOLERANCE:g}, {1 + IMAGE_RANGE_TOLERANCE:g}]"
    shape_checks = [
        tf.debugging.assert_equal(
            padded_image_shape[1:5],
            tf.constant([height, width, channels, -1]),
            message=f"`{IMAGE_INPUT_NAME}` must have shape [N, {height}, {width}, {channels}] "
            "(x = the received shape after the batch dimension, padded with -1)",
        ),
        tf.debugging.assert_equal(
            padded_lambda_shape[:2],
            tf.stack([padded_image_shape[0], -1]),
            message=f"`{LAMBDA_INPUT_NAME}` must have shape [N], one λ per image of "
            f"`{IMAGE_INPUT_NAME}` (x = the received shape padded with -1, y = [N, -1])",
        ),
    ]
    # The value checks reduce over the signature's rank: run them only once the
    # shapes are known to be right, so a wrong shape is reported as such.
    with tf.control_dependencies(shape_checks):
        image = tf.identity(image)
        lambda_value = tf.identity(lambda_value)
    checks = shape_checks + [
        tf.debugging.assert_all_finite(
            image, message=f"`{IMAGE_INPUT_NAME}` values must be finite"
        ),
        tf.debugging.assert_greater_equal(
            image,
            tf.constant(-IMAGE_RANGE_TOLERANCE, tf.float32),
            message=f"`{IMAGE_INPUT_NAME}` values must be in [0, 1] (accepted: {image_range})",
        ),
        tf.debugging.assert_less_equal(
            image,
            tf.constant(1 + IMAGE_RANGE_TOLERANCE, tf.float32),
            message=f"`{IMAGE_INPUT_NAME}` values must be in [0, 1] (accepted: {image_range})",
        ),
        tf.debugging.assert_all_finite(
            lambda_value, message=f"`{LAMBDA_INPUT_NAME}` values must be finite"
        ),
        tf.debugging.assert_greater_equal(
            lambda_value,
            tf.constant(0.0, tf.float32),
            message=f"`{LAMBDA_INPUT_NAME}` values must be in [0, 1]",
        ),
        tf.debugging.assert_less_equal(
            lambda_value,
            tf.constant(1.0, tf.float32),
            message=f"`{LAMBDA_INPUT_NAME}` values must be in [0, 1]",
        ),
    ]
    with tf.control_dependencies(checks):
        image = tf.ensure_shape(tf.identity(image), [None, height, width, channels])
        lambda_value = tf.ensure_shape(tf.identity(lambda_value), [None])
    return image, lambda_value


def _serve_fn(model: keras.Model, image_shape: Tuple[int, int, int]):
    """The serving function of one signature: checked inputs → named outputs."""

    def serve(image: tf.Tensor, lambda_value: tf.Tensor) -> dict:
        image, lambda_value = checked_inputs(image, lambda_value, image_shape)
        logits = model({"image": image, "lambda": lambda_value}, training=False)
        if not tf.is_tensor(logits):
            raise ValueError(
                "`model` must return one logits tensor [N, K]. "
                f"Received: model output {logits!r}"
            )
        logits = tf.cast(logits, tf.float32)
        return {
            LOGITS_OUTPUT_NAME: logits,
            PROBABILITIES_OUTPUT_NAME: tf.nn.softmax(logits, axis=-1),
            CLASSES_OUTPUT_NAME: tf.argmax(logits, axis=-1, output_type=tf.int64),
        }

    return serve


def _build_archive(
    model: keras.Model, image_shape: Tuple[int, int, int], widths: Tuple[float, ...]
):
    archive = keras.export.ExportArchive()
    # The width views share the network's layers: tracking it saves every
    # variable once, whichever signatures use it.
    archive.track(model)
    input_signature = [
        tf.TensorSpec([None, *image_shape], tf.float32, name=IMAGE_INPUT_NAME),
        tf.TensorSpec([None], tf.float32, name=LAMBDA_INPUT_NAME),
    ]
    for width in widths:
        if isinstance(model, slimmable_network.SlimmableNetwork):
            width_model = model.width_model(width)
        else:
            width_model = model
        archive.add_endpoint(
            width_signature_name(width),
            _serve_fn(width_model, image_shape),
            input_signature=input_signature,
        )
    return archive


def write_export_dir(
    target: str, write_contents: Callable[[str], Any], extra_files: Mapping[str, Optional[str]]
) -> Any:
    """Builds an export in a temporary sibling of `target`, then moves it into place.

    Nothing is left half-written: on any error the temporary directory is
    removed and whatever `target` held before is untouched
    (`output_paths.replace_export_dir`).

    Args:
        target: str, the checked export directory (`output_paths.check_export_target`).
        write_contents: called with the temporary directory, in which
            assets.extra/ already exists; writes the SavedModel (and anything
            else) into it.
        extra_files: {file name: text} to write under assets.extra/; entries
            whose text is None are skipped.

    Returns:
        What `write_contents` returned.
    """
    temp_dir = output_paths.make_export_temp_dir(target)
    try:
        extra_dir = os.path.join(temp_dir, ASSETS_EXTRA_DIR)
        os.makedirs(extra_dir, exist_ok=True)
        result = write_contents(temp_dir)
        for name, text in extra_files.items():
            if text is not None:
                with open(os.path.join(extra_dir, name), "w", encoding="utf-8") as f:
                    f.write(text)
        output_paths.replace_export_dir(temp_dir, target)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return result


def write_warmup_requests(
    path: str,
    image_shape: Tuple[int, int, int],
    signature_names: Sequence[str],
    extra_inputs: Optional[Mapping[str, Mapping[str, np.ndarray]]] = None,
) -> int:
    """Writes the TF Serving warmup file (assets.extra/tf_serving_warmup_requests).

    One PredictRequest per signature, batch size of `WARMUP_BATCH_SIZES` and λ
    of `WARMUP_LAMBDAS`, with mid-grey images.

    Args:
        path: str, the file to write.
        image_shape: (H, W, C) of the served images.
        signature_names: the signatures to warm up.
        extra_inputs: {signature name: {input name: value}}, inputs a signature
            takes besides the image and λ (e.g. the early-exit thresholds).

    Returns:
        The number of requests written.
    """
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name in signature_names:
            for batch_size in WARMUP_BATCH_SIZES:
                for lam in WARMUP_LAMBDAS:
                    inputs = {
                        IMAGE_INPUT_NAME: np.full((batch_size, *image_shape), 0.5, np.float32),
                        LAMBDA_INPUT_NAME: np.full((batch_size,), lam, np.float32),
                        **(extra_inputs or {}).get(signature_name, {}),
                    }
                    request = predict_pb2.PredictRequest()
                    request.model_spec.signature_name = signature_name
                    for name, value in inputs.items():
                        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
                    log = prediction_log_pb2.PredictionLog(
                        predict_log=prediction_log_pb2.PredictLog(request=request)
                    )
                    writer.write(log.SerializeToString())
                    count += 1
    return count


def export_saved_model(
    model: keras.Model,
    export_dir: str,
    *,
    image_shape: tuple,
    model_card: Optional[Mapping[str, Any]] = None,
    widths: Optional[Sequence[float]] = None,
) -> str:
    """Exports `model` for TF Serving, atomically.

    Writes the `serving_default` signature (and, for a slimmable network, one
    signature per width), the warmup requests and, if given, the model card
    (see the module docstring for the contract).

    Args:
        model: keras.Model, called as
            `model({"image": x, "lambda": lam}, training=False)` and returning
            logits [N, K]; a `SlimmableNetwork` is exported through its
            `width_model` views, one signature per width.
        export_dir: str, local directory of the SavedModel (e.g.
            `saved_models/<run>/<version>`); replaced if it exists.
        image_shape: tuple of three ints (H, W, C), the image shape without
            the batch dimension.
        model_card: dict or None, written to `assets.extra/model_card.json`
            (e.g. the measured SA/RA table). Must be plain JSON: str keys,
            finite numbers; tuples come back as lists.
        widths: sequence of float or None, the widths to export (must
            include 1.0); None for every width of a slimmable network. A
            model that is not slimmable accepts only None or [1.0].

    Returns:
        str, `export_dir`.
    """
    image_shape = validate_image_shape(image_shape)
    widths = _export_widths(model, widths)
    signature_names = [width_signature_name(w) for w in widths]
    card_text = serialize_model_card(model_card)
    export_dir = os.fspath(export_dir)
    target = output_paths.check_export_target(export_dir)

    archive = _build_archive(model, image_shape, widths)
    def write_contents(temp_dir: str) -> int:
        archive.write_out(temp_dir, verbose=False)
        return write_warmup_requests(
            os.path.join(temp_dir, ASSETS_EXTRA_DIR, WARMUP_FILENAME), image_shape, signature_names
        )

    num_warmup = write_export_dir(target, write_contents, {MODEL_CARD_FILENAME: card_text})
    logging.info(
        "Exported SavedModel to %s: signatures %s, inputs %s [-1, %s] and %s [-1]; "
        "%d warmup requests%s.",
        export_dir,
        ", ".join(signature_names),
        IMAGE_INPUT_NAME,
        ", ".join(str(d) for d in image_shape),
        LAMBDA_INPUT_NAME,
        num_warmup,
        ", model card" if card_text is not None else "",
    )
    return export_dir


def copy_with_model_card(
    source_dir: str, export_dir: str, model_card: Mapping[str, Any]
) -> str:
    """Writes a copy of an export with a new model card, atomically.

    The SavedModel, variables, warmup requests and every other file of
    `source_dir` are copied unchanged; only `assets.extra/model_card.json` is
    (re)written. Same guarantees as `export_saved_model`: the copy is built in
    a temporary sibling directory of `export_dir` and renamed into place, an
    existing `export_dir` is replaced only once the new one is complete, and
    a failure leaves it untouched. `export_dir` may be `source_dir` itself:
    then the export is updated in place, atomically.

    Args:
        source_dir: str, a directory written by `export_saved_model`.
        export_dir: str, where the copy goes; replaced if it exists. Must not
            lie inside `source_dir` (unless it is `source_dir`).
        model_card: dict, the whole new model card (plain JSON; see
            `export_saved_model`). To keep the old content, start from
            `load_model_card(source_dir)`.

    Returns:
        str, `export_dir`.
    """
    if not isinstance(model_card, Mapping):
        raise ValueError(
            "`model_card` must be a dict. "
            f"Received: model_card of type {type(model_card).__name__}"
        )
    card_text = serialize_model_card(model_card)
    source = os.path.abspath(os.fspath(source_dir))
    if not os.path.isfile(os.path.join(source, "saved_model.pb")):
        raise ValueError(
            "`source_dir` must be a SavedModel directory (holding saved_model.pb). "
            f"Received: source_dir={source_dir!r}"
        )
    export_dir = os.fspath(export_dir)
    target = output_paths.check_export_target(export_dir)
    if target != source and os.path.commonpath([source, target]) == source:
        raise ValueError(
            "`export_dir` must not lie inside `source_dir` (it may be `source_dir` itself). "
            f"Received: source_dir={source_dir!r}, export_dir={export_dir!r}"
        )
    write_export_dir(
        target,
        lambda temp_dir: shutil.copytree(source, temp_dir, dirs_exist_ok=True),
        {MODEL_CARD_FILENAME: card_text},
    )
    logging.info("Wrote %s with a new model card (from %s).", export_dir, source_dir)
    return export_dir


def _load_signature(export_dir: str, signature_name: str):
    """(the loaded SavedModel, its signature `signature_name`), or ValueError naming both."""
    loaded = tf.saved_model.load(os.fspath(export_dir))
    if signature_name not in loaded.signatures:
        raise ValueError(
            "`signature_name` must be one of the signatures of `export_dir`, "
            f"{sorted(loaded.signatures)}. Received: signature_name={signature_name!r}, "
            f"export_dir={export_dir!r}"
        )
    return loaded, loaded.signatures[signature_name]


def load_serving_fn(export_dir: str, signature_name: str = SIGNATURE_KEY):
    """Loads one signature of an exported model, `serving_default` by default.

    Args:
        export_dir: str, a directory written by `export_saved_model`.
        signature_name: str, e.g. `width_signature_name(0.5)` for a width of
            a slimmable export.

    Returns:
        The signature's concrete function, called with keyword arguments
        `image` (float32 [N, H, W, C]) and `lambda_value` (float32 [N]) and
        returning a dict with `logits`, `probabilities` and `classes`. It keeps
        the loaded SavedModel alive, so it can also be called inside a
        `tf.function` and differentiated.
    """
    loaded, serving_fn = _load_signature(export_dir, signature_name)
    # The signature holds its variables weakly: without this reference they
    # are deleted with `loaded`, and a `tf.function` tracing a call fails with
    # "Called a function referencing variables which have been deleted".
    serving_fn._oat_tf_saved_model = loaded
    return serving_fn


def load_model_card(export_dir: str) -> Optional[Dict[str, Any]]:
    """Reads `assets.extra/model_card.json` of an exported model.

    Args:
        export_dir: str, a directory written by `export_saved_model`.

    Returns:
        dict, the model card as JSON gives it back, or None if the export was
        written without one.
    """
    if not os.path.isdir(export_dir):
        raise ValueError(
            f"`export_dir` must be an existing directory. Received: export_dir={export_dir!r}"
        )
    path = os.path.join(export_dir, ASSETS_EXTRA_DIR, MODEL_CARD_FILENAME)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _instances_to_inputs(instances: Any, specs: Mapping[str, tf.TensorSpec]) -> Dict[str, tf.Tensor]:
    """Batches REST row-format `instances` into one tensor per signature input.

    As TF Serving does: every instance is a JSON object with exactly the
    signature's input names; each named value must have the same shape in
    every instance, and the instances are stacked along a new batch
    dimension. Shapes are not checked against the signature here (TF Serving
    does not either): that is the graph's job.
    """
    if not isinstance(instances, list) or not instances:
        raise ValueError(
            "`instances` must be a non-empty list of JSON objects. "
            f"Received: instances={str(instances)[:100]}"
        )
    names = sorted(specs)
    columns = {name: [] for name in names}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or sorted(instance) != names:
            keys = sorted(instance) if isinstance(instance, dict) else type(instance).__name__
            raise ValueError(
                f"Each element of `instances` must be a JSON object with keys {names}. "
                f"Received: instances[{index}] with keys {keys}"
            )
        for name in names:
            try:
                value = np.asarray(instance[name])
            except ValueError as error:  # A ragged nested list.
                raise ValueError(
                    f"`instances[{index}][{name!r}]` must be a rectangular array of numbers. "
                    f"Received: {error}"
                ) from error
            if value.dtype.kind not in "iuf":
                raise ValueError(
                    f"`instances[{index}][{name!r}]` must hold numbers only. "
                    f"Received: values of numpy dtype {value.dtype}"
                )
            if columns[name] and value.shape != columns[name][0].shape:
                raise ValueError(
                    f"`{name}` must have the same shape in every instance. Received: shape "
                    f"{columns[name][0].shape} in instances[0] and {value.shape} in "
                    f"instances[{index}]"
                )
            columns[name].append(value.astype(specs[name].dtype.as_numpy_dtype))
    return {name: tf.constant(np.stack(values)) for name, values in columns.items()}


def predict_rest_json(export_dir: str, request_json: str) -> Dict[str, Any]:
    """Answers a TF Serving REST `predict` request (row format) with an export.

    The reference for the REST contract, since the TF Serving binary is not
    needed to run it: the request body that `POST
    /v1/models/<name>:predict` receives,

        {"signature_name": "serving_default",
         "instances": [{"image": [[[...]]], "lambda_value": 0.2}, ...]}

    is batched as TF Serving batches it, run through the loaded signature,
    and answered in TF Serving's row format,

        {"predictions": [{"logits": [...], "probabilities": [...], "classes": k}, ...]}

    TF Serving answers HTTP 400 with `{"error": <message>}` where this
    function raises: `ValueError` for a malformed request, the graph's
    `tf.errors.InvalidArgumentError` for an invalid input (see the module
    docstring). It loads the SavedModel on every call.

    Args:
        export_dir: str, a directory written by `export_saved_model`.
        request_json: str, the request body. `signature_name` defaults to
            `serving_default` (a slimmable export also answers its width
            signatures, e.g. `width_0_5`); the columnar format (`inputs`)
            is not handled.

    Returns:
        dict, the response body, ready for `json.dumps`.
    """
    request = json.loads(request_json)
    if not isinstance(request, dict) or "instances" not in request:
        keys = sorted(request) if isinstance(request, dict) else type(request).__name__
        raise ValueError(
            "`request_json` must be a JSON object with an `instances` list (the row "
            f"format). Received: request with keys {keys}"
        )
    signature_name = request.get("signature_name", SIGNATURE_KEY)
    loaded, serving_fn = _load_signature(export_dir, signature_name)  # `loaded` keeps the variables alive
    _, specs = serving_fn.structured_input_signature
    outputs = serving_fn(**_instances_to_inputs(request["instances"], specs))
    outputs = {name: value.numpy() for name, value in outputs.items()}
    batch_size = len(request["instances"])
    return {
        "predictions": [
            {name: outputs[name][i].tolist() for name in sorted(outputs)}
            for i in range(batch_size)
        ]
    }
