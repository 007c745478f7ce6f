"""A plain Keras 3 network rebuilt as a tf_keras (Keras 2) functional model, and back.

TensorFlow Model Optimization (TFMOT) prunes and quantizes only tf_keras
Sequential and functional models. `to_tf_keras` rebuilds the graph of a plain
oat_tf network from its image input to its logits with the tf_keras layer of
every Keras 3 layer (same names, same hyperparameters), and `copy_weights`
moves weights between the two by layer name, in either direction.

Only the image input is carried over: a plain network ignores its "lambda"
input, and a graph that reads it (FiLM, dual BN) is refused. A multi-exit
network is reduced to its backbone first (`plain_backbone`): the layers on the
path to its "final" output, without the side exits.

This module imports tf_keras but never TFMOT (which sets TF_USE_LEGACY_KERAS=1
for its whole process); `oat_tf.compress` is the only place that does.
"""

from __future__ import annotations

from typing import Any, Dict, List

import keras
import tf_keras

from oat_tf.models import multi_exit

IMAGE_INPUT = "image"

# Keras 3 layer class → (tf_keras class, the config keys it is rebuilt from).
_CONV_KEYS = ("kernel_size", "strides", "padding", "dilation_rate", "use_bias", "activation", "data_format")
_POOL_KEYS = ("pool_size", "strides", "padding", "data_format")
_LAYERS: Dict[str, tuple] = {
    "Conv2D": (tf_keras.layers.Conv2D, ("filters", "groups") + _CONV_KEYS),
    "DepthwiseConv2D": (tf_keras.layers.DepthwiseConv2D, ("depth_multiplier",) + _CONV_KEYS),
    "Dense": (tf_keras.layers.Dense, ("units", "activation", "use_bias")),
    "BatchNormalization": (tf_keras.layers.BatchNormalization, ("axis", "momentum", "epsilon", "center", "scale")),
    "ReLU": (tf_keras.layers.ReLU, ("max_value", "negative_slope", "threshold")),
    "Activation": (tf_keras.layers.Activation, ("activation",)),
    "MaxPooling2D": (tf_keras.layers.MaxPooling2D, _POOL_KEYS),
    "AveragePooling2D": (tf_keras.layers.AveragePooling2D, _POOL_KEYS),
    "GlobalAveragePooling2D": (tf_keras.layers.GlobalAveragePooling2D, ("data_format", "keepdims")),
    "Flatten": (tf_keras.layers.Flatten, ("data_format",)),
    "Dropout": (tf_keras.layers.Dropout, ("rate", "seed")),
    "ZeroPadding2D": (tf_keras.layers.ZeroPadding2D, ("padding", "data_format")),
    "Add": (tf_keras.layers.Add, ()),
}
# Layers that pass their input through unchanged.
_IDENTITY_LAYERS = ("Identity",)
SUPPORTED_LAYERS = tuple(sorted(set(_LAYERS) | set(_IDENTITY_LAYERS) | {"InputLayer"}))

# The layers whose kernels pruning thins (and whose MACs scale with their density).
PRUNABLE_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")


def plain_backbone(network: keras.Model) -> keras.Model:
    """The network from its inputs to its classifier logits, without side exits.

    Args:
        network: keras.Model, a built oat_tf network (functional), single- or
            multi-exit.

    Returns:
        keras.Model with the network's inputs and one output, the logits
        [N, K] (the "final" output of a multi-exit network); it shares the
        network's layers and weights.

    Raises:
        ValueError: `network` is not a functional model.
    """
    if not hasattr(network, "_nodes_by_depth"):
        raise ValueError(
            "`network` must be a functional keras.Model (an oat_tf network). "
            f"Received: {type(network).__name__}"
        )
    output = network.output
    if isinstance(output, dict):
        if multi_exit.FINAL_OUTPUT_NAME not in output:
            raise ValueError(
                f"A multi-exit `network` must have a {multi_exit.FINAL_OUTPUT_NAME!r} output. "
                f"Received outputs: {sorted(output)}"
            )
        return keras.Model(network.input, output[multi_exit.FINAL_OUTPUT_NAME], name=f"{network.name}_backbone")
    return network


def _producers(model: keras.Model) -> Dict[int, keras.layers.Layer]:
    """Maps id(output KerasTensor) → the layer that produced it, for every layer of `model`."""
    producers: Dict[int, keras.layers.Layer] = {}
    for layer in model.layers:
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        for tensor in outputs:
            producers[id(tensor)] = layer
    return producers


def _layer_kwargs(layer: keras.layers.Layer, keys: tuple) -> Dict[str, Any]:
    """The tf_keras constructor arguments of `layer`: its config's `keys` plus its name."""
    config = layer.get_config()
    kwargs = {key: config[key] for key in keys if key in config}
    kwargs["name"] = layer.name
    return kwargs


