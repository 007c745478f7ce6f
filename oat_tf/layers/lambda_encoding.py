"""Encoding of the loss weight λ into the code that feeds the FiLM generators."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

SCHEMES = ("rand", "dct", "onehot", "none")


def encoding_matrix(
    scheme: str, num_values: int, dim: int, seed: int = 0
) -> np.ndarray:
    """Returns the codes of the training values of λ, one row per value.

    Row n is the n-th column of a d×d matrix: random orthogonal (QR of a
    seeded Gaussian matrix, signs fixed so the factorisation is unique), the
    orthonormal DCT-II basis, or the identity.

    Args:
        scheme: str, "rand", "dct" or "onehot".
        num_values: int, number of training λ values (at most `dim`).
        dim: int, code dimension d.
        seed: int, seed of the Gaussian matrix for "rand".

    Returns:
        float32 array of shape [num_values, dim] with orthonormal rows.
    """
    if scheme not in ("rand", "dct", "onehot"):
        raise ValueError(
            f"`scheme` must be one of 'rand', 'dct', 'onehot' to build a matrix. "
            f"Received: scheme={scheme!r}"
        )
    if not 1 <= num_values <= dim:
        raise ValueError(
            f"`dim` must be at least the number of λ values ({num_values}). "
            f"Received: dim={dim}"
        )
    if scheme == "rand":
        gaussian = np.random.RandomState(seed).standard_normal((dim, dim))
        q, r = np.linalg.qr(gaussian)
        q = q * np.sign(np.diag(r))[None, :]
        columns = q
    elif scheme == "dct":
        k = np.arange(dim)[:, None]
        n = np.arange(dim)[None, :]
        basis = np.cos(math.pi * (2 * k + 1) * n / (2 * dim))
        basis[:, 0] *= math.sqrt(1.0 / dim)
        basis[:, 1:] *= math.sqrt(2.0 / dim)
        columns = basis
    else:
        columns = np.eye(dim)
    return columns[:, :num_values].T.astype(np.float32)


@keras.saving.register_keras_serializable(package="oat_tf")
class LambdaEncoder(keras.layers.Layer):
    """Maps a per-sample λ to the code of dimension d that conditions FiLM.

    The n-th training value of λ maps exactly to the n-th code (row of the
    encoding matrix). A λ between two training values is interpolated linearly
    between their codes; a λ below the smallest or above the largest training
    value takes the nearest end's code. With scheme "none" the code is λ
    itself (d = 1). The matrix is a non-trainable weight, so checkpoints and
    SavedModels carry it.

    Args:
        lambda_values: sequence of float in [0, 1], the training values of λ.
        scheme: str, "rand" (random orthogonal, the paper's RO-d), "dct",
            "onehot" or "none".
        dim: int, code dimension d (ignored for "none").
        seed: int, seed of the random orthogonal matrix.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: float tensor [N], λ per sample.

    Returns:
        float tensor [N, code_dim].

    Example:
    >>> encoder = LambdaEncoder([0.0, 0.5, 1.0], scheme="onehot", dim=3)
    >>> encoder(tf.constant([0.0, 0.25, 1.0]))  # [[1,0,0],[.5,.5,0],[0,0,1]]
    """

    def __init__(
        self,
        lambda_values: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0),
        scheme: str = "rand",
        dim: int = 128,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        values = sorted(set(float(v) for v in lambda_values))
        if not values or any(not (0.0 <= v <= 1.0) for v in values):
            raise ValueError(
                "`lambda_values` must be a non-empty list of numbers in [0, 1]. "
                f"Received: lambda_values={list(lambda_values)!r}"
            )
        if scheme not in SCHEMES:
            raise ValueError(
                f"`scheme` must be one of {SCHEMES}. Received: scheme={scheme!r}"
            )
        if scheme != "none" and dim < len(values):
            raise ValueError(
                f"`dim` must be at least the number of λ values ({len(values)}). "
                f"Received: dim={dim}"
            )
        self.lambda_values = tuple(values)
        self.scheme = scheme
        self.dim = int(dim)
        self.seed = int(seed)

    @property
    def code_dim(self) -> int:
        return 1 if self.scheme == "none" else self.dim

    def build(self, inputs_shape):
        if self.scheme != "none":
            matrix = encoding_matrix(
                self.scheme, len(self.lambda_values), self.dim, self.seed
            )
            self.encoding_matrix = self.add_weight(
                name="encoding_matrix",
                shape=matrix.shape,
                initializer=keras.initializers.Constant(matrix),
                trainable=False,
            )

    def call(self, inputs):
        lam = tf.cast(tf.reshape(inputs, [-1]), "float32")
        if self.scheme == "none":
            return tf.cast(lam[:, None], self.compute_dtype)
        values = tf.constant(self.lambda_values, dtype="float32")
        num = len(self.lambda_values)
        matrix = tf.cast(self.encoding_matrix, "float32")
        if num == 1:
            codes = tf.tile(matrix, [tf.shape(lam)[0], 1])
            return tf.cast(codes, self.compute_dtype)
        lam = tf.clip_by_value(lam, values[0], values[-1])
        # Index of the left neighbour: how many interior values are <= λ.
        left = tf.reduce_sum(
            tf.cast(lam[:, None] >= values[None, 1:-1], "int32"), axis=1
        )
        low = tf.gather(values, left)
        high = tf.gather(values, left + 1)
        t = (lam - low) / (high - low)
        codes = (1.0 - t)[:, None] * tf.gather(matrix, left) + t[:, None] * tf.gather(
            matrix, left + 1
        )
        return tf.cast(codes, self.compute_dtype)

    def compute_output_shape(self, inputs_shape):
        return (inputs_shape[0], self.code_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "lambda_values": list(self.lambda_values),
                "scheme": self.scheme,
                "dim": self.dim,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="oat_tf")
class CleanRoute(keras.layers.Layer):
    """Per-sample route of the dual batch norm: True where λ == 0.

    Samples with λ = 0 use the clean statistics, every other λ the adversarial
    ones (OAT paper §3.2), at training and at test time.

    Call arguments:
        inputs: float tensor [N], λ per sample.

    Returns:
        bool tensor [N].
    """

    def call(self, inputs):
        return tf.equal(tf.reshape(tf.cast(inputs, "float32"), [-1]), 0.0)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0],), dtype="bool")
