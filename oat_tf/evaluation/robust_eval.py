"""Clean and adversarial accuracy of a λ-conditioned model over a grid of λ.

OAT trains one model f(x, λ); at test time λ trades standard accuracy (SA,
clean images) for robust accuracy (RA, adversarial images). This module
measures both for every λ of a grid and every attack of a list, in one pass
over the data:

- SA(λ): accuracy of `model({"image": x, "lambda": λ}, training=False)`.
- RA(λ, attack): accuracy on the attack's adversarial images, the attack
  itself also run against the model at the same λ with `training=False`.
- Worst case(λ): a sample counts only if it is classified correctly clean and
  under every attack (the per-sample worst case, as AutoAttack reports it), so
  it is at most SA and at most every RA.
- Ensembles (AttackConfig.ensemble, e.g. AutoAttack): the members of one
  ensemble run in order, each only on the samples classified correctly clean
  and under the ensemble's earlier members; a member's RA is the accuracy
  after it and the earlier members (the last member's RA is the ensemble's).
- Paired counts(λ): for every ordered pair of attacks (a, b), the number of
  samples that survive a but not b. Two attacks on the same samples are
  compared by these (McNemar's test in `masking_checks`), not by their RAs
  alone, which each carry the sampling noise of their random starts.

Each attack gets one `tf.function` (optionally XLA-compiled) whose arguments
are tensors with an unknown batch dimension (images, labels, λ, seed), so it is
traced once and reused for every λ and every batch; the functions are cached
per model, so calling this once per λ (as the resumable `oat_tf.evaluate`
does) does not trace again. Attack randomness uses stateless seeds derived
from (seed, batch index, λ value, attack name): the same call gives the same
numbers, and the numbers of one λ and one attack do not depend on which other
λ or attacks share the call. A targeted attack aims at a wrong class drawn
uniformly per sample from a second derived seed.

Example:

```python
result = robust_eval.evaluate_lambda_grid(
    model, test_ds, lambdas=[0.0, 0.2, 1.0],
    attacks=[config.AttackConfig(num_steps=20)], seed=0)
result["robust_accuracy"]["PGD-20"]["1.0"]
```
"""

from __future__ import annotations

import dataclasses
import time
import weakref
import zlib
from typing import Any, Callable, Dict, List, Sequence

import keras
import numpy as np
import tensorflow as tf
import tqdm
from absl import logging

from oat_tf import attacks as attacks_lib
from oat_tf import config as config_lib
from oat_tf import operating_point


# The key of a λ value in an evaluation result ("0.0", "0.1", "1.0"), one
# format for every axis of an operating point.
lambda_key = operating_point.value_key


def _validate_lambdas(lambdas: Sequence[float]) -> List[float]:
    if isinstance(lambdas, (str, bytes)):
        raise ValueError(
            f"`lambdas` must be a list of numbers in [0, 1]. Received: lambdas={lambdas!r}"
        )
    return list(config_lib.check_lambda_values("lambdas", lambdas))


def _validate_attacks(attacks: Sequence[config_lib.AttackConfig]) -> List[str]:
    labels = []
    for attack in attacks:
        if not isinstance(attack, config_lib.AttackConfig):
            raise ValueError(
                "`attacks` must be a list of `AttackConfig`. "
                f"Received: attacks={list(attacks)!r}"
            )
        labels.append(attack.describe())
    if len(set(labels)) != len(labels):
        raise ValueError(
            "`attacks` must have distinct names (`AttackConfig.describe()`), since "
            f"results are keyed by them. Received: attacks with names {labels}"
        )
    return labels


def dataset_image_spec(dataset: tf.data.Dataset) -> tf.TensorSpec:
    """The TensorSpec of a batched (images, labels) dataset's images.

    Args:
        dataset: tf.data.Dataset of (images [N, H, W, C], labels [N]) batches.

    Returns:
        tf.TensorSpec of the images, float32 (the key of the compiled functions).

    Raises:
        ValueError: if the dataset's elements are not (images, labels) pairs.
    """
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(
            "`dataset` must yield `(images, labels)` batches. "
            f"Received: dataset with element_spec={spec!r}"
        )
    image_spec = spec[0]
    if image_spec.shape.rank != 4:
        raise ValueError(
            "`dataset` must yield batched images of shape [N, H, W, C]. "
            f"Received: dataset with image spec {image_spec!r}"
        )
    return tf.TensorSpec([None] + image_spec.shape.as_list()[1:], tf.float32)


