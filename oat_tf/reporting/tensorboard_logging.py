"""TensorBoard summaries of a λ-grid evaluation: scalars, trade-off curves, plots, HParams.

`log_evaluation(result, log_dir, plot_paths=...)` writes, under `log_dir`:

- the per-λ scalars of `report.write_scalars` (`sa/lambda_<λ>`,
  `ra_<attack>/lambda_<λ>`, `worst_case/lambda_<λ>`) at step `step`;
- the trade-off curves with λ on the x axis: `trade_off/sa`,
  `trade_off/ra_<attack>` and `trade_off/worst_case`, one value per λ at
  **step = round(1000·λ)** (`trade_off_step`; λ = 0.05 is step 50, λ = 1 step
  1000), so the Scalars dashboard draws accuracy against λ (read the step
  axis as 1000·λ; λ closer than 0.001 share a step, which is logged);
- every plot as an image summary `plots/<name>` at step `step`;
- the HParams dashboard in `log_dir/hparams`: the experiment config (hparams
  `lambda` and `width`, metrics `sa`, `ra/<attack>`, `worst_case`) and one
  session per λ in `log_dir/hparams/lambda_<λ>` with those metrics at step 0.
  `width` is 1.0 (the full network) until slimmable (OATS) models fill it.

Values are fractions in [0, 1], exactly the result's. The directories are
this evaluation's own: a rerun removes the event files it wrote before
(`events.out.tfevents.*` in `log_dir`, `log_dir/hparams` and
`log_dir/hparams/lambda_*`), so a resumed evaluation leaves one value per tag
and step. View with `tensorboard --logdir <log_dir>`.
"""

from __future__ import annotations

import glob
import os
from typing import Mapping, Optional

import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hp

from oat_tf.evaluation import results as results_lib
from oat_tf.reporting import report

TRADE_OFF_STEPS_PER_UNIT = 1000
HPARAMS_DIR = "hparams"
EVENT_FILE_PATTERN = "events.out.tfevents.*"


def trade_off_step(lam: float) -> int:
    """Returns the summary step of λ on the trade-off curves: round(1000·λ)."""
    return int(round(TRADE_OFF_STEPS_PER_UNIT * float(lam)))


def session_name(key: str) -> str:
    """Returns the HParams session (run) directory name of a λ key."""
    return f"lambda_{key}"


def _remove_event_files(directory: str) -> None:
    for path in glob.glob(os.path.join(directory, EVENT_FILE_PATTERN)):
        if os.path.isfile(path):
            os.remove(path)


def clear_event_files(log_dir: str) -> None:
    """Removes the event files a previous `log_evaluation` wrote in `log_dir`."""
    _remove_event_files(log_dir)
    hparams_dir = os.path.join(log_dir, HPARAMS_DIR)
    _remove_event_files(hparams_dir)
    for session_dir in glob.glob(os.path.join(hparams_dir, session_name("*"))):
        _remove_event_files(session_dir)


def write_trade_off(result: dict, summary_writer: tf.summary.SummaryWriter) -> None:
    """Writes SA, RA per attack and worst case at step round(1000·λ).

    Args:
        result: dict, an evaluation result.
        summary_writer: tf.summary.SummaryWriter to write to.
    """
    results_lib.check_result(result)
    keys = results_lib.lambda_keys(result)
    steps = [trade_off_step(lam) for lam in result["lambdas"]]
    if len(set(steps)) != len(steps):
        logging.warning(
            "λ values closer than 1/%d share a trade-off step; TensorBoard shows one of them: %s",
            TRADE_OFF_STEPS_PER_UNIT, keys,
        )
    with summary_writer.as_default():
        for key, step in zip(keys, steps):
            tf.summary.scalar("trade_off/sa", result["clean_accuracy"][key], step=step)
            for label, values in result["robust_accuracy"].items():
                tf.summary.scalar(f"trade_off/ra_{label}", values[key], step=step)
            tf.summary.scalar("trade_off/worst_case", result["worst_case_accuracy"][key], step=step)
    summary_writer.flush()


def write_images(
    plot_paths: Mapping[str, str], summary_writer: tf.summary.SummaryWriter, step: int = 0
) -> None:
    """Writes PNG files as image summaries `plots/<name>`.

    Args:
        plot_paths: mapping {name: PNG path}.
        summary_writer: tf.summary.SummaryWriter to write to.
        step: int, the summary step.
    """
    with summary_writer.as_default():
        for name, path in plot_paths.items():
            pixels = tf.io.decode_png(tf.io.read_file(path), channels=4)
            tf.summary.image(f"plots/{name}", pixels[None], step=step, max_outputs=1)
    summary_writer.flush()


def write_hparams(result: dict, hparams_dir: str, *, width: float = 1.0) -> None:
    """Writes the HParams experiment and one session per λ.

    Args:
        result: dict, an evaluation result.
        hparams_dir: str, the HParams root (the experiment config goes here,
            sessions into `lambda_<λ>` subdirectories).
        width: float, the `width` hyperparameter of every session.
    """
    results_lib.check_result(result)
    lambda_hparam = hp.HParam("lambda", hp.RealInterval(0.0, 1.0), display_name="λ")
    width_hparam = hp.HParam("width", hp.RealInterval(0.0, 1.0), display_name="width")
    metrics = [
        hp.Metric("sa", display_name="SA"),
        *(hp.Metric(f"ra/{label}", display_name=f"RA {label}") for label in result["robust_accuracy"]),
        hp.Metric("worst_case", display_name="worst case"),
    ]
    writer = tf.summary.create_file_writer(hparams_dir)
    with writer.as_default():
        hp.hparams_config(hparams=[lambda_hparam, width_hparam], metrics=metrics)
    writer.close()
    for lam, key in zip(result["lambdas"], results_lib.lambda_keys(result)):
        session = session_name(key)
        writer = tf.summary.create_file_writer(os.path.join(hparams_dir, session))
        with writer.as_default():
            hp.hparams({lambda_hparam: float(lam), width_hparam: float(width)}, trial_id=session)
            tf.summary.scalar("sa", result["clean_accuracy"][key], step=0)
            for label, values in result["robust_accuracy"].items():
                tf.summary.scalar(f"ra/{label}", values[key], step=0)
            tf.summary.scalar("worst_case", result["worst_case_accuracy"][key], step=0)
        writer.close()


def log_evaluation(
    result: dict,
    log_dir: str,
    *,
    plot_paths: Optional[Mapping[str, str]] = None,
    step: int = 0,
    width: float = 1.0,
) -> None:
    """Writes every summary of an evaluation under `log_dir` (see the module doc).

    Args:
        result: dict, an evaluation result.
        log_dir: str, the TensorBoard directory of this evaluation.
        plot_paths: optional mapping {name: PNG path}, logged as images.
        step: int, step of the per-λ scalars and the images.
        width: float, the `width` hyperparameter of the HParams sessions.
    """
    results_lib.check_result(result)
    os.makedirs(log_dir, exist_ok=True)
    clear_event_files(log_dir)
    writer = tf.summary.create_file_writer(log_dir)
    report.write_scalars(result, writer, step)
    write_trade_off(result, writer)
    if plot_paths:
        write_images(plot_paths, writer, step)
    writer.close()
    write_hparams(result, os.path.join(log_dir, HPARAMS_DIR), width=width)
    logging.info("Wrote TensorBoard summaries to %s.", log_dir)
