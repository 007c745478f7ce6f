"""Shared test helpers (the oat_tf counterpart of Keras' `run_layer_test`)."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict

import keras
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared sits next to the checkout: found through the real path, since under
# Bazel this file is a link in a runfiles tree (the README's "Bazel").
SHARED_DATA_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "shared", "data")


def file_tree(directory) -> Dict[str, bytes]:
    """{relative path: bytes} of every file under `directory`: to assert that nothing changed."""
    contents = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                contents[os.path.relpath(path, directory)] = f.read()
    return contents


def assert_config_round_trip(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Rebuilds `layer` from its config and checks the config is unchanged.

    Args:
        layer: keras.layers.Layer, a registered oat_tf layer.

    Returns:
        The rebuilt layer (from `keras.saving.deserialize_keras_object`).
    """
    serialized = keras.saving.serialize_keras_object(layer)
    rebuilt = keras.saving.deserialize_keras_object(serialized)
    assert type(rebuilt) is type(layer)
    assert rebuilt.get_config() == layer.get_config()
    return rebuilt


def weights_by_path(model: keras.layers.Layer) -> Dict[str, np.ndarray]:
    """Returns {variable path: numpy value} for every variable of `model`."""
    return {v.path: np.array(v.numpy()) for v in model.weights}


def assert_weights_equal(before: Dict[str, Any], after: Dict[str, Any], atol: float = 0.0):
    """Asserts two `weights_by_path` snapshots are equal to `atol`."""
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_allclose(before[key], after[key], atol=atol, rtol=0, err_msg=key)


def numpy_batch_norm(x: np.ndarray, gamma, beta, epsilon: float):
    """Batch-normalises `x` over every axis but the last with numpy (float64)."""
    x = x.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta, mean, var


def call_in_graph(fn: Callable, *args, jit_compile: bool = False):
    """Runs `fn(*args)` inside a `tf.function`, optionally compiled with XLA."""
    import tensorflow as tf

    return tf.function(fn, jit_compile=jit_compile, autograph=False)(*args)


_MIRRORED = []


def two_cpu_mirrored_strategy():
    """Returns one MirroredStrategy over the two logical CPUs, shared by all tests.

    Several MirroredStrategy objects in one process restart their collective
    instance keys and can collide with each other's collectives, so every test
    uses the same one.
    """
    import tensorflow as tf

    if not _MIRRORED:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
        assert len(devices) == 2, "tests/conftest.py should provide two logical CPUs"
        _MIRRORED.append(tf.distribute.MirroredStrategy(devices))
    return _MIRRORED[0]


def images_with_extremes(shape, seed: int = 0) -> np.ndarray:
    """Float32 images uniform in [0, 1], with rows 0 and 1 exactly at 0 and 1.

    The attack tests use them to check that results stay in [0, 1] where the
    clipping bites.

    Args:
        shape: tuple (N, H, W, C) with H >= 2.
        seed: int, numpy seed.

    Returns:
        np.ndarray of `shape`.
    """
    images = np.random.default_rng(seed).uniform(size=shape).astype(np.float32)
    images[:, 0, :, :] = 0.0
    images[:, 1, :, :] = 1.0
    return images
