"""Training: one adversarial trainer with the OAT, mixed-batch and multi-exit objectives, λ sampling, optimizer, checkpoints, runs."""

from oat_tf.training.adversarial_trainer import AdversarialTrainer
from oat_tf.training.adversarial_trainer import MultiExitTrainer
from oat_tf.training.adversarial_trainer import OATSTrainer
from oat_tf.training.adversarial_trainer import OATTrainer
from oat_tf.training.lambda_sampling import LambdaBatch
from oat_tf.training.lambda_sampling import LambdaSampler
from oat_tf.training.objectives import MixedBatchObjective
from oat_tf.training.objectives import MultiExitHybridObjective
from oat_tf.training.objectives import OATObjective
from oat_tf.training.optimizers import SGDWithL2
from oat_tf.training.optimizers import make_optimizer

__all__ = [
    "AdversarialTrainer",
    "LambdaBatch",
    "LambdaSampler",
    "MixedBatchObjective",
    "MultiExitHybridObjective",
    "MultiExitTrainer",
    "OATObjective",
    "OATSTrainer",
    "OATTrainer",
    "SGDWithL2",
    "make_optimizer",
]
