"""Batch statistics at test time: BN in training mode, moving statistics untouched.

Xie & Yuille (SPEC §4) find that making BN behave the same at training and
test time — normalising every test batch with its own moments instead of the
moving averages — raises robustness further. `batch_statistics_model(network)`
returns a view of a built functional network (a `BatchStatisticsModel`: it
shares every layer and variable, nothing is copied) in which

- every `keras.layers.BatchNormalization` normalises with the moments of the
  batch it is given (over every axis but the channel one, all-reduced across
  replicas when the layer is `synchronized`), with its own γ, β and ε;
- every `DualBatchNormalization` normalises each sample with its group's
  batch moments (the route still comes from λ), called with
  `update_statistics=False` so that neither group's moving statistics
  change;
- every other layer runs in inference mode (`training=False`): dropout is off.

So the output equals `network(inputs, training=True)` of a dropout-free
network, and no moving statistic changes. The `training` argument of the view
is ignored. For evaluation and (as an explicit option) export, call or trace
the view instead of the network. Results depend on the batch (its size and content), which is the
point of the mode; evaluate with batches as large as in training.

Example:
>>> view = batch_statistics_model(network)
>>> logits = view({"image": images, "lambda": lambdas})  # batch moments, stats unchanged
"""

from __future__ import annotations

import keras
from keras import ops

from oat_tf.layers import dual_batch_norm

_NORMALIZATIONS = (keras.layers.BatchNormalization, dual_batch_norm.DualBatchNormalization)


class BatchStatisticsNormalization(keras.layers.Layer):
    """Calls a batch normalization layer with batch moments and no statistics update.

    Shares the wrapped layer's variables; used by `batch_statistics_model` and
    not meant to be saved (it is not registered for serialization).

    Args:
        layer: a built `keras.layers.BatchNormalization` (no renorm) or
            `DualBatchNormalization`.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor [N, ..., C].
        *args: the wrapped layer's further arguments (the `clean` route of a
            `DualBatchNormalization`).
        training: ignored.
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs):
        if not isinstance(layer, _NORMALIZATIONS):
            raise ValueError(
                "`layer` must be a BatchNormalization or DualBatchNormalization. "
                f"Received: layer={type(layer).__name__}"
            )
        if isinstance(layer, keras.layers.BatchNormalization) and layer.renorm:
            raise ValueError(
                "`layer` must not use batch renormalization. "
                f"Received: layer={layer.name} with renorm=True"
            )
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs, *args, training=None, **kwargs):
        layer = self.layer
        if isinstance(layer, dual_batch_norm.DualBatchNormalization):
            if not layer.trainable:
                raise ValueError(
                    "`layer` must be trainable: a frozen DualBatchNormalization always "
                    f"uses its moving statistics. Received: layer={layer.name}"
                )
            return layer(inputs, *args, training=True, update_statistics=False, **kwargs)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axis = layer.axis if layer.axis >= 0 else len(x.shape) + layer.axis
        reduce_axes = [i for i in range(len(x.shape)) if i != axis]
        mean, variance = ops.moments(
            x, axes=reduce_axes, synchronized=layer.synchronized
        )
        outputs = ops.batch_normalization(
            x=x,
            mean=mean,
            variance=variance,
            axis=layer.axis,
            offset=ops.cast(layer.beta, x.dtype) if layer.center else None,
            scale=ops.cast(layer.gamma, x.dtype) if layer.scale else None,
            epsilon=layer.epsilon,
        )
        return ops.cast(outputs, layer.compute_dtype)

    def compute_output_shape(self, inputs_shape, *args, **kwargs):
        layer = self.layer
        if isinstance(layer, dual_batch_norm.DualBatchNormalization) and layer.return_scale_shift:
            # A dual BN feeding FiLM returns the features and per-sample scale and shift.
            per_sample = (inputs_shape[0], inputs_shape[-1])
            return inputs_shape, per_sample, per_sample
        return inputs_shape


class BatchStatisticsModel(keras.Model):
    """A network whose normalisations use the test batch's moments (see module doc).

    Shares every layer and variable of `network`. Every call runs the view
    with `training=False` whatever `training` it receives, so dropout is off
    and only the normalisations use batch moments; no moving statistic
    changes. Not meant to be saved (export `network`'s weights and rebuild).

    Args:
        network: a built functional keras.Model (SmallCNN, ResNet,
            WideResNet; slimmable networks are not functional).
        **kwargs: `keras.Model` keyword arguments.

    Call arguments:
        inputs: the inputs of `network` (`{"image", "lambda"}`).
        training: ignored.

    Returns:
        The outputs of `network` (logits).
    """

    def __init__(self, network: keras.Model, **kwargs):
        if not isinstance(network, keras.Model) or not hasattr(network, "_run_through_graph"):
            raise ValueError(
                "`network` must be a functional keras.Model (slimmable networks are not). "
                f"Received: network={type(network).__name__}"
            )
        kwargs.setdefault("name", f"{network.name}_batch_statistics")
        super().__init__(**kwargs)
        self.network = network
        self.view = keras.models.clone_model(
            network,
            clone_function=lambda layer: layer,
            call_function=_call_with_batch_statistics,
        )
        self.built = True

    def call(self, inputs, training=None):
        return self.view(inputs, training=False)


def batch_statistics_model(network: keras.Model) -> BatchStatisticsModel:
    """Returns a view of `network` whose normalisations use the test batch's moments.

    Args:
        network: a built functional keras.Model.

    Returns:
        A `BatchStatisticsModel` sharing `network`'s layers and variables:
        batch normalisations use batch moments and never update their moving
        statistics, every other layer runs with `training=False`.

    Raises:
        ValueError: if `network` is not a functional model.
    """
    return BatchStatisticsModel(network)


def _call_with_batch_statistics(layer, *args, **kwargs):
    """`clone_model` call function: normalisations go through the wrapper."""
    if isinstance(layer, _NORMALIZATIONS):
        kwargs.pop("training", None)
        wrapper = BatchStatisticsNormalization(layer, name=f"{layer.name}_batch_statistics")
        return wrapper(*args, **kwargs)
    return layer(*args, **kwargs)
