"""Gradient-masking checks reported with every robustness evaluation.

A robust accuracy is only trustworthy if the attacks behind it worked. These
checks look for the usual signs that they did not (Athalye et al. 2018,
Carlini et al. 2019, "On evaluating adversarial robustness"):

1. `input_gradients`: the input gradient of the loss is zero or non-finite for
   some samples (the attack has nothing to follow).
2. `epsilon_monotonicity`: robust accuracy must not rise as ε grows, and must
   fall at 2ε unless it is already 0.
3. `stronger_pgd_not_weaker`: PGD with at least as many steps and restarts (same
   ε and step size) never gives a higher robust accuracy.
4. `black_box_not_stronger`: the score-based Square attack never gives a lower
   robust accuracy than the strongest iterative gradient-based attack (PGD,
   APGD, MI-FGSM) at the same λ; weaker gradient attacks that Square beats
   are named (their own numbers overstate robustness).
5. `weaker_attacks_not_overstating`: no stand-alone iterative white-box
   attack (PGD, MI-FGSM, APGD, APGD-T, FAB-T) keeps significantly more
   samples robust than the strongest attack of the evaluation (the lowest RA
   at that λ, usually AutoAttack): where it does, that attack's own RA
   overstates robustness, and the check names it. This is what a model whose
   PGD robustness is an artefact looks like (PGD-10 keeping 36 digits that
   APGD-CE breaks, and APGD-CE keeping none that PGD-10 breaks), even when
   the gradient-free attack is weaker still.

Each check returns a dict `{"name", "passed", "detail", ...}`; a failed check
is printed and saved with the results, never hidden.

Comparing two attacks (checks 3, 4 and 5). Both attacks ran on the same samples,
and randomised attacks (random starts, random squares) disagree on a few
samples by chance, in both directions; a stronger attack can then score a
slightly higher RA without being weaker. So the two are compared sample by
sample with McNemar's exact test: with b the samples that survive only the
attack that should be stronger and c those that survive only the other, the
check fails when b is too large to be chance, P(X ≥ b) < α / m for
X ~ Binomial(b + c, 1/2), α = `SIGNIFICANCE` (5%) and m the number of
comparisons the check makes (Bonferroni: a dense λ grid does not raise the
false-alarm rate). A masked model, where the weaker attack finds many
examples the stronger one misses, fails at any reasonable sample size. The
per-sample counts are the result's `robust_only` field; a result without it
(saved by an older version) is compared by RA with a tolerance of one sample.
The epsilon check (2) compares RAs with the same one-sample tolerance.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from oat_tf import attacks
from oat_tf import config as config_lib


SIGNIFICANCE = 0.05


def _key(value: float) -> str:
    return repr(float(value))


def mcnemar_p_value(only_first: int, only_second: int) -> float:
    """One-sided exact McNemar p-value that the first count is chance.

    Args:
        only_first: int >= 0, samples where only the first of two paired
            outcomes holds (e.g. robust under attack a, not under b).
        only_second: int >= 0, samples where only the second holds.

    Returns:
        float, P(X >= only_first) for X ~ Binomial(only_first + only_second,
        1/2); 1.0 when both counts are 0.
    """
    for name, value in (("only_first", only_first), ("only_second", only_second)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative int. Received: {name}={value!r}")
    n = int(only_first) + int(only_second)
    if only_first == 0:
        return 1.0
    # log C(n, k) − n·log 2, summed in log space (n can be in the thousands).
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)
        for k in range(int(only_first), n + 1)
    ]
    top = max(log_terms)
    return float(min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms)))


def _paired_counts(result: Dict[str, Any], first: str, second: str, key: str) -> Optional[Tuple[int, int]]:
    """(samples robust only under `first`, only under `second`) at λ `key`, if recorded."""
    only = result.get("robust_only")
    if not only:
        return None
    return int(only[first][second][key]), int(only[second][first][key])


def _compare(
    result: Dict[str, Any], comparisons: List[Dict[str, Any]], should_be_lower: str, other: str
) -> None:
    """Decides each comparison: is `should_be_lower`'s RA significantly above `other`'s?

    Each entry of `comparisons` holds the labels under the keys named by
    `should_be_lower` and `other` and a "lambda" key; "passed" (and, with
    paired counts, "only_lower", "only_other", "p_value") are added.
    """
    tolerance = 1.0 / max(1, result["num_examples"])
    threshold = SIGNIFICANCE / max(1, len(comparisons))
    for comparison in comparisons:
        lower, higher, key = comparison[should_be_lower], comparison[other], comparison["lambda"]
        counts = _paired_counts(result, lower, higher, key)
        if counts is None:
            comparison["passed"] = bool(
                result["robust_accuracy"][lower][key] <= result["robust_accuracy"][higher][key] + tolerance
            )
            continue
        p_value = mcnemar_p_value(*counts)
        comparison.update(
            only_lower=counts[0], only_other=counts[1], p_value=p_value, threshold=threshold,
            passed=bool(p_value >= threshold),
        )


def input_gradients(
    model: Callable, images: np.ndarray, labels: np.ndarray, lambdas: Sequence[float]
) -> Dict[str, Any]:
    """Checks for zero or non-finite input gradients of the cross-entropy.

    Args:
        model: callable `model({"image", "lambda"}, training=False) -> logits`.
        images: float32 array [N, H, W, C] in [0, 1].
        labels: int array [N].
        lambdas: sequence of float.

    Returns:
        check dict with per-λ `zero_fraction` and `nonfinite_fraction`. Fails on
        any non-finite gradient, or when more than 10% of the samples have an
        exactly zero gradient (a saturated softmax: the attacks see nothing).
    """
    images = tf.constant(images, tf.float32)
    labels = tf.constant(labels, tf.int32)
    per_lambda = {}
    passed = True
    for lam in lambdas:
        lam_vec = tf.fill([images.shape[0]], tf.constant(lam, tf.float32))
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = model({"image": images, "lambda": lam_vec}, training=False)
            loss = tf.reduce_sum(attacks.sparse_cross_entropy(logits, labels))
        grad = tape.gradient(loss, images)
        if grad is None:
            grad = tf.zeros_like(images)
        flat = tf.reshape(grad, [images.shape[0], -1]).numpy()
        nonfinite = float(np.mean(~np.all(np.isfinite(flat), axis=1)))
        zero = float(np.mean(np.all(flat == 0, axis=1)))
        per_lambda[_key(lam)] = {"zero_fraction": zero, "nonfinite_fraction": nonfinite}
        passed &= nonfinite == 0.0 and zero <= 0.1
    return {
        "name": "input_gradients",
        "passed": bool(passed),
        "detail": "no non-finite input gradient and at most 10% exactly-zero gradients per λ",
        "per_lambda": per_lambda,
    }


def epsilon_monotonicity(
    robust_accuracy_at: Callable[[float], Dict[str, float]],
    epsilon: float,
    num_examples: int,
    factors: Sequence[float] = (0.5, 1.0, 2.0),
) -> Dict[str, Any]:
    """Checks that robust accuracy does not rise with ε and falls at 2ε.

    Args:
        robust_accuracy_at: callable ε -> {λ key: robust accuracy}.
        epsilon: float, the evaluation ε.
        num_examples: int, examples behind each accuracy (sets the tolerance).
        factors: sequence of float, multiples of ε to test, increasing.

    Returns:
        check dict with `curves` {λ key: [(ε, RA), ...]}.
    """
    tolerance = 1.0 / max(1, num_examples)
    values = {f: robust_accuracy_at(min(1.0, f * epsilon)) for f in factors}
    curves: Dict[str, List] = {}
    passed = True
    for key in values[factors[0]]:
        curve = [(min(1.0, f * epsilon), values[f][key]) for f in factors]
        curves[key] = curve
        accuracies = [ra for _, ra in curve]
        non_increasing = all(b <= a + tolerance for a, b in zip(accuracies, accuracies[1:]))
        falls = accuracies[-1] < accuracies[0] or accuracies[0] == 0.0
        passed &= non_increasing and falls
    return {
        "name": "epsilon_monotonicity",
        "passed": bool(passed),
        "detail": f"RA non-increasing over ε × {list(factors)} and lower at the largest ε",
        "curves": curves,
    }


def _dominates(strong: config_lib.AttackConfig, weak: config_lib.AttackConfig) -> bool:
    return (
        strong.name == weak.name == "pgd"
        and strong != weak
        and strong.epsilon == weak.epsilon
        and strong.step_size == weak.step_size
        and strong.num_steps >= weak.num_steps
        and strong.num_restarts >= weak.num_restarts
        and strong.random_start == weak.random_start
    )


def _comparison_detail(
    claim: str, *, compared: bool, nothing_compared: str, failed_lead: str, failures: List[str]
) -> str:
    """A paired check's detail: its claim, a note when nothing was compared, the failures.

    Args:
        claim: str, what the check asserts.
        compared: bool, whether the evaluation had any pair to compare.
        nothing_compared: str, said in parentheses when it had none.
        failed_lead: str, the words before the list of failures.
        failures: list of str, one per failed comparison.

    Returns:
        str.
    """
    detail = claim
    if not compared:
        detail += f" ({nothing_compared})"
    if failures:
        detail += f"; {failed_lead} " + ", ".join(failures)
    return detail


def stronger_pgd_not_weaker(result: Dict[str, Any]) -> Dict[str, Any]:
    """Checks PGD with more steps / restarts is never significantly weaker.

    For every pair of PGD attacks where one has at least the steps and
    restarts of the other (same ε, step size and start), the stronger one's
    survivors are compared with the weaker one's at every λ by McNemar's test
    (see the module docstring).

    Args:
        result: an `evaluate_lambda_grid` result.

    Returns:
        check dict listing every compared pair: λ, both labels and RAs, the
        paired counts (`only_lower`: samples only the stronger attack leaves
        robust), the p-value, the threshold and whether it passed.
    """
    configs = {a["label"]: _attack_config(a) for a in result["attacks"]}
    pairs = []
    for strong_label, strong in configs.items():
        for weak_label, weak in configs.items():
            if not _dominates(strong, weak):
                continue
            for key, weak_ra in result["robust_accuracy"][weak_label].items():
                pairs.append(
                    {"lambda": key, "stronger": strong_label, "weaker": weak_label,
                     "stronger_ra": result["robust_accuracy"][strong_label][key], "weaker_ra": weak_ra}
                )
    _compare(result, pairs, "stronger", "weaker")
    failed = [p for p in pairs if not p["passed"]]
    detail = _comparison_detail(
        "PGD with ≥ steps and ≥ restarts (same ε, step) is not significantly weaker (McNemar, α = 5%)",
        compared=bool(pairs),
        nothing_compared="no comparable PGD pair in this evaluation",
        failed_lead="significantly weaker at",
        failures=[
            f"λ={p['lambda']} ({p['stronger']} {100 * p['stronger_ra']:.2f}% > "
            f"{p['weaker']} {100 * p['weaker_ra']:.2f}%)"
            for p in failed
        ],
    )
    return {
        "name": "stronger_pgd_not_weaker",
        "passed": not failed,
        "detail": detail,
        "pairs": pairs,
    }


def black_box_not_stronger(result: Dict[str, Any]) -> Dict[str, Any]:
    """Checks the Square attack never beats the strongest white-box attack.

    If a score-based attack finds significantly more adversarial examples at
    some λ than every iterative gradient attack (PGD, APGD, MI-FGSM) of the
    evaluation, the model's gradients mislead the attacks there: the check
    fails. "Significantly" is McNemar's test on the samples the two attacks
    disagree on (see the module docstring), against the white-box attack with
    the lowest RA at that λ. A white-box attack that Square significantly
    beats while a stronger white-box attack does not is listed in
    `weaker_than_black_box` and named in the detail: that attack's own RA
    overstates robustness (e.g. a small-step PGD on a non-robust λ), but
    gradients did find the examples, so the check passes. FGSM is left out:
    one step is not meant to be strong.

    Args:
        result: an `evaluate_lambda_grid` result.

    Returns:
        check dict with one comparison per λ and black-box attack (against
        the lowest white-box RA at that λ) and the list of weaker white-box
        attacks.
    """
    configs = {a["label"]: _attack_config(a) for a in result["attacks"]}
    black = [label for label, c in configs.items() if c.name == "square"]
    white = [label for label, c in configs.items() if c.name not in ("square", "fgsm")]
    comparisons = []
    candidates = []
    for label in black:
        for key, black_ra in result["robust_accuracy"][label].items():
            if not white:
                continue
            white_ras = {w: result["robust_accuracy"][w][key] for w in white}
            strongest = min(white_ras, key=white_ras.get)
            comparisons.append(
                {"lambda": key, "black_box": label, "black_box_ra": black_ra,
                 "white_box": strongest, "white_box_ra": white_ras[strongest]}
            )
            candidates.extend(
                {"lambda": key, "black_box": label, "white_box": w, "white_box_ra": ra,
                 "black_box_ra": black_ra}
                for w, ra in white_ras.items()
                if w != strongest and ra > black_ra
            )
    _compare(result, comparisons, "white_box", "black_box")
    _compare(result, candidates, "white_box", "black_box")
    weaker = [{k: v for k, v in c.items() if k != "passed"} for c in candidates if not c["passed"]]
    failed = [c for c in comparisons if not c["passed"]]
    detail = _comparison_detail(
        "Square RA is not significantly below the RA of the strongest iterative white-box "
        "attack at any λ (McNemar, α = 5%)",
        compared=bool(comparisons),
        nothing_compared="no Square and white-box pair in this evaluation",
        failed_lead="Square beats every white-box attack at",
        failures=[
            f"λ={c['lambda']} ({100 * c['black_box_ra']:.2f}% < {c['white_box']} "
            f"{100 * c['white_box_ra']:.2f}%)"
            for c in failed
        ],
    )
    if weaker:
        detail += "; weaker than Square (their RA overstates robustness): " + ", ".join(
            f"{w['white_box']} at λ={w['lambda']}" for w in weaker
        )
    return {
        "name": "black_box_not_stronger",
        "passed": not failed,
        "detail": detail,
        "comparisons": comparisons,
        "weaker_than_black_box": weaker,
    }


# Attacks whose own RA a report may quote, so check 5 holds them to the
# strongest attack; FGSM (one step) and Square (the black-box check) are not
# meant to be strong, and ensemble members are cumulative parts of one figure.
_QUOTED_WHITE_BOX = ("pgd", "mi_fgsm", "apgd_ce", "apgd_dlr", "apgd_t", "fab_t")


def weaker_attacks_not_overstating(result: Dict[str, Any]) -> Dict[str, Any]:
    """Checks no stand-alone white-box attack keeps significantly more samples than the strongest.

    At every λ the strongest attack is the one with the lowest RA (an
    ensemble member's RA is cumulative, so AutoAttack's last member when
    present). Every stand-alone PGD, MI-FGSM, APGD, APGD-T or FAB-T attack
    with a higher RA is compared with it by McNemar's test on the samples
    they disagree on (see the module docstring): the check fails, naming the
    attack, when the attack keeps significantly more samples robust than the
    strongest one breaks. Its RA then overstates robustness (the robustness
    to report is the worst case).

    Args:
        result: an `evaluate_lambda_grid` result.

    Returns:
        check dict with one comparison per λ and compared attack (`weaker`,
        `weaker_ra`, `strongest`, `strongest_ra`, the paired counts
        `only_lower` (robust only under the weaker attack) and `only_other`,
        the p-value, threshold and whether it passed) and `overstating`, the
        attacks that failed with the λ values where they did.
    """
    configs = {a["label"]: _attack_config(a) for a in result["attacks"]}
    quoted = [
        label for label, c in configs.items() if not c.ensemble and c.name in _QUOTED_WHITE_BOX
    ]
    comparisons = []
    keys = next(iter(result["robust_accuracy"].values()), {})
    for key in keys:
        ras = {label: result["robust_accuracy"][label][key] for label in configs}
        strongest = min(ras, key=ras.get)
        comparisons.extend(
            {"lambda": key, "weaker": label, "weaker_ra": ras[label],
             "strongest": strongest, "strongest_ra": ras[strongest]}
            for label in quoted
            if label != strongest and ras[label] > ras[strongest]
        )
    _compare(result, comparisons, "weaker", "strongest")
    failed = [c for c in comparisons if not c["passed"]]
    overstating: Dict[str, List[str]] = {}
    for c in failed:
        overstating.setdefault(c["weaker"], []).append(c["lambda"])
    detail = (
        "no stand-alone white-box attack keeps significantly more samples robust than the "
        "strongest attack at any λ (McNemar, α = 5%)"
    )
    if not comparisons:
        detail += " (nothing to compare in this evaluation)"
    if failed:
        detail += "; these attacks overstate robustness (report the worst case instead): " + ", ".join(
            f"{c['weaker']} at λ={c['lambda']} ({100 * c['weaker_ra']:.2f}% vs {c['strongest']} "
            f"{100 * c['strongest_ra']:.2f}%, {c['only_lower']} samples robust only under it, "
            f"{c['only_other']} only under {c['strongest']})"
            if "only_lower" in c
            else f"{c['weaker']} at λ={c['lambda']}"
            for c in failed
        )
    return {
        "name": "weaker_attacks_not_overstating",
        "passed": not failed,
        "detail": detail,
        "comparisons": comparisons,
        "overstating": overstating,
    }


def paired_checks(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The checks that need only an evaluation's recorded counts (3, 4 and 5).

    Args:
        result: an `evaluate_lambda_grid` result.

    Returns:
        list of check dicts: `stronger_pgd_not_weaker`,
        `black_box_not_stronger`, `weaker_attacks_not_overstating`.
    """
    return [
        stronger_pgd_not_weaker(result),
        black_box_not_stronger(result),
        weaker_attacks_not_overstating(result),
    ]


def _attack_config(entry: Dict[str, Any]) -> config_lib.AttackConfig:
    fields = {f.name for f in dataclasses.fields(config_lib.AttackConfig)}
    return config_lib.AttackConfig(**{k: v for k, v in entry.items() if k in fields})
