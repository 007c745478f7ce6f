"""Tests of replaced_classes: .keras files of the old RDI classes load as MultiExitNetworks."""

import os

import keras
import numpy as np
import pytest

from oat_tf.models import multi_exit
from oat_tf.models import multi_exit_network
from oat_tf.models import replaced_classes
from tests.models import model_testing

# testdata/<name>_oat.keras was saved by the old class at 3097a56 with randomized
# normalisation statistics; <name>_keras_outputs.npz holds its inputs and outputs.
FIXTURES = {
    "rdi_small_cnn": ("RDISmallCNN", "rdi_small_cnn_oat", ("block1_relu1", "block2_relu1")),
    "rdi_resnet": (
        "RDIResNet38", "rdi_resnet14_oat", tuple(f"stage{s}_block1_out_relu" for s in (1, 2, 3))
    ),
    "rdi_mobilenet_v2": ("RDIMobileNetV2", "rdi_mobilenet_v2_oat", ("block1_out", "block2_out")),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_a_keras_file_of_the_old_class_loads_and_gives_its_outputs(name):
    old_class, old_name, feature_layers = FIXTURES[name]
    path = os.path.join(model_testing.TESTDATA, f"{name}_oat.keras")
    keras.utils.set_random_seed(8)  # Other initial weights than the writer's.
    network = keras.models.load_model(path)
    assert type(network) is multi_exit_network.MultiExitNetwork
    assert network.exit_feature_layers == feature_layers and network.variant == "oat"
    assert network.name == old_name
    expected = np.load(os.path.join(model_testing.TESTDATA, f"{name}_keras_outputs.npz"))
    outputs = network({"image": expected["images"], "lambda": expected["lambdas"]}, training=False)
    assert list(outputs) == list(multi_exit.output_names(network))
    for key, value in outputs.items():
        np.testing.assert_allclose(value, expected[f"oat_{key}"], rtol=1e-5, atol=1e-6, err_msg=key)
    # What is saved now is the new class, under its own name.
    assert keras.saving.serialize_keras_object(network)["class_name"] == "MultiExitNetwork"
    assert getattr(replaced_classes, old_class).__name__ == old_class


def test_the_old_names_only_read():
    with pytest.raises(NotImplementedError, match="only reads old configs"):
        replaced_classes.RDISmallCNN().get_config()
