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

Each check returns a dict `{"name", "passed", "detail", ...}`; a failed check
is printed and saved with the results, never hidden. Comparisons of accuracies
allow a tolerance of one sample (1 / num_examples) for sampling noise of
randomised attacks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import tensorflow as tf

from oat_tf import attacks
from oat_tf import config as config_lib


def _key(value: float) -> str:
    return repr(float(value))


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


def stronger_pgd_not_weaker(result: Dict[str, Any]) -> Dict[str, Any]:
    """Checks PGD with more steps / restarts never scores a higher RA.

    Args:
        result: an `evaluate_lambda_grid` result.

    Returns:
        check dict listing every compared pair.
    """
    configs = {a["label"]: _attack_config(a) for a in result["attacks"]}
    tolerance = 1.0 / max(1, result["num_examples"])
    pairs = []
    passed = True
    for strong_label, strong in configs.items():
        for weak_label, weak in configs.items():
            if not _dominates(strong, weak):
                continue
            for key, weak_ra in result["robust_accuracy"][weak_label].items():
                strong_ra = result["robust_accuracy"][strong_label][key]
                ok = strong_ra <= weak_ra + tolerance
                passed &= ok
                pairs.append(
                    {"lambda": key, "stronger": strong_label, "weaker": weak_label,
                     "stronger_ra": strong_ra, "weaker_ra": weak_ra, "passed": ok}
                )
    return {
        "name": "stronger_pgd_not_weaker",
        "passed": bool(passed),
        "detail": "PGD with ≥ steps and ≥ restarts (same ε, step) has RA ≤ the weaker one"
        + ("" if pairs else " (no comparable PGD pair in this evaluation)"),
        "pairs": pairs,
    }


def black_box_not_stronger(result: Dict[str, Any]) -> Dict[str, Any]:
    """Checks the Square attack never beats the strongest white-box attack.

    If a score-based attack finds more adversarial examples at some λ than
    every iterative gradient attack (PGD, APGD, MI-FGSM) of the evaluation,
    the model's gradients mislead the attacks there: the check fails. A
    white-box attack that Square beats while a stronger white-box attack
    does not is listed in `weaker_than_black_box` and named in the detail:
    that attack's own RA overstates robustness (e.g. a small-step PGD on a
    non-robust λ), but gradients did find the examples, so the check passes.
    FGSM is left out: one step is not meant to be strong.

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
    tolerance = 1.0 / max(1, result["num_examples"])
    comparisons = []
    weaker = []
    passed = True
    for label in black:
        for key, black_ra in result["robust_accuracy"][label].items():
            if not white:
                continue
            white_ras = {w: result["robust_accuracy"][w][key] for w in white}
            strongest = min(white_ras, key=white_ras.get)
            ok = black_ra + tolerance >= white_ras[strongest]
            passed &= ok
            comparisons.append(
                {"lambda": key, "black_box": label, "black_box_ra": black_ra,
                 "white_box": strongest, "white_box_ra": white_ras[strongest], "passed": ok}
            )
            weaker.extend(
                {"lambda": key, "black_box": label, "white_box": w, "white_box_ra": ra, "black_box_ra": black_ra}
                for w, ra in white_ras.items()
                if black_ra + tolerance < ra
            )
    failed = [c for c in comparisons if not c["passed"]]
    detail = "Square RA ≥ the RA of the strongest iterative white-box attack at every λ"
    if not comparisons:
        detail += " (no Square and white-box pair in this evaluation)"
    if failed:
        detail += "; Square beats every white-box attack at " + ", ".join(
            f"λ={c['lambda']} ({100 * c['black_box_ra']:.2f}% < {c['white_box']} "
            f"{100 * c['white_box_ra']:.2f}%)" for c in failed
        )
    if weaker:
        detail += "; weaker than Square (their RA overstates robustness): " + ", ".join(
            f"{w['white_box']} at λ={w['lambda']}" for w in weaker
        )
    return {
        "name": "black_box_not_stronger",
        "passed": bool(passed),
        "detail": detail,
        "comparisons": comparisons,
        "weaker_than_black_box": weaker,
    }


def _attack_config(entry: Dict[str, Any]) -> config_lib.AttackConfig:
    fields = {f.name for f in dataclasses.fields(config_lib.AttackConfig)}
    return config_lib.AttackConfig(**{k: v for k, v in entry.items() if k in fields})
