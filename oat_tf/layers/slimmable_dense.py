"""Slimmable dense layer: one kernel, the first α·C units at width α."""

from __future__ import annotations

from typing import Sequence

import keras

from oat_tf.layers import slimmable


@keras.saving.register_keras_serializable(package="oat_tf")
class SlimmableDense(slimmable.SlimmableKernelMixin, keras.layers.Dense):
    """A `Dense` layer whose width is chosen per call from a fixed list.

    The layer holds one full-width kernel [C_in, units]. At width α it
    computes `inputs @ kernel[:C_in(α), :units(α)] + bias[:units(α)]`, where
    `C(α) = slimmable.slimmed_channels(C, α)` for a slimmed axis and `C`
    otherwise. At width 1.0 it is exactly a `Dense` with the same weights.
    The width is a static Python float, so each width is its own trace; the
    layer is built with full-width shapes (call it first at width 1.0 unless
    its inputs are not slimmed). Quantization is not supported.

    Args:
        units: int, output units at full width.
        widths: sequence of float in (0, 1] containing 1.0.
        slim_inputs: bool, the inputs have `C_in(α)` features at width α.
        slim_outputs: bool, the outputs have `units(α)` features at width α
            (False for the classifier, whose outputs are the class logits).
        **kwargs: the other `keras.layers.Dense` arguments.

    Call arguments:
        inputs: tensor [N, ..., C_in(α)].
        width: Python float from `widths` (keyword only), default 1.0.

    Returns:
        tensor [N, ..., units(α)].

    Example:

    >>> logits = SlimmableDense(10, slim_outputs=False)
    >>> logits(np.zeros((2, 64)), width=1.0).shape
    (2, 10)
    >>> logits(np.zeros((2, 32)), width=0.5).shape
    (2, 10)

    Reference:
    - Yu et al., Slimmable Neural Networks, ICLR 2019.
    """

    def __init__(
        self,
        units: int,
        widths: Sequence[float] = slimmable.DEFAULT_WIDTHS,
        slim_inputs: bool = True,
        slim_outputs: bool = True,
        **kwargs,
    ):
        if kwargs.get("quantization_config") is not None:
            raise ValueError(
                "`quantization_config` is not supported by SlimmableDense. "
                f"Received: quantization_config={kwargs['quantization_config']!r}"
            )
        super().__init__(units, **kwargs)
        self._set_widths(widths, slim_inputs, slim_outputs)

    def build(self, input_shape):
        super().build(input_shape)
        # The feature count depends on the width: `call` checks it instead.
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def quantize(self, mode=None, **kwargs):
        raise NotImplementedError("SlimmableDense does not support quantization.")

    def call(self, inputs, *, width=None):
        width = slimmable.check_width(width, self.widths)
        in_channels, out_channels = self.channels_at(width)
        slimmable.check_channels(self, inputs.shape[-1], in_channels, width)
        kernel = self.kernel
        if (in_channels, out_channels) != tuple(kernel.shape):
            kernel = kernel[:in_channels, :out_channels]
        outputs = keras.ops.matmul(inputs, kernel)
        if self.bias is not None:
            outputs = keras.ops.add(outputs, self.bias[:out_channels])
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_spec(self, inputs, *, width=None):
        width = slimmable.check_width(width, self.widths)
        shape = list(inputs.shape)
        shape[-1] = self.units
        if self.slim_outputs:
            shape[-1] = slimmable.slimmed_channels(self.units, width)
        return keras.KerasTensor(tuple(shape), dtype=self.compute_dtype)

    def get_config(self):
        return slimmable.add_slimming_config(super().get_config(), self)