def to_tf_keras(model: keras.Model) -> tf_keras.Model:
    """Rebuilds a plain Keras 3 network as a tf_keras functional model (weights not copied).

    Args:
        model: keras.Model with one output, the logits (`plain_backbone` of
            a network), and an input named "image"; every layer on the path
            from the image to the logits must be one of `SUPPORTED_LAYERS`.

    Returns:
        tf_keras.Model taking images [N, H, W, C] (float32 in [0, 1]) and
        returning logits [N, K], with the same layer names as `model`. Its
        weights are freshly initialised: copy them with `copy_weights`.

    Raises:
        ValueError: `model` has no "image" input, several outputs, a layer that
            reads any other input (e.g. λ through FiLM), a layer used more than
            once, or a layer type outside `SUPPORTED_LAYERS`.
    """
    inputs = model.input if isinstance(model.input, dict) else {IMAGE_INPUT: model.input}
    if IMAGE_INPUT not in inputs:
        raise ValueError(f"`model` must have an input named {IMAGE_INPUT!r}. Received inputs: {sorted(inputs)}")
    if isinstance(model.output, (dict, list, tuple)):
        raise ValueError("`model` must have one output, the logits; reduce it with `plain_backbone` first.")
    image = inputs[IMAGE_INPUT]
    other_inputs = {id(tensor): name for name, tensor in inputs.items() if name != IMAGE_INPUT}
    producers = _producers(model)
    converted: Dict[int, Any] = {
        id(image): tf_keras.Input(shape=tuple(image.shape[1:]), dtype="float32", name=IMAGE_INPUT)
    }

    def convert(tensor) -> Any:
        if id(tensor) in converted:
            return converted[id(tensor)]
        if id(tensor) in other_inputs:
            raise ValueError(
                f"`model` reads its {other_inputs[id(tensor)]!r} input on the way to its logits: only "
                "plain networks (variant 'plain', which ignore λ) can be rebuilt in tf_keras."
            )
        layer = producers.get(id(tensor))
        if layer is None:
            raise ValueError(f"Tensor {tensor.name!r} of `model` has no producing layer.")
        if len(getattr(layer, "_inbound_nodes", ())) > 1:
            raise ValueError(f"Layer {layer.name!r} is used more than once; shared layers are not supported.")
        kind = type(layer).__name__
        if kind not in _LAYERS and kind not in _IDENTITY_LAYERS:
            raise ValueError(
                f"Layer {layer.name!r} of type {kind} has no tf_keras counterpart here. "
                f"Supported: {', '.join(SUPPORTED_LAYERS)}"
            )
        layer_inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        arguments: List[Any] = [convert(t) for t in layer_inputs]
        if kind in _IDENTITY_LAYERS:
            result = arguments[0]
        else:
            cls, keys = _LAYERS[kind]
            built = cls(**_layer_kwargs(layer, keys))
            result = built(arguments if kind == "Add" else arguments[0])
        converted[id(tensor)] = result
        return result

    logits = convert(model.output)
    return tf_keras.Model(converted[id(image)], logits, name=model.name)


def _named_weighted_layers(model: Any) -> Dict[str, Any]:
    """Layers of `model` that hold weights, by name (names must be unique)."""
    layers: Dict[str, Any] = {}
    for layer in model.layers:
        if layer.weights:
            if layer.name in layers:
                raise ValueError(f"Two layers of {model.name!r} are named {layer.name!r}.")
            layers[layer.name] = layer
    return layers


def copy_weights(source: Any, target: Any) -> List[str]:
    """Copies every weighted layer's weights from `source` to `target`, matched by name.

    Works between Keras 3 and tf_keras models in either direction: both order a
    Conv2D's, Dense's and BatchNormalization's weights the same way (kernel,
    bias; gamma, beta, moving mean, moving variance).

    Args:
        source: keras.Model or tf_keras.Model to read.
        target: keras.Model or tf_keras.Model to write; every weighted layer of
            `target` must have a namesake in `source` with weights of the same
            shapes (`source` may have more layers, e.g. side exits).

    Returns:
        list of str, the names of the layers copied, in `target`'s order.

    Raises:
        ValueError: a weighted layer of `target` has no namesake in `source`,
            or their weights differ in number or shape.
    """
    sources = _named_weighted_layers(source)
    copied = []
    for name, layer in _named_weighted_layers(target).items():
        if name not in sources:
            raise ValueError(f"Layer {name!r} of {target.name!r} has no namesake in {source.name!r}.")
        weights = sources[name].get_weights()
        expected = [tuple(w.shape) for w in layer.get_weights()]
        received = [tuple(w.shape) for w in weights]
        if expected != received:
            raise ValueError(
                f"Layer {name!r}: weights of shapes {expected} expected in {target.name!r}, "
                f"{received} received from {source.name!r}."
            )
        layer.set_weights(weights)
        copied.append(name)
    return copied
