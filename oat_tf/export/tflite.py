"""TFLite conversion of an exported OAT / OATS SavedModel, λ (and width) chosen on the device.

`convert_saved_model` turns a SavedModel written by
`oat_tf.export.saved_model.export_saved_model` into one TFLite flatbuffer. Every
signature of the export is kept under its own name, with the export's inputs
and outputs:

    inputs:  image         float32 [N, H, W, C], pixels in [0, 1]
             lambda_value  float32 [N], one λ in [0, 1] per image
    outputs: logits, probabilities (float32 [N, K]), classes (int64 [N])

so λ stays an input of the on-device model (its encoder is part of the graph),
and a slimmable (OATS) export keeps one signature per width: `serving_default`
for the full width, `width_0_5`, ... for the narrower ones. The narrower
signatures hold their own slices of the weights, so a slimmable file is larger
than its full-width network alone.

Quantization (`QUANTIZATIONS`):

- "none": float32 weights and kernels.
- "dynamic": int8 weights, float activations (post-training dynamic range
  quantization; no calibration data).
- "int8": full-integer kernels (`TFLITE_BUILTINS_INT8` only), with float32
  inputs and outputs so that clients still send pixels in [0, 1] and λ as a
  float. The activation ranges are calibrated on `representative_inputs`:
  images of the training data, each paired with a λ drawn uniformly from
  [0, 1] (the first two at exactly 0 and 1), so that every λ the model will be
  asked for is inside the calibrated ranges. Every signature is calibrated.

The in-graph input checks of the SavedModel (`saved_model.checked_inputs`) do
not survive the conversion: TFLite has no assert op, and the converter drops
them. `TFLiteClassifier` therefore checks every request in Python before it
reaches the interpreter, with the SavedModel's rules and messages.

Multi-exit (adaptive) exports are refused: their serving graph chooses the
exit with data-dependent control flow, which this converter does not handle.

Example:

```python
flatbuffer = tflite.convert_saved_model(
    "saved_models/quickstart", quantization="int8", calibration_images=train_images
)
classifier = tflite.TFLiteClassifier(flatbuffer)
outputs = classifier.predict(images, lambdas=np.full([n], 0.2, np.float32))
outputs["classes"]
```
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from oat_tf.export import adaptive_saved_model
from oat_tf.export import saved_model

QUANTIZATIONS = ("none", "dynamic", "int8")
# λ of the first two calibration examples: the ends of the trade-off are
# always inside the calibrated activation ranges.
CALIBRATION_END_LAMBDAS = (0.0, 1.0)


def check_quantization(quantization: str) -> str:
    """Returns `quantization` if it is one of `QUANTIZATIONS`, else raises ValueError."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {list(QUANTIZATIONS)}. "
            f"Received: quantization={quantization!r}"
        )
    return quantization


def check_export_dir(export_dir: str) -> Dict[str, float]:
    """Checks that `export_dir` is a convertible export; returns its {signature: width}.

    Args:
        export_dir: str, a directory written by `export_saved_model`.

    Returns:
        dict, `saved_model.signature_widths(export_dir)`, narrowest first.

    Raises:
        ValueError: not a SavedModel, a multi-exit (adaptive) export, or an
            export without the `serving_default` signature.
    """
    export_dir = os.fspath(export_dir)
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise ValueError(
            "`saved_model` must be a SavedModel directory written by oat_tf's export "
            f"(with saved_model.pb). Received: saved_model={export_dir!r}"
        )
    early_exit_file = os.path.join(
        export_dir, saved_model.ASSETS_EXTRA_DIR, adaptive_saved_model.EARLY_EXIT_FILENAME
    )
    if os.path.exists(early_exit_file):
        raise ValueError(
            "`saved_model` must be a single-output export (OAT, OATS, PGD-AT): the "
            "early-exit graph of a multi-exit export is not converted to TFLite. "
            f"Received: saved_model={export_dir!r}"
        )
    widths = saved_model.signature_widths(export_dir)
    if saved_model.SIGNATURE_KEY not in widths:
        raise ValueError(
            f"`saved_model` must have the `{saved_model.SIGNATURE_KEY}` signature. "
            f"Received: saved_model={export_dir!r} with signatures {sorted(widths)}"
        )
    return widths


def export_image_shape(export_dir: str) -> Tuple[int, int, int]:
    """(H, W, C) of the `image` input of an export's `serving_default` signature."""
    signature = saved_model.signature_defs(export_dir)[saved_model.SIGNATURE_KEY]
    dims = signature.inputs[saved_model.IMAGE_INPUT_NAME].tensor_shape.dim
    return tuple(int(d.size) for d in dims[1:])


