"""Switchable batch normalization: private statistics for every width of a slimmable net.

`SwitchableDualBatchNormalization` (OATS) holds one `DualBatchNormalization`
per width, so 3 widths give 6 batch norms (clean and adversarial for each);
`SwitchableBatchNormalization` (the PGD-ATS baseline) holds one
`keras.layers.BatchNormalization` per width. The width is a static call
argument; each width's sublayer is the attribute `norm_<i>` (i-th entry of the
sorted `widths`), is named `width_<α>` and has `C(α) =
slimmable.slimmed_channels(C, α)` channels.
"""

from __future__ import annotations

from typing import Sequence

import keras

from oat_tf.layers import dual_batch_norm
from oat_tf.layers import slimmable


class _Switchable(keras.layers.Layer):
    """Common part: the width list, one normalisation sublayer per width."""

    def __init__(
        self,
        widths: Sequence[float] = slimmable.DEFAULT_WIDTHS,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        synchronized: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1]. Received: momentum={momentum}")
        if epsilon <= 0.0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon}")
        self.widths = slimmable.check_widths(widths)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.synchronized = bool(synchronized)
        # One attribute per sublayer rather than a list: tf.train.Checkpoint does
        # not reach layers inside Keras' tracked lists.
        for index, width in enumerate(self.widths):
            setattr(self, f"norm_{index}", self._make_norm(slimmable.width_name(width)))

    @property
    def norms(self) -> list:
        """The normalisation sublayers, one per width in the order of `widths`."""
        return [getattr(self, f"norm_{index}") for index in range(len(self.widths))]

    # The normalisation each width gets (a BatchNormalization-like class).
    norm_class = None

    def _make_norm(self, name: str) -> keras.layers.Layer:
        return self.norm_class(
            momentum=self.momentum,
            epsilon=self.epsilon,
            center=self.center,
            scale=self.scale,
            synchronized=self.synchronized,
            name=name,
        )

    def __call__(self, inputs, *args, width=None, **kwargs):
        width = slimmable.check_width(width, self.widths)
        slimmable.check_built_at_full_width(self, width)
        return super().__call__(inputs, *args, width=width, **kwargs)

    def norm_at(self, width: float) -> keras.layers.Layer:
        """Returns the normalisation sublayer of `width`."""
        return self.norms[slimmable.width_index(width, self.widths)]

    def _checked_norm(self, inputs, width):
        width = slimmable.check_width(width, self.widths)
        slimmable.check_channels(
            self, inputs.shape[-1], slimmable.slimmed_channels(self.channels, width), width
        )
        return self.norm_at(width)

    def _set_full_channels(self, inputs_shape):
        if inputs_shape[-1] is None:
            raise ValueError(
                "`inputs` must have a known channel (last) dimension. "
                f"Received: inputs_shape={inputs_shape}"
            )
        self.channels = int(inputs_shape[-1])

    def width_shape(self, inputs_shape, width: float) -> tuple:
        """Returns `inputs_shape` with the channel count of `width`."""
        return tuple(inputs_shape[:-1]) + (slimmable.slimmed_channels(self.channels, width),)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "widths": list(self.widths),
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
                "synchronized": self.synchronized,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="oat_tf")
class SwitchableBatchNormalization(_Switchable):
    """One `keras.layers.BatchNormalization` per width (PGD-ATS baseline).

    At width α the inputs have `C(α)` channels and are normalised by that
    width's own batch norm (`norms[i]`, named `width_<α>`), which is the only
    one whose moving statistics a training call updates. The batch norms are
    synchronized across replicas by default, as the plain oat_tf models use
    them, with PyTorch's momentum and epsilon. The layer is built with the
    full-width channel count C: call it first at width 1.0.

    Args:
        widths: sequence of float in (0, 1] containing 1.0.
        momentum: float, momentum of the moving statistics.
        epsilon: float, added to the variance.
        center: bool, learn β.
        scale: bool, learn γ.
        synchronized: bool, batch moments of the global batch under a
            `tf.distribute` strategy.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor [N, ..., C(α)], channels last.
        width: Python float from `widths` (keyword only), default 1.0.
        training: bool, use batch statistics and update the moving ones.

    Returns:
        tensor shaped like `inputs`.

    Reference:
    - Yu et al., Slimmable Neural Networks, ICLR 2019 (switchable BN).
    """

    norm_class = keras.layers.BatchNormalization

    def build(self, inputs_shape):
        self._set_full_channels(inputs_shape)
        for width, norm in zip(self.widths, self.norms):
            norm.build(self.width_shape(inputs_shape, width))

    def call(self, inputs, *, width=None, training=None):
        return self._checked_norm(inputs, width)(inputs, training=training)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape


@keras.saving.register_keras_serializable(package="oat_tf")
class SwitchableDualBatchNormalization(_Switchable):
    """One `DualBatchNormalization` per width: clean and adversarial BNs per width (OATS).

    At width α the inputs have `C(α)` channels and go to that width's
    `DualBatchNormalization` (`norms[i]`, named `width_<α>`, with [2, C(α)]
    weights), which routes every sample to its clean or adversarial group by
    the `clean` mask exactly as `DualBatchNormalization` does. A training call
    updates only the moving statistics of its own width, and within that width
    each group only from its own samples. The layer is built with the
    full-width channel count C: call it first at width 1.0.

    Args:
        widths: sequence of float in (0, 1] containing 1.0.
        momentum: float, momentum of the moving statistics.
        epsilon: float, added to the variance.
        center: bool, learn β per group.
        scale: bool, learn γ per group.
        synchronized: bool, all-reduce the group moments across replicas.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor [N, ..., C(α)], channels last.
        clean: bool tensor [N], True for samples routed to the clean group.
        width: Python float from `widths` (keyword only), default 1.0.
        training: bool, use batch statistics and update the moving ones.
        update_statistics: bool (static), False to leave the moving
            statistics unchanged in a training call.

    Returns:
        tensor shaped like `inputs`.

    Reference:
    - Wang et al., Once-for-All Adversarial Training, NeurIPS 2020, §3.3 (OATS).
    """

    norm_class = dual_batch_norm.DualBatchNormalization

    def build(self, inputs_shape, clean_shape):
        self._set_full_channels(inputs_shape)
        for width, norm in zip(self.widths, self.norms):
            norm.build(self.width_shape(inputs_shape, width), clean_shape)

    def call(self, inputs, clean, *, width=None, training=None, update_statistics=True):
        return self._checked_norm(inputs, width)(
            inputs, clean, training=training, update_statistics=update_statistics
        )

    def compute_output_shape(self, inputs_shape, clean_shape):
        return inputs_shape
