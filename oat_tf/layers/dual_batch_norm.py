"""Dual batch normalization: clean and adversarial statistics, routed per sample."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Tuple

import keras
import tensorflow as tf

CLEAN = 0
ADVERSARIAL = 1

_updates = threading.local()


@contextlib.contextmanager
def moving_statistics_updates(*, clean: bool = True, adversarial: bool = True) -> Iterator[None]:
    """Chooses which groups' moving statistics training-mode calls update.

    Inside the context, `DualBatchNormalization` layers called with
    `training=True` still normalise every sample with its group's batch
    moments, but only the named groups' moving statistics are updated. OAT
    uses it for its clean pass: the clean images of λ ≠ 0 samples are
    normalised by the adversarial group and must not pull that group's moving
    statistics (used by the training attack and at test time) towards clean
    statistics. The choice is read when the layer is called (at trace time
    inside `tf.function`) and is local to the calling thread, so each replica
    of a `tf.distribute` strategy sees its own.

    Args:
        clean: bool, update the clean group's moving statistics.
        adversarial: bool, update the adversarial group's moving statistics.

    Yields:
        None.
    """
    previous = _updated_groups()
    _updates.groups = (bool(clean), bool(adversarial))
    try:
        yield
    finally:
        _updates.groups = previous


def _updated_groups() -> Tuple[bool, bool]:
    return getattr(_updates, "groups", (True, True))


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
    statistics unchanged, and so does a group whose updates are switched off
    by `moving_statistics_updates`. Under a `tf.distribute` strategy with several
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
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor [N, ..., C], channels last.
        clean: bool tensor [N], True for samples routed to the clean group.
        training: bool, use batch statistics and update the moving ones.

    Returns:
        tensor shaped like `inputs`.

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

    def build(self, inputs_shape, clean_shape):
        channels = inputs_shape[-1]
        if channels is None:
            raise ValueError(
                "`inputs` must have a known channel (last) dimension. "
                f"Received: inputs_shape={inputs_shape}"
            )
        shape = (2, int(channels))
        self.gamma = (
            self.add_weight(name="gamma", shape=shape, initializer="ones")
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight(name="beta", shape=shape, initializer="zeros")
            if self.center
            else None
        )
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=shape, initializer="zeros", trainable=False
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=shape, initializer="ones", trainable=False
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

    def call(self, inputs, clean, training=None):
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
            updated = tf.constant([[flag] for flag in _updated_groups()])
            present = tf.logical_and((counts > 0.0)[:, None], updated)
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
                    self.moving_variance * self.momentum
                    + variance * (1.0 - self.momentum),
                    self.moving_variance,
                )
            )
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            variance = tf.convert_to_tensor(self.moving_variance)

        inv = tf.math.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            inv = inv * tf.cast(self.gamma, "float32")
        offset = -mean * inv
        if self.beta is not None:
            offset = offset + tf.cast(self.beta, "float32")
        outputs = x * self._per_sample(inv, route_one_hot, x) + self._per_sample(
            offset, route_one_hot, x
        )
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, inputs_shape, clean_shape):
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
            }
        )
        return config
