"""The RDI-Nets trainer: adversarial training of a multi-exit network (SPEC §3).

A multi-exit network returns a dict of logits `{"exit_1": …, …, "exit_M":
…, "final": …}` (M side exits plus the final output). One step:

1. (OAT backbone only) draw λ per sample with `LambdaSampler`, as
   `OATTrainer` does: the λ = 0 samples come first, a static count;
2. craft x_adv with the network in inference mode (`training=False`), by the
   attack form of the defence (`oat_tf.attacks.multi_exit.multi_exit_attack`):
   "main" = the single attack on "final", "average" = the average attack,
   "max_average" = the max-average attack; "none" (standard training) crafts
   nothing. An OAT backbone attacks only its λ ≠ 0 samples, λ passed to the
   network;
3. inside the tape, forward the clean batch and x_adv with `training=True`;
   the clean pass leaves the adversarial group's moving BN statistics alone
   unless `adversarial_bn_statistics="mixed"`, as in `OATTrainer`;
4. the loss per sample, with exit weights w_i over the M + 1 outputs f_i:
   - plain backbone (`sampling=None`): the paper's hybrid loss
     `Σ_i w_i · [CE(f_i(x), y) + CE(f_i(x_adv), y)]` (the clean term only for
     "none");
   - OAT backbone (`sampling` given):
     `Σ_i w_i · [(1 − λ)·CE(f_i(x), y) + λ·CE(f_i(x_adv), y)]`;
   averaged over the global batch (each replica's mean is divided by the
   number of replicas, because the optimizer sums the replicas' gradients),
   plus the network's own losses (weight regularizers);
5. one optimizer update.

Without `sampling` the `"lambda"` input is fed as a domain indicator: 0 for
clean images and 1 for adversarial ones (the attack included). A "plain"
network ignores it; a dual-BN network then routes each pass to its own BN.

Every random draw (λ, attack starts, random attack weights) is a stateless
function of the run seed, the optimizer step and the replica, so a resumed run
replays the same draws as an uninterrupted one. `fit`, `evaluate`,
checkpoints (`tf.train.Checkpoint`), `get_config` / `from_config` and
`tf.distribute` strategies work as with `OATTrainer`.

Metrics: `loss`; `clean_accuracy` and `adversarial_accuracy` of the "final"
output; `clean_accuracy_exit_<i>` and `adversarial_accuracy_exit_<i>` of
every side exit.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.attacks import multi_exit as multi_exit_attacks
from oat_tf.layers import dual_batch_norm
from oat_tf.models import multi_exit
from oat_tf.training import lambda_sampling
from oat_tf.training import oat_model

DEFENCES = ("none", "main", "average", "max_average")
FINAL = multi_exit.FINAL_OUTPUT_NAME
# The attack form (and the targeted output of a single attack) of each defence.
DEFENCE_ATTACKS = {
    "main": ("single", FINAL),
    "average": ("average", None),
    "max_average": ("max_average", None),
}
# Domain indicators fed as λ without λ sampling.
CLEAN_DOMAIN = 0.0
ADVERSARIAL_DOMAIN = 1.0


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


def exit_metric_name(name: str, output: str) -> str:
    """Returns the name of a per-output metric, e.g. `"clean_accuracy_exit_1"`."""
    return f"{name}_{output}"


@keras.saving.register_keras_serializable(package="oat_tf")
class MultiExitTrainer(keras.Model):
    """Trains a multi-exit network (RDI-Nets) with a multi-exit defence.

    Args:
        network: keras.Model taking `{"image": [N,H,W,C], "lambda": [N]}` and
            returning a dict of logits `{"exit_1", …, "exit_M", "final"}`.
        attack: AttackConfig, the attacker that solves the defence's attack
            form ("pgd" or "fgsm"). May be None only for `defence="none"`.
        defence: str, one of `DEFENCES`: "none" (standard training, clean
            loss only), "main" (x_adv from the single attack on "final"),
            "average" or "max_average" (those attack forms).
        exit_weights: sequence of M + 1 non-negative floats w_i in output
            order (exit_1, …, final), not all zero; None means all 1.
        sampling: LambdaSamplingConfig for a λ-conditioned (OAT) backbone, or
            None for a plain backbone trained with the hybrid loss. Must be
            None for `defence="none"`.
        seed: int, run seed for λ sampling and the attack's random draws.
        adversarial_bn_statistics: str, which training passes update the
            adversarial group's moving BN statistics: "adversarial" (only the
            adversarial pass) or "mixed" (also the clean pass), as in
            `OATTrainer`. Without `sampling` the clean pass feeds λ = 0, so
            it reaches only the clean group either way.
        **kwargs: `keras.Model` keyword arguments.

    Example:
    >>> network = rdi_small_cnn.RDISmallCNN(variant="plain")
    >>> trainer = MultiExitTrainer(network, attack=AttackConfig(epsilon=0.3),
    ...                            defence="max_average", seed=0)
    >>> trainer.compile(optimizer=optimizers.make_optimizer(...))
    >>> trainer.fit(train_dataset, epochs=..., steps_per_epoch=...)
    """

    def __init__(
        self,
        network: keras.Model,
        *,
        attack: Optional[config_lib.AttackConfig],
        defence: str = "max_average",
        exit_weights: Optional[Sequence[float]] = None,
        sampling: Optional[config_lib.LambdaSamplingConfig] = None,
        seed: int = 0,
        adversarial_bn_statistics: str = "adversarial",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if defence not in DEFENCES:
            raise ValueError(f"`defence` must be one of {DEFENCES}. Received: defence={defence!r}")
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
        if adversarial_bn_statistics not in config_lib.ADVERSARIAL_BN_STATISTICS:
            raise ValueError(
                "`adversarial_bn_statistics` must be one of "
                f"{config_lib.ADVERSARIAL_BN_STATISTICS}. "
                f"Received: adversarial_bn_statistics={adversarial_bn_statistics!r}"
            )
        self.network = network
        # Not `output_names`: keras.Model reads that attribute when compiling.
        self.output_keys = network_output_names(network)
        self.exit_weights = check_exit_weights(exit_weights, self.output_keys)
        self.attack = attack
        self.defence = defence
        self.sampling = sampling
        self.seed = int(seed)
        self.adversarial_bn_statistics = adversarial_bn_statistics
        self.sampler = None if sampling is None else lambda_sampling.LambdaSampler(sampling)
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.clean_accuracy = keras.metrics.SparseCategoricalAccuracy(name="clean_accuracy")
        self.adversarial_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="adversarial_accuracy"
        )
        exits = self.output_keys[:-1]
        self.exit_clean_accuracies = [
            keras.metrics.SparseCategoricalAccuracy(name=exit_metric_name("clean_accuracy", e))
            for e in exits
        ]
        self.exit_adversarial_accuracies = [
            keras.metrics.SparseCategoricalAccuracy(
                name=exit_metric_name("adversarial_accuracy", e)
            )
            for e in exits
        ]
        # The network is a built functional model: nothing to infer from data.
        self.built = network.built

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.clean_accuracy,
            self.adversarial_accuracy,
            *self.exit_clean_accuracies,
            *self.exit_adversarial_accuracies,
        ]

    @property
    def lambda_conditioned(self) -> bool:
        """Whether λ is sampled per sample (OAT backbone) rather than a domain indicator."""
        return self.sampler is not None

    def _step_seeds(self):
        """Returns independent stateless seeds for λ sampling and the attack."""
        return oat_model.step_seeds(self.seed, self.optimizer.iterations)

    def _draw(self, data):
        """Reads a batch and draws its λ (None without sampling).

        Returns:
            (images, labels, drawn, attack_seed, replicas), `drawn` a
            `LambdaBatch` or None.
        """
        images = tf.cast(tf.convert_to_tensor(data[0]), tf.float32)
        labels = tf.convert_to_tensor(data[1])
        batch_size = images.shape[0]
        if batch_size is None:
            raise ValueError(
                "The batch size must be static: batch the dataset with "
                f"`drop_remainder=True`. Received: images.shape={images.shape}"
            )
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        lambda_seed, attack_seed, replicas = self._step_seeds()
        drawn = None if self.sampler is None else self.sampler.sample(batch_size, lambda_seed)
        return images, labels, drawn, attack_seed, replicas

    def _num_zeros(self, images, drawn) -> int:
        """Static number of leading samples that get no adversarial example."""
        if self.defence == "none":
            return images.shape[0]
        return 0 if drawn is None else drawn.num_zeros

    def _clean_lambdas(self, images, drawn):
        if drawn is None:
            return tf.fill([images.shape[0]], tf.constant(CLEAN_DOMAIN, tf.float32))
        return drawn.lambdas

    def _adversarial_lambdas(self, images, drawn):
        zeros = self._num_zeros(images, drawn)
        if drawn is None:
            return tf.fill([images.shape[0] - zeros], tf.constant(ADVERSARIAL_DOMAIN, tf.float32))
        return drawn.lambdas[zeros:]

    def _adversarial_images(self, images, labels, lambdas, seed):
        """Runs the defence's attack form on `images` (network in inference mode)."""
        form, exit_name = DEFENCE_ATTACKS[self.defence]

        def logits_fn(x):
            return self.network({"image": x, "lambda": lambdas}, training=False)

        adversarial = multi_exit_attacks.multi_exit_attack(
            logits_fn,
            images,
            labels,
            form=form,
            attack=self.attack,
            output_names=self.output_keys,
            exit_name=exit_name,
            seed=seed,
        )
        return tf.stop_gradient(adversarial)

    def _craft(self, images, labels, drawn, seed):
        """Crafts x_adv of the samples that need one (None if none does).

        Args:
            images, labels: the batch.
            drawn: LambdaBatch of the batch, or None without sampling.
            seed: stateless seed of the attack.

        Returns:
            tf.Tensor [N − num_zeros, H, W, C] or None.
        """
        zeros = self._num_zeros(images, drawn)
        if zeros >= images.shape[0]:
            return None
        lambdas = self._adversarial_lambdas(images, drawn)

        def attack():
            return self._adversarial_images(images[zeros:], labels[zeros:], lambdas, seed)

        if drawn is not None and self.sampling.sampling == "batch_wise":
            return tf.cond(drawn.attack_needed, attack, lambda: tf.identity(images[zeros:]))
        return attack()

    def _prepare(self, data):
        """Draws λ and crafts the adversarial images of one batch.

        Returns:
            (images, labels, drawn, adversarial, replicas).
        """
        images, labels, drawn, attack_seed, replicas = self._draw(data)
        adversarial = self._craft(images, labels, drawn, attack_seed)
        return images, labels, drawn, adversarial, replicas

    def _weighted_cross_entropy(self, labels, outputs) -> tf.Tensor:
        """Σ_i w_i · CE(f_i, y) per sample, over the outputs with w_i > 0."""
        total = None
        for name, weight in zip(self.output_keys, self.exit_weights):
            if weight == 0.0:
                continue
            term = weight * self.cross_entropy(labels, outputs[name])
            total = term if total is None else total + term
        return total

    def _objective(self, images, labels, drawn, adversarial, training):
        """Returns the mean loss and the clean / adversarial output dicts.

        The loss excludes the network's own losses (`_regularization_loss`).
        The clean outputs cover the batch; the adversarial outputs cover its
        last N − num_zeros samples (None without adversarial images, and the
        clean outputs are None when no sample weighs the clean loss).
        """
        zeros = self._num_zeros(images, drawn)
        per_sample = tf.zeros([images.shape[0]], tf.float32)
        outputs = adversarial_outputs = None
        clean_used = drawn is None or self.sampler.clean_loss_used
        if clean_used:
            with dual_batch_norm.moving_statistics_updates(
                adversarial=self.adversarial_bn_statistics == "mixed"
            ):
                outputs = self.network(
                    {"image": images, "lambda": self._clean_lambdas(images, drawn)},
                    training=training,
                )
            clean_loss = self._weighted_cross_entropy(labels, outputs)
            per_sample += clean_loss if drawn is None else (1.0 - drawn.lambdas) * clean_loss
        if adversarial is not None:
            adversarial_outputs = self.network(
                {"image": adversarial, "lambda": self._adversarial_lambdas(images, drawn)},
                training=training,
            )
            adversarial_loss = self._weighted_cross_entropy(labels[zeros:], adversarial_outputs)
            if drawn is not None:
                adversarial_loss = drawn.lambdas[zeros:] * adversarial_loss
            if zeros:
                adversarial_loss = tf.concat(
                    [tf.zeros([zeros], tf.float32), adversarial_loss], axis=0
                )
            per_sample += adversarial_loss
        return tf.reduce_mean(per_sample), outputs, adversarial_outputs

    def _regularization_loss(self, training):
        """The network's own losses (weight regularizers), counted once per step."""
        if training and self.network.losses:
            return tf.add_n(self.network.losses)
        return tf.constant(0.0, tf.float32)

    def _update_metrics(self, loss, labels, zeros, outputs, adversarial_outputs):
        self.loss_tracker.update_state(loss)
        exits = self.output_keys[:-1]
        if outputs is not None:
            self.clean_accuracy.update_state(labels, outputs[FINAL])
            for metric, name in zip(self.exit_clean_accuracies, exits):
                metric.update_state(labels, outputs[name])
        if adversarial_outputs is not None:
            self.adversarial_accuracy.update_state(labels[zeros:], adversarial_outputs[FINAL])
            for metric, name in zip(self.exit_adversarial_accuracies, exits):
                metric.update_state(labels[zeros:], adversarial_outputs[name])
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images, labels, drawn, adversarial, replicas = self._prepare(data)
        with tf.GradientTape() as tape:
            loss, outputs, adversarial_outputs = self._objective(
                images, labels, drawn, adversarial, training=True
            )
            loss += self._regularization_loss(training=True)
            # The optimizer sums the replicas' gradients: scale to the global mean.
            scaled_loss = loss / float(replicas)
        variables = self.network.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        # A variable no weighted output depends on (an exit with w_i = 0) gets a zero gradient.
        gradients = [tf.zeros_like(v) if g is None else g for g, v in zip(gradients, variables)]
        self.optimizer.apply(gradients, variables)
        results: Dict[str, tf.Tensor] = self._update_metrics(
            loss, labels, self._num_zeros(images, drawn), outputs, adversarial_outputs
        )
        results["learning_rate"] = tf.convert_to_tensor(self.optimizer.learning_rate)
        return results

    def test_step(self, data):
        """The training objective on held-out data, in inference mode."""
        images, labels, drawn, adversarial, _ = self._prepare(data)
        loss, outputs, adversarial_outputs = self._objective(
            images, labels, drawn, adversarial, training=False
        )
        return self._update_metrics(
            loss, labels, self._num_zeros(images, drawn), outputs, adversarial_outputs
        )

    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "attack": None if self.attack is None else config_lib.to_dict(self.attack),
            "defence": self.defence,
            "exit_weights": list(self.exit_weights),
            "sampling": None if self.sampling is None else config_lib.to_dict(self.sampling),
            "seed": self.seed,
            "adversarial_bn_statistics": self.adversarial_bn_statistics,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        attack_dict = config.pop("attack")
        attack = None if attack_dict is None else config_lib.AttackConfig(**attack_dict)
        sampling_dict = config.pop("sampling")
        sampling = None
        if sampling_dict is not None:
            sampling_dict = dict(sampling_dict)
            sampling_dict["values"] = tuple(sampling_dict["values"])
            sampling = config_lib.LambdaSamplingConfig(**sampling_dict)
        return cls(network, attack=attack, sampling=sampling, **config)
