"""oat_tf against PyTorch, side by side in one run: the OAT step and APGD-CE.

    pip install -r requirements-bench.txt     # PyTorch, for this benchmark only
    python -m oat_tf.bench.versus_torch --models=small_cnn,resnet34 \
        --batch_sizes=32,128 --measures=train,apgd_ce --rounds=2

For every model, batch size and measure it alternates, round by round, the
oat_tf step (`OATTrainer.train_step` in a `tf.function`, as
`python -m oat_tf.bench` times it; or APGD-CE through `oat_tf.attacks`) and
the same work in PyTorch (`oat_tf.bench.torch_reference`: the same
networks, FiLM and dual BN, λ sampling, PGD-k and SGD, written for PyTorch),
for the OAT and the plain variant. The framework that goes first swaps every
round. Each measurement runs in its own process, so neither framework's
thread pools or allocator state leak into the other's.

- `train`: `warmup` untimed steps, then `steps` timed ones; PGD-k at
  ε = 8/255, step 2/255, on the λ ≠ 0 samples (ceil(N / 6) of N are λ = 0).
- `--max_cpu_isa=avx2`: both frameworks' kernels capped at AVX2 on a CPU
  with AVX-512 (`ISA_CAP_ENVIRONMENT`: oneDNN's `ONEDNN_MAX_CPU_ISA` in
  TensorFlow and PyTorch, PyTorch's `ATEN_CPU_CAPABILITY`, MKL's
  `MKL_ENABLE_INSTRUCTIONS`), so that an AVX-512 machine measures the code
  paths of an AVX2-only one (TensorFlow's Eigen kernels are compiled for AVX
  on both). It does not make one CPU another: caches, memory and clocks stay
  the host's.
- `apgd_ce`: `apgd_warmup` untimed calls, then one timed call of APGD-CE
  with `apgd_steps` iterations on the batch (network in inference mode,
  λ = 1), random start, one restart. oat_tf's attack is traced before the
  timing; with `--apgd_warmup=0` its timed call still includes TensorFlow's
  first-run graph optimisation.

Random data and freshly initialised networks: the speed of these steps does
not depend on the weights. The table gives seconds per step (or per attack
call), images/s, and the ratio PyTorch seconds / oat_tf seconds of the same
round (above 1: oat_tf is faster), with the CPU model, its vector
instructions and both frameworks' kernel and thread settings. Numbers from one
run compare with each other; the machine is shared and noisy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import flags
from absl import logging

from oat_tf.bench import step_flags
from oat_tf import cli
from oat_tf import cpu_kernels

FLAGS = flags.FLAGS

FRAMEWORKS = ("oat_tf", "torch")
MODELS = ("small_cnn", "resnet34")
MEASURES = ("train", "apgd_ce")
VARIANTS = ("oat", "plain")
# The precisions both frameworks can run (torch_reference.PRECISIONS, which imports torch).
PRECISIONS = ("float32", "mixed_bfloat16")
# The widest vector instructions both frameworks' kernels may use: the host's, or AVX2.
MAX_CPU_ISAS = ("native", "avx2")
# What caps them, per framework library (each read when the library loads).
ISA_CAP_ENVIRONMENT = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
_RESULT_PREFIX = "VERSUS_TORCH_RESULT "
TORCH_MISSING = (
    "python -m oat_tf.bench.versus_torch needs PyTorch, an optional extra that oat_tf "
    "itself never uses: `pip install -r requirements-bench.txt`."
)


def define_flags() -> None:
    """Defines the benchmark flags."""
    flags.DEFINE_list("models", list(MODELS), f"Networks to time, among {MODELS}.")
    flags.DEFINE_list("batch_sizes", ["32", "128"], "Batch sizes.")
    flags.DEFINE_list("measures", list(MEASURES), f"What to time, among {MEASURES}.")
    flags.DEFINE_list("variants", list(VARIANTS), f"Network variants, among {VARIANTS}.")
    flags.DEFINE_integer("rounds", 2, "Rounds; the framework that goes first swaps each round.")
    step_flags.define_step_flags()
    flags.DEFINE_integer("apgd_steps", 100, "APGD-CE iterations.")
    flags.DEFINE_integer("apgd_warmup", 1, "Untimed APGD-CE calls first (tracing).")
    flags.DEFINE_integer(
        "threads", 0,
        "Threads of both frameworks' operation pools (TensorFlow intra-op, torch.set_num_threads); "
        "0 leaves each framework's default.",
    )
    flags.DEFINE_bool(
        "deterministic", True,
        "TensorFlow op determinism, the oat_tf CLIs' default (PyTorch runs with its default).",
    )
    flags.DEFINE_bool(
        "fused_normalization", False,
        "oat_tf's OAT network with the fused dual BN + FiLM (EncoderConfig.fused_normalization); "
        "the PyTorch step is the same OAT either way.",
    )
    flags.DEFINE_enum(
        "precision", "float32", list(PRECISIONS),
        "Both frameworks' precision: float32, or mixed_bfloat16 (the Keras dtype policy for oat_tf, "
        "forward passes under torch.autocast to bfloat16 for PyTorch; weights, losses and attack "
        "gradients stay float32 in both). bfloat16 pays off on CPUs with AVX512_BF16 or AMX.",
    )
    flags.DEFINE_bool(
        "torch_channels_last", False,
        "PyTorch's weights and images in channels-last memory format (NHWC in memory, as "
        "TensorFlow's); off: contiguous NCHW, PyTorch's default and the authors' code's.",
    )
    flags.DEFINE_enum(
        "max_cpu_isa", "native", list(MAX_CPU_ISAS),
        "The widest vector instructions both frameworks' kernels may use: native (the host's), or "
        "avx2 (oneDNN, ATen and MKL capped at AVX2, to measure an AVX2-only CPU's code paths on an "
        "AVX-512 one; needs a CPU with AVX2).",
    )
    flags.DEFINE_string("output", None, "Also write the results as JSON here (a new file).")
    flags.DEFINE_enum("worker", None, list(FRAMEWORKS), "Internal: time one measurement.")
    flags.DEFINE_string("worker_job", None, "Internal: the measurement, as JSON.")


def check_arguments(
    *,
    models: Sequence[str],
    batch_sizes: Sequence[str],
    measures: Sequence[str],
    variants: Sequence[str],
    counts: Dict[str, int],
    output: Optional[str],
    torch_installed: bool,
    max_cpu_isa: str = "native",
    cpu_vector_extensions: str = "unknown",
) -> List[int]:
    """Checks the benchmark's arguments before any work; returns the batch sizes as ints.

    Args:
        models, measures, variants: lists of names among `MODELS`, `MEASURES`, `VARIANTS`.
        batch_sizes: list of strings, positive ints.
        counts: flag name -> int for "rounds", "steps", "attack_steps", "apgd_steps"
            (each >= 1) and "warmup", "apgd_warmup", "threads" (each >= 0).
        output: None or the path of a new JSON file in a writable directory.
        torch_installed: bool, whether PyTorch can be imported.
        max_cpu_isa: str among `MAX_CPU_ISAS`.
        cpu_vector_extensions: str, the host's (`cpu_kernels.vector_extensions`):
            a cap at AVX2 needs "avx2" or "avx512".

    Returns:
        list of ints, the batch sizes.

    Raises:
        ValueError: naming the flag, what it expects and what it received.
        ImportError: when PyTorch is not installed.
    """
    for name, values, allowed in (
        ("models", models, MODELS), ("measures", measures, MEASURES), ("variants", variants, VARIANTS)
    ):
        unknown = [v for v in values if v not in allowed]
        if not values or unknown:
            raise ValueError(
                f"`--{name}` must be a non-empty list of {allowed}. Received: --{name}={','.join(values)}"
            )
    try:
        sizes = [int(b) for b in batch_sizes]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(
            f"`--batch_sizes` must be a list of positive ints. Received: --batch_sizes={','.join(batch_sizes)}"
        )
    for name, value in counts.items():
        least = 0 if name in ("warmup", "apgd_warmup", "threads") else 1
        if value < least:
            raise ValueError(f"`--{name}` must be >= {least}. Received: --{name}={value}")
    if max_cpu_isa not in MAX_CPU_ISAS:
        raise ValueError(f"`--max_cpu_isa` must be one of {MAX_CPU_ISAS}. Received: --max_cpu_isa={max_cpu_isa}")
    if max_cpu_isa == "avx2" and cpu_vector_extensions not in ("avx2", "avx512"):
        raise ValueError(
            "`--max_cpu_isa=avx2` caps kernels at AVX2, so it needs a CPU with AVX2; this CPU's widest "
            f"vector instructions are {cpu_vector_extensions!r}. Received: --max_cpu_isa=avx2"
        )
    if output is not None:
        if os.path.exists(output):
            raise ValueError(f"`--output` must name a new file; {output!r} exists and is not overwritten.")
        directory = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise ValueError(f"`--output` must be in a writable directory. Received: --output={output}")
    if not torch_installed:
        raise ImportError(TORCH_MISSING)
    return sizes


def schedule(models: Sequence[str], batch_sizes: Sequence[int], measures: Sequence[str],
             variants: Sequence[str], rounds: int) -> List[Dict[str, Any]]:
    """The measurements in the order they run: per setting, rounds alternating who goes first.

    Args:
        models, batch_sizes, measures, variants: what to time.
        rounds: int, rounds per setting.

    Returns:
        list of dicts with `framework`, `model`, `batch_size`, `measure`,
        `variant`, `round`.
    """
    jobs = []
    for model in models:
        for batch_size in batch_sizes:
            for measure in measures:
                for round_index in range(rounds):
                    order = FRAMEWORKS if round_index % 2 == 0 else FRAMEWORKS[::-1]
                    for framework in order:
                        for variant in variants:
                            jobs.append({
                                "framework": framework, "model": model, "batch_size": batch_size,
                                "measure": measure, "variant": variant, "round": round_index,
                            })
    return jobs


def ratio_rows(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Pairs each oat_tf measurement with PyTorch's of the same setting and round.

    Args:
        results: dicts of `schedule` with `seconds` added.

    Returns:
        one dict per (model, batch_size, measure, variant) with the per-round
        `oat_tf_seconds`, `torch_seconds` and `ratios` (torch / oat_tf), and
        the medians `oat_tf_images_per_second`, `torch_images_per_second`,
        `median_ratio`.
    """
    groups: Dict[tuple, Dict[str, Dict[int, float]]] = {}
    for result in results:
        key = (result["model"], result["batch_size"], result["measure"], result["variant"])
        groups.setdefault(key, {f: {} for f in FRAMEWORKS})[result["framework"]][
            result["round"]] = result["seconds"]
    rows = []
    for (model, batch_size, measure, variant), times in groups.items():
        rounds = sorted(set(times["oat_tf"]) & set(times["torch"]))
        if not rounds:
            continue
        ours = [times["oat_tf"][r] for r in rounds]
        theirs = [times["torch"][r] for r in rounds]
        ratios = [t / o for o, t in zip(ours, theirs)]
        rows.append({
            "model": model, "batch_size": batch_size, "measure": measure, "variant": variant,
            "oat_tf_seconds": ours, "torch_seconds": theirs, "ratios": ratios,
            "oat_tf_images_per_second": batch_size / statistics.median(ours),
            "torch_images_per_second": batch_size / statistics.median(theirs),
            "median_ratio": statistics.median(ratios),
        })
    return rows


