"""Dual batch normalization: clean and adversarial statistics, routed per sample."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import keras
import tensorflow as tf

CLEAN = 0
ADVERSARIAL = 1


def _all_reduce_sum(tensors):
    """Sums tensors over the replicas of the current strategy (no-op on one)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tensors)


@keras.saving.register_keras_serializable(package="oat_tf")
class DualBatchNormalization(keras.layers.Layer):
    """Batch normalization with two groups of statistics chosen per sample.

    Every sample is normalised with the statistics and affine parameters of
    its own group: group 0 ("clean", the samples with λ = 0 in OAT) or group 1
    ("adversarial", every λ ≠ 0). Both groups live in one layer as [2, C]
    weights. In training, each group's batch moments are computed from its own
    samples only (one-hot of the route, so shapes stay static and the layer
    compiles with XLA), and each group's moving statistics are updated only
    from its own samples; a group with no sample in the batch keeps its moving
    statistics unchanged, and a call with `update_statistics=False` changes
    neither group's (`unchanged_moving_statistics` keeps one group's across
    several passes). Under a `tf.distribute` strategy with several
    replicas the group sums and counts are all-reduced, so the moments are
    those of the global batch and every replica applies the same update.

    Moving statistics follow Keras: `moving = momentum·moving + (1 −
    momentum)·batch`, with the biased batch variance. The defaults (momentum
    0.9, epsilon 1e-5) are PyTorch's, as in the OAT reference code.

    Args:
        momentum: float, momentum of the moving statistics.
        epsilon: float, added to the variance.
        center: bool, learn β per group.
        scale: bool, learn γ per group.
        synchronized: bool, all-reduce the group moments across replicas.
        return_scale_shift: bool, return `(inputs, scale, shift)` instead of
            the normalised tensor: per-sample `scale` and `shift` [N, C] with
            `normalised = inputs · scale + shift` (broadcast over the other
            axes). A `FiLM` layer given that triple applies normalisation,
            group affine and modulation as one per-sample scale-and-shift
            (one pass over the features instead of two).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor [N, ..., C], channels last.
        clean: bool tensor [N], True for samples routed to the clean group.
        training: bool, use batch statistics and update the moving ones.
        update_statistics: bool (static), False to normalise a training call
            with batch moments without updating any moving statistic.

    Returns:
        tensor shaped like `inputs`; with `return_scale_shift`, the triple
        `(inputs, scale, shift)`, scale and shift float32 [N, C].

    Reference:
    - Xie et al., Adversarial Examples Improve Image Recognition, CVPR 2020.
    - Wang et al., Once-for-All Adversarial Training, NeurIPS 2020, §3.2.
    """

    def __init__(
        self,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        synchronized: bool = True,
        return_scale_shift: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"`momentum` must be in [0, 1]. Received: momentum={momentum}"
            )
        if epsilon <= 0.0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.synchronized = bool(synchronized)
        self.return_scale_shift = bool(return_scale_shift)

    def build(self, inputs_shape, clean_shape):
        channels = inputs_shape[-1]
        if channels is None:
            raise ValueError(
                "`inputs` must have a known channel (last) dimension. "
                f"Received: inputs_shape={inputs_shape}"
            )
        shape = (2, int(channels))
        # Statistics and affine stay float32 under a mixed-precision policy, as
        # in keras.layers.BatchNormalization: the layer computes in float32.
        self.gamma = (
            self.add_weight(name="gamma", shape=shape, initializer="ones", autocast=False)
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight(name="beta", shape=shape, initializer="zeros", autocast=False)
            if self.center
            else None
        )
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=shape, initializer="zeros", trainable=False, autocast=False
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=shape, initializer="ones", trainable=False, autocast=False
        )

    def _group_moments(self, x, route_one_hot, reduce_axes):
        """Returns per-group mean, variance [2, C] and sample counts [2]."""
        elements_per_sample = 1
        for axis in reduce_axes:
            elements_per_sample *= x.shape[axis]
        counts = tf.reduce_sum(route_one_hot, axis=0) * float(elements_per_sample)
        sums = tf.matmul(
            route_one_hot, tf.reduce_sum(x, axis=reduce_axes), transpose_a=True
        )
        if self.synchronized:
            sums, counts = _all_reduce_sum([sums, counts])
        safe_counts = tf.maximum(counts, 1.0)[:, None]
        mean = sums / safe_counts
        centered = x - self._per_sample(mean, route_one_hot, x)
        squares = tf.matmul(
            route_one_hot,
            tf.reduce_sum(tf.square(centered), axis=reduce_axes),
            transpose_a=True,
        )
        if self.synchronized:
            (squares,) = _all_reduce_sum([squares])
        variance = squares / safe_counts
        return mean, variance, counts

    @staticmethod
    def _per_sample(group_values, route_one_hot, like):
        """Broadcasts [2, C] group values to each sample: [N, 1, …, 1, C]."""
        values = tf.matmul(route_one_hot, group_values)
        shape = tf.concat(
            [tf.shape(values)[:1], tf.ones([len(like.shape) - 2], "int32"), tf.shape(values)[1:]],
            axis=0,
        )
        return tf.reshape(values, shape)

    def call(self, inputs, clean, training=None, update_statistics=True):
        x = tf.cast(inputs, "float32")
        clean = tf.reshape(tf.cast(clean, "bool"), [-1])
        route = tf.where(clean, CLEAN, ADVERSARIAL)
        route_one_hot = tf.one_hot(route, 2, dtype="float32")
        reduce_axes = list(range(1, len(inputs.shape) - 1))

        if training and self.trainable:
            if reduce_axes:
                mean, variance, counts = self._group_moments(x, route_one_hot, reduce_axes)
            else:
                mean, variance, counts = self._group_moments(
                    x[:, None, :], route_one_hot, [1]
                )
            if update_statistics:
                self._update_moving_statistics(mean, variance, counts)
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            variance = tf.convert_to_tensor(self.moving_variance)

        inv = tf.math.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            inv = inv * tf.cast(self.gamma, "float32")
        offset = -mean * inv
        if self.beta is not None:
            offset = offset + tf.cast(self.beta, "float32")
        if self.return_scale_shift:
            # Per-sample [N, C]: the caller (FiLM) folds its own affine in first.
            # A new tensor (not `inputs` itself), so the layer is a node of its own in a graph.
            return tf.identity(inputs), tf.matmul(route_one_hot, inv), tf.matmul(route_one_hot, offset)
        outputs = x * self._per_sample(inv, route_one_hot, x) + self._per_sample(
            offset, route_one_hot, x
        )
        return tf.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, mean, variance, counts):
        """Moves each group present in the batch towards its batch moments."""
        present = (counts > 0.0)[:, None]
        self.moving_mean.assign(
            tf.where(
                present,
                self.moving_mean * self.momentum + mean * (1.0 - self.momentum),
                self.moving_mean,
            )
        )
        self.moving_variance.assign(
            tf.where(
                present,
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum),
                self.moving_variance,
            )
        )

    def compute_output_shape(self, inputs_shape, clean_shape):
        if self.return_scale_shift:
            per_sample = (inputs_shape[0], inputs_shape[-1])
            return inputs_shape, per_sample, per_sample
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
                "synchronized": self.synchronized,
                "return_scale_shift": self.return_scale_shift,
            }
        )
        return config


