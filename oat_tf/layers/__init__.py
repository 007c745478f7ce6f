"""Keras 3 layers of oat_tf: λ encoding, FiLM, dual batch normalization and slimmable layers."""

from oat_tf.layers.dual_batch_norm import DualBatchNormalization
from oat_tf.layers.film import FiLM
from oat_tf.layers.lambda_encoding import CleanRoute
from oat_tf.layers.lambda_encoding import LambdaEncoder
from oat_tf.layers.lambda_encoding import encoding_matrix
from oat_tf.layers.slimmable import DEFAULT_WIDTHS
from oat_tf.layers.slimmable import slimmed_channels
from oat_tf.layers.slimmable_conv import SlimmableConv2D
from oat_tf.layers.slimmable_dense import SlimmableDense
from oat_tf.layers.slimmable_film import SlimmableFiLM
from oat_tf.layers.switchable_batch_norm import SwitchableBatchNormalization
from oat_tf.layers.switchable_batch_norm import SwitchableDualBatchNormalization

__all__ = [
    "CleanRoute",
    "DEFAULT_WIDTHS",
    "DualBatchNormalization",
    "FiLM",
    "LambdaEncoder",
    "SlimmableConv2D",
    "SlimmableDense",
    "SlimmableFiLM",
    "SwitchableBatchNormalization",
    "SwitchableDualBatchNormalization",
    "encoding_matrix",
    "slimmed_channels",
]