def markdown(rows: Sequence[Dict[str, Any]], header: str) -> str:
    """The results as a Markdown table under a one-paragraph header."""
    lines = [header, "",
             "| model | batch | measure | variant | oat_tf s (per round) | PyTorch s (per round) "
             "| oat_tf img/s | PyTorch img/s | PyTorch s / oat_tf s (per round) |",
             "|---|---:|---|---|---|---|---:|---:|---|"]
    for row in rows:
        def seconds(values):
            return " / ".join(f"{v:.2f}" for v in values)
        lines.append(
            f"| {row['model']} | {row['batch_size']} | {row['measure']} | {row['variant']} | "
            f"{seconds(row['oat_tf_seconds'])} | {seconds(row['torch_seconds'])} | "
            f"{row['oat_tf_images_per_second']:.2f} | {row['torch_images_per_second']:.2f} | "
            f"**{row['median_ratio']:.2f}×** ({' / '.join(f'{r:.2f}' for r in row['ratios'])}) |"
        )
    return "\n".join(lines) + "\n"


# === Workers: one measurement per process ===

def worker_environment(max_cpu_isa: str, environ: Mapping[str, str]) -> Dict[str, str]:
    """The environment of a measurement's process.

    Args:
        max_cpu_isa: str among `MAX_CPU_ISAS`.
        environ: the parent's environment.

    Returns:
        dict: `environ`, with `ISA_CAP_ENVIRONMENT[max_cpu_isa]` set over it
        (nothing added for "native").
    """
    return {**environ, **ISA_CAP_ENVIRONMENT.get(max_cpu_isa, {})}


