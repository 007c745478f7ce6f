"""The OATS trainer: a Keras model whose `train_step` is the paper's Algorithm 2.

One step, on a slimmable network (`oat_tf.models.SlimmableNetwork`):
1. draw λ per sample once for the batch (`LambdaSampler`, as OAT);
2. for every width α of the network, widest first:
   a. attack the samples with λ ≠ 0 with the width-α sub-network in
      inference mode (`training=False`; its own BN statistics), with a
      stateless seed of its own;
   b. compute the OAT loss of the width-α sub-network on the clean batch and
      its adversarial images (`training=True`, which updates only width α's
      moving BN statistics; the clean pass leaves the adversarial group's
      statistics alone unless `adversarial_bn_statistics="mixed"`, as in
      `OATTrainer`);
   c. add its gradients to the step's gradients;
3. one optimizer update with the summed gradients.

The gradients are summed over widths, not averaged: Algorithm 2 clears the
gradients once, calls `loss.backward()` for every width (PyTorch accumulates
them) and then `optimizer.step()` once, and so does the OATS reference code.
(The paper's text says "average loss", which differs from the algorithm by a
factor of the number of widths, i.e. a learning-rate scale.) The logged
`loss` is the same sum; `loss_w<α>`, `clean_accuracy_w<α>` and
`adversarial_accuracy_w<α>` are those of each width.

All widths see the same weights: nothing is updated before the single
optimizer step, and a width's BN statistics are its own, so the order of the
widths does not change the update. PGD-ATS is the same trainer on the
variant "ats" with `sampling="fixed"`. Replica scaling and seeds follow
`OATTrainer`: each replica's loss is divided by the number of replicas
because the optimizer sums the replicas' gradients, and every random draw is
a stateless function of the run seed, the optimizer step, the replica and
(for the attack) the width.
"""

from __future__ import annotations

from typing import Dict, List

import keras
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.training import oat_model


def width_metric_name(name: str, width: float) -> str:
    """Returns the name of a per-width metric, e.g. `"clean_accuracy_w0.5"`."""
    return f"{name}_w{float(width):g}"


def _add_gradients(summed: List, gradients: List) -> List:
    """Adds two lists of gradients, None meaning "no gradient" (zero)."""
    return [
        g if s is None else (s if g is None else s + g) for s, g in zip(summed, gradients)
    ]


class _WidthForward:
    """`forward(inputs, training=...)`: the network's logits at one width."""

    def __init__(self, network: keras.Model, width: float):
        self.network = network
        self.width = width

    def __call__(self, inputs, training=None):
        return self.network(inputs, training=training, width=self.width)


