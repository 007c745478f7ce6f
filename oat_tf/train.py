"""Command line: `python -m oat_tf.train --flagfile=experiments/quickstart.flags`.

Trains OAT (or a PGD-AT baseline), evaluates SA/RA over a λ grid on the test
split, prints the table, writes JSON/Markdown/PNG results and TensorBoard logs
to `<runs_dir>/<name>/`, and exports a SavedModel to `<export_dir>/<name>/`.
"""

from __future__ import annotations

import json
import sys

from absl import app
from absl import flags
from absl import logging

from oat_tf import cli
from oat_tf import config as config_lib
from oat_tf import cpu_kernels
from oat_tf import flags as oat_flags
from oat_tf import run_directory

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    try:
        config = oat_flags.flags_to_config(FLAGS)
        # Names, output paths and the run directory's state, before TensorFlow loads.
        run_directory.check_before_training(config, resume=FLAGS.resume)
    except ValueError as error:
        raise app.UsageError(str(error), exitcode=run_directory.USAGE_EXIT_STATUS) from None
    if FLAGS.check_only:
        sys.stdout.write(json.dumps(config_lib.to_dict(config), indent=2, sort_keys=True) + "\n")
        logging.info("Flags and output paths of %s are valid (--check_only: nothing run).", config.name)
        return

    try:
        cpu_kernels.configure(FLAGS.onednn)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    logging.info("CPU kernels: %s.", cpu_kernels.describe()["onednn_reason"])
    hint = cpu_kernels.bfloat16_hint(
        config.train.mixed_precision, cpu_kernels.read_cpuinfo()["flags"]
    )
    if hint:
        logging.info("Precision float32; %s.", hint)
    from oat_tf.training import determinism  # Heavy imports after flag checks.
    from oat_tf.training import experiment

    determinism.configure(FLAGS.deterministic)

    try:
        summary = experiment.run_experiment(
            config, resume=FLAGS.resume, flags_text=FLAGS.flags_into_string()
        )
    except run_directory.RunRefusedError as error:
        raise app.UsageError(str(error), exitcode=run_directory.USAGE_EXIT_STATUS) from None
    if summary["run_dir"] is None:
        sys.stdout.write(f"\n{config.name}: trained as a worker; the chief writes the results.\n")
        logging.info("Done.")
        return
    heading = (
        "TA / ATA per attack form, exits and MFLOPs"
        if config_lib.is_multi_exit_architecture(config.model.architecture)
        else "SA / RA per λ"
    )
    sys.stdout.write(
        f"\n{config.name}: {heading} on the test split\n\n{summary['table']}\n"
        f"\nResults: {summary['run_dir']}"
        + (f"\nSavedModel: {summary['export_dir']}" if summary["export_dir"] else "")
        + "\n"
    )
    logging.info("Done.")


def run() -> None:
    """The `oat-train` console script; `python -m oat_tf.train` runs it too."""
    cli.run_main(main, __name__, oat_flags.define_flags)


if __name__ == "__main__":
    run()
