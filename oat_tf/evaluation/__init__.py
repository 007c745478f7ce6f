"""Clean and adversarial accuracy over λ grids, and their reports."""

from oat_tf.evaluation.report import format_table
from oat_tf.evaluation.report import write_report
from oat_tf.evaluation.report import write_scalars
from oat_tf.evaluation.results import strongest_attack
from oat_tf.evaluation.robust_eval import evaluate_lambda_grid
from oat_tf.evaluation.robust_eval import lambda_key
from oat_tf.evaluation.tensorboard_logging import log_evaluation

__all__ = [
    "evaluate_lambda_grid",
    "format_table",
    "lambda_key",
    "log_evaluation",
    "strongest_attack",
    "write_report",
    "write_scalars",
]
