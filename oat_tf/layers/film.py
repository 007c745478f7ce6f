"""Feature-wise linear modulation (FiLM) conditioned on the λ code."""

from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="oat_tf")
class FiLM(keras.layers.Layer):
    """Channel-wise affine transform whose γ and β are generated from a code.

    As in the OAT reference code, one MLP maps the code to 2C values
    (code → `hidden_multiplier`·2C → Leaky ReLU → 2C), split into γ and β,
    and Leaky ReLU is applied to both; the layer returns `γ ⊙ h + β`,
    broadcast over every axis but the batch and the channel (last) axis.
    The MLP is initialised like PyTorch's `nn.Linear` (uniform in
    ±1/sqrt(fan_in)), matching the reference implementation.

    Args:
        hidden_multiplier: int, width of the hidden layer in units of 2C.
        negative_slope: float, slope of the Leaky ReLUs.
        activate_outputs: bool, apply Leaky ReLU to γ and β (reference code).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor [N, ..., C], the normalised features; or the triple
            `(features, scale, shift)` of a `DualBatchNormalization` with
            `return_scale_shift=True` (scale and shift [N, C]), normalised
            and modulated in one pass: `h · (scale ⊙ γ) + (shift ⊙ γ + β)`,
            which is `γ ⊙ (h · scale + shift) + β`.
        condition: tensor [N, d], the λ code.

    Returns:
        tensor shaped like `inputs`.

    Reference:
    - Perez et al., FiLM: Visual Reasoning with a General Conditioning Layer, 2018.
    - Wang et al., Once-for-All Adversarial Training, NeurIPS 2020, §3.1.
    """

    def __init__(
        self,
        hidden_multiplier: int = 1,
        negative_slope: float = 0.01,
        activate_outputs: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_multiplier < 1:
            raise ValueError(
                "`hidden_multiplier` must be a positive integer. "
                f"Received: hidden_multiplier={hidden_multiplier}"
            )
        self.hidden_multiplier = int(hidden_multiplier)
        self.negative_slope = float(negative_slope)
        self.activate_outputs = bool(activate_outputs)

    def _linear_weights(self, name: str, fan_in: int, units: int):
        bound = 1.0 / math.sqrt(fan_in)
        init = keras.initializers.RandomUniform(-bound, bound)
        kernel = self.add_weight(
            name=f"{name}_kernel", shape=(fan_in, units), initializer=init
        )
        bias = self.add_weight(name=f"{name}_bias", shape=(units,), initializer=init)
        return kernel, bias

    def build(self, inputs_shape, condition_shape):
        if _is_triple(inputs_shape):
            inputs_shape = inputs_shape[0]
        channels = inputs_shape[-1]
        code_dim = condition_shape[-1]
        if channels is None or code_dim is None:
            raise ValueError(
                "`inputs` and `condition` must have a known last dimension. "
                f"Received: inputs_shape={inputs_shape}, condition_shape={condition_shape}"
            )
        self.channels = int(channels)
        hidden = 2 * self.channels * self.hidden_multiplier
        self.hidden_kernel, self.hidden_bias = self._linear_weights(
            "hidden", int(code_dim), hidden
        )
        self.output_kernel, self.output_bias = self._linear_weights(
            "output", hidden, 2 * self.channels
        )

    def modulation(self, condition):
        """Returns (γ, β), each [N, C], for a code [N, d]."""
        condition = tf.cast(condition, self.compute_dtype)
        hidden = tf.matmul(condition, self.hidden_kernel) + self.hidden_bias
        hidden = tf.nn.leaky_relu(hidden, alpha=self.negative_slope)
        out = tf.matmul(hidden, self.output_kernel) + self.output_bias
        gamma, beta = tf.split(out, 2, axis=-1)
        if self.activate_outputs:
            gamma = tf.nn.leaky_relu(gamma, alpha=self.negative_slope)
            beta = tf.nn.leaky_relu(beta, alpha=self.negative_slope)
        return gamma, beta

    def call(self, inputs, condition):
        gamma, beta = self.modulation(condition)
        if isinstance(inputs, (tuple, list)):
            features, scale, shift = inputs
            gamma = tf.cast(gamma, "float32")
            beta = tf.cast(beta, "float32")
            scale, shift = scale * gamma, shift * gamma + beta
            x = tf.cast(features, "float32")
            outputs = x * self._broadcast(scale, x) + self._broadcast(shift, x)
            return tf.cast(outputs, self.compute_dtype)
        return inputs * self._broadcast(gamma, inputs) + self._broadcast(beta, inputs)

    def _broadcast(self, values, like):
        """Reshapes per-sample [N, C] values to [N, 1, …, 1, C] to broadcast over `like`."""
        shape = tf.concat(
            [tf.shape(values)[:1], tf.ones([len(like.shape) - 2], "int32"), [self.channels]],
            axis=0,
        )
        return tf.reshape(values, shape)

    def compute_output_shape(self, inputs_shape, condition_shape):
        return inputs_shape[0] if _is_triple(inputs_shape) else inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_multiplier": self.hidden_multiplier,
                "negative_slope": self.negative_slope,
                "activate_outputs": self.activate_outputs,
            }
        )
        return config


def _is_triple(shape) -> bool:
    """Whether `shape` is the shapes of a `(features, scale, shift)` triple."""
    return (
        isinstance(shape, (tuple, list))
        and len(shape) == 3
        and all(isinstance(part, (tuple, list, tf.TensorShape)) for part in shape)
    )
