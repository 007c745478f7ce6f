"""Export of a λ-conditioned model as a SavedModel for TF Serving.

The SavedModel has one endpoint, `serving_default`, built with
`keras.export.ExportArchive`:

    inputs:  image         float32 [-1, H, W, C], pixels in [0, 1]
             lambda_value  float32 [-1], one λ in [0, 1] per image
    outputs: logits        float32 [-1, K]
             probabilities float32 [-1, K], softmax of the logits

The model runs with `training=False`. λ is an input, so one export serves every
trade-off between standard and robust accuracy.

Why `lambda_value` and not `lambda`: TensorFlow turns every signature input
name into a Python keyword argument of the signature function, both when
saving (`tf.saved_model.save` re-wraps each signature as `fn(**inputs)`) and
when loading (`tf.saved_model.load` rebuilds the function type from the
names). `lambda` is a Python keyword, which `inspect.Parameter` rejects, so a
signature input named `lambda` can be neither saved nor loaded. TF Serving
clients therefore send `{"image": ..., "lambda_value": ...}`.

The export is atomic: the SavedModel is written to a temporary sibling
directory, then renamed to `export_dir`. An existing export at `export_dir` is
first renamed aside and deleted only once the new one is in place, so
`export_dir` never holds a half-written SavedModel (between the two renames it
briefly does not exist).

Example:

```python
path = saved_model.export_saved_model(model, "saved_models/oat/1", image_shape=(32, 32, 3))
serve = saved_model.load_serving_fn(path)
outputs = serve(image=images, lambda_value=tf.fill([n], 0.2))
outputs["probabilities"]
```
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Tuple

import keras
import tensorflow as tf
from absl import logging

SIGNATURE_KEY = "serving_default"
IMAGE_INPUT_NAME = "image"
LAMBDA_INPUT_NAME = "lambda_value"


def _validate_image_shape(image_shape) -> Tuple[int, int, int]:
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


def _build_archive(model: keras.Model, image_shape: Tuple[int, int, int]):
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image: tf.Tensor, lambda_value: tf.Tensor) -> dict:
        logits = model({"image": image, "lambda": lambda_value}, training=False)
        if not tf.is_tensor(logits):
            raise ValueError(
                "`model` must return one logits tensor [N, K]. "
                f"Received: model output {logits!r}"
            )
        logits = tf.cast(logits, tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    archive.add_endpoint(
        SIGNATURE_KEY,
        serve,
        input_signature=[
            tf.TensorSpec([None, *image_shape], tf.float32, name=IMAGE_INPUT_NAME),
            tf.TensorSpec([None], tf.float32, name=LAMBDA_INPUT_NAME),
        ],
    )
    return archive


def export_saved_model(model: keras.Model, export_dir: str, *, image_shape: tuple) -> str:
    """Exports `model` with a `serving_default` signature, atomically.

    Args:
        model: keras.Model, called as
            `model({"image": x, "lambda": lam}, training=False)` and returning
            logits [N, K].
        export_dir: str, local directory of the SavedModel (e.g.
            `saved_models/<run>/<version>`); replaced if it exists.
        image_shape: tuple of three ints (H, W, C), the image shape without
            the batch dimension.

    Returns:
        str, `export_dir`.
    """
    image_shape = _validate_image_shape(image_shape)
    export_dir = os.fspath(export_dir)
    target = os.path.abspath(export_dir)
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(
            "`export_dir` must be a directory path, not an existing file. "
            f"Received: export_dir={export_dir!r}"
        )
    parent, base = os.path.split(target)
    os.makedirs(parent, exist_ok=True)

    archive = _build_archive(model, image_shape)
    temp_dir = tempfile.mkdtemp(dir=parent, prefix=f".{base}.tmp-")
    try:
        archive.write_out(temp_dir, verbose=False)
        _replace_dir(temp_dir, target)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    logging.info(
        "Exported SavedModel to %s: signature %r, inputs %s [-1, %s] and %s [-1].",
        export_dir,
        SIGNATURE_KEY,
        IMAGE_INPUT_NAME,
        ", ".join(str(d) for d in image_shape),
        LAMBDA_INPUT_NAME,
    )
    return export_dir


def _replace_dir(source: str, target: str) -> None:
    """Renames directory `source` to `target`, replacing `target` if it exists."""
    if not os.path.exists(target):
        os.rename(source, target)
        return
    parent, base = os.path.split(target)
    backup = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex}")
    os.rename(target, backup)
    try:
        os.rename(source, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def load_serving_fn(export_dir: str):
    """Loads the `serving_default` signature of an exported model.

    Args:
        export_dir: str, a directory written by `export_saved_model`.

    Returns:
        The signature's concrete function, called with keyword arguments
        `image` (float32 [N, H, W, C]) and `lambda_value` (float32 [N]) and
        returning a dict with `logits` and `probabilities`.
    """
    loaded = tf.saved_model.load(os.fspath(export_dir))
    if SIGNATURE_KEY not in loaded.signatures:
        raise ValueError(
            f"`export_dir` must hold a SavedModel with a {SIGNATURE_KEY!r} signature. "
            f"Received: export_dir={export_dir!r} with signatures {list(loaded.signatures)}"
        )
    return loaded.signatures[SIGNATURE_KEY]
