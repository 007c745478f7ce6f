"""Training: the OAT, OATS and multi-exit trainers, λ sampling, optimizer, checkpoints, runs."""

from oat_tf.training.lambda_sampling import LambdaBatch
from oat_tf.training.lambda_sampling import LambdaSampler
from oat_tf.training.multi_exit_model import MultiExitTrainer
from oat_tf.training.oat_model import OATTrainer
from oat_tf.training.oats_model import OATSTrainer
from oat_tf.training.optimizers import SGDWithL2
from oat_tf.training.optimizers import make_optimizer

__all__ = [
    "LambdaBatch",
    "LambdaSampler",
    "MultiExitTrainer",
    "OATSTrainer",
    "OATTrainer",
    "SGDWithL2",
    "make_optimizer",
]
