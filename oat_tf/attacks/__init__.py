"""L∞ attacks (PGD, FGSM, MI-FGSM) and their parts; see `oat_tf.attacks.pgd`."""

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

__all__ = [
    "LogitsFn",
    "LossFn",
    "Seed",
    "fgsm",
    "input_gradient",
    "linf_random_start",
    "mi_fgsm",
    "momentum_sign_step",
    "pgd_linf",
    "project_linf",
    "restart_seeds",
    "run_attack",
    "sign_step",
    "sparse_cross_entropy",
]
