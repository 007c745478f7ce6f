"""Keras 3 layers of oat_tf: λ encoding, FiLM and dual batch normalization."""

from oat_tf.layers.dual_batch_norm import DualBatchNormalization
from oat_tf.layers.film import FiLM
from oat_tf.layers.lambda_encoding import CleanRoute
from oat_tf.layers.lambda_encoding import LambdaEncoder
from oat_tf.layers.lambda_encoding import encoding_matrix

__all__ = [
    "CleanRoute",
    "DualBatchNormalization",
    "FiLM",
    "LambdaEncoder",
    "encoding_matrix",
]
