"""The TFLite export command line: files written, metadata, refusals before any work."""

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from oat_tf.export import saved_model
from oat_tf.export import tflite
from oat_tf.models import small_cnn
from tests import testing

SHAPE = (28, 28, 1)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = small_cnn.SmallCNN(variant="oat", filters=(4, 8), hidden_units=16, encoder={"dim": 8})
    images = np.random.default_rng(0).uniform(size=(2, *SHAPE)).astype(np.float32)
    model({"image": images, "lambda": np.zeros(2, np.float32)})
    return saved_model.export_saved_model(
        model, str(tmp_path_factory.mktemp("cli") / "export"), image_shape=SHAPE, model_card={"name": "tiny"}
    )


def _export_tflite(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=testing.REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "oat_tf.export_tflite", *flags], capture_output=True, text=True, env=env, timeout=600
    )


def test_int8_export_writes_the_model_and_its_metadata(export_dir, tmp_path):
    output = tmp_path / "out" / "tiny_int8.tflite"
    result = _export_tflite(
        f"--saved_model={export_dir}", f"--output={output}", "--quantize=int8",
        "--calibration_dataset=embedded", "--num_calibration_examples=16", "--seed=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    flatbuffer = output.read_bytes()
    metadata = json.loads((tmp_path / "out" / "tiny_int8.tflite.json").read_text())
    assert metadata["bytes"] == len(flatbuffer)
    assert metadata["sha256"] == hashlib.sha256(flatbuffer).hexdigest()
    assert metadata["quantization"] == "int8"
    assert metadata["signatures"] == {"serving_default": 1.0}
    assert metadata["calibration"]["num_examples"] == 16 and metadata["calibration"]["seed"] == 3
    assert metadata["model_card"] == {"name": "tiny"}
    agreement = metadata["agreement_with_saved_model"]["argmax_agreement"]
    assert set(agreement) == {"width=1 lambda=0", "width=1 lambda=1"}
    assert all(0.0 <= value <= 1.0 for value in agreement.values())
    assert "argmax agreement with the SavedModel" in result.stdout
    classifier = tflite.TFLiteClassifier(str(output))
    assert classifier.image_shape == SHAPE
    assert not [name for name in os.listdir(output.parent) if name.endswith(".tmp")]


def test_an_existing_output_is_replaced_only_with_overwrite(export_dir, tmp_path):
    output = tmp_path / "model.tflite"
    output.write_bytes(b"the user's file")
    result = _export_tflite(f"--saved_model={export_dir}", f"--output={output}")
    assert result.returncode != 0
    assert "pass --overwrite to replace it" in result.stderr
    assert output.read_bytes() == b"the user's file"
    result = _export_tflite(f"--saved_model={export_dir}", f"--output={output}", "--overwrite", "--quantize=dynamic")
    assert result.returncode == 0, result.stderr[-3000:]
    assert tflite.TFLiteClassifier(str(output)).widths == {"serving_default": 1.0}
    assert json.loads((tmp_path / "model.tflite.json").read_text())["quantization"] == "dynamic"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--output={tmp}/a.tflite", "--quantize=int8"], "--calibration_dataset is required with --quantize=int8"),
        (["--output={tmp}/a.onnx"], "--output must be a file path ending in .tflite"),
        (["--output={tmp}/a.tflite", "--saved_model={tmp}"], "must be a SavedModel directory"),
        (["--output={tmp}/a.tflite", "--quantize=int8", "--calibration_dataset=npz:{tmp}/missing.npz"],
         "--calibration_dataset"),
        (["--output={tmp}/a.tflite", "--quantize=float16"], "--quantize"),
    ],
)
def test_bad_flags_are_refused_before_anything_is_written(export_dir, tmp_path, flags, message):
    flags = [f.format(tmp=tmp_path) for f in flags]
    if not any(f.startswith("--saved_model") for f in flags):
        flags.append(f"--saved_model={export_dir}")
    result = _export_tflite(*flags)
    assert result.returncode != 0
    assert message in result.stderr
    assert os.listdir(tmp_path) == []
