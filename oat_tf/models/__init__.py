"""oat_tf networks: dict inputs {"image", "lambda"}, logits out; plain, OAT, Mixture BN and slimmable (OATS) variants.

Multi-exit networks (`MultiExitNetwork`: a backbone plus `ExitBranch`es; the
RDI-Nets of `rdi_networks`) return a dict of logits {"exit_1", ..., "final"};
`oat_tf.models.multi_exit` cuts them into stages for early exit.

MAC and parameter counts live in `oat_tf.models.flops` (not re-exported; the
table command is `oat_tf.bench.flops_table`, `oat-flops-table`).
"""

from oat_tf.models.batch_statistics import BatchStatisticsModel
from oat_tf.models.batch_statistics import batch_statistics_model
from oat_tf.models.conditioning import Conditioning
from oat_tf.models.conditioning import VARIANTS
from oat_tf.models.conditioning import apply_lambda_conditioning
from oat_tf.models.conditioning import apply_normalization
from oat_tf.models.conditioning import model_inputs
from oat_tf.models.exit_branch import apply_exit_branch
from oat_tf.models.multi_exit import StageView
from oat_tf.models.multi_exit import backbone_macs
from oat_tf.models.multi_exit import exit_macs
from oat_tf.models.multi_exit import is_multi_exit
from oat_tf.models.multi_exit import output_names
from oat_tf.models.multi_exit import stage_views
from oat_tf.models.exit_branch import ExitBranch
from oat_tf.models.mobilenet_v2 import MobileNetV2
from oat_tf.models.multi_exit_network import MultiExitNetwork
from oat_tf.models.rdi_networks import rdi_mobilenet_v2
from oat_tf.models.rdi_networks import rdi_resnet38
from oat_tf.models.rdi_networks import rdi_small_cnn
from oat_tf.models import replaced_classes  # Registers the old RDI class names for old .keras files.
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
    "ExitBranch",
    "MobileNetV2",
    "MultiExitNetwork",
    "ResNet",
    "SLIMMABLE_VARIANTS",
    "SlimmableNetwork",
    "SlimmableResNet",
    "SlimmableSmallCNN",
    "SmallCNN",
    "StageView",
    "VARIANTS",
    "WideResNet",
    "apply_exit_branch",
    "apply_lambda_conditioning",
    "apply_normalization",
    "backbone_macs",
    "batch_statistics_model",
    "build_model",
    "exit_macs",
    "is_multi_exit",
    "model_inputs",
    "output_names",
    "parse_architecture",
    "rdi_mobilenet_v2",
    "rdi_resnet38",
    "rdi_small_cnn",
    "replaced_classes",
    "stage_views",
]
