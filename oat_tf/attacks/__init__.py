"""L∞ attacks (PGD, FGSM, MI-FGSM, APGD-CE/DLR/T, FAB-T, Square, AutoAttack) and their parts.

The attacks are reached by module (`pgd.pgd_linf`, `apgd.apgd`,
`apgd.apgd_targeted`, `fab.fab_targeted`, `square.square_linf`,
`autoattack.autoattack`) or through `registry.run_attack(AttackConfig, ...)`;
they are built from the parts in `core`. The attack forms on multi-exit
networks are in `multi_exit` (`multi_exit_attack`, `delay_exit_attack`).
"""

from oat_tf.attacks.apgd import apgd_targeted
from oat_tf.attacks.apgd import dlr_loss
from oat_tf.attacks.apgd import targeted_dlr_loss
from oat_tf.attacks.core import LogitsFn
from oat_tf.attacks.core import Seed
from oat_tf.attacks.core import input_gradient
from oat_tf.attacks.core import linf_random_start
from oat_tf.attacks.core import momentum_sign_step
from oat_tf.attacks.core import project_linf
from oat_tf.attacks.core import restart_seeds
from oat_tf.attacks.core import sign_step
from oat_tf.attacks.losses import LossFn
from oat_tf.attacks.losses import sparse_cross_entropy
from oat_tf.attacks.multi_exit import FORMS as MULTI_EXIT_FORMS
from oat_tf.attacks.multi_exit import delay_exit_attack
from oat_tf.attacks.multi_exit import multi_exit_attack
from oat_tf.attacks.pgd import fgsm
from oat_tf.attacks.pgd import fgsm_objective
from oat_tf.attacks.pgd import mi_fgsm
from oat_tf.attacks.pgd import pgd_linf
from oat_tf.attacks.pgd import pgd_objective
from oat_tf.attacks.registry import run_attack
from oat_tf.attacks.square import margin_loss
from oat_tf.attacks.square import square_linf

__all__ = [
    "LogitsFn",
    "LossFn",
    "MULTI_EXIT_FORMS",
    "Seed",
    "apgd_targeted",
    "delay_exit_attack",
    "dlr_loss",
    "fgsm",
    "fgsm_objective",
    "input_gradient",
    "linf_random_start",
    "margin_loss",
    "mi_fgsm",
    "momentum_sign_step",
    "multi_exit_attack",
    "pgd_linf",
    "pgd_objective",
    "project_linf",
    "restart_seeds",
    "run_attack",
    "sign_step",
    "sparse_cross_entropy",
    "square_linf",
    "targeted_dlr_loss",
]
