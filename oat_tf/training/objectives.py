"""Training objectives of `AdversarialTrainer`: how a batch's operating points
are drawn, which samples are attacked and how, and the loss of one pass.

`AdversarialTrainer.train_step` is the same for every method (draw → craft →
objective → sum over widths → apply); an objective supplies the parts that
differ:

- `OATObjective` (Algorithm 1 of the OAT paper; PGD-AT at a fixed λ with
  `sampling="fixed"`): λ drawn per sample by `LambdaSampler`, the λ = 0
  samples first (a static count); the attack runs on the λ ≠ 0 samples with
  the network in inference mode; the loss per sample is
  `(1 − λ)·CE(clean) + λ·CE(adversarial)`. By default the clean pass updates
  only the clean group's moving BN statistics, so the adversarial group's
  moving statistics (used by the training attack and at test time) are those
  of adversarial images (`adversarial_bn_statistics="adversarial"`; `"mixed"`
  also lets the clean images of λ ≠ 0 samples update them, as the reference
  code does; on MNIST at ε = 0.3 that mix made PGD robustness a
  gradient-masking artefact: APGD-CE 4.8% against PGD-10 83.4% at λ = 1).
  Under `"mixed"` the clean pass runs in every training step, PGD-AT at λ = 1
  included, as in the reference loops (OAT.py, PGDAT.py): its loss weight
  there is 0, so it changes nothing but the moving BN statistics; under
  `"adversarial"` a λ = 1 step has no clean pass.
- `MixedBatchObjective` (Xie & Yuille, SPEC §4): the first
  `mixed_batch_clean_count(N, clean_fraction)` samples stay clean, the rest
  are attacked (with λ = 1 fed), and ONE training-mode pass over the mixed
  batch minimises the mean cross-entropy, so a single BN sees the mixture of
  both domains. λ is the image's domain: 0 for the clean part, 1 for the
  attacked part (a "plain" network ignores it; a "mixture_bn" network routes
  each part to its own BN). `clean_fraction=0` is Madry-style adversarial
  training.
- `MultiExitHybridObjective` (RDI-Nets, SPEC §3): a multi-exit network's
  dict of logits; x_adv from the defence's attack form
  (`oat_tf.attacks.multi_exit.multi_exit_attack`: "main" = the single attack
  on "final", "average", "max_average"; "none" crafts nothing); with exit
  weights w_i the loss per sample is the paper's hybrid loss
  `Σ_i w_i · [CE(f_i(x), y) + CE(f_i(x_adv), y)]` for a plain backbone
  (`sampling=None`; λ fed as the domain, 0 clean and 1 adversarial), or
  `Σ_i w_i · [(1 − λ)·CE(f_i(x), y) + λ·CE(f_i(x_adv), y)]` for an OAT
  backbone (`sampling` given).

Every objective's loss is the mean over the replica's batch and excludes the
network's own losses (weight regularizers), which the trainer adds once per
step. Randomness comes only from the stateless seeds the trainer passes in.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from oat_tf import attacks
from oat_tf import config as config_lib
from oat_tf.attacks import multi_exit as multi_exit_attacks
from oat_tf.layers import dual_batch_norm
from oat_tf.models import conditioning
from oat_tf.models import multi_exit
from oat_tf.training import lambda_sampling

# forward(inputs, training=...) -> the network's output (logits or a dict of them).
Forward = Callable[..., Any]

FINAL = multi_exit.FINAL_OUTPUT_NAME
# The attack form (and the targeted output of a single attack) of each defence.
DEFENCE_ATTACKS = {
    "main": ("single", FINAL),
    "average": ("average", None),
    "max_average": ("max_average", None),
}


def mixed_batch_clean_count(batch_size: int, clean_fraction: float) -> int:
    """Clean samples of a mixed batch: round(clean_fraction · N), halves up.

    Args:
        batch_size: int, N (static).
        clean_fraction: float in [0, 1].

    Returns:
        int in [0, N].
    """
    return min(batch_size, max(0, int(math.floor(clean_fraction * batch_size + 0.5))))


def exit_metric_name(name: str, output: str) -> str:
    """Returns the name of a per-output metric, e.g. `"clean_accuracy_exit_1"`."""
    return f"{name}_{output}"


def network_output_names(network: keras.Model) -> Tuple[str, ...]:
    """Returns the outputs of a multi-exit network, in order: exit_1, …, exit_M, final.

    Args:
        network: keras.Model whose output is a dict of logits keyed
            "exit_1", …, "exit_M", "final".

    Returns:
        Tuple of M + 1 output names.

    Raises:
        ValueError: if `network` is not a multi-exit network.
    """
    if not multi_exit.is_multi_exit(network):
        outputs = getattr(network, "output", None) if getattr(network, "built", False) else None
        received = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ValueError(
            "`network` must be a multi-exit network: a built functional keras.Model whose "
            'output is a dict of logits keyed "exit_1", ..., "exit_M", "final" (M >= 1). '
            f"Received: network={getattr(network, 'name', type(network).__name__)!r} "
            f"with outputs {received}"
        )
    return multi_exit.output_names(network)


def check_exit_weights(
    exit_weights: Optional[Sequence[float]], output_names: Sequence[str]
) -> Tuple[float, ...]:
    """Validates the exit weights w_i (one per output) and returns them as floats.

    Args:
        exit_weights: None (every weight 1) or a sequence of M + 1 finite,
            non-negative numbers, not all zero, in the order of `output_names`.
        output_names: the network's outputs, exit_1, …, final.

    Returns:
        Tuple of M + 1 floats.

    Raises:
        ValueError: if `exit_weights` is malformed.
    """
    count = len(output_names)
    if exit_weights is None:
        return (1.0,) * count
    try:
        if isinstance(exit_weights, (str, bytes)):
            raise TypeError("a string is not a sequence of weights")
        weights = tuple(float(w) for w in exit_weights)
    except (TypeError, ValueError):
        raise ValueError(
            f"`exit_weights` must be a sequence of {count} numbers, one per output "
            f"{tuple(output_names)}. Received: exit_weights={exit_weights!r}"
        ) from None
    if len(weights) != count:
        raise ValueError(
            f"`exit_weights` must hold one weight per output ({count}: "
            f"{', '.join(output_names)}). Received: exit_weights={exit_weights!r} "
            f"({len(weights)} values)"
        )
    if not all(math.isfinite(w) and w >= 0.0 for w in weights):
        raise ValueError(
            "`exit_weights` must be finite and >= 0. "
            f"Received: exit_weights={exit_weights!r}"
        )
    if not any(w > 0.0 for w in weights):
        raise ValueError(
            "`exit_weights` must have at least one positive weight. "
            f"Received: exit_weights={exit_weights!r}"
        )
    return weights


def check_adversarial_bn_statistics(value: str) -> str:
    """Validates `adversarial_bn_statistics` ("adversarial" or "mixed").

    Args:
        value: the argument.

    Returns:
        `value`.

    Raises:
        ValueError: naming the allowed values and the one received.
    """
    if value not in config_lib.ADVERSARIAL_BN_STATISTICS:
        raise ValueError(
            "`adversarial_bn_statistics` must be one of "
            f"{config_lib.ADVERSARIAL_BN_STATISTICS}. "
            f"Received: adversarial_bn_statistics={value!r}"
        )
    return value


class PassMetrics:
    """The accuracy metrics of one pass (one width) of a training step.

    Clean and adversarial accuracy of each output the objective scores:
    `clean_accuracy` / `adversarial_accuracy` of the main output and, for a
    multi-exit network, `clean_accuracy_<exit>` / `adversarial_accuracy_<exit>`
    of every side exit; every name ends with `suffix` (e.g. "_w0.5").

    Args:
        outputs: sequence of (name suffix, output key) pairs: ("", None) for a
            network returning logits; ("", "final"), ("_exit_1", "exit_1"), …
            for a multi-exit network.
        suffix: str appended to every metric name.
    """

    def __init__(self, outputs: Sequence[Tuple[str, Optional[str]]], suffix: str = ""):
        self.outputs = tuple(outputs)
        self.clean = [
            keras.metrics.SparseCategoricalAccuracy(name=f"clean_accuracy{name}{suffix}")
            for name, _ in self.outputs
        ]
        self.adversarial = [
            keras.metrics.SparseCategoricalAccuracy(name=f"adversarial_accuracy{name}{suffix}")
            for name, _ in self.outputs
        ]

    @property
    def metrics(self) -> List[keras.metrics.Metric]:
        """The main output's pair first, then the side exits' clean and adversarial ones."""
        return [self.clean[0], self.adversarial[0], *self.clean[1:], *self.adversarial[1:]]

    def update(self, labels, zeros: int, outputs, adversarial_outputs) -> None:
        """Scores the clean outputs (on the leading samples they cover) and the adversarial ones.

        Args:
            labels: int32 [N], the batch's labels.
            zeros: int, the static number of leading samples without an
                adversarial example.
            outputs: the clean pass's output (logits [n, K] for the first n
                samples, or a dict of them), or None.
            adversarial_outputs: the adversarial pass's output for samples
                `zeros:`, or None.
        """
        if outputs is not None:
            for metric, (_, key) in zip(self.clean, self.outputs):
                logits = outputs if key is None else outputs[key]
                metric.update_state(labels[: logits.shape[0]], logits)
        if adversarial_outputs is not None:
            for metric, (_, key) in zip(self.adversarial, self.outputs):
                logits = adversarial_outputs if key is None else adversarial_outputs[key]
                metric.update_state(labels[zeros:], logits)


class Objective:
    """The method-specific parts of an adversarial training step.

    Subclasses implement `draw`, `num_zeros`, `craft` and `loss`; the trainer
    calls them in that order for every width, with the same drawn operating
    points for all widths and a stateless attack seed per width.
    """

    name = "objective"
    # (name suffix, output key) of each output scored by `PassMetrics`.
    metric_outputs: Tuple[Tuple[str, Optional[str]], ...] = (("", None),)

    def __init__(self):
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None
        )

    def draw(self, batch_size: int, seed: tf.Tensor) -> Optional[lambda_sampling.LambdaBatch]:
        """Draws the batch's operating points (λ per sample), or None when λ is not drawn.

        Args:
            batch_size: int, the static batch size.
            seed: stateless seed [2] of the draw.

        Returns:
            A `LambdaBatch` or None.
        """
        raise NotImplementedError

    def num_zeros(self, batch_size: int, drawn: Optional[lambda_sampling.LambdaBatch]) -> int:
        """The static number of leading samples that get no adversarial example.

        Args:
            batch_size: int, the static batch size.
            drawn: what `draw` returned.

        Returns:
            int in [0, batch_size].
        """
        raise NotImplementedError

    def craft(
        self,
        network: keras.Model,
        width: Optional[float],
        images: tf.Tensor,
        labels: tf.Tensor,
        drawn: Optional[lambda_sampling.LambdaBatch],
        seed: tf.Tensor,
    ) -> Optional[tf.Tensor]:
        """Crafts the adversarial images of samples `num_zeros:`, None if there are none.

        Args:
            network: the network; the attack runs it with `training=False`.
            width: None, or the width α of a slimmable network to run.
            images: float32 [N, H, W, C], the batch.
            labels: int32 [N].
            drawn: what `draw` returned.
            seed: stateless seed [2] of the attack.

        Returns:
            float32 [N − num_zeros, H, W, C] without gradient, or None.
        """
        raise NotImplementedError

    def loss(
        self,
        network: keras.Model,
        width: Optional[float],
        images: tf.Tensor,
        labels: tf.Tensor,
        drawn: Optional[lambda_sampling.LambdaBatch],
        adversarial: Optional[tf.Tensor],
        training: bool,
    ):
        """The mean loss of one pass and the clean / adversarial outputs.

        Args:
            network: the network.
            width: None, or the width α of a slimmable network to run.
            images: float32 [N, H, W, C], the batch.
            labels: int32 [N].
            drawn: what `draw` returned.
            adversarial: what `craft` returned.
            training: bool, run the network in training mode.

        Returns:
            Tuple `(loss, outputs, adversarial_outputs)`: the scalar mean
            loss (without the network's own losses), the clean pass's output
            (None if there was none) and the adversarial pass's output for
            samples `num_zeros:` (None if there was none).
        """
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        """The objective's constructor arguments, JSON-serialisable.

        Returns:
            dict.
        """
        raise NotImplementedError


def forward_at(network: keras.Model, width: Optional[float]) -> Forward:
    """`forward(inputs, training=...)`: the network itself, or its width-α sub-network.

    Args:
        network: the network (a slimmable one when `width` is given).
        width: None, or a width α of `network.widths`.

    Returns:
        A callable with the network's call signature, without `width`.
    """
    if width is None:
        return network

    def forward(inputs, training=None):
        return network(inputs, training=training, width=width)

    return forward


def _runs_clean_pass(
    sampler: lambda_sampling.LambdaSampler, adversarial_bn_statistics: str, training: bool
) -> bool:
    """Whether a λ-sampled objective runs its clean pass this step.

    It runs when its loss is used (some λ < 1 can be drawn) and, under
    "mixed", at every training step: the reference loops run the clean pass
    at every step, at λ = 1 with loss weight 0, so that only the moving BN
    statistics see it.

    Args:
        sampler: the objective's LambdaSampler.
        adversarial_bn_statistics: "adversarial" or "mixed".
        training: bool, a training step.

    Returns:
        bool.
    """
    return sampler.clean_loss_used or (training and adversarial_bn_statistics == "mixed")


def _clean_pass_guard(network: keras.Model, adversarial_bn_statistics: str, training: bool):
    """The context of a clean training pass: under the "adversarial" rule the
    adversarial group's moving BN statistics come out of it unchanged."""
    guarded = training and adversarial_bn_statistics == "adversarial"
    layers = dual_batch_norm.layers_of(network) if guarded else []
    return dual_batch_norm.unchanged_moving_statistics(layers, dual_batch_norm.ADVERSARIAL)


def _attack_logits_fn(forward: Forward, lambdas: tf.Tensor):
    """The attacks' `logits_fn`: the network in inference mode at the samples' λ."""

    def logits_fn(x):
        return forward({conditioning.IMAGE_KEY: x, conditioning.LAMBDA_KEY: lambdas}, training=False)

    return logits_fn


def _attack_after_zeros(attack, network, width, images, labels, drawn, seed) -> tf.Tensor:
    """`attack` on samples `drawn.num_zeros:`, each at its drawn λ, the network at `width`."""
    zeros = drawn.num_zeros
    logits_fn = _attack_logits_fn(forward_at(network, width), drawn.lambdas[zeros:])
    return attacks.run_attack(attack, logits_fn, images[zeros:], labels[zeros:], seed=seed)


def _domains(batch_size: int, clean: int, value_clean: float, value_adversarial: float) -> tf.Tensor:
    return tf.concat(
        [
            tf.fill([clean], tf.constant(value_clean, tf.float32)),
            tf.fill([batch_size - clean], tf.constant(value_adversarial, tf.float32)),
        ],
        axis=0,
    )


class OATObjective(Objective):
    """OAT's per-sample λ-weighted loss (Algorithm 1); PGD-AT with `sampling="fixed"`.

    Args:
        sampling: LambdaSamplingConfig, how λ is drawn per sample.
        attack: AttackConfig, the attack that crafts the training examples.
        adversarial_bn_statistics: "adversarial" (only the adversarial pass
            updates the adversarial group's moving BN statistics) or "mixed"
            (the clean pass of λ ≠ 0 samples too, as the reference code; the
            clean pass then runs in every training step, at λ = 1 with loss
            weight 0, as the reference loops run it).
    """

    name = "oat"

    def __init__(
        self,
        sampling: config_lib.LambdaSamplingConfig,
        attack: config_lib.AttackConfig,
        adversarial_bn_statistics: str = "adversarial",
    ):
        super().__init__()
        self.sampling = sampling
        self.attack = attack
        self.adversarial_bn_statistics = check_adversarial_bn_statistics(adversarial_bn_statistics)
        self.sampler = lambda_sampling.LambdaSampler(sampling)

    def draw(self, batch_size, seed):
        return self.sampler.sample(batch_size, seed)

    def num_zeros(self, batch_size, drawn):
        return drawn.num_zeros

    def craft(self, network, width, images, labels, drawn, seed):
        zeros = drawn.num_zeros
        if zeros >= images.shape[0]:
            return None

        def attack():
            return _attack_after_zeros(self.attack, network, width, images, labels, drawn, seed)

        if self.sampling.sampling == "batch_wise":
            return tf.cond(drawn.attack_needed, attack, lambda: tf.identity(images[zeros:]))
        return attack()

    def loss(self, network, width, images, labels, drawn, adversarial, training):
        forward = forward_at(network, width)
        lambdas, zeros = drawn.lambdas, drawn.num_zeros
        per_sample = tf.zeros([images.shape[0]], tf.float32)
        logits = adversarial_logits = None
        if _runs_clean_pass(self.sampler, self.adversarial_bn_statistics, training):
            with _clean_pass_guard(network, self.adversarial_bn_statistics, training):
                logits = forward(
                    {conditioning.IMAGE_KEY: images, conditioning.LAMBDA_KEY: lambdas}, training=training
                )
            per_sample += (1.0 - lambdas) * self.cross_entropy(labels, logits)
        if adversarial is not None:
            adversarial_logits = forward(
                {conditioning.IMAGE_KEY: adversarial, conditioning.LAMBDA_KEY: lambdas[zeros:]},
                training=training,
            )
            adversarial_loss = self.cross_entropy(labels[zeros:], adversarial_logits)
            per_sample += lambdas * tf.concat([tf.zeros([zeros], tf.float32), adversarial_loss], axis=0)
        return tf.reduce_mean(per_sample), logits, adversarial_logits

    def get_config(self):
        return {
            "sampling": config_lib.to_dict(self.sampling),
            "attack": config_lib.to_dict(self.attack),
            "adversarial_bn_statistics": self.adversarial_bn_statistics,
        }


class MixedBatchObjective(Objective):
    """One pass over a batch whose first part is clean and the rest adversarial.

    Args:
        attack: AttackConfig, the attack that crafts the adversarial part.
        clean_fraction: float in [0, 1], the clean share of a batch.
    """

    name = "mixed_batch"

    def __init__(self, attack: config_lib.AttackConfig, clean_fraction: float = 0.5):
        super().__init__()
        self.attack = attack
        self.clean_fraction = config_lib.check_clean_fraction(clean_fraction)

    def draw(self, batch_size, seed):
        del seed  # The split is static.
        clean = mixed_batch_clean_count(batch_size, self.clean_fraction)
        return lambda_sampling.LambdaBatch(
            lambdas=_domains(batch_size, clean, conditioning.CLEAN_DOMAIN, conditioning.ADVERSARIAL_DOMAIN),
            num_zeros=clean,
            attack_needed=tf.constant(clean < batch_size),
        )

    def num_zeros(self, batch_size, drawn):
        return drawn.num_zeros

    def craft(self, network, width, images, labels, drawn, seed):
        if drawn.num_zeros >= images.shape[0]:
            return None
        return _attack_after_zeros(self.attack, network, width, images, labels, drawn, seed)

    def loss(self, network, width, images, labels, drawn, adversarial, training):
        forward = forward_at(network, width)
        clean = drawn.num_zeros
        mixed = images if adversarial is None else tf.concat([images[:clean], adversarial], 0)
        all_logits = forward(
            {conditioning.IMAGE_KEY: mixed, conditioning.LAMBDA_KEY: drawn.lambdas}, training=training
        )
        loss = tf.reduce_mean(self.cross_entropy(labels, all_logits))
        logits = all_logits[:clean] if clean > 0 else None
        adversarial_logits = all_logits[clean:] if adversarial is not None else None
        return loss, logits, adversarial_logits

    def get_config(self):
        return {"attack": config_lib.to_dict(self.attack), "clean_fraction": self.clean_fraction}


class MultiExitHybridObjective(Objective):
    """The RDI-Nets defences: exit-weighted hybrid loss of a multi-exit network.

    Args:
        output_names: the network's outputs, exit_1, …, exit_M, final
            (`network_output_names`).
        attack: AttackConfig of the attacker ("pgd" or "fgsm"); None only for
            `defence="none"`.
        defence: one of `config.DEFENCES`.
        exit_weights: None (all 1) or M + 1 non-negative weights, not all 0.
        sampling: LambdaSamplingConfig for an OAT backbone, or None for a
            plain backbone (hybrid loss, λ fed as the domain).
        adversarial_bn_statistics: "adversarial" or "mixed", as `OATObjective`.
    """

    name = "multi_exit_hybrid"

    def __init__(
        self,
        output_names: Sequence[str],
        *,
        attack: Optional[config_lib.AttackConfig],
        defence: str = "max_average",
        exit_weights: Optional[Sequence[float]] = None,
        sampling: Optional[config_lib.LambdaSamplingConfig] = None,
        adversarial_bn_statistics: str = "adversarial",
    ):
        super().__init__()
        if defence not in config_lib.DEFENCES:
            raise ValueError(
                f"`defence` must be one of {config_lib.DEFENCES}. Received: defence={defence!r}"
            )
        if attack is None and defence != "none":
            raise ValueError(
                f"`attack` must be an AttackConfig for defence={defence!r}. Received: attack=None"
            )
        if attack is not None and not isinstance(attack, config_lib.AttackConfig):
            raise ValueError(f"`attack` must be an AttackConfig. Received: attack={attack!r}")
        if attack is not None and attack.name not in multi_exit_attacks.ATTACKERS:
            raise ValueError(
                f"`attack.name` must be one of {multi_exit_attacks.ATTACKERS} for the "
                f"multi-exit attack forms. Received: attack.name={attack.name!r}"
            )
        if attack is not None and attack.targeted:
            raise ValueError(
                "`attack.targeted` must be False for adversarial training. "
                "Received: attack.targeted=True"
            )
        if sampling is not None and not isinstance(sampling, config_lib.LambdaSamplingConfig):
            raise ValueError(
                "`sampling` must be None or a LambdaSamplingConfig. "
                f"Received: sampling={sampling!r}"
            )
        if sampling is not None and defence == "none":
            raise ValueError(
                "`sampling` must be None for defence='none' (standard training has no "
                f"adversarial term for λ to weigh). Received: sampling={sampling!r}"
            )
        self.adversarial_bn_statistics = check_adversarial_bn_statistics(adversarial_bn_statistics)
        self.output_names = tuple(output_names)
        self.exit_weights = check_exit_weights(exit_weights, self.output_names)
        self.attack = attack
        self.defence = defence
        self.sampling = sampling
        self.sampler = None if sampling is None else lambda_sampling.LambdaSampler(sampling)
        self.metric_outputs = (("", FINAL),) + tuple(
            ("_" + name, name) for name in self.output_names[:-1]
        )

    def draw(self, batch_size, seed):
        return None if self.sampler is None else self.sampler.sample(batch_size, seed)

    def num_zeros(self, batch_size, drawn):
        if self.defence == "none":
            return batch_size
        return 0 if drawn is None else drawn.num_zeros

    def _clean_lambdas(self, batch_size, drawn):
        if drawn is None:
            return tf.fill([batch_size], tf.constant(conditioning.CLEAN_DOMAIN, tf.float32))
        return drawn.lambdas

    def _adversarial_lambdas(self, batch_size, drawn):
        zeros = self.num_zeros(batch_size, drawn)
        if drawn is None:
            return tf.fill([batch_size - zeros], tf.constant(conditioning.ADVERSARIAL_DOMAIN, tf.float32))
        return drawn.lambdas[zeros:]

    def craft(self, network, width, images, labels, drawn, seed):
        batch_size = images.shape[0]
        zeros = self.num_zeros(batch_size, drawn)
        if zeros >= batch_size:
            return None
        form, exit_name = DEFENCE_ATTACKS[self.defence]
        logits_fn = _attack_logits_fn(forward_at(network, width), self._adversarial_lambdas(batch_size, drawn))

        def attack():
            adversarial = multi_exit_attacks.multi_exit_attack(
                logits_fn,
                images[zeros:],
                labels[zeros:],
                form=form,
                attack=self.attack,
                output_names=self.output_names,
                exit_name=exit_name,
                seed=seed,
            )
            return tf.stop_gradient(adversarial)

        if drawn is not None and self.sampling.sampling == "batch_wise":
            return tf.cond(drawn.attack_needed, attack, lambda: tf.identity(images[zeros:]))
        return attack()

    def _weighted_cross_entropy(self, labels, outputs) -> tf.Tensor:
        """Σ_i w_i · CE(f_i, y) per sample, over the outputs with w_i > 0."""
        total = None
        for name, weight in zip(self.output_names, self.exit_weights):
            if weight == 0.0:
                continue
            term = weight * self.cross_entropy(labels, outputs[name])
            total = term if total is None else total + term
        return total

    def loss(self, network, width, images, labels, drawn, adversarial, training):
        forward = forward_at(network, width)
        batch_size = images.shape[0]
        zeros = self.num_zeros(batch_size, drawn)
        per_sample = tf.zeros([batch_size], tf.float32)
        outputs = adversarial_outputs = None
        # Without sampling the clean pass is the hybrid loss's clean term, always used.
        if drawn is None or _runs_clean_pass(self.sampler, self.adversarial_bn_statistics, training):
            with _clean_pass_guard(network, self.adversarial_bn_statistics, training):
                outputs = forward(
                    {
                        conditioning.IMAGE_KEY: images,
                        conditioning.LAMBDA_KEY: self._clean_lambdas(batch_size, drawn),
                    },
                    training=training,
                )
            clean_loss = self._weighted_cross_entropy(labels, outputs)
            per_sample += clean_loss if drawn is None else (1.0 - drawn.lambdas) * clean_loss
        if adversarial is not None:
            adversarial_outputs = forward(
                {
                    conditioning.IMAGE_KEY: adversarial,
                    conditioning.LAMBDA_KEY: self._adversarial_lambdas(batch_size, drawn),
                },
                training=training,
            )
            adversarial_loss = self._weighted_cross_entropy(labels[zeros:], adversarial_outputs)
            if drawn is not None:
                adversarial_loss = drawn.lambdas[zeros:] * adversarial_loss
            if zeros:
                adversarial_loss = tf.concat([tf.zeros([zeros], tf.float32), adversarial_loss], axis=0)
            per_sample += adversarial_loss
        return tf.reduce_mean(per_sample), outputs, adversarial_outputs

    def get_config(self):
        return {
            "attack": None if self.attack is None else config_lib.to_dict(self.attack),
            "defence": self.defence,
            "exit_weights": list(self.exit_weights),
            "sampling": None if self.sampling is None else config_lib.to_dict(self.sampling),
            "adversarial_bn_statistics": self.adversarial_bn_statistics,
        }
