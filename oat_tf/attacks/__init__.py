"""L∞ attacks (PGD, FGSM, MI-FGSM, APGD-CE/DLR, Square) and their parts.

The attacks are reached by module (`pgd.pgd_linf`, `apgd.apgd`,
`square.square_linf`) or through `run_attack(AttackConfig, ...)`.
"""

from oat_tf.attacks.apgd import dlr_loss
from oat_tf.attacks.losses import LossFn
from oat_tf.attacks.losses import sparse_cross_entropy
from oat_tf.attacks.pgd import LogitsFn
from oat_tf.attacks.pgd import Seed
from oat_tf.attacks.pgd import fgsm
from oat_tf.attacks.pgd import input_gradient
from oat_tf.attacks.pgd import linf_random_start
from oat_tf.attacks.pgd import mi_fgsm
from oat_tf.attacks.pgd import momentum_sign_step
from oat_tf.attacks.pgd import pgd_linf
from oat_tf.attacks.pgd import project_linf
from oat_tf.attacks.pgd import restart_seeds
from oat_tf.attacks.pgd import run_attack
from oat_tf.attacks.pgd import sign_step
from oat_tf.attacks.square import margin_loss
from oat_tf.attacks.square import square_linf

__all__ = [
    "LogitsFn",
    "LossFn",
    "Seed",
    "dlr_loss",
    "fgsm",
    "input_gradient",
    "linf_random_start",
    "margin_loss",
    "mi_fgsm",
    "momentum_sign_step",
    "pgd_linf",
    "project_linf",
    "restart_seeds",
    "run_attack",
    "sign_step",
    "sparse_cross_entropy",
    "square_linf",
]
