"""The OAT trainer: a Keras model whose `train_step` is the paper's Algorithm 1.

One step:
1. draw λ per sample (`LambdaSampler`; the λ = 0 samples come first, a static
   count);
2. attack only the samples with λ ≠ 0, with the network in inference mode
   (`training=False`), λ passed to the network;
3. inside the tape, forward the clean batch and the adversarial images with
   `training=True`; by default the clean pass updates only the clean group's
   moving BN statistics, so the adversarial group's moving statistics (used
   by the training attack and at test time) are those of adversarial images
   (`adversarial_bn_statistics="adversarial"`; `"mixed"` also lets the clean
   images of λ ≠ 0 samples update them, as the reference code does — on
   MNIST at ε = 0.3 that mix made PGD robustness a gradient-masking artefact:
   APGD-CE 4.8% against PGD-10 83.4% at λ = 1);
4. loss per sample `(1 − λ)·CE(clean) + λ·CE(adversarial)`, averaged over the
   global batch (divided by the number of replicas, because the optimizer sums
   the replicas' gradients);
5. one optimizer update.

PGD-AT at a fixed λ is the same trainer with `sampling="fixed"` and a plain
network.

`objective="mixed_batch"` (Xie & Yuille, SPEC §4) is the other training mode
of the same trainer, with the same seeds and attack: the first
`mixed_batch_clean_count(N, clean_fraction)` samples of a batch stay clean,
the rest are attacked (with λ = 1 fed), and ONE training-mode pass over the
mixed batch minimises the mean cross-entropy, so a single BN sees the mixture
of both domains. λ is the image's domain, 0 for the clean part and 1 for the
attacked part: a "plain" network ignores it (single BN), a "mixture_bn"
network routes each part to its own BN (Mixture BN). `clean_fraction=0` is
Madry-style adversarial training, 0.5 the usual mixture. `fit`, callbacks, TensorBoard and `tf.distribute` work unchanged.
Every random choice comes from a stateless seed derived from the run seed, the
optimizer step and the replica id, so a resumed run replays the same λ and
PGD starts as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Dict

import keras
import tensorflow as tf

from oat_tf import attacks
from oat_tf import config as config_lib
from oat_tf.layers import dual_batch_norm
from oat_tf.training import lambda_sampling


def mixed_batch_clean_count(batch_size: int, clean_fraction: float) -> int:
    """Clean samples of a mixed batch: round(clean_fraction · N), halves up.

    Args:
        batch_size: int, N (static).
        clean_fraction: float in [0, 1].

    Returns:
        int in [0, N].
    """
    return min(batch_size, max(0, int(math.floor(clean_fraction * batch_size + 0.5))))


def step_seeds(seed: int, iterations: tf.Variable):
    """Independent stateless seeds of one training step on this replica.

    The seeds depend only on the run seed, the optimizer step and the replica
    id, so a resumed run replays the λ draws and attack starts of an
    uninterrupted one.

    Args:
        seed: int, the run seed.
        iterations: the optimizer's step counter.

    Returns:
        Tuple (λ-sampling seed [2], attack seed [2], number of replicas).
    """
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    replica = 0 if context is None else context.replica_id_in_sync_group
    step = tf.cast(iterations, tf.int64)
    counter = step * replicas + tf.cast(replica, tf.int64)
    base = tf.stack([tf.constant(seed, tf.int64), counter])
    seeds = tf.random.experimental.stateless_split(base, num=2)
    return seeds[0], seeds[1], replicas


@keras.saving.register_keras_serializable(package="oat_tf")
class OATTrainer(keras.Model):
    """Trains a λ-conditioned network with once-for-all adversarial training.

    Args:
        network: keras.Model taking `{"image": [N,H,W,C], "lambda": [N]}` and
            returning logits.
        sampling: LambdaSamplingConfig, how λ is drawn per sample.
        attack: AttackConfig, the attack that generates training examples.
        seed: int, run seed for λ sampling and attack starts.
        adversarial_bn_statistics: str, which training passes update the
            adversarial group's moving BN statistics: "adversarial" (only the
            adversarial pass) or "mixed" (also the clean pass of λ ≠ 0
            samples, as the OAT reference code). Unused by "mixed_batch".
        objective: str, "oat" (Algorithm 1) or "mixed_batch" (one pass over a
            batch whose first round(clean_fraction · N) samples are clean and
            the rest adversarial; λ = 0 / 1 marks the domain; `sampling` is
            unused).
        clean_fraction: float in [0, 1], clean share of a mixed batch.
        **kwargs: `keras.Model` keyword arguments.

    Example:
    >>> trainer = OATTrainer(network, sampling=LambdaSamplingConfig(),
    ...                      attack=AttackConfig(), seed=0)
    >>> trainer.compile(optimizer=optimizers.make_optimizer(...))
    >>> trainer.fit(train_dataset, epochs=..., steps_per_epoch=...)
    """

    def __init__(
        self,
        network: keras.Model,
        *,
        sampling: config_lib.LambdaSamplingConfig,
        attack: config_lib.AttackConfig,
        seed: int = 0,
        adversarial_bn_statistics: str = "adversarial",
        objective: str = "oat",
        clean_fraction: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if objective not in config_lib.OBJECTIVES:
            raise ValueError(
                f"`objective` must be one of {config_lib.OBJECTIVES}. "
                f"Received: objective={objective!r}"
            )
        self.objective = objective
        self.clean_fraction = config_lib.check_clean_fraction(clean_fraction)
        if adversarial_bn_statistics not in config_lib.ADVERSARIAL_BN_STATISTICS:
            raise ValueError(
                "`adversarial_bn_statistics` must be one of "
                f"{config_lib.ADVERSARIAL_BN_STATISTICS}. "
                f"Received: adversarial_bn_statistics={adversarial_bn_statistics!r}"
            )
        self.adversarial_bn_statistics = adversarial_bn_statistics
        self.network = network
        self.sampling = sampling
        self.attack = attack
        self.seed = int(seed)
        self.sampler = lambda_sampling.LambdaSampler(sampling)
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.clean_accuracy = keras.metrics.SparseCategoricalAccuracy(name="clean_accuracy")
        self.adversarial_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="adversarial_accuracy"
        )
        # The network is a built functional model: nothing to infer from data.
        self.built = network.built

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.clean_accuracy, self.adversarial_accuracy]

    def _step_seeds(self):
        """Returns independent stateless seeds for λ sampling and the attack."""
        return step_seeds(self.seed, self.optimizer.iterations)

    def _adversarial_images(self, images, labels, lambdas, attack_needed, seed, forward=None):
        forward = self.network if forward is None else forward

        def logits_fn(x):
            return forward({"image": x, "lambda": lambdas}, training=False)

        def attack():
            return attacks.run_attack(self.attack, logits_fn, images, labels, seed=seed)

        if self.objective == "oat" and self.sampling.sampling == "batch_wise":
            return tf.cond(attack_needed, attack, lambda: tf.identity(images))
        return attack()

    def _prepare(self, data):
        """Draws λ and crafts the adversarial images of one batch."""
        images, labels, drawn, attack_seed, replicas = self._draw(data)
        adversarial = self._craft(images, labels, drawn, attack_seed)
        return images, labels, drawn, adversarial, replicas

    def _draw(self, data):
        """Reads a batch and draws its λ; returns the attack's seed and the replica count."""
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
        if self.objective == "mixed_batch":
            drawn = self._domains(batch_size)
        else:
            drawn = self.sampler.sample(batch_size, lambda_seed)
        return images, labels, drawn, attack_seed, replicas

    def _domains(self, batch_size: int) -> lambda_sampling.LambdaBatch:
        """The mixed batch's domain indicators as λ: 0 for the clean first part, 1 after."""
        clean = mixed_batch_clean_count(batch_size, self.clean_fraction)
        lambdas = tf.concat(
            [tf.zeros([clean], tf.float32), tf.ones([batch_size - clean], tf.float32)], axis=0
        )
        return lambda_sampling.LambdaBatch(
            lambdas=lambdas, num_zeros=clean, attack_needed=tf.constant(clean < batch_size)
        )

    def _craft(self, images, labels, drawn, seed, forward=None):
        """Attacks the samples with λ ≠ 0 (None if there are none).

        Args:
            images, labels: the batch.
            drawn: LambdaBatch of the batch.
            seed: stateless seed of the attack.
            forward: callable `forward(inputs, training=...)` returning logits,
                the network by default (OATSTrainer passes one width's).
        """
        zeros = drawn.num_zeros
        if zeros >= images.shape[0]:
            return None
        return self._adversarial_images(
            images[zeros:],
            labels[zeros:],
            drawn.lambdas[zeros:],
            drawn.attack_needed,
            seed,
            forward=forward,
        )

    def _objective(self, images, labels, drawn, adversarial, training, forward=None):
        """Returns the mean OAT loss and the clean / adversarial logits.

        `forward(inputs, training=...)` computes the logits: the network by
        default (OATSTrainer passes one width's). The loss excludes the
        network's own losses (`_regularization_loss`).
        """
        forward = self.network if forward is None else forward
        if self.objective == "mixed_batch":
            return self._mixed_batch_objective(
                images, labels, drawn, adversarial, training, forward
            )
        lambdas, zeros = drawn.lambdas, drawn.num_zeros
        per_sample = tf.zeros([images.shape[0]], tf.float32)
        logits = adversarial_logits = None
        if self.sampler.clean_loss_used:
            with dual_batch_norm.moving_statistics_updates(
                adversarial=self.adversarial_bn_statistics == "mixed"
            ):
                logits = forward({"image": images, "lambda": lambdas}, training=training)
            per_sample += (1.0 - lambdas) * self.cross_entropy(labels, logits)
        if adversarial is not None:
            adversarial_logits = forward(
                {"image": adversarial, "lambda": lambdas[zeros:]}, training=training
            )
            adversarial_loss = self.cross_entropy(labels[zeros:], adversarial_logits)
            per_sample += lambdas * tf.concat(
                [tf.zeros([zeros], tf.float32), adversarial_loss], axis=0
            )
        return tf.reduce_mean(per_sample), logits, adversarial_logits

    def _mixed_batch_objective(self, images, labels, drawn, adversarial, training, forward):
        """One pass over [clean part; adversarial part]: the mean CE and both parts' logits."""
        clean = drawn.num_zeros
        mixed = images if adversarial is None else tf.concat([images[:clean], adversarial], 0)
        all_logits = forward({"image": mixed, "lambda": drawn.lambdas}, training=training)
        loss = tf.reduce_mean(self.cross_entropy(labels, all_logits))
        logits = all_logits[:clean] if clean > 0 else None
        adversarial_logits = all_logits[clean:] if adversarial is not None else None
        return loss, logits, adversarial_logits

    def _regularization_loss(self, training):
        """The network's own losses (weight regularizers), counted once per step."""
        if training and self.network.losses:
            return tf.add_n(self.network.losses)
        return tf.constant(0.0, tf.float32)

    def _update_metrics(self, loss, labels, zeros, logits, adversarial_logits):
        self.loss_tracker.update_state(loss)
        if logits is not None:
            # The OAT objective's clean pass covers the batch; a mixed batch's the first part.
            self.clean_accuracy.update_state(labels[: logits.shape[0]], logits)
        if adversarial_logits is not None:
            self.adversarial_accuracy.update_state(labels[zeros:], adversarial_logits)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images, labels, drawn, adversarial, replicas = self._prepare(data)
        with tf.GradientTape() as tape:
            loss, logits, adversarial_logits = self._objective(
                images, labels, drawn, adversarial, training=True
            )
            loss += self._regularization_loss(training=True)
            # The optimizer sums the replicas' gradients: scale to the global mean.
            scaled_loss = loss / float(replicas)
        variables = self.network.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply(gradients, variables)
        results: Dict[str, tf.Tensor] = self._update_metrics(
            loss, labels, drawn.num_zeros, logits, adversarial_logits
        )
        results["learning_rate"] = tf.convert_to_tensor(self.optimizer.learning_rate)
        return results

    def test_step(self, data):
        """The training objective on held-out data, in inference mode."""
        images, labels, drawn, adversarial, _ = self._prepare(data)
        loss, logits, adversarial_logits = self._objective(
            images, labels, drawn, adversarial, training=False
        )
        return self._update_metrics(loss, labels, drawn.num_zeros, logits, adversarial_logits)

    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "sampling": config_lib.to_dict(self.sampling),
            "attack": config_lib.to_dict(self.attack),
            "seed": self.seed,
            "adversarial_bn_statistics": self.adversarial_bn_statistics,
            "objective": self.objective,
            "clean_fraction": self.clean_fraction,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        sampling_dict = dict(config.pop("sampling"))
        sampling_dict["values"] = tuple(sampling_dict["values"])
        sampling = config_lib.LambdaSamplingConfig(**sampling_dict)
        attack = config_lib.AttackConfig(**config.pop("attack"))
        return cls(network, sampling=sampling, attack=attack, **config)
