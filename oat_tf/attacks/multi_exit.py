"""Attack forms for multi-exit networks (RDI-Nets, Hu et al., ICLR 2020, §3.1).

A multi-exit network has M side exits and the final output, M + 1 outputs
named "exit_1", ..., "exit_M", "final"; its `logits_fn(images)` returns a dict
`{name: logits [N, K]}`. The attack forms differ in the objective that the
attacker algorithm (PGD by default, or FGSM, from `oat_tf.attacks.pgd`)
maximises within the L∞ ε-ball, with CE_i the cross-entropy of output i:

* "single" (Eq. 2): CE of one output, `exit_name`.
* "average" (Eq. 3): (1 / (M + 1)) Σ_i CE_i.
* "max_average" (Eq. 4): the M + 1 single attacks are run (output i with the
  seed `output_seeds(seed, M + 1)[i]`); per sample the candidate whose
  average CE over all outputs is highest is kept. Batched: the candidates are
  stacked [N, M + 1, H, W, C] and gathered by the per-sample argmax.
* "random" (Appendix D, Eq. 7): Σ_i w_i CE_i with per-sample weights drawn
  uniformly on the simplex, `random_exit_weights(N, M + 1, seed)`; the PGD
  random start then uses `stateless_fold_in(seed, 1)` so that it is
  independent of the weights.

`delay_exit_attack` attacks the efficiency instead of the accuracy: it
maximises the mean softmax entropy of the side exits, so that fewer inputs
pass an early exit's entropy threshold and more run the full network.

All attacks follow `pgd.pgd_linf`: PGD restarts keep per sample the restart
with the highest objective, results carry no gradient, lie in [0, 1] and
within ε of the images, randomness comes only from the explicit stateless
seed, and everything works eagerly and inside a `tf.function` with an unknown
batch dimension.

Example:

```python
from oat_tf import config
from oat_tf.attacks import multi_exit

logits_fn = lambda x: model({"image": x, "lambda": lam}, training=False)
names = ("exit_1", "exit_2", "final")
attack = config.AttackConfig(name="pgd", epsilon=0.3, step_size=0.01, num_steps=40)
x_adv = multi_exit.multi_exit_attack(
    logits_fn, images, labels, form="max_average", attack=attack,
    output_names=names, seed=[0, step])
x_slow = multi_exit.delay_exit_attack(
    logits_fn, images, attack=attack, output_names=names, seed=[1, step])
```
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence

import tensorflow as tf
from absl import logging

from oat_tf import config as config_lib
from oat_tf.attacks import core
from oat_tf.attacks import losses
from oat_tf.attacks import pgd
from oat_tf.models import exit_rule

# images [N, H, W, C] -> {output name: logits [N, K]}.
MultiLogitsFn = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]

FORMS = ("single", "average", "max_average", "random")
# Attacker algorithms the forms can be solved with.
ATTACKERS = ("pgd", "fgsm")
# The name of the last output; every other output is a side exit.
FINAL_NAME = "final"

# Seed of the PGD start of the random form, derived from its `seed` (which
# draws the weights) so that the two draws are independent.
_RANDOM_FORM_START_FOLD = 1


# === Seeds and weights ===


def output_seeds(seed: core.Seed, num_outputs: int) -> tf.Tensor:
    """Seeds of the max-average attack's single attacks, one per output.

    Output i uses `stateless_fold_in(seed, i)`.

    Args:
        seed: shape [2] integer tensor or pair of ints.
        num_outputs: int >= 1, the number of outputs M + 1.

    Returns:
        tf.Tensor of shape [num_outputs, 2] and dtype int64.
    """
    seed = core.check_seed(seed)
    core.check_int("num_outputs", num_outputs)
    return tf.stack(
        [
            tf.cast(tf.random.experimental.stateless_fold_in(seed, i, alg="philox"), tf.int64)
            for i in range(num_outputs)
        ]
    )


def random_exit_weights(
    batch_size: tf.Tensor, num_outputs: int, seed: core.Seed
) -> tf.Tensor:
    """Per-sample convex weights over the outputs, uniform on the simplex.

    Normalised standard exponentials (a flat Dirichlet) built from raw Philox
    bits, so eager, graph and XLA runs give the same weights for a seed.

    Args:
        batch_size: int or scalar int tensor N (may be dynamic).
        num_outputs: int >= 1, the number of outputs M + 1.
        seed: shape [2] integer tensor or pair of ints.

    Returns:
        tf.Tensor of shape [N, num_outputs], float32: non-negative rows that
        sum to 1.
    """
    seed = core.check_seed(seed)
    core.check_int("num_outputs", num_outputs)
    shape = tf.stack([tf.cast(batch_size, tf.int32), tf.constant(num_outputs, tf.int32)])
    bits = tf.random.stateless_uniform(
        shape, seed=seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox"
    )
    # Top 24 bits -> uniform in (0, 1), away from 0 so the log is finite.
    unit = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32)
    unit = (unit + 0.5) * (1.0 / (1 << 24))
    exponentials = -tf.math.log(unit)
    weights = exponentials / tf.reduce_sum(exponentials, axis=1, keepdims=True)
    weights.set_shape([None, num_outputs])
    return weights


# === Losses ===


def exit_losses(
    logits: Mapping[str, tf.Tensor], labels: tf.Tensor, output_names: Sequence[str]
) -> tf.Tensor:
    """Per-sample cross-entropy of every output, stacked in `output_names` order.

    Args:
        logits: dict {output name: logits [N, K]}, keys equal to
            `output_names`.
        labels: tf.Tensor of shape [N], integer class ids.
        output_names: sequence of the M + 1 output names.

    Returns:
        tf.Tensor of shape [N, M + 1], float32.
    """
    logits = _check_logits(logits, output_names)
    return tf.stack(
        [losses.sparse_cross_entropy(logits[name], labels) for name in output_names],
        axis=1,
    )


# === Attacks ===


def multi_exit_attack(
    logits_fn: MultiLogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    form: str,
    attack: config_lib.AttackConfig,
    output_names: Sequence[str],
    exit_name: Optional[str] = None,
    seed: Optional[core.Seed],
) -> tf.Tensor:
    """Runs one RDI-Nets attack form on a multi-exit network.

    Args:
        logits_fn: callable mapping images [N, H, W, C] to the network's dict
            of logits `{name: [N, K]}` with keys `output_names`; it must run
            the model in inference mode.
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1]
            (computed in float32). N may be unknown.
        labels: tf.Tensor of shape [N], integer true class ids.
        form: str, one of `FORMS`: "single", "average", "max_average",
            "random" (see the module docstring).
        attack: AttackConfig with `name` "pgd" (uses epsilon, step_size,
            num_steps, random_start, num_restarts) or "fgsm" (uses epsilon);
            `targeted` must be False.
        output_names: sequence of the M + 1 output names, side exits first
            and "final" last.
        exit_name: str, the output the "single" form attacks (required there,
            must be None for the other forms).
        seed: shape [2] integer tensor or pair of ints, the stateless seed;
            required by PGD with a random start and by the "random" form,
            may be None otherwise.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient: the
        adversarial images, in [0, 1] and within `attack.epsilon`.
    """
    if form not in FORMS:
        raise ValueError(f"`form` must be one of {FORMS}. Received: form={form!r}")
    output_names = _check_output_names(output_names)
    _check_attack(attack)
    if form == "single":
        if exit_name not in output_names:
            raise ValueError(
                "`exit_name` must be one of output_names="
                f"{output_names} for form='single'. Received: exit_name={exit_name!r}"
            )
    elif exit_name is not None:
        raise ValueError(
            f"`exit_name` must be None for form={form!r} (it selects the output "
            f"of form='single'). Received: exit_name={exit_name!r}"
        )
    if seed is not None:
        seed = core.check_seed(seed)
    elif form == "random" or _uses_random_start(attack):
        raise ValueError(
            "`seed` must be a shape [2] integer tensor or a pair of ints for "
            f"form={form!r} with attack={attack.describe()} (random start or "
            "random weights). Received: seed=None"
        )
    images = core.check_images(images)
    labels = core.check_labels("labels", labels, images)
    logging.vlog(
        1,
        "multi_exit_attack: form=%s attack=%s outputs=%s exit_name=%s",
        form,
        attack.describe(),
        output_names,
        exit_name,
    )

    def losses_fn(x: tf.Tensor) -> tf.Tensor:
        return exit_losses(logits_fn(x), labels, output_names)

    if form == "single":
        index = output_names.index(exit_name)
        return _run(attack, lambda x: losses_fn(x)[:, index], images, seed)
    if form == "average":
        return _run(attack, lambda x: tf.reduce_mean(losses_fn(x), axis=1), images, seed)
    if form == "random":
        weights = random_exit_weights(tf.shape(images)[0], len(output_names), seed)
        start_seed = tf.cast(
            tf.random.experimental.stateless_fold_in(
                seed, _RANDOM_FORM_START_FOLD, alg="philox"
            ),
            tf.int64,
        )
        return _run(
            attack,
            lambda x: tf.reduce_sum(weights * losses_fn(x), axis=1),
            images,
            start_seed,
        )
    # max_average: the single attacks, then a per-sample choice.
    seeds = output_seeds(seed, len(output_names)) if seed is not None else None
    candidates: List[tf.Tensor] = []
    average_losses: List[tf.Tensor] = []
    for index in range(len(output_names)):
        candidate = _run(
            attack,
            lambda x, i=index: losses_fn(x)[:, i],
            images,
            None if seeds is None else seeds[index],
        )
        candidates.append(candidate)
        average_losses.append(tf.reduce_mean(losses_fn(candidate), axis=1))
    return select_max_average(tf.stack(candidates, axis=1), tf.stack(average_losses, axis=1))


def select_max_average(candidates: tf.Tensor, average_losses: tf.Tensor) -> tf.Tensor:
    """Keeps per sample the candidate with the highest average loss (Eq. 4).

    Args:
        candidates: tf.Tensor of shape [N, C, H, W, ch], C candidate
            adversarial images per sample.
        average_losses: tf.Tensor of shape [N, C], each candidate's average
            loss over all outputs.

    Returns:
        tf.Tensor of shape [N, H, W, ch] without gradient. A NaN loss never
        wins over a number (it is treated as -inf); ties keep the earlier
        candidate.
    """
    scores = tf.where(
        tf.math.is_nan(average_losses), tf.constant(-float("inf"), average_losses.dtype),
        average_losses,
    )
    best = tf.argmax(scores, axis=1, output_type=tf.int32)
    return tf.stop_gradient(tf.gather(candidates, best, axis=1, batch_dims=1))


def delay_exit_attack(
    logits_fn: MultiLogitsFn,
    images: tf.Tensor,
    *,
    attack: config_lib.AttackConfig,
    output_names: Sequence[str],
    seed: Optional[core.Seed],
) -> tf.Tensor:
    """The attack on efficiency: raises the side exits' entropy to delay exiting.

    Maximises (1 / M) Σ_{i < M} H(softmax(f_i(x + δ))) over the side exits
    (every output but "final"), with H the entropy of
    `oat_tf.models.exit_rule.entropy`. Higher early-exit entropy means
    fewer inputs pass the thresholds early, so more of them pay for the full
    network. Labels are not needed.

    Args:
        logits_fn: callable mapping images [N, H, W, C] to the dict of logits
            with keys `output_names`, in inference mode.
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        attack: AttackConfig with `name` "pgd" or "fgsm" (as in
            `multi_exit_attack`).
        output_names: sequence of the M + 1 output names, with at least one
            side exit besides "final".
        seed: shape [2] integer tensor or pair of ints; required by PGD with
            a random start, may be None otherwise.

    Returns:
        tf.Tensor of shape [N, H, W, C], float32, without gradient, in [0, 1]
        and within `attack.epsilon` of `images`.
    """
    output_names = _check_output_names(output_names)
    side_exits = [name for name in output_names if name != FINAL_NAME]
    if not side_exits:
        raise ValueError(
            "`output_names` must include at least one side exit (a name other "
            f"than {FINAL_NAME!r}). Received: output_names={output_names}"
        )
    _check_attack(attack)
    if seed is not None:
        seed = core.check_seed(seed)
    elif _uses_random_start(attack):
        raise ValueError(
            "`seed` must be a shape [2] integer tensor or a pair of ints for "
            f"attack={attack.describe()} with a random start. Received: seed=None"
        )
    images = core.check_images(images)
    logging.vlog(
        1, "delay_exit_attack: attack=%s side exits=%s", attack.describe(), side_exits
    )

    def objective(x: tf.Tensor) -> tf.Tensor:
        logits = _check_logits(logits_fn(x), output_names)
        entropies = [exit_rule.entropy(logits[name]) for name in side_exits]
        return tf.add_n(entropies) / float(len(side_exits))

    return _run(attack, objective, images, seed)


# === Helpers ===


def _uses_random_start(attack: config_lib.AttackConfig) -> bool:
    return attack.name == "pgd" and attack.random_start


def _run(
    attack: config_lib.AttackConfig,
    objective_fn: core.ObjectiveFn,
    images: tf.Tensor,
    seed: Optional[tf.Tensor],
) -> tf.Tensor:
    """Ascends `objective_fn` with the attacker `attack.name` names."""
    if attack.name == "fgsm":
        return pgd.fgsm_objective(objective_fn, images, epsilon=attack.epsilon)
    return pgd.pgd_objective(
        objective_fn,
        images,
        epsilon=attack.epsilon,
        step_size=attack.step_size,
        num_steps=attack.num_steps,
        random_start=attack.random_start,
        num_restarts=attack.num_restarts,
        seed=seed,
    )


def _check_attack(attack: config_lib.AttackConfig) -> None:
    if not isinstance(attack, config_lib.AttackConfig):
        raise ValueError(f"`attack` must be an AttackConfig. Received: attack={attack!r}")
    if attack.name not in ATTACKERS:
        raise ValueError(
            f"`attack.name` must be one of {ATTACKERS} for the multi-exit attack "
            f"forms. Received: attack.name={attack.name!r}"
        )
    if attack.targeted:
        raise ValueError(
            "`attack.targeted` must be False for the multi-exit attack forms. "
            "Received: attack.targeted=True"
        )


def _check_output_names(output_names: Sequence[str]) -> tuple:
    if isinstance(output_names, str) or not isinstance(output_names, Sequence):
        raise ValueError(
            "`output_names` must be a sequence of output names such as "
            f"('exit_1', 'final'). Received: output_names={output_names!r}"
        )
    names = tuple(output_names)
    if (
        not names
        or not all(isinstance(name, str) for name in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            "`output_names` must be a non-empty sequence of distinct strings. "
            f"Received: output_names={output_names!r}"
        )
    return names


def _check_logits(
    logits: Mapping[str, tf.Tensor], output_names: Sequence[str]
) -> Dict[str, tf.Tensor]:
    if not isinstance(logits, Mapping) or set(logits) != set(output_names):
        received = sorted(logits) if isinstance(logits, Mapping) else type(logits).__name__
        raise ValueError(
            "`logits_fn` must return a dict of logits whose keys equal "
            f"output_names={tuple(output_names)}. Received: {received}"
        )
    return dict(logits)