@contextlib.contextmanager
def unchanged_moving_statistics(
    layers: Sequence[DualBatchNormalization], group: int
) -> Iterator[None]:
    """Restores one group's moving statistics of `layers` when the block ends.

    The training passes inside the block normalise with batch moments and
    update the moving statistics as usual; on exit, group `group`'s rows of
    every layer's moving mean and variance are set back to their values on
    entry, bit for bit, so the block's passes leave that group's statistics
    as they were. OAT's clean pass uses it for the adversarial group: the
    clean images of λ ≠ 0 samples are normalised by the adversarial group but
    must not pull its moving statistics (used by the training attack and at
    test time) towards clean statistics. The saving and restoring are
    ordinary reads and assignments of the layers' variables, in program
    order, so they hold in eager mode, inside `tf.function`, under XLA and in
    every replica of a `tf.distribute` strategy.

    Args:
        layers: the `DualBatchNormalization` layers to guard (see
            `layers_of`); empty for a network without one.
        group: CLEAN or ADVERSARIAL.

    Yields:
        None.
    """
    if group not in (CLEAN, ADVERSARIAL):
        raise ValueError(f"`group` must be CLEAN (0) or ADVERSARIAL (1). Received: group={group!r}")
    rows = tf.one_hot(group, 2, on_value=True, off_value=False)[:, None]
    saved = [
        (layer, tf.identity(layer.moving_mean), tf.identity(layer.moving_variance)) for layer in layers
    ]
    yield
    for layer, mean, variance in saved:
        layer.moving_mean.assign(tf.where(rows, mean, layer.moving_mean))
        layer.moving_variance.assign(tf.where(rows, variance, layer.moving_variance))


def layers_of(model) -> list:
    """Every `DualBatchNormalization` in `model`, nested ones (per-width BNs) included.

    Args:
        model: a Keras model or layer; any other callable has none.

    Returns:
        list of the built `DualBatchNormalization` layers, each once.
    """
    # Keras walks nested layers with `_flatten_layers` itself (`Model.layers`);
    # it has no public recursive form.
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return []
    return [
        layer
        for layer in flatten(include_self=True, recursive=True)
        if isinstance(layer, DualBatchNormalization) and layer.built
    ]