@keras.saving.register_keras_serializable(package="oat_tf")
class OATSTrainer(oat_model.OATTrainer):
    """Trains a slimmable λ-conditioned network with OATS (or PGD-ATS).

    Args:
        network: a slimmable network (`SlimmableSmallCNN`, `SlimmableResNet`):
            a keras.Model with a `widths` tuple, called as
            `network(inputs, training=..., width=α)`.
        sampling: LambdaSamplingConfig, how λ is drawn per sample (one draw per
            batch, shared by every width); "fixed" for PGD-ATS.
        attack: AttackConfig, the attack that generates training examples.
        seed: int, run seed for λ sampling and attack starts.
        adversarial_bn_statistics: str, "adversarial" or "mixed" (see
            `OATTrainer`).
        **kwargs: `keras.Model` keyword arguments.

    Example:
    >>> network = SlimmableSmallCNN(variant="oats")
    >>> trainer = OATSTrainer(network, sampling=LambdaSamplingConfig(),
    ...                       attack=AttackConfig(), seed=0)
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
        **kwargs,
    ):
        widths = getattr(network, "widths", None)
        if not isinstance(widths, tuple) or not widths:
            raise ValueError(
                "`network` must be a slimmable network with a `widths` tuple "
                "(e.g. SlimmableSmallCNN, SlimmableResNet). "
                f"Received: network={type(network).__name__}"
            )
        super().__init__(
            network,
            sampling=sampling,
            attack=attack,
            seed=seed,
            adversarial_bn_statistics=adversarial_bn_statistics,
            **kwargs,
        )
        # Widest first, as the reference code (the order does not change the update).
        self.widths = tuple(sorted(widths, reverse=True))
        self.width_loss_trackers = [
            keras.metrics.Mean(name=width_metric_name("loss", w)) for w in self.widths
        ]
        self.width_clean_accuracies = [
            keras.metrics.SparseCategoricalAccuracy(name=width_metric_name("clean_accuracy", w))
            for w in self.widths
        ]
        self.width_adversarial_accuracies = [
            keras.metrics.SparseCategoricalAccuracy(
                name=width_metric_name("adversarial_accuracy", w)
            )
            for w in self.widths
        ]

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            *self.width_loss_trackers,
            *self.width_clean_accuracies,
            *self.width_adversarial_accuracies,
        ]

    def width_forward(self, width: float) -> _WidthForward:
        """Returns `forward(inputs, training=...)` of the width-α sub-network."""
        return _WidthForward(self.network, width)

    def _width_seeds(self, attack_seed):
        """Splits the step's attack seed into one seed per width."""
        return tf.random.experimental.stateless_split(attack_seed, num=len(self.widths))

    def _update_width_metrics(self, index, loss, labels, zeros, logits, adversarial_logits):
        self.width_loss_trackers[index].update_state(loss)
        if logits is not None:
            self.width_clean_accuracies[index].update_state(labels, logits)
        if adversarial_logits is not None:
            self.width_adversarial_accuracies[index].update_state(
                labels[zeros:], adversarial_logits
            )

    def _results(self) -> Dict[str, tf.Tensor]:
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images, labels, drawn, attack_seed, replicas = self._draw(data)
        seeds = self._width_seeds(attack_seed)
        variables = self.network.trainable_variables
        summed: List = [None] * len(variables)
        total = tf.constant(0.0, tf.float32)
        for index, width in enumerate(self.widths):
            forward = self.width_forward(width)
            adversarial = self._craft(images, labels, drawn, seeds[index], forward=forward)
            with tf.GradientTape() as tape:
                loss, logits, adversarial_logits = self._objective(
                    images, labels, drawn, adversarial, training=True, forward=forward
                )
                # The optimizer sums the replicas' gradients: scale to the global mean.
                scaled_loss = loss / float(replicas)
            summed = _add_gradients(summed, tape.gradient(scaled_loss, variables))
            total += loss
            self._update_width_metrics(
                index, loss, labels, drawn.num_zeros, logits, adversarial_logits
            )
        if self.network.losses:
            # Weight regularizers count once per step, not once per width.
            with tf.GradientTape() as tape:
                regularization = self._regularization_loss(training=True)
            summed = _add_gradients(
                summed, tape.gradient(regularization / float(replicas), variables)
            )
            total += regularization
        # A variable no width used (none in the oat_tf networks) gets a zero gradient.
        summed = [tf.zeros_like(v) if g is None else g for g, v in zip(summed, variables)]
        self.optimizer.apply(summed, variables)
        self.loss_tracker.update_state(total)
        results = self._results()
        results["learning_rate"] = tf.convert_to_tensor(self.optimizer.learning_rate)
        return results

    def test_step(self, data):
        """The training objective of every width on held-out data, in inference mode."""
        images, labels, drawn, attack_seed, _ = self._draw(data)
        seeds = self._width_seeds(attack_seed)
        total = tf.constant(0.0, tf.float32)
        for index, width in enumerate(self.widths):
            forward = self.width_forward(width)
            adversarial = self._craft(images, labels, drawn, seeds[index], forward=forward)
            loss, logits, adversarial_logits = self._objective(
                images, labels, drawn, adversarial, training=False, forward=forward
            )
            total += loss
            self._update_width_metrics(
                index, loss, labels, drawn.num_zeros, logits, adversarial_logits
            )
        self.loss_tracker.update_state(total)
        return self._results()
