"""Test session set-up: two logical CPU devices and the `large` marker.

Two logical CPUs let MirroredStrategy tests run on a one-CPU machine; they must
be configured before TensorFlow initialises its devices, so this runs at import.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

import oat_tf  # noqa: F401  Chooses TensorFlow's CPU kernels before it loads, as the CLIs do.
import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)
for _gpu in tf.config.list_physical_devices("GPU"):
    tf.config.experimental.set_memory_growth(_gpu, True)
tf.config.experimental.enable_tensor_float_32_execution(False)


def pytest_addoption(parser):
    parser.addoption(
        "--run_large", action="store_true", default=False, help="run large tests"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run_large"):
        return
    skip_large = pytest.mark.skip(reason="large test: pass --run_large to run it")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip_large)
