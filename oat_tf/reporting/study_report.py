"""The report of a study (`oat_tf.sweep`), regenerated from its results JSON alone.

    python -m oat_tf.reporting.study_report --results=docs/results/oat_mnist/results.json

writes `docs/results/oat_mnist.md` and its plots in `docs/results/oat_mnist/`.
The Markdown depends only on the JSON, so rerunning the command on committed
results regenerates the same file byte for byte (`--check` compares instead of
writing and fails on any difference). Accuracies are in percent.

Every report starts with the study's command, machine, wall time and a table of
its runs (architecture, variant, training λ, attack, budget). Then, by the
study's `report` layout, the sections of `study_oat` ("oat", the OAT paper's
claims), `study_mixture` ("mixture_bn"), `study_widths` ("width", OATS) or
`study_runs` ("runs", runs side by side against the first, for ablations).

"RA" in the comparisons is the per-sample worst case over the evaluated
attacks (a sample counts only if it survives every attack), the strictest of
the measured robust accuracies.

A study whose headline runs were repeated with further training seeds
(`--repeat_seeds` / `--repeat_runs` of the sweep) keeps its tables on the
first seed and ends with "Spread over seeds": the layout's headline figures
computed on each seed's copy of the repeated runs, as mean (min–max), with
what the repeats cost.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Tuple

from absl import app
from absl import flags

from oat_tf import cli
from oat_tf import cpu_kernels
from oat_tf.reporting import pages
from oat_tf.reporting import study_mixture
from oat_tf.reporting import study_oat
from oat_tf.reporting import study_results
from oat_tf.reporting import study_runs
from oat_tf.reporting import study_widths


def _machine_text(machine: Dict[str, Any]) -> str:
    # The CPU decides the kernels and their rounding (records made before it was kept lack it).
    cpu = f"{cpu_kernels.cpu_text(machine)}, " if machine.get("cpu") else ""
    return (
        f"{machine.get('platform', '?')}, {cpu}{machine.get('cpu_count', '?')} CPU cores, "
        f"{machine.get('gpus', 0)} GPUs; TensorFlow {machine.get('tensorflow', '?')}, "
        f"Keras {machine.get('keras', '?')}.{cpu_kernels.kernels_text(machine)}"
    )


def _machines_line(results: Dict[str, Any]) -> str:
    """The page's machine line: one machine, or each machine a study's jobs ran on."""
    machines = results.get("machines")
    if not machines:
        return f"- Machine: {_machine_text(results.get('machine') or {})}"
    parts = [
        f"{_machine_text(m['machine'] or {})} ({m['jobs']} job{'' if m['jobs'] == 1 else 's'})"
        for m in machines
    ]
    return f"- Machines (the jobs ran on {len(machines)}): " + "; ".join(parts)


def _header(results: Dict[str, Any], results_path: str) -> List[str]:
    total = float(results.get("total_wall_seconds", 0.0))
    lines = [
        f"# Study `{results['study']}`",
        "",
        results.get("description", ""),
        "",
        f"- Rerun the study: `{results['command']}` (finished runs are skipped, a killed one resumes).",
        f"- Regenerate this page from the results: "
        f"`python -m oat_tf.reporting.study_report --results={results_path}`.",
        _machines_line(results),
        f"- Wall time of the whole study: {total / 3600.0:.2f} h ({study_results.minutes(total)} min, training "
        "and evaluation of every run, summed).",
        "- Accuracies in percent. RA is the per-sample worst case over the evaluated attacks "
        "(a test image counts only if it survives every attack); the per-attack RAs are in the "
        "tables.",
    ]
    if results.get("missing"):
        lines.append(f"- **Not finished:** {', '.join(results['missing'])}.")
    lines += ["", "## Runs", ""]
    lines += [
        "| run | architecture | channels | variant | objective | training λ | encoding | training attack "
        "| epochs | training images | test images | wall (min) |",
        "|---|---|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        config = study_results.run_config(run)
        model = config["model"]
        lines.append(
            f"| {run['name']} | {model['architecture']} | {study_results.filters_text(run)} | {model['variant']} | "
            f"{study_results.objective_text(run)} | {study_results.lambda_text(run)} | {study_results.encoding_text(run)} | "
            f"{study_results.training_attack_text(run)} | {study_results.train_config(run).get('epochs', '?')} | "
            f"{config['data'].get('num_train_examples') or 'all'} | "
            f"{run['test_eval'].get('num_examples', '?')} | {study_results.minutes(run['wall_seconds'])} |"
        )
    lines.append("")
    attacks = study_results.first_attacks(results)
    if attacks:
        lines.append(
            "Evaluation attacks: "
            + "; ".join(f"**{a['label']}** ({study_results.attack_text(a)})" for a in attacks)
            + "."
        )
        lines.append("")
    return lines


# The sections and the per-seed rows of each `report` layout.
_LAYOUTS = {"oat": study_oat, "mixture_bn": study_mixture, "width": study_widths, "runs": study_runs}


def _seed_sections(results: Dict[str, Any]) -> List[str]:
    replicas = study_results.seed_replicas(results)
    if len(replicas) < 2:
        return []
    repeats = [run for run in results["runs"] if run.get("repeat_of")]
    names = list(dict.fromkeys(run["repeat_of"] for run in repeats))
    cost = sum(float(run["wall_seconds"]) for run in repeats) + sum(
        float(e["wall_seconds"]) for run in repeats for e in run.get("evaluations", [])
    )
    total = float(results.get("total_wall_seconds", 0.0))
    lines = [
        "## Spread over seeds",
        "",
        f"The headline runs ({', '.join(f'`{n}`' for n in names)}) trained with seeds "
        f"{', '.join(str(s) for s in replicas)}; each figure is computed per seed (a run against "
        "the baseline of its own seed) and shown as mean (min–max) over the seeds. The repeats "
        f"cost {study_results.minutes(cost)} min of the study's {study_results.minutes(total)} min.",
        "",
    ]
    return lines + _LAYOUTS[results["report"]].seed_rows(replicas)


def report_paths(results_path: str) -> Tuple[str, str]:
    """(Markdown path, plot directory) of a results file `<dir>/results.json`: `<dir>.md`, `<dir>/`."""
    plot_dir = os.path.dirname(os.path.abspath(results_path))
    return plot_dir + ".md", plot_dir


def render_study_report(results: Dict[str, Any], results_path: str, plot_dir: str) -> str:
    """Returns the report's Markdown (and writes its plots into `plot_dir`).

    Args:
        results: dict, the sweep's results (`oat_tf.sweep.collect_results`).
        results_path: str, the results file's path as shown in the report.
        plot_dir: str, existing directory the plots are written to; the
            Markdown links them as `<basename(plot_dir)>/<plot>.png`.

    Returns:
        str, the Markdown.

    Raises:
        ValueError: if the results lack `study`, `runs` or a known `report`.
    """
    for key in ("study", "runs", "report", "command"):
        if key not in results:
            raise ValueError(
                f"`results` must be a sweep's results.json with a {key!r} entry. "
                f"Received keys: {sorted(results)}"
            )
    if results["report"] not in _LAYOUTS:
        raise ValueError(
            f"`report` must be one of {sorted(_LAYOUTS)}. Received: report={results['report']!r}"
        )
    lines = _header(results, results_path)
    first_seed = {**results, "runs": [run for run in results["runs"] if not run.get("repeat_of")]}
    lines += _LAYOUTS[results["report"]].sections(first_seed, plot_dir, "")
    lines += _seed_sections(results)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_study_report(results_path: str, check: bool = False) -> str:
    """Writes (or, with `check`, compares) the report of a results file.

    Args:
        results_path: str, `<dir>/results.json` written by `oat_tf.sweep`.
        check: bool, compare the Markdown with the existing `<dir>.md`
            instead of writing it (the plots are then not written either).

    Returns:
        str, the Markdown path.

    Raises:
        FileNotFoundError: if `results_path` does not exist.
        ValueError: if it is not a sweep's results, or with `check` if the
            Markdown differs.
    """
    if not os.path.isfile(results_path):
        raise FileNotFoundError(f"`results` must be an existing results.json. Received: {results_path!r}")
    with open(results_path, encoding="utf-8") as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"`results` {results_path!r} is not valid JSON: {error}") from None
    markdown_path, plot_dir = report_paths(results_path)
    # The path the sweep wrote (relative to where it ran): the same text from any directory.
    shown = results.get("results_path") or results_path
    return pages.write_or_check(
        markdown_path,
        plot_dir,
        lambda directory: render_study_report(results, shown, directory),
        source=results_path,
        check=check,
    )


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    try:
        path = write_study_report(flags.FLAGS.results, check=flags.FLAGS.check)
    except (FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from None
    sys.stdout.write(f"{'Checked' if flags.FLAGS.check else 'Wrote'} {path}\n")


def run() -> None:
    """The `oat-study-report` console script; `python -m oat_tf.reporting.study_report` runs it too.

    Defines the command's flags and runs `main` through `cli.run_main` (absl's
    `app.run`), which parses `sys.argv` and exits the process.
    """
    flags.DEFINE_string("results", None, "results.json of a study (written by `python -m oat_tf.sweep`).")
    flags.DEFINE_bool(
        "check", False, "Compare the regenerated Markdown with the existing file instead of writing it."
    )
    flags.mark_flag_as_required("results")
    cli.run_main(main, __name__)
    cli.run_main(main, __name__)


if __name__ == "__main__":
    run()
