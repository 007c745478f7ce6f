"""Slimmable FiLM: the γ/β generator of width α produces α·C channels."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from oat_tf.layers import film
from oat_tf.layers import slimmable


@keras.saving.register_keras_serializable(package="oat_tf")
class SlimmableFiLM(film.FiLM):
    """A `FiLM` layer whose generator is slimmed with the width of its features.

    The weights are those of a full-width `FiLM` (code → `hidden_multiplier`·2C
    → Leaky ReLU → 2C, split into γ and β). At width α, with `C(α) =
    slimmable.slimmed_channels(C, α)`, the generator uses the first
    `hidden_multiplier`·2C(α) hidden units and, of the output layer, the
    columns of the first C(α) values of γ and of the first C(α) values of β
    (columns `[:C(α)]` and `[C:C + C(α)]`), so γ and β of width α are the
    leading channels of the full-width γ and β given the same hidden units.
    At width 1.0 the layer is exactly a `FiLM` with the same weights. (The
    OATS reference code slices the first 2C(α) output units instead, which
    makes its β at a narrow width come from units of the full-width γ.)

    Args:
        widths: sequence of float in (0, 1] containing 1.0.
        hidden_multiplier: int, width of the hidden layer in units of 2C.
        negative_slope: float, slope of the Leaky ReLUs.
        activate_outputs: bool, apply Leaky ReLU to γ and β (reference code).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor [N, ..., C(α)], the normalised features.
        condition: tensor [N, d], the λ code (not slimmed).
        width: Python float from `widths` (keyword only), default 1.0.

    Returns:
        tensor shaped like `inputs`.

    Reference:
    - Wang et al., Once-for-All Adversarial Training, NeurIPS 2020, §3.3 (OATS).
    """

    def __init__(
        self,
        widths: Sequence[float] = slimmable.DEFAULT_WIDTHS,
        hidden_multiplier: int = 1,
        negative_slope: float = 0.01,
        activate_outputs: bool = True,
        **kwargs,
    ):
        super().__init__(
            hidden_multiplier=hidden_multiplier,
            negative_slope=negative_slope,
            activate_outputs=activate_outputs,
            **kwargs,
        )
        self.widths = slimmable.check_widths(widths)

    def __call__(self, inputs, *args, width=None, **kwargs):
        width = slimmable.check_width(width, self.widths)
        slimmable.check_built_at_full_width(self, width)
        return super().__call__(inputs, *args, width=width, **kwargs)

    def modulation(self, condition, width=None):
        """Returns (γ, β), each [N, C(α)], for a code [N, d] at `width`."""
        width = slimmable.check_width(width, self.widths)
        channels = slimmable.slimmed_channels(self.channels, width)
        if channels == self.channels:
            return super().modulation(condition)
        hidden_units = 2 * channels * self.hidden_multiplier
        condition = tf.cast(condition, self.compute_dtype)
        hidden = tf.matmul(condition, self.hidden_kernel[:, :hidden_units])
        hidden = hidden + self.hidden_bias[:hidden_units]
        hidden = tf.nn.leaky_relu(hidden, alpha=self.negative_slope)
        # Rows: the hidden units of this width. Columns: the first C(α) of γ
        # (columns [0, C)) and the first C(α) of β (columns [C, 2C)).
        rows = self.output_kernel[:hidden_units]
        beta_start = self.channels
        beta_stop = beta_start + channels
        gamma = tf.matmul(hidden, rows[:, :channels]) + self.output_bias[:channels]
        beta = tf.matmul(hidden, rows[:, beta_start:beta_stop])
        beta = beta + self.output_bias[beta_start:beta_stop]
        if self.activate_outputs:
            gamma = tf.nn.leaky_relu(gamma, alpha=self.negative_slope)
            beta = tf.nn.leaky_relu(beta, alpha=self.negative_slope)
        return gamma, beta

    def call(self, inputs, condition, *, width=None):
        width = slimmable.check_width(width, self.widths)
        channels = slimmable.slimmed_channels(self.channels, width)
        slimmable.check_channels(self, inputs.shape[-1], channels, width)
        gamma, beta = self.modulation(condition, width=width)
        shape = tf.concat(
            [tf.shape(gamma)[:1], tf.ones([len(inputs.shape) - 2], "int32"), [channels]],
            axis=0,
        )
        return inputs * tf.reshape(gamma, shape) + tf.reshape(beta, shape)

    def get_config(self):
        config = super().get_config()
        config["widths"] = list(self.widths)
        return config
