"""Command line: convert an exported OAT / OATS SavedModel to TFLite, λ (and width) as inputs.

    python -m oat_tf.export_tflite --saved_model=saved_models/quickstart \
        --quantize=int8 --calibration_dataset=embedded --output=quickstart_int8.tflite

The .tflite file keeps every signature of the export (`serving_default`, and
`width_0_5`, ... for a slimmable OATS model) with the inputs `image` (float32
[N, H, W, C] in [0, 1]) and `lambda_value` (float32 [N]), so the trade-off
between standard and robust accuracy is still chosen per request on the device.

`--quantize`:
- none: float32.
- dynamic: int8 weights, float activations.
- int8: full-integer kernels with float inputs and outputs, the activation ranges
  calibrated on `--num_calibration_examples` training images of
  `--calibration_dataset` (a dataset name as `--dataset` of `oat_tf.train`), each
  with a λ drawn from U[0, 1] (the first two at λ = 0 and 1).

Next to FILE.tflite, FILE.tflite.json records the source, the quantization, the
signatures and their widths, the calibration, and the argmax agreement of the
TFLite model with the float SavedModel at λ = 0 and 1 on the calibration images
(a quick check, not a test-set figure), with the SavedModel's model card.
Both files are written atomically; an existing FILE.tflite is replaced only
with `--overwrite`. Every flag is checked before anything is converted.

The TFLite graph keeps none of the SavedModel's in-graph input checks (TFLite
has no assert op); `oat_tf.export.tflite.TFLiteClassifier` checks requests in
Python before they reach the interpreter.
"""

from __future__ import annotations

import hashlib
import os
import sys

from absl import app
from absl import flags
from absl import logging

from oat_tf import cli

FLAGS = flags.FLAGS

TFLITE_SUFFIX = ".tflite"
METADATA_SUFFIX = ".json"
# λ at which the converted model is compared with the float SavedModel.
AGREEMENT_LAMBDAS = (0.0, 1.0)


def define_flags() -> None:
    """Defines the flags."""
    flags.DEFINE_string("saved_model", None, "SavedModel directory written by oat_tf's export (OAT, OATS, PGD-AT).")
    flags.DEFINE_string("output", None, "The .tflite file to write (FILE.tflite.json is written next to it).")
    flags.DEFINE_enum("quantize", "none", ["none", "dynamic", "int8"], "Post-training quantization.")
    flags.DEFINE_string(
        "calibration_dataset", None,
        "Training images for int8 calibration: a dataset name as --dataset of oat_tf.train "
        "(e.g. embedded, npz:PATH, mnist). Required with --quantize=int8.",
    )
    flags.DEFINE_string("data_dir", None, "tfds data directory of --calibration_dataset.")
    flags.DEFINE_integer("num_calibration_examples", 500, "Calibration images (the first N training images).")
    flags.DEFINE_integer("seed", 0, "Seed of the calibration λ draws.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --output file.")


def _check_flags() -> None:
    """Every flag checked before any work; app.UsageError naming the flag."""
    from oat_tf import output_paths  # pylint: disable=import-outside-toplevel
    from oat_tf.export import tflite  # pylint: disable=import-outside-toplevel

    if not FLAGS.saved_model:
        raise app.UsageError("--saved_model (an exported SavedModel directory) is required.")
    try:
        tflite.check_export_dir(FLAGS.saved_model)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    output = FLAGS.output
    if not output or not output.endswith(TFLITE_SUFFIX) or os.path.basename(output) == TFLITE_SUFFIX:
        raise app.UsageError(f"--output must be a file path ending in {TFLITE_SUFFIX}. Received: --output={output!r}")
    if os.path.isdir(output):
        raise app.UsageError(f"--output must be a file, not a directory. Received: --output={output!r}")
    for path in (output, output + METADATA_SUFFIX):
        if os.path.exists(path) and not FLAGS.overwrite:
            raise app.UsageError(
                f"--output would replace the existing file {path!r}; pass --overwrite to replace it, "
                "or choose another path."
            )
    try:
        output_paths.check_writable_directory("output", os.path.dirname(os.path.abspath(output)))
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if FLAGS.quantize == "int8" and not FLAGS.calibration_dataset:
        raise app.UsageError(
            "--calibration_dataset is required with --quantize=int8 (the activation ranges are "
            "calibrated on training images). Received: --calibration_dataset=None"
        )
    if FLAGS.num_calibration_examples < len(tflite.CALIBRATION_END_LAMBDAS):
        raise app.UsageError(
            f"--num_calibration_examples must be >= {len(tflite.CALIBRATION_END_LAMBDAS)}. "
            f"Received: {FLAGS.num_calibration_examples}"
        )


