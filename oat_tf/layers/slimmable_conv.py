"""Slimmable 2D convolution: one kernel, the first α·C channels at width α."""

from __future__ import annotations

from typing import Sequence

import keras

from oat_tf.layers import slimmable


@keras.saving.register_keras_serializable(package="oat_tf")
class SlimmableConv2D(slimmable.SlimmableKernelMixin, keras.layers.Conv2D):
    """A `Conv2D` whose width is chosen per call from a fixed list.

    The layer holds one full-width kernel [kh, kw, C_in, filters]. At width α
    it convolves with `kernel[:, :, :C_in(α), :C_out(α)]` (and `bias[:C_out(α)]`)
    through `Conv2D.convolution_op`, where `C(α) = slimmable.slimmed_channels(C,
    α)` for a slimmed axis and `C` otherwise. At width 1.0 it is exactly a
    `Conv2D` with the same weights. The width is a static Python float, so
    each width is its own trace with static shapes (XLA-friendly); nothing is
    stored between calls. The layer is built with full-width shapes: call it
    first at width 1.0 unless its inputs are not slimmed.

    Args:
        filters: int, output channels at full width.
        kernel_size: int or tuple of 2 ints.
        widths: sequence of float in (0, 1] containing 1.0.
        slim_inputs: bool, the inputs have `C_in(α)` channels at width α
            (False for the first layer, whose inputs are the image channels).
        slim_outputs: bool, the outputs have `filters(α)` channels at width α
            (False for a layer whose outputs are the class logits).
        **kwargs: the other `keras.layers.Conv2D` arguments (`strides`,
            `padding`, `use_bias`, initializers, ...); `groups` must be 1 and
            `data_format` channels last.

    Call arguments:
        inputs: tensor [N, H, W, C_in(α)].
        width: Python float from `widths` (keyword only), default 1.0.

    Returns:
        tensor [N, H', W', filters(α)].

    Example:

    >>> conv = SlimmableConv2D(8, 3, padding="same", slim_inputs=False)
    >>> conv(np.zeros((2, 5, 5, 3)), width=1.0).shape
    (2, 5, 5, 8)
    >>> conv(np.zeros((2, 5, 5, 3)), width=0.5).shape
    (2, 5, 5, 4)

    Reference:
    - Yu et al., Slimmable Neural Networks, ICLR 2019.
    - Wang et al., Once-for-All Adversarial Training, NeurIPS 2020, §3.3 (OATS).
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        widths: Sequence[float] = slimmable.DEFAULT_WIDTHS,
        slim_inputs: bool = True,
        slim_outputs: bool = True,
        **kwargs,
    ):
        super().__init__(filters, kernel_size, **kwargs)
        if self.groups != 1:
            raise ValueError(
                f"`groups` must be 1 for a slimmable convolution. Received: groups={self.groups}"
            )
        if self.data_format != "channels_last":
            raise ValueError(
                "`data_format` must be 'channels_last' for a slimmable convolution. "
                f"Received: data_format={self.data_format!r}"
            )
        self._set_widths(widths, slim_inputs, slim_outputs)

    def build(self, input_shape):
        super().build(input_shape)
        # The channel count depends on the width: `call` checks it instead.
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, inputs, *, width=None):
        width = slimmable.check_width(width, self.widths)
        in_channels, out_channels = self.channels_at(width)
        slimmable.check_channels(self, inputs.shape[-1], in_channels, width)
        kernel = self.kernel
        if (in_channels, out_channels) != tuple(kernel.shape[-2:]):
            kernel = kernel[:, :, :in_channels, :out_channels]
        outputs = self.convolution_op(inputs, kernel)
        if self.use_bias:
            bias = self.bias[:out_channels]
            outputs = keras.ops.add(outputs, keras.ops.reshape(bias, (1, 1, 1, out_channels)))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_spec(self, inputs, *, width=None):
        width = slimmable.check_width(width, self.widths)
        shape = list(super().compute_output_shape(inputs.shape))
        if self.slim_outputs:
            shape[-1] = slimmable.slimmed_channels(self.filters, width)
        return keras.KerasTensor(tuple(shape), dtype=self.compute_dtype)

    def get_config(self):
        return slimmable.add_slimming_config(super().get_config(), self)
