"""Command line: `python -m oat_tf.train --flagfile=experiments/quickstart.flags`.

Trains OAT (or a PGD-AT baseline), evaluates SA/RA over a λ grid on the test
split, prints the table, writes JSON/Markdown/PNG results and TensorBoard logs
to `<runs_dir>/<name>/`, and exports a SavedModel to `<export_dir>/<name>/`.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

from oat_tf import config as config_lib
from oat_tf import flags as oat_flags

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    try:
        config = oat_flags.flags_to_config(FLAGS)
    except ValueError as error:
        raise app.UsageError(str(error)) from None

    from oat_tf.training import determinism  # Heavy imports after flag checks.
    from oat_tf.training import experiment

    determinism.configure(FLAGS.deterministic)

    summary = experiment.run_experiment(
        config, resume=FLAGS.resume, flags_text=FLAGS.flags_into_string()
    )
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


if __name__ == "__main__":
    oat_flags.define_flags()
    app.run(main)