def _calibration_images(image_shape):
    """The first `--num_calibration_examples` training images of the calibration dataset, in [0, 1]."""
    from oat_tf import config as config_lib  # pylint: disable=import-outside-toplevel
    from oat_tf import data  # pylint: disable=import-outside-toplevel

    try:
        splits = data.load_splits(
            config_lib.DataConfig(dataset=FLAGS.calibration_dataset, data_dir=FLAGS.data_dir)
        )
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(f"--calibration_dataset: {error}") from None
    images = splits.train.images[: FLAGS.num_calibration_examples]
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise app.UsageError(
            f"--calibration_dataset must have images of the exported shape {tuple(image_shape)}. "
            f"Received: {FLAGS.calibration_dataset!r} with images of shape {tuple(images.shape[1:])}"
        )
    return images.astype("float32") / 255.0


def _agreement(classifier, images) -> dict:
    """Argmax agreement of the TFLite model (a `TFLiteClassifier`) with the float SavedModel, per width and λ."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    from oat_tf.export import saved_model  # pylint: disable=import-outside-toplevel

    agreement = {}
    for name, width in classifier.widths.items():
        serve = saved_model.load_serving_fn(FLAGS.saved_model, name)
        for lam in AGREEMENT_LAMBDAS:
            lambdas = np.full([images.shape[0]], lam, np.float32)
            reference = serve(image=images, lambda_value=lambdas)[saved_model.CLASSES_OUTPUT_NAME].numpy()
            converted = classifier.predict(images, lambdas, width=width)[saved_model.CLASSES_OUTPUT_NAME]
            agreement[f"width={width:g} lambda={lam:g}"] = float(np.mean(reference == converted))
    return agreement


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    _check_flags()
    import numpy as np  # pylint: disable=import-outside-toplevel

    from oat_tf import atomic_files  # pylint: disable=import-outside-toplevel
    from oat_tf.export import saved_model  # pylint: disable=import-outside-toplevel
    from oat_tf.export import tflite  # pylint: disable=import-outside-toplevel

    image_shape = tflite.export_image_shape(FLAGS.saved_model)
    if FLAGS.calibration_dataset:
        images = _calibration_images(image_shape)
    else:
        # Without a dataset the agreement check runs on uniform noise images.
        images = np.random.default_rng(FLAGS.seed).uniform(size=(64, *image_shape)).astype(np.float32)
    flatbuffer = tflite.convert_saved_model(
        FLAGS.saved_model,
        quantization=FLAGS.quantize,
        calibration_images=images if FLAGS.quantize == "int8" else None,
        seed=FLAGS.seed,
    )
    classifier = tflite.TFLiteClassifier(flatbuffer)
    agreement = _agreement(classifier, images)
    metadata = {
        "source_saved_model": os.path.abspath(FLAGS.saved_model),
        "quantization": FLAGS.quantize,
        "bytes": len(flatbuffer),
        "sha256": hashlib.sha256(flatbuffer).hexdigest(),
        "signatures": classifier.widths,
        "inputs": {saved_model.IMAGE_INPUT_NAME: [None, *image_shape], saved_model.LAMBDA_INPUT_NAME: [None]},
        "calibration": None if FLAGS.quantize != "int8" else {
            "dataset": FLAGS.calibration_dataset,
            "split": "train",
            "num_examples": int(images.shape[0]),
            "lambda": "U[0, 1], the first two at 0 and 1",
            "seed": FLAGS.seed,
        },
        "agreement_with_saved_model": {
            "images": "calibration images" if FLAGS.calibration_dataset else "uniform noise",
            "num_examples": int(images.shape[0]),
            "argmax_agreement": agreement,
        },
        "model_card": saved_model.load_model_card(FLAGS.saved_model),
    }
    output = FLAGS.output
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    atomic_files.write_atomic(output, lambda f: f.write(flatbuffer), binary=True)
    atomic_files.write_json(output + METADATA_SUFFIX, metadata)
    lines = [f"Wrote {output} ({len(flatbuffer):,} bytes, quantization {FLAGS.quantize})"]
    lines += [f"  argmax agreement with the SavedModel, {key}: {100 * value:.1f}%" for key, value in agreement.items()]
    sys.stdout.write("\n".join(lines) + "\n")
    logging.info("Done.")


def run() -> None:
    """The `oat-export-tflite` console script (and `python -m oat_tf.export_tflite`): flags, then `main`."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
