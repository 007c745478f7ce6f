"""Loading a model to evaluate: from a run directory or an exported SavedModel.

Both give an object called as `model({"image": x, "lambda": lam},
training=False)` that returns logits, which is all the attacks and
`evaluate_lambda_grid` need. The SavedModel path goes through the serving
signature, exactly what a deployment runs (gradients flow through it).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import keras
import tensorflow as tf
from absl import logging

from oat_tf import checkpoint_state
from oat_tf import config as config_lib
from oat_tf import models
from oat_tf.export import saved_model as saved_model_lib


def read_run_config(run_dir: str) -> Dict[str, Any]:
    """Returns the resolved config (`config.json`) of a run directory.

    Args:
        run_dir: str, a directory written by `python -m oat_tf.train`.

    Returns:
        dict, the JSON config.
    """
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"`run_dir` must be a run directory holding config.json. Received: run_dir={run_dir!r} "
            f"({path} does not exist)"
        )
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON (corrupt run directory): {error}") from None


def model_config_from_run(run_config: Dict[str, Any]) -> config_lib.ModelConfig:
    """Rebuilds the ModelConfig saved in a run's config.json.

    Fields added after a run was saved (e.g. `filters`, `hidden_units`) are
    absent from its config.json and take their defaults, which are the sizes
    such a run was built with.

    Args:
        run_config: dict, a run's config.json (`read_run_config`).

    Returns:
        ModelConfig.
    """
    model = dict(run_config["model"])
    encoder = dict(model.pop("encoder"))
    encoder["lambda_values"] = tuple(encoder["lambda_values"])
    model["input_shape"] = tuple(model["input_shape"])
    if "filters" in model:
        model["filters"] = tuple(model["filters"])
    return config_lib.ModelConfig(encoder=config_lib.EncoderConfig(**encoder), **model)


def data_config_from_run(
    run_config: Dict[str, Any], num_eval_examples: Optional[int] = None, *, training: bool = False
) -> config_lib.DataConfig:
    """The data a run trained and was evaluated on, from its saved config.

    The validation split is cut before any training subset (`data.load_splits`),
    so evaluation needs only the dataset, its directory and the validation
    size; `training=True` also carries what shaped the training stream.

    Args:
        run_config: dict, the run's config.json (`read_run_config`).
        num_eval_examples: int or None, test examples to keep; None keeps the
            run's own setting.
        training: bool, also carry the run's training subset
            (`num_train_examples`) and augmentation, for a command that trains
            further on the run's data (e.g. `oat_tf.compress`).

    Returns:
        DataConfig with the run's dataset, data_dir and validation split (and,
        with `training`, its training subset and augmentation).
    """
    data_section = run_config["data"]
    extra = {}
    if training:
        extra = {
            "num_train_examples": data_section.get("num_train_examples"),
            "augment": data_section.get("augment"),
        }
    return config_lib.DataConfig(
        dataset=data_section["dataset"],
        data_dir=data_section.get("data_dir"),
        validation_size=data_section.get("validation_size"),
        num_eval_examples=num_eval_examples or data_section.get("num_eval_examples"),
        **extra,
    )


def load_network_from_run(run_dir: str) -> Tuple[keras.Model, Dict[str, Any]]:
    """Builds a run's network and restores its latest checkpoint.

    Args:
        run_dir: str, a run directory with config.json and checkpoints/.

    Returns:
        (network, run config dict).
    """
    run_config = read_run_config(run_dir)
    network = models.build_model(model_config_from_run(run_config))
    directory = os.path.join(run_dir, "checkpoints")
    path = checkpoint_state.latest_checkpoint(directory)  # Raises on a corrupt state file.
    if path is None:
        raise FileNotFoundError(
            f"`run_dir` must hold a checkpoint in {directory}. Received: run_dir={run_dir!r}"
        )
    try:
        tf.train.Checkpoint(network=network).restore(path).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as error:
        raise ValueError(
            f"Checkpoint {path!r} cannot be restored into the network described by "
            f"{run_dir}/config.json: {type(error).__name__}: {str(error).splitlines()[0]}"
        ) from error
    logging.info("Loaded %s from %s.", network.name, path)
    return network, run_config


class SavedModelClassifier:
    """Calls an exported SavedModel's serving signature like an oat_tf model.

    Args:
        export_dir: str, a SavedModel written by `export_saved_model`.
        signature_name: str, the signature to call: `serving_default` (the
            full width) or the `width_...` signature of a slimmable export.
    """

    def __init__(self, export_dir: str, signature_name: str = saved_model_lib.SIGNATURE_KEY):
        self.export_dir = export_dir
        self.signature_name = signature_name
        self.serving_fn = saved_model_lib.load_serving_fn(export_dir, signature_name)
        spec = self.serving_fn.structured_input_signature[1][saved_model_lib.IMAGE_INPUT_NAME]
        self.image_shape = tuple(spec.shape[1:])

    def __call__(self, inputs, training=None):
        del training  # A SavedModel always runs in inference mode.
        outputs = self.serving_fn(
            **{
                saved_model_lib.IMAGE_INPUT_NAME: tf.cast(inputs["image"], tf.float32),
                saved_model_lib.LAMBDA_INPUT_NAME: tf.cast(inputs["lambda"], tf.float32),
            }
        )
        return outputs["logits"]