def batch_inputs(images: tf.Tensor, labels: tf.Tensor):
    """One batch as the evaluation takes it: float32 images, int32 labels [N].

    Args:
        images: tensor [N, H, W, C].
        labels: tensor [N] (or [N, 1]).

    Returns:
        (images, labels), cast and checked.

    Raises:
        ValueError: if the batch sizes differ.
    """
    images = tf.cast(images, tf.float32)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            "`dataset` must yield one integer label per image. Received: a batch "
            f"of {images.shape[0]} images with labels of shape {labels.shape}"
        )
    return images, labels


def _make_logits_fn(model: keras.Model, lam: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
    def logits_fn(images: tf.Tensor) -> tf.Tensor:
        lam_vector = tf.fill(tf.shape(images)[:1], lam)
        logits = model({"image": images, "lambda": lam_vector}, training=False)
        return tf.cast(logits, tf.float32)

    return logits_fn


def _correct(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)


def batch_signature(image_spec: tf.TensorSpec, *extra: tf.TensorSpec) -> List[tf.TensorSpec]:
    """The input signature of an evaluation function of one batch at one λ.

    Args:
        image_spec: TensorSpec of the images [N, H, W, C].
        *extra: the specs of the function's further arguments (seeds, ...).

    Returns:
        [images, int32 labels [N], float32 λ [], *extra].
    """
    return [image_spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.float32), *extra]


def _build_clean_fn(
    model: keras.Model, image_spec: tf.TensorSpec, jit_compile: bool
) -> Callable:
    def clean_correct(images, labels, lam):
        return _correct(_make_logits_fn(model, lam)(images), labels)

    return tf.function(
        clean_correct, input_signature=batch_signature(image_spec), jit_compile=jit_compile
    )


def _build_attack_fn(
    model: keras.Model,
    attack: config_lib.AttackConfig,
    image_spec: tf.TensorSpec,
    jit_compile: bool,
) -> Callable:
    def adversarial_correct(images, labels, lam, seeds):
        logits_fn = _make_logits_fn(model, lam)
        target_labels = None
        if attack.targeted:
            target_labels = _random_wrong_labels(logits_fn(images), labels, seeds[1])
        adversarial = attacks_lib.run_attack(
            attack, logits_fn, images, labels, seed=seeds[0], target_labels=target_labels
        )
        return _correct(logits_fn(adversarial), labels)

    return tf.function(
        adversarial_correct,
        input_signature=batch_signature(image_spec, tf.TensorSpec([2, 2], tf.int64)),
        jit_compile=jit_compile,
    )