def _isa_cap_settings() -> Dict[str, Any]:
    """The kernel caps this process runs under, from its environment."""
    return {"isa_cap_environment": {name: os.environ.get(name) for name in ISA_CAP_ENVIRONMENT["avx2"]}}


def _time_tensorflow(job: Dict[str, Any]) -> Dict[str, Any]:
    import tensorflow as tf

    from oat_tf.bench import train_step
    from oat_tf.training import determinism

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    determinism.configure(FLAGS.deterministic)
    settings = {
        "tensorflow": tf.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "deterministic": FLAGS.deterministic,
        "fused_normalization": FLAGS.fused_normalization,
        "precision": FLAGS.precision,
        **cpu_kernels.describe(),
        **_isa_cap_settings(),
    }
    if job["measure"] == "train":
        timing = train_step.time_train_step(
            job["model"], "function", variant=job["variant"], batch_size=job["batch_size"],
            attack_steps=FLAGS.attack_steps, steps=FLAGS.steps, warmup=FLAGS.warmup,
            seed=FLAGS.seed, fused_normalization=FLAGS.fused_normalization,
            mixed_precision=FLAGS.precision,
        )
        return {"seconds": timing["seconds_per_step"], **settings}

    from oat_tf import attacks
    from oat_tf import config as config_lib

    trainer, images, labels = train_step.benchmark_trainer(
        job["model"], variant=job["variant"], batch_size=job["batch_size"], seed=FLAGS.seed,
        fused_normalization=FLAGS.fused_normalization, mixed_precision=FLAGS.precision,
    )
    network = trainer.network
    attack = config_lib.AttackConfig(name="apgd_ce", epsilon=8 / 255, num_steps=FLAGS.apgd_steps)
    images, labels = tf.constant(images), tf.constant(labels)
    lambdas = tf.ones([job["batch_size"]], tf.float32)

    @tf.function
    def attack_fn(x, y):
        def logits_fn(z):
            return network({"image": z, "lambda": lambdas}, training=False)

        return attacks.run_attack(attack, logits_fn, x, y, seed=(FLAGS.seed, 1))

    # Traced here, so that even with no untimed call the timed one excludes tracing
    # (it still includes TensorFlow's first-run graph optimisation).
    attack_fn = attack_fn.get_concrete_function(images, labels)
    for _ in range(FLAGS.apgd_warmup):
        attack_fn(images, labels).numpy()
    start = time.perf_counter()
    attack_fn(images, labels).numpy()
    return {"seconds": time.perf_counter() - start, **settings}


