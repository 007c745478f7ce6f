"""Accuracy, robustness and cost of a multi-exit network under early exit (SPEC §3).

An RDI-Net predicts each input at the first side exit whose softmax entropy is
below that exit's threshold, else at the final output, for clean and
adversarial inputs alike. This module measures, for every λ of a grid (one λ
for a plain network, which ignores it):

- TA: accuracy of the early-exit prediction on clean images;
- ATA per attack and attack form, as the paper's Tables 2–4: "Branch i" (the
  single attack on side exit i), "Main Branch" (the single attack on the final
  output), "Average", "Max-Average" and "Random"; the early-exit prediction is
  made on the adversarial images;
- worst-case ATA: the lowest ATA over the forms (the paper's definition), and
  the stricter per-sample worst case (a sample counts only if every form
  fails on it);
- the exit distribution of clean images and of each form's adversarial images
  (the paper's Fig. 2), and the average multiply-accumulates per image that
  early exit spends, against the backbone's;
- with `efficiency_attack`, the attack on efficiency itself
  (`attacks.multi_exit.delay_exit_attack`): inputs perturbed to raise the early
  exits' entropy, and how much of the saving survives them.

Predictions are computed from the full network's outputs with
`exit_rule.select_exits` (identical to what the adaptive SavedModel returns,
which skips the work); costs come from `models.multi_exit.exit_macs`.

Example:

```python
result = multi_exit_eval.evaluate_multi_exit(
    network, test_ds, thresholds=[0.2, 0.4], lambdas=[1.0],
    attacks=[config.AttackConfig(epsilon=0.3, step_size=0.01, num_steps=40)])
result["per_lambda"]["1.0"]["worst_case"]["PGD-40"]["accuracy"]
```
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from oat_tf import config as config_lib
from oat_tf import operating_point
from oat_tf.attacks import multi_exit as multi_exit_attacks
from oat_tf.evaluation import robust_eval
from oat_tf.models import exit_rule
from oat_tf.models import multi_exit

EFFICIENCY_LABEL = "Delay-Exit"


def form_label(form: str, exit_name: Optional[str] = None) -> str:
    """The paper's name of an attack form: "Branch 1", "Main Branch", "Average", ...

    Args:
        form: str, one of `config.EXIT_FORMS`.
        exit_name: str, the attacked output of a single attack ("exit_i" or
            "final").

    Returns:
        str.
    """
    if form == "single":
        if exit_name == "final":
            return "Main Branch"
        if not isinstance(exit_name, str) or not exit_name.startswith("exit_"):
            raise ValueError(
                "`exit_name` must be 'final' or 'exit_<i>' for a single attack. "
                f"Received: exit_name={exit_name!r}"
            )
        return f"Branch {exit_name[len('exit_'):]}"
    return {"average": "Average", "max_average": "Max-Average", "random": "Random"}[form]


def attack_instances(forms: Sequence[str], names: Sequence[str]) -> List[Tuple[str, Optional[str]]]:
    """Expands forms into (form, exit_name) instances: "single" gives one per output.

    Args:
        forms: sequence of str from `config.EXIT_FORMS`.
        names: the network's output names.

    Returns:
        list of (form, exit_name or None).
    """
    instances: List[Tuple[str, Optional[str]]] = []
    for form in forms:
        if form not in config_lib.EXIT_FORMS:
            raise ValueError(f"`forms` must be names from {config_lib.EXIT_FORMS}. Received: forms={list(forms)!r}")
        if form == "single":
            instances.extend(("single", name) for name in names)
        else:
            instances.append((form, None))
    return instances


def thresholds_from_json(values: Sequence[Any]) -> np.ndarray:
    """Inverse of `operating_point.thresholds_to_json`: float32 [M]."""
    return np.asarray(operating_point.check_thresholds(values, name="thresholds"), np.float32)


def _check_thresholds(thresholds: Sequence[float], num_side_exits: int) -> np.ndarray:
    return np.asarray(operating_point.check_thresholds(thresholds, num_side_exits, "thresholds"), np.float32)


def _lambda_rows(lambda_thresholds: Any, lambdas: Sequence[float], num_side_exits: int) -> Dict[float, np.ndarray]:
    """{λ: thresholds} for every λ of `lambdas`, from a table or a list of OperatingPoints."""
    table = operating_point.checked_table(lambda_thresholds, num_side_exits)
    missing = [lam for lam in lambdas if lam not in table]
    if missing:
        raise ValueError(
            "`lambda_thresholds` must have a row for every λ of `lambdas`. "
            f"Missing: {missing}; received rows for {sorted(table)}"
        )
    return {lam: np.asarray(table[lam], np.float32) for lam in lambdas}


def _outputs_fn(model, names, lam):
    def outputs(images):
        lam_vector = tf.fill(tf.shape(images)[:1], lam)
        result = model({"image": images, "lambda": lam_vector}, training=False)
        return {name: tf.cast(result[name], tf.float32) for name in names}

    return outputs


def _predict(model, names, images, lam, thresholds):
    """(correct-ready prediction logits, exit index, per-output logits) at early exit."""
    outputs = _outputs_fn(model, names, lam)(images)
    exit_index, chosen = exit_rule.select_exits([outputs[n] for n in names], thresholds)
    return chosen, exit_index, outputs


def _build_clean_fn(model, names, image_spec):
    def clean(images, labels, lam, thresholds):
        chosen, exit_index, outputs = _predict(model, names, images, lam, thresholds)
        per_output = tf.stack(
            [tf.equal(tf.argmax(outputs[n], -1, output_type=tf.int32), labels) for n in names]
        )
        return tf.equal(tf.argmax(chosen, -1, output_type=tf.int32), labels), exit_index, per_output

    thresholds_spec = tf.TensorSpec([len(names) - 1], tf.float32)
    return tf.function(clean, input_signature=robust_eval.batch_signature(image_spec, thresholds_spec))


def _build_attack_fn(model, names, image_spec, attack, form, exit_name):
    def adversarial(images, labels, lam, thresholds, seed):
        logits_fn = _outputs_fn(model, names, lam)
        if form == "delay_exit":
            x_adv = multi_exit_attacks.delay_exit_attack(
                logits_fn, images, attack=attack, output_names=names, seed=seed
            )
        else:
            x_adv = multi_exit_attacks.multi_exit_attack(
                logits_fn, images, labels, form=form, attack=attack, output_names=names,
                exit_name=exit_name, seed=seed,
            )
        chosen, exit_index, _ = _predict(model, names, x_adv, lam, thresholds)
        return tf.equal(tf.argmax(chosen, -1, output_type=tf.int32), labels), exit_index

    thresholds_spec = tf.TensorSpec([len(names) - 1], tf.float32)
    return tf.function(
        adversarial,
        input_signature=robust_eval.batch_signature(
            image_spec, thresholds_spec, tf.TensorSpec([2], tf.int64)
        ),
    )


def _seed(seed: int, batch_index: int, lam: float, label: str) -> tf.Tensor:
    """The attack seed of one (batch, λ, attack form), as `robust_eval` derives them."""
    return robust_eval.derive_seeds(seed, batch_index, lam, label)[0]


class _Tally:
    """Counts of correct predictions and exits for one (λ, input kind)."""

    def __init__(self, num_outputs: int):
        self.correct = 0
        self.exits = np.zeros([num_outputs], np.int64)

    def add(self, correct: np.ndarray, exit_index: np.ndarray) -> None:
        self.correct += int(np.sum(correct))
        self.exits += np.bincount(exit_index, minlength=self.exits.shape[0])

    def summary(self, num_examples: int, costs: np.ndarray) -> Dict[str, Any]:
        distribution = self.exits / max(1, num_examples)
        return {
            "accuracy": float(self.correct / max(1, num_examples)),
            "exit_distribution": [float(v) for v in distribution],
            "average_macs": float(np.dot(distribution, costs)),
        }


def evaluate_multi_exit(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    thresholds: Sequence[float],
    lambdas: Sequence[float],
    attacks: Sequence[config_lib.AttackConfig],
    forms: Sequence[str] = config_lib.EXIT_FORMS,
    efficiency_attack: bool = True,
    seed: int = 0,
    lambda_thresholds: Optional[Any] = None,
) -> Dict[str, Any]:
    """Measures TA, ATA per attack form, exit usage and cost under early exit.

    Args:
        model: a multi-exit keras.Model (`models.multi_exit.is_multi_exit`),
            called as `model({"image", "lambda"}, training=False)` and
            returning a dict of logits per output.
        dataset: tf.data.Dataset of `(images, labels)` batches, images in
            [0, 1]; iterated once.
        thresholds: sequence of float, one entropy threshold per side exit
            (-inf: that exit never fires).
        lambdas: sequence of float in [0, 1]; a plain network ignores λ, so
            give it one value.
        attacks: sequence of AttackConfig with `name` "pgd" or "fgsm", each
            solved in every form.
        forms: sequence of str from `config.EXIT_FORMS`.
        efficiency_attack: bool, also run `delay_exit_attack` with the first
            attack's settings.
        seed: int >= 0, seed of every attack's random start.
        lambda_thresholds: optional {λ: thresholds}, or a list of
            `operating_point.OperatingPoint`s carrying `exit_thresholds`, with
            a row for every λ of `lambdas` (e.g. those calibrated per λ for
            multi-exit OAT); each λ is then evaluated with its own row instead
            of `thresholds`.

    Returns:
        dict, JSON-serialisable: `num_examples`, `seed`, `lambdas`,
        `output_names`, `thresholds`, `lambda_thresholds` ({λ key: thresholds}
        used per λ, or None), `exit_macs` ({output: MACs per image
        of exiting there; with every threshold -inf the side heads are
        skipped and "final" costs the backbone alone}),
        `backbone_macs`, `attacks` (label → settings), and `per_lambda`
        ({λ key: {"clean": tally, "per_output_clean_accuracy": {output:
        accuracy without early exit}, "attacks": {attack label: {form label:
        tally}}, "worst_case": {attack label: {"accuracy", "form",
        "per_sample_accuracy"}}, "efficiency_attack": tally or None}}), where a
        tally is {"accuracy", "exit_distribution" (fractions per output, in
        output order), "average_macs"}.
    """
    if not multi_exit.is_multi_exit(model):
        raise ValueError(
            "`model` must be a multi-exit network (outputs exit_1, ..., final). "
            f"Received: {getattr(model, 'name', type(model).__name__)}"
        )
    names = tuple(multi_exit.output_names(model))
    threshold_values = _check_thresholds(thresholds, len(names) - 1)
    lambda_values = list(config_lib.check_lambda_values("lambdas", lambdas))
    attacks = list(attacks)
    for attack in attacks:
        if not isinstance(attack, config_lib.AttackConfig) or attack.name not in ("pgd", "fgsm"):
            raise ValueError(
                "`attacks` must be AttackConfigs with name 'pgd' or 'fgsm' (the attackers of the "
                f"multi-exit forms). Received: attacks={attacks!r}"
            )
    labels_of_attacks = [a.describe() for a in attacks]
    rows = {lam: threshold_values for lam in lambda_values}
    if lambda_thresholds is not None:
        rows = _lambda_rows(lambda_thresholds, lambda_values, len(names) - 1)
    instances = attack_instances(forms, names)
    image_spec = robust_eval.dataset_image_spec(dataset)
    macs = multi_exit.exit_macs(model)
    costs = np.asarray([macs[n] for n in names], np.float64)
    backbone = int(multi_exit.backbone_macs(model))
    if all(np.all(np.isneginf(row)) for row in rows.values()):
        # No side exit can fire: the side heads need not run, and every
        # sample costs the backbone alone.
        costs[-1] = backbone

    # The functions live in `robust_eval`'s per-model cache (keys of another shape).
    clean_fn = robust_eval.cached_function(
        model, ("clean", names, image_spec), lambda m: _build_clean_fn(m, names, image_spec)
    )
    attack_fns = {
        (a_label, form_label(form, exit_name)): robust_eval.cached_function(
            model, ("attack", attack, form, exit_name, image_spec),
            lambda m, attack=attack, form=form, exit_name=exit_name: _build_attack_fn(
                m, names, image_spec, attack, form, exit_name
            ),
        )
        for attack, a_label in zip(attacks, labels_of_attacks)
        for form, exit_name in instances
    }
    delay_fn = None
    if efficiency_attack and attacks:
        delay_fn = robust_eval.cached_function(
            model, ("attack", attacks[0], "delay_exit", None, image_spec),
            lambda m: _build_attack_fn(m, names, image_spec, attacks[0], "delay_exit", None),
        )

    num_outputs = len(names)
    clean = {lam: _Tally(num_outputs) for lam in lambda_values}
    per_output = {lam: np.zeros([num_outputs], np.int64) for lam in lambda_values}
    adversarial = {lam: {key: _Tally(num_outputs) for key in attack_fns} for lam in lambda_values}
    survived = {lam: {a: 0 for a in labels_of_attacks} for lam in lambda_values}
    delayed = {lam: _Tally(num_outputs) for lam in lambda_values}
    thresholds_tensors = {lam: tf.constant(row) for lam, row in rows.items()}
    num_examples = 0
    start = time.time()
    for batch_index, (images, labels) in enumerate(dataset):
        images, labels = robust_eval.batch_inputs(images, labels)
        for lam in lambda_values:
            lam_tensor = tf.constant(lam, tf.float32)
            thresholds_tensor = thresholds_tensors[lam]
            correct, exit_index, output_correct = clean_fn(images, labels, lam_tensor, thresholds_tensor)
            clean[lam].add(correct.numpy(), exit_index.numpy())
            per_output[lam] += output_correct.numpy().sum(axis=1)
            all_forms = {a: np.ones([int(images.shape[0])], bool) for a in labels_of_attacks}
            for (a_label, f_label), fn in attack_fns.items():
                correct, exit_index = fn(
                    images, labels, lam_tensor, thresholds_tensor,
                    _seed(seed, batch_index, lam, f"{a_label}/{f_label}"),
                )
                correct = correct.numpy()
                adversarial[lam][(a_label, f_label)].add(correct, exit_index.numpy())
                all_forms[a_label] &= correct
            for a_label in labels_of_attacks:
                survived[lam][a_label] += int(all_forms[a_label].sum())
            if delay_fn is not None:
                correct, exit_index = delay_fn(
                    images, labels, lam_tensor, thresholds_tensor,
                    _seed(seed, batch_index, lam, EFFICIENCY_LABEL),
                )
                delayed[lam].add(correct.numpy(), exit_index.numpy())
        num_examples += int(images.shape[0])
        logging.info("Multi-exit evaluation: %d examples (%.1f s).", num_examples, time.time() - start)
    if num_examples == 0:
        raise ValueError("`dataset` must yield at least one example. Received: an empty dataset")

    per_lambda = {}
    for lam in lambda_values:
        attack_results: Dict[str, Dict[str, Any]] = {a: {} for a in labels_of_attacks}
        for (a_label, f_label), tally in adversarial[lam].items():
            attack_results[a_label][f_label] = tally.summary(num_examples, costs)
        worst = {}
        for a_label, by_form in attack_results.items():
            if not by_form:
                continue
            weakest = min(by_form, key=lambda f: by_form[f]["accuracy"])
            worst[a_label] = {
                "accuracy": by_form[weakest]["accuracy"],
                "form": weakest,
                "per_sample_accuracy": float(survived[lam][a_label] / num_examples),
            }
        per_lambda[robust_eval.lambda_key(lam)] = {
            "clean": clean[lam].summary(num_examples, costs),
            "per_output_clean_accuracy": {
                name: float(per_output[lam][i] / num_examples) for i, name in enumerate(names)
            },
            "attacks": attack_results,
            "worst_case": worst,
            "efficiency_attack": delayed[lam].summary(num_examples, costs) if delay_fn is not None else None,
        }
    result = {
        "num_examples": num_examples,
        "seed": int(seed),
        "lambdas": lambda_values,
        "output_names": list(names),
        "thresholds": operating_point.thresholds_to_json(threshold_values),
        "lambda_thresholds": None if lambda_thresholds is None else {
            robust_eval.lambda_key(lam): operating_point.thresholds_to_json(row) for lam, row in rows.items()
        },
        "exit_macs": {name: int(cost) for name, cost in zip(names, costs)},
        "backbone_macs": backbone,
        "attacks": {label: config_lib.to_dict(a) for label, a in zip(labels_of_attacks, attacks)},
        "efficiency_attack_settings": config_lib.to_dict(attacks[0]) if delay_fn is not None else None,
        "per_lambda": per_lambda,
    }
    logging.info("Multi-exit evaluation of %d examples in %.1f s.", num_examples, time.time() - start)
    return result


def saving(average_macs: float, backbone_macs: float) -> float:
    """Fraction of the backbone's cost saved: 1 − average / backbone."""
    return float(1.0 - average_macs / backbone_macs) if backbone_macs > 0 else 0.0
