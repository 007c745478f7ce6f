"""Keras configs of network classes that were replaced, rebuilt as their replacements.

Until oat_tf 0.1.0 at commit 3097a56 the RDI-Nets were the classes
`RDISmallCNN`, `RDIResNet38` and `RDIMobileNetV2`. A `.keras` file, or a
trainer config, written then names them (`"oat_tf>RDISmallCNN"`, ...). Each is
registered here under its old name with a `from_config` that builds the same
network with `rdi_networks` (the old constructor arguments are the builders'
arguments): the layer names are the same, so `keras.models.load_model` loads
the file's weights into it and the network computes what the old class did.
Nothing new is written under these names.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

import keras

from oat_tf.models import multi_exit_network
from oat_tf.models import rdi_networks


class _ReplacedClass:
    """A name old configs use; `from_config` builds its replacement."""

    build: Callable[..., multi_exit_network.MultiExitNetwork]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> multi_exit_network.MultiExitNetwork:
        arguments = dict(config)
        trainable = arguments.pop("trainable", True)
        network = cls.build(**arguments)
        network.trainable = trainable
        return network

    def get_config(self) -> Dict[str, Any]:  # Required to register; never instantiated.
        raise NotImplementedError(f"{type(self).__name__} only reads old configs.")


@keras.saving.register_keras_serializable(package="oat_tf", name="RDISmallCNN")
class RDISmallCNN(_ReplacedClass):
    """The RDI-SmallCNN class of oat_tf ≤ 3097a56: `rdi_networks.rdi_small_cnn`."""

    build = staticmethod(rdi_networks.rdi_small_cnn)


@keras.saving.register_keras_serializable(package="oat_tf", name="RDIResNet38")
class RDIResNet38(_ReplacedClass):
    """The RDI-ResNet-38 class of oat_tf ≤ 3097a56: `rdi_networks.rdi_resnet38`."""

    build = staticmethod(rdi_networks.rdi_resnet38)


@keras.saving.register_keras_serializable(package="oat_tf", name="RDIMobileNetV2")
class RDIMobileNetV2(_ReplacedClass):
    """The RDI-MobileNetV2 class of oat_tf ≤ 3097a56: `rdi_networks.rdi_mobilenet_v2`."""

    build = staticmethod(rdi_networks.rdi_mobilenet_v2)
