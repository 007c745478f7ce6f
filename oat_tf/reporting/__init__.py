"""Reports, pages, plots and TensorBoard logs of evaluation results.

Above `oat_tf.evaluation`, which computes the numbers: this package only
formats and writes them (Markdown pages, JSON, PNG plots, TensorBoard
summaries), and holds the command-line tools that regenerate the committed
study pages (`study_report`, `where_oat_holds`, `seed_spread`,
`multi_exit_report`, `pruning_report`).
"""

from oat_tf.reporting.report import write_report
from oat_tf.reporting.report import write_scalars
from oat_tf.reporting.tensorboard_logging import log_evaluation

__all__ = [
    "log_evaluation",
    "write_report",
    "write_scalars",
]