def _time_torch(job: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from oat_tf.bench import random_batch
    from oat_tf.bench import torch_reference

    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(FLAGS.seed)
    settings = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "precision": FLAGS.precision,
        "torch_memory_format": "channels_last" if FLAGS.torch_channels_last else "contiguous",
        **_isa_cap_settings(),
    }
    model = torch_reference.build(job["model"], job["variant"], FLAGS.precision)
    # The oat_tf benchmark's batch, as NCHW tensors.
    images, labels = torch_reference.from_nhwc(
        *random_batch.random_batch(job["model"], job["batch_size"], FLAGS.seed)
    )
    if FLAGS.torch_channels_last:
        model, images = torch_reference.channels_last(model, images)
    if job["measure"] == "train":
        step = torch_reference.OATStep(model, attack_steps=FLAGS.attack_steps, seed=FLAGS.seed)
        for _ in range(max(1, FLAGS.warmup)):
            step(images, labels)
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            step(images, labels)
        return {"seconds": (time.perf_counter() - start) / FLAGS.steps, **settings}
    lambdas = torch.ones(job["batch_size"])
    generator = torch.Generator().manual_seed(FLAGS.seed)

    def run():
        return torch_reference.apgd_ce(
            model, images, labels, lambdas, epsilon=8 / 255, num_steps=FLAGS.apgd_steps,
            generator=generator,
        )

    for _ in range(FLAGS.apgd_warmup):
        run()
    start = time.perf_counter()
    run()
    return {"seconds": time.perf_counter() - start, **settings}