def representative_inputs(
    images: np.ndarray, *, seed: int = 0
) -> List[Dict[str, np.ndarray]]:
    """Calibration inputs for full-integer quantization, one image per example.

    Args:
        images: np.ndarray [N, H, W, C], float pixels in [0, 1] (or uint8
            pixels 0..255, rescaled by 1/255), N >= 2.
        seed: int, seed of the λ draws.

    Returns:
        List of N dicts {"image": [1, H, W, C] float32, "lambda_value": [1]
        float32}: the first two at λ = 0 and 1, the others at λ ~ U[0, 1].
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    if images.ndim != 4 or images.shape[0] < len(CALIBRATION_END_LAMBDAS):
        raise ValueError(
            "`calibration_images` must have shape [N, H, W, C] with N >= "
            f"{len(CALIBRATION_END_LAMBDAS)}. Received: shape {images.shape}"
        )
    lambdas = np.random.default_rng(seed).uniform(0.0, 1.0, size=images.shape[0])
    lambdas[: len(CALIBRATION_END_LAMBDAS)] = CALIBRATION_END_LAMBDAS
    return [
        {
            saved_model.IMAGE_INPUT_NAME: images[i : i + 1],
            saved_model.LAMBDA_INPUT_NAME: np.asarray([lambdas[i]], np.float32),
        }
        for i in range(images.shape[0])
    ]


def convert_saved_model(
    export_dir: str,
    *,
    quantization: str = "none",
    calibration_images: Optional[np.ndarray] = None,
    seed: int = 0,
) -> bytes:
    """Converts every signature of an OAT/OATS export into one TFLite flatbuffer.

    Args:
        export_dir: str, a directory written by `export_saved_model`.
        quantization: one of `QUANTIZATIONS` (see the module docstring).
        calibration_images: np.ndarray [N, H, W, C], images of the training
            data in [0, 1] (or uint8); required for "int8", unused otherwise.
        seed: int, seed of the calibration λ draws.

    Returns:
        bytes, the TFLite flatbuffer with one signature per exported width.

    Raises:
        ValueError: a bad `quantization`, export or calibration set.
    """
    check_quantization(quantization)
    widths = check_export_dir(export_dir)
    signature_keys = list(widths)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        os.fspath(export_dir), signature_keys=signature_keys
    )
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":
        if calibration_images is None:
            raise ValueError(
                "`calibration_images` is required for quantization='int8' (the activation "
                "ranges are calibrated on them). Received: calibration_images=None"
            )
        examples = representative_inputs(calibration_images, seed=seed)
        image_shape = tuple(examples[0][saved_model.IMAGE_INPUT_NAME].shape[1:])

        def dataset() -> Iterator[Tuple[str, Dict[str, np.ndarray]]]:
            for example in examples:
                for key in signature_keys:
                    yield key, example

        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        logging.info(
            "Calibrating int8 ranges on %d images of shape %s, λ ~ U[0, 1] (seed %d)",
            len(examples),
            image_shape,
            seed,
        )
    flatbuffer = converter.convert()
    logging.info(
        "Converted %s (signatures %s, quantization %s): %d bytes",
        export_dir,
        signature_keys,
        quantization,
        len(flatbuffer),
    )
    return flatbuffer


class TFLiteClassifier:
    """Runs a converted OAT/OATS flatbuffer, λ and width chosen per call.

    The interpreter does not check its inputs (the SavedModel's asserts are
    dropped by the converter), so `predict` checks them first with the rules
    of the SavedModel: image shape [N, H, W, C] as exported, finite pixels in
    [0, 1] up to `saved_model.IMAGE_RANGE_TOLERANCE`, λ of shape [N], finite
    and in [0, 1].

    Args:
        flatbuffer: bytes of a `convert_saved_model` result, or the path of a
            .tflite file holding one.
        num_threads: int or None, interpreter threads (None: TFLite's default).

    Attributes:
        widths: dict {signature name: width}, narrowest first.
        image_shape: (H, W, C) of the image input.
    """

    def __init__(self, flatbuffer, num_threads: Optional[int] = None):
        if isinstance(flatbuffer, (str, os.PathLike)):
            with open(flatbuffer, "rb") as f:
                flatbuffer = f.read()
        self.interpreter = tf.lite.Interpreter(model_content=bytes(flatbuffer), num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        expected_inputs = sorted([saved_model.IMAGE_INPUT_NAME, saved_model.LAMBDA_INPUT_NAME])
        self.widths: Dict[str, float] = {}
        for name, io in signatures.items():
            width = saved_model.signature_width(name)
            if width is not None and sorted(io["inputs"]) == expected_inputs:
                self.widths[name] = width
        if saved_model.SIGNATURE_KEY not in self.widths:
            raise ValueError(
                f"`flatbuffer` must be an oat_tf export: its `{saved_model.SIGNATURE_KEY}` signature "
                f"taking the inputs {expected_inputs}. Received signatures: {signatures}"
            )
        self.widths = dict(sorted(self.widths.items(), key=lambda item: item[1]))
        self._runners = {name: self.interpreter.get_signature_runner(name) for name in self.widths}
        details = self._runners[saved_model.SIGNATURE_KEY].get_input_details()
        image_detail = details[saved_model.IMAGE_INPUT_NAME]
        self.image_shape = tuple(int(d) for d in image_detail["shape_signature"][1:])

    def signature_for_width(self, width: float) -> str:
        """The signature name serving `width`; ValueError naming the widths it has."""
        for name, served in self.widths.items():
            if abs(served - float(width)) < 1e-6:
                return name
        raise ValueError(
            f"`width` must be one of the model's widths {list(self.widths.values())}. "
            f"Received: width={width!r}"
        )

    def check_inputs(self, images, lambdas) -> Tuple[np.ndarray, np.ndarray]:
        """Returns (images, lambdas) as float32 arrays, or raises ValueError naming the input."""
        images = np.asarray(images)
        lambdas = np.asarray(lambdas)
        height, width, channels = self.image_shape
        image_name, lambda_name = saved_model.IMAGE_INPUT_NAME, saved_model.LAMBDA_INPUT_NAME
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"`{image_name}` must have shape [N, {height}, {width}, {channels}]. "
                f"Received: shape {list(images.shape)}"
            )
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(
                f"`{image_name}` must be floats in [0, 1]. Received: dtype {images.dtype}"
            )
        tolerance = saved_model.IMAGE_RANGE_TOLERANCE
        if not np.all(np.isfinite(images)) or images.min(initial=0.0) < -tolerance or images.max(
            initial=0.0
        ) > 1 + tolerance:
            raise ValueError(
                f"`{image_name}` values must be finite and in [0, 1]. Received: range "
                f"[{np.nanmin(images):g}, {np.nanmax(images):g}]"
            )
        if lambdas.shape != (images.shape[0],):
            raise ValueError(
                f"`{lambda_name}` must have shape [N], one λ per image ({images.shape[0]}). "
                f"Received: shape {list(lambdas.shape)}"
            )
        if not np.issubdtype(lambdas.dtype, np.number) or not np.all(
            np.isfinite(lambdas) & (lambdas >= 0.0) & (lambdas <= 1.0)
        ):
            raise ValueError(
                f"`{lambda_name}` values must be finite numbers in [0, 1]. "
                f"Received: {lambdas.tolist()[:8]}"
            )
        return images.astype(np.float32), lambdas.astype(np.float32)

    def predict(
        self, images, lambdas, width: float = 1.0, batch_size: int = 256
    ) -> Dict[str, np.ndarray]:
        """Runs the signature of `width` on checked inputs.

        Args:
            images: array [N, H, W, C], float pixels in [0, 1].
            lambdas: array [N], λ in [0, 1] per image.
            width: float, one of `widths`' values.
            batch_size: int >= 1, images per interpreter call.

        Returns:
            dict of numpy arrays: "logits" and "probabilities" [N, K] float32,
            "classes" [N] int64.
        """
        images, lambdas = self.check_inputs(images, lambdas)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1. Received: batch_size={batch_size!r}")
        runner = self._runners[self.signature_for_width(width)]
        parts: List[Dict[str, np.ndarray]] = []
        for start in range(0, images.shape[0], batch_size):
            parts.append(
                runner(
                    **{
                        saved_model.IMAGE_INPUT_NAME: images[start : start + batch_size],
                        saved_model.LAMBDA_INPUT_NAME: lambdas[start : start + batch_size],
                    }
                )
            )
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def logits_fn(self, lambda_value: float, width: float = 1.0):
        """A TensorFlow `images -> logits` function at one λ, for black-box attacks.

        The interpreter runs through `tf.numpy_function`, so the result can be
        given to the attacks of `oat_tf.attacks` that need no gradient
        (`square.square_linf`), eagerly or inside a `tf.function`.

        Args:
            lambda_value: float in [0, 1], the λ of every image.
            width: float, one of `widths`' values.

        Returns:
            callable mapping float32 images [N, H, W, C] to float32 logits [N, K].
        """
        signature = self.signature_for_width(width)
        details = self._runners[signature].get_output_details()
        num_classes = int(details[saved_model.LOGITS_OUTPUT_NAME]["shape_signature"][-1])

        def numpy_logits(images: np.ndarray) -> np.ndarray:
            lambdas = np.full([images.shape[0]], lambda_value, np.float32)
            return self.predict(images, lambdas, width=width)[saved_model.LOGITS_OUTPUT_NAME]

        def logits(images: tf.Tensor) -> tf.Tensor:
            output = tf.numpy_function(numpy_logits, [images], tf.float32, stateful=True)
            return tf.ensure_shape(output, [None, num_classes])

        return logits
