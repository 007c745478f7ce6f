"""Clean and adversarial accuracy over λ grids (their reports: `oat_tf.reporting`)."""

from oat_tf.evaluation.results import strongest_attack
from oat_tf.evaluation.robust_eval import evaluate_lambda_grid
from oat_tf.evaluation.robust_eval import lambda_key
from oat_tf.evaluation.tables import format_table

__all__ = [
    "evaluate_lambda_grid",
    "format_table",
    "lambda_key",
    "strongest_attack",
]