def _run_worker(job: Dict[str, Any]) -> Dict[str, Any]:
    """Runs one measurement in a fresh process of this module; returns its result."""
    command = [
        sys.executable, "-m", "oat_tf.bench.versus_torch", f"--worker={job['framework']}",
        f"--worker_job={json.dumps(job)}", f"--steps={FLAGS.steps}", f"--warmup={FLAGS.warmup}",
        f"--attack_steps={FLAGS.attack_steps}", f"--apgd_steps={FLAGS.apgd_steps}",
        f"--apgd_warmup={FLAGS.apgd_warmup}", f"--threads={FLAGS.threads}",
        f"--seed={FLAGS.seed}", "--deterministic" if FLAGS.deterministic else "--nodeterministic",
        "--fused_normalization" if FLAGS.fused_normalization else "--nofused_normalization",
        f"--precision={FLAGS.precision}",
        "--torch_channels_last" if FLAGS.torch_channels_last else "--notorch_channels_last",
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False,
        env=worker_environment(FLAGS.max_cpu_isa, os.environ),
    )
    for line in completed.stdout.splitlines():
        if line.startswith(_RESULT_PREFIX):
            return {**job, **json.loads(line[len(_RESULT_PREFIX):])}
    raise RuntimeError(f"Measurement {job} failed:\n{completed.stderr[-3000:]}")


def main(argv: Sequence[str]) -> None:
    del argv
    if FLAGS.worker is not None:
        job = json.loads(FLAGS.worker_job)
        timer = _time_tensorflow if FLAGS.worker == "oat_tf" else _time_torch
        sys.stdout.write(_RESULT_PREFIX + json.dumps(timer(job)) + "\n")
        return
    counts = {name: getattr(FLAGS, name) for name in (
        "rounds", "steps", "attack_steps", "apgd_steps", "warmup", "apgd_warmup", "threads")}
    batch_sizes = check_arguments(
        models=FLAGS.models, batch_sizes=FLAGS.batch_sizes, measures=FLAGS.measures,
        variants=FLAGS.variants, counts=counts, output=FLAGS.output,
        torch_installed=importlib.util.find_spec("torch") is not None,
        max_cpu_isa=FLAGS.max_cpu_isa,
        cpu_vector_extensions=cpu_kernels.cpu_description()["cpu_vector_extensions"],
    )
    jobs = schedule(FLAGS.models, batch_sizes, FLAGS.measures, FLAGS.variants, FLAGS.rounds)
    results = []
    for index, job in enumerate(jobs, start=1):
        result = _run_worker(job)
        logging.info("[%d/%d] %s %s batch %d %s %s round %d: %.2f s", index, len(jobs),
                     job["framework"], job["model"], job["batch_size"], job["measure"],
                     job["variant"], job["round"], result["seconds"])
        results.append(result)
    ours = next(r for r in results if r["framework"] == "oat_tf")
    theirs = next(r for r in results if r["framework"] == "torch")
    capped = (
        "" if FLAGS.max_cpu_isa == "native" else
        f", kernels capped at {FLAGS.max_cpu_isa.upper()} (" + ", ".join(
            f"{name}={value}" for name, value in ISA_CAP_ENVIRONMENT[FLAGS.max_cpu_isa].items()) + ")"
    )
    header = (
        f"CPU: {ours['cpu']} ({ours['cpu_vector_extensions']}{capped}; PyTorch dispatches "
        f"{theirs['torch_cpu_capability']}). TensorFlow {ours['tensorflow']}, oneDNN "
        f"{ours['onednn']}, intra-op threads {ours['intra_op_threads'] or 'default'}, op "
        f"determinism {'on' if ours['deterministic'] else 'off'}, "
        f"{'fused' if ours['fused_normalization'] else 'unfused'} dual BN + FiLM, {ours['precision']}; "
        f"PyTorch {theirs['torch']}, {theirs['precision']}, {theirs['torch_memory_format']} memory format, "
        f"{theirs['torch_threads']} threads. Training: PGD-{FLAGS.attack_steps}, "
        f"{FLAGS.warmup} untimed + {FLAGS.steps} timed steps; APGD-CE: {FLAGS.apgd_steps} "
        f"iterations, {FLAGS.apgd_warmup} untimed + 1 timed call; {FLAGS.rounds} rounds."
    )
    rows = ratio_rows(results)
    text = markdown(rows, header)
    sys.stdout.write(text)
    if FLAGS.output is not None:
        from oat_tf import atomic_files

        atomic_files.write_json(FLAGS.output, {"header": header, "rows": rows, "results": results})


def run() -> None:
    """The `oat-versus-torch` console script; `python -m oat_tf.bench.versus_torch` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
