"""oat_tf networks: dict inputs {"image", "lambda"}, logits out; plain, OAT, Mixture BN and slimmable (OATS) variants.

MAC and parameter counts live in `oat_tf.models.flops` (not re-exported, so
`python -m oat_tf.models.flops` runs without a double import).
"""

from oat_tf.models.batch_statistics import BatchStatisticsModel
from oat_tf.models.batch_statistics import batch_statistics_model
from oat_tf.models.conditioning import Conditioning
from oat_tf.models.conditioning import VARIANTS
from oat_tf.models.conditioning import apply_lambda_conditioning
from oat_tf.models.conditioning import apply_normalization
from oat_tf.models.conditioning import model_inputs
from oat_tf.models.registry import build_model
from oat_tf.models.registry import parse_architecture
from oat_tf.models.resnet import ResNet
from oat_tf.models.slimmable_network import SLIMMABLE_VARIANTS
from oat_tf.models.slimmable_network import SlimmableNetwork
from oat_tf.models.slimmable_resnet import SlimmableResNet
from oat_tf.models.slimmable_small_cnn import SlimmableSmallCNN
from oat_tf.models.small_cnn import SmallCNN
from oat_tf.models.wide_resnet import WideResNet

__all__ = [
    "BatchStatisticsModel",
    "Conditioning",
    "ResNet",
    "SLIMMABLE_VARIANTS",
    "SlimmableNetwork",
    "SlimmableResNet",
    "SlimmableSmallCNN",
    "SmallCNN",
    "VARIANTS",
    "WideResNet",
    "apply_lambda_conditioning",
    "apply_normalization",
    "batch_statistics_model",
    "build_model",
    "model_inputs",
    "parse_architecture",
]