def _random_wrong_labels(logits: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    # A uniformly drawn class other than the true one, per sample.
    num_classes = tf.shape(logits)[-1]
    offsets = tf.random.stateless_uniform(
        tf.shape(labels), seed=seed, minval=1, maxval=num_classes, dtype=tf.int32
    )
    return tf.math.floormod(labels + offsets, num_classes)


# model -> {(kind, attack, image spec, jit): tf.function}; entries die with the model.
_FUNCTIONS: "weakref.WeakKeyDictionary[Any, Dict[tuple, Callable]]" = weakref.WeakKeyDictionary()


def cached_function(model: Any, key: tuple, build: Callable[[Any], Callable]) -> Callable:
    """Returns `build(model)` for `key`, built once per model.

    The function is built on a weak proxy of the model, so the cache entry
    does not keep the model alive.
    """
    try:
        functions = _FUNCTIONS.setdefault(model, {})
        proxy = weakref.proxy(model)
    except TypeError:  # Not weakly referenceable: no cache.
        return build(model)
    if key not in functions:
        functions[key] = build(proxy)
    return functions[key]


def derive_seeds(seed: int, batch_index: int, lam: float, attack_label: str) -> tf.Tensor:
    """The stateless seeds of one attack on one batch at one λ.

    Args:
        seed: int, the evaluation's seed.
        batch_index: int, the batch.
        lam: float, λ.
        attack_label: str, the attack's name in the results.

    Returns:
        int64 tensor [2, 2]: row 0 seeds the attack, row 1 its target classes.
    """
    # Row 0 seeds the attack, row 1 the target classes of a targeted attack.
    # λ enters as millionths and the attack as its name's CRC-32, so a
    # (λ, attack) pair gets the same seeds whatever else is evaluated with it.
    state = np.random.SeedSequence(
        [seed, batch_index, int(round(lam * 1_000_000)), zlib.crc32(attack_label.encode("utf-8"))]
    )
    return tf.constant(state.generate_state(4, dtype=np.uint32).astype(np.int64).reshape(2, 2))


def _attack_survivors(
    attack_fn: Callable,
    images: tf.Tensor,
    labels: tf.Tensor,
    lam: tf.Tensor,
    seeds: tf.Tensor,
    alive: np.ndarray,
) -> np.ndarray:
    """[N] bool: `alive` and still classified correctly under the attack.

    The attack runs only on the `alive` samples (an ensemble member after the
    first: the samples the earlier members left robust).
    """
    robust = np.zeros_like(alive)
    indices = np.flatnonzero(alive)
    if indices.size:
        robust[indices] = attack_fn(
            tf.gather(images, indices), tf.gather(labels, indices), lam, seeds
        ).numpy()
    return robust


def evaluate_lambda_grid(
    model: keras.Model,
    dataset: tf.data.Dataset,
    lambdas: Sequence[float],
    attacks: Sequence[config_lib.AttackConfig],
    *,
    seed: int = 0,
    jit_compile: bool = False,
    show_progress: bool = False,
) -> dict:
    """Measures clean, per-attack and worst-case accuracy for every λ.

    Args:
        model: keras.Model, called as
            `model({"image": x, "lambda": lam}, training=False)` with `x`
            float32 [N, H, W, C] in [0, 1] and `lam` float32 [N]; returns
            logits [N, K].
        dataset: tf.data.Dataset yielding `(images, labels)` batches, images
            [N, H, W, C] in [0, 1] and integer labels [N]. It is iterated once.
        lambdas: sequence of float, λ values, each finite and in [0, 1]
            (sorted and deduplicated in the result).
        attacks: sequence of AttackConfig, attacks with distinct
            `describe()` names; may be empty (then the worst case equals SA).
            A targeted attack aims, per sample, at a uniformly drawn wrong
            class; its RA is still accuracy on the true labels.
        seed: int >= 0, seed from which every attack's stateless seed is
            derived.
        jit_compile: bool, compile the clean and attack functions with XLA.
        show_progress: bool, show a tqdm progress bar (batch, λ, attack and
            the time left) on stderr.

    Returns:
        dict, JSON-serialisable, accuracies as fractions in [0, 1]:
        `num_examples` (int), `seed` (int), `lambdas` (list of float),
        `clean_accuracy` ({λ key: SA}), `robust_accuracy`
        ({attack name: {λ key: RA}}), `worst_case_accuracy` ({λ key: acc}),
        `robust_only` ({attack a: {attack b: {λ key: int}}}, the number of
        samples classified correctly under attack a but not under attack b,
        for every ordered pair of distinct attacks), `attacks` (list of dicts:
        `label`, the attack name used as key, plus every `AttackConfig`
        field). λ keys come from `lambda_key`.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int. Received: seed={seed!r}")
    lambda_values = _validate_lambdas(lambdas)
    attacks = list(attacks)
    attack_labels = _validate_attacks(attacks)
    image_spec = dataset_image_spec(dataset)

    clean_fn = cached_function(
        model, ("clean", image_spec, jit_compile), lambda m: _build_clean_fn(m, image_spec, jit_compile)
    )
    attack_fns = [
        cached_function(
            model,
            ("attack", a, image_spec, jit_compile),
            lambda m, a=a: _build_attack_fn(m, a, image_spec, jit_compile),
        )
        for a in attacks
    ]
    logging.info(
        "Evaluating %d λ values x %d attacks (%s), seed=%d, jit_compile=%s.",
        len(lambda_values),
        len(attacks),
        ", ".join(attack_labels) or "none",
        seed,
        jit_compile,
    )

    num_lambdas, num_attacks = len(lambda_values), len(attacks)
    clean_counts = np.zeros([num_lambdas], np.int64)
    robust_counts = np.zeros([num_lambdas, num_attacks], np.int64)
    worst_counts = np.zeros([num_lambdas], np.int64)
    # only_counts[i, a, b]: samples robust under attack a but not under b.
    only_counts = np.zeros([num_lambdas, num_attacks, num_attacks], np.int64)
    num_examples = 0
    start = time.time()
    num_batches = int(dataset.cardinality())
    progress_bar = tqdm.tqdm(
        total=num_batches * num_lambdas if num_batches > 0 else None,
        desc="evaluation",
        unit="λ·batch",
        disable=not show_progress,
        dynamic_ncols=True,
        leave=False,
    )
    for batch_index, (images, labels) in enumerate(dataset):
        images, labels = batch_inputs(images, labels)
        for lambda_index, lam in enumerate(lambda_values):
            lam_tensor = tf.constant(lam, tf.float32)
            progress_bar.set_postfix_str(f"batch {batch_index + 1}, λ={lam:g}, clean")
            clean = clean_fn(images, labels, lam_tensor).numpy()
            clean_counts[lambda_index] += int(clean.sum())
            survived = clean
            robust_per_attack = []
            # ensemble name -> samples robust after its members so far.
            ensemble_survivors: Dict[str, np.ndarray] = {}
            for attack_index, attack_fn in enumerate(attack_fns):
                attack, label = attacks[attack_index], attack_labels[attack_index]
                progress_bar.set_postfix_str(f"batch {batch_index + 1}, λ={lam:g}, {label}")
                seeds = derive_seeds(seed, batch_index, lam, label)
                if attack.ensemble:
                    alive = ensemble_survivors.get(attack.ensemble, clean)
                    robust = _attack_survivors(attack_fn, images, labels, lam_tensor, seeds, alive)
                    ensemble_survivors[attack.ensemble] = robust
                else:
                    robust = attack_fn(images, labels, lam_tensor, seeds).numpy()
                robust_counts[lambda_index, attack_index] += int(robust.sum())
                survived = np.logical_and(survived, robust)
                robust_per_attack.append(robust)
            worst_counts[lambda_index] += int(survived.sum())
            if robust_per_attack:
                robust_matrix = np.stack(robust_per_attack).astype(np.int64)  # [A, N]
                only_counts[lambda_index] += robust_matrix @ (1 - robust_matrix).T
            progress_bar.update(1)
        num_examples += int(images.shape[0])
        logging.info(
            "Batch %d done: %d examples so far (%.1f s).",
            batch_index,
            num_examples,
            time.time() - start,
        )
    progress_bar.close()
    if num_examples == 0:
        raise ValueError("`dataset` must yield at least one example. Received: an empty dataset")

    keys = [lambda_key(lam) for lam in lambda_values]
    result = {
        "num_examples": num_examples,
        "seed": int(seed),
        "lambdas": lambda_values,
        "clean_accuracy": {
            key: float(clean_counts[i] / num_examples) for i, key in enumerate(keys)
        },
        "robust_accuracy": {
            label: {key: float(robust_counts[i, j] / num_examples) for i, key in enumerate(keys)}
            for j, label in enumerate(attack_labels)
        },
        "worst_case_accuracy": {
            key: float(worst_counts[i] / num_examples) for i, key in enumerate(keys)
        },
        "robust_only": {
            label_a: {
                label_b: {key: int(only_counts[i, a, b]) for i, key in enumerate(keys)}
                for b, label_b in enumerate(attack_labels)
                if b != a
            }
            for a, label_a in enumerate(attack_labels)
        },
        "attacks": [
            {"label": label, **dataclasses.asdict(attack)}
            for label, attack in zip(attack_labels, attacks)
        ],
    }
    for key in keys:
        logging.info(
            "λ=%s: SA %.2f%% | %s | worst case %.2f%%",
            key,
            100.0 * result["clean_accuracy"][key],
            " | ".join(
                f"RA {label} {100.0 * result['robust_accuracy'][label][key]:.2f}%"
                for label in attack_labels
            ),
            100.0 * result["worst_case_accuracy"][key],
        )
    logging.info("Evaluated %d examples in %.1f s.", num_examples, time.time() - start)
    return result
