"""`AdversarialTrainer`: the one adversarial training step of every method.

A Keras model whose `train_step` is, for OAT, OATS, PGD-AT, PGD-ATS, Mixture
BN and the RDI-Nets defences alike:

1. draw the batch's operating points (λ per sample) with the objective, from
   a stateless seed of the run seed, the optimizer step and the replica;
2. for every width α of a slimmable network, widest first (one pass for any
   other network):
   a. craft the adversarial images with the objective, the width-α network
      in inference mode and an attack seed of its own;
   b. inside a tape, compute the objective's loss of the width-α network
      with `training=True` (its own BN statistics);
   c. add its gradients to the step's gradients;
3. add the network's own losses (weight regularizers) once per step, and
   apply the summed gradients in one optimizer update.

The objective (`oat_tf.training.objectives`) holds what differs between the
methods: `OATObjective`, `MixedBatchObjective`, `MultiExitHybridObjective`.

Gradients are summed over widths, not averaged: Algorithm 2 of the OATS paper
clears the gradients once, calls `loss.backward()` for every width and then
`optimizer.step()` once, and so does the OATS reference code. (The paper's
text says "average loss", a learning-rate scale away.) All widths see the same
weights and a width's BN statistics are its own, so the order of the widths
does not change the update. Each replica's loss is divided by the number of
replicas because the optimizer sums the replicas' gradients, so an update is
that of the global batch. A resumed run replays the same λ draws and attack
starts as an uninterrupted one. Under a float16 policy the loss is multiplied
by the optimizer's loss scale (`optimizer.scale_loss`; a loss-scale optimizer
divides the gradients back before the update).

Metrics: `loss` (the step's total, regularizers included); with one pass,
`clean_accuracy` and `adversarial_accuracy` (and `<...>_exit_<i>` of every
side exit of a multi-exit network); with several widths, `loss_w<α>`,
`clean_accuracy_w<α>` and `adversarial_accuracy_w<α>` per width.

`OATTrainer`, `OATSTrainer` and `MultiExitTrainer` build the trainer of each
paper from its usual arguments; they add no step of their own.

Example:

```python
trainer = OATTrainer(network, sampling=LambdaSamplingConfig(), attack=AttackConfig(), seed=0)
trainer.compile(optimizer=optimizers.make_optimizer(...))
trainer.fit(train_dataset, epochs=..., steps_per_epoch=...)
```
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.training import objectives as objectives_lib


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


def width_metric_name(name: str, width: float) -> str:
    """Returns the name of a per-width metric, e.g. `"clean_accuracy_w0.5"`."""
    return f"{name}_w{float(width):g}"


def _add_gradients(summed: List, gradients: List) -> List:
    """Adds two lists of gradients, None meaning "no gradient" (zero)."""
    return [g if s is None else (s if g is None else s + g) for s, g in zip(summed, gradients)]


def slimmable_widths(network: keras.Model) -> Tuple[float, ...]:
    """The widths of a slimmable network, widest first.

    Args:
        network: a slimmable network (with a `widths` tuple).

    Returns:
        Tuple of floats, sorted in decreasing order.

    Raises:
        ValueError: if `network` has no `widths` tuple.
    """
    widths = getattr(network, "widths", None)
    if not isinstance(widths, tuple) or not widths:
        raise ValueError(
            "`network` must be a slimmable network with a `widths` tuple "
            "(e.g. SlimmableSmallCNN, SlimmableResNet). "
            f"Received: network={type(network).__name__}"
        )
    # Widest first, as the reference code (the order does not change the update).
    return tuple(sorted(widths, reverse=True))


class AdversarialTrainer(keras.Model):
    """Trains a network with an adversarial training objective, over its widths.

    Args:
        network: keras.Model taking `{"image": [N,H,W,C], "lambda": [N]}`.
        objective: an `objectives.Objective`.
        seed: int, run seed of the λ draws and the attack's random draws.
        widths: None (one pass of the network) or the widths of a slimmable
            network, each its own pass (`slimmable_widths`).
        **kwargs: `keras.Model` keyword arguments.
    """

    def __init__(
        self,
        network: keras.Model,
        *,
        objective: objectives_lib.Objective,
        seed: int = 0,
        widths: Optional[Sequence[float]] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(objective, objectives_lib.Objective):
            raise ValueError(
                f"`objective` must be an oat_tf.training.objectives.Objective. Received: {objective!r}"
            )
        self.network = network
        self.objective = objective
        self.seed = int(seed)
        self.widths = None if widths is None else tuple(widths)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        if self.widths is None:
            self.pass_metrics = [objectives_lib.PassMetrics(objective.metric_outputs)]
            self.width_loss_trackers = []
        else:
            self.pass_metrics = [
                objectives_lib.PassMetrics(objective.metric_outputs, suffix=width_metric_name("", w))
                for w in self.widths
            ]
            self.width_loss_trackers = [
                keras.metrics.Mean(name=width_metric_name("loss", w)) for w in self.widths
            ]
        # The network is a built functional model: nothing to infer from data.
        self.built = network.built

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def compile(self, *args, **kwargs) -> None:
        """`keras.Model.compile`, then builds the optimizer's slots for the network's weights.

        Without a distribution strategy Keras defers building the optimizer to
        the first `optimizer.apply`, inside the first traced training step;
        TensorFlow must then trace that step a second time, because a
        `tf.function` may create variables on its first trace only. Building the
        slots here (in the caller's strategy scope, with the variables the step
        applies to) makes the step trace once. The slots start at zero either
        way, so training is unchanged.

        Args:
            *args, **kwargs: `keras.Model.compile`'s arguments.
        """
        super().compile(*args, **kwargs)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.network.trainable_variables)

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            *self.width_loss_trackers,
            *[metric for metrics in self.pass_metrics for metric in metrics.metrics],
        ]

    @property
    def clean_accuracy(self) -> keras.metrics.Metric:
        """The clean accuracy of the main output (the widest width's, for several)."""
        return self.pass_metrics[0].clean[0]

    @property
    def adversarial_accuracy(self) -> keras.metrics.Metric:
        """The adversarial accuracy of the main output (the widest width's, for several)."""
        return self.pass_metrics[0].adversarial[0]

    def _passes(self, attack_seed) -> List[Tuple[Optional[float], tf.Tensor]]:
        """(width, attack seed) of each pass: (None, the step's seed), or every width."""
        if self.widths is None:
            return [(None, attack_seed)]
        seeds = self._width_seeds(attack_seed)
        return [(w, seeds[i]) for i, w in enumerate(self.widths)]

    def _step_seeds(self):
        """Returns independent stateless seeds for λ sampling and the attack."""
        return step_seeds(self.seed, self.optimizer.iterations)

    def _width_seeds(self, attack_seed):
        """Splits the step's attack seed into one seed per width."""
        return tf.random.experimental.stateless_split(attack_seed, num=len(self.widths))

    def _draw(self, data):
        """Reads a batch and draws its operating points.

        Returns:
            (images, labels, drawn, attack_seed, replicas).
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
        drawn = self.objective.draw(batch_size, lambda_seed)
        return images, labels, drawn, attack_seed, replicas

    def _craft(self, images, labels, drawn, seed, width=None):
        """The objective's adversarial images for one pass (the full network's by default)."""
        return self.objective.craft(self.network, width, images, labels, drawn, seed)

    def _prepare(self, data):
        """Draws the operating points and crafts the first pass's adversarial images.

        Returns:
            (images, labels, drawn, adversarial, replicas).
        """
        images, labels, drawn, attack_seed, replicas = self._draw(data)
        width, seed = self._passes(attack_seed)[0]
        adversarial = self._craft(images, labels, drawn, seed, width=width)
        return images, labels, drawn, adversarial, replicas

    def _objective(self, images, labels, drawn, adversarial, training, width=None):
        """The objective's mean loss and outputs for one pass (the full network's by default)."""
        return self.objective.loss(self.network, width, images, labels, drawn, adversarial, training)

    def _regularization_loss(self, training):
        """The network's own losses (weight regularizers), counted once per step."""
        if training and self.network.losses:
            return tf.add_n(self.network.losses)
        return tf.constant(0.0, tf.float32)

    def _record(self, index, loss, labels, zeros, outputs, adversarial_outputs) -> None:
        if self.width_loss_trackers:
            self.width_loss_trackers[index].update_state(loss)
        self.pass_metrics[index].update(labels, zeros, outputs, adversarial_outputs)

    def train_step(self, data):
        images, labels, drawn, attack_seed, replicas = self._draw(data)
        zeros = self.objective.num_zeros(images.shape[0], drawn)
        variables = self.network.trainable_variables
        summed: List = [None] * len(variables)
        total = tf.constant(0.0, tf.float32)
        for index, (width, seed) in enumerate(self._passes(attack_seed)):
            adversarial = self._craft(images, labels, drawn, seed, width=width)
            with tf.GradientTape() as tape:
                loss, outputs, adversarial_outputs = self._objective(
                    images, labels, drawn, adversarial, training=True, width=width
                )
                pass_loss = loss
                if index == 0:
                    # Weight regularizers count once per step, not once per width.
                    regularization = self._regularization_loss(training=True)
                    pass_loss = loss + regularization
                    total += regularization
                # The optimizer sums the replicas' gradients: scale to the global mean.
                # A loss-scale optimizer (float16) also multiplies by its scale and
                # divides the gradients back; any other returns the loss as it is.
                scaled_loss = self.optimizer.scale_loss(pass_loss / float(replicas))
            summed = _add_gradients(summed, tape.gradient(scaled_loss, variables))
            total += loss
            self._record(index, loss, labels, zeros, outputs, adversarial_outputs)
        # A variable no pass depends on (an exit with w_i = 0) gets a zero gradient.
        summed = [tf.zeros_like(v) if g is None else g for g, v in zip(summed, variables)]
        self.optimizer.apply(summed, variables)
        self.loss_tracker.update_state(total)
        results: Dict[str, tf.Tensor] = {m.name: m.result() for m in self.metrics}
        results["learning_rate"] = tf.convert_to_tensor(self.optimizer.learning_rate)
        return results

    def test_step(self, data):
        """The training objective of every pass on held-out data, in inference mode."""
        images, labels, drawn, attack_seed, _ = self._draw(data)
        zeros = self.objective.num_zeros(images.shape[0], drawn)
        total = tf.constant(0.0, tf.float32)
        for index, (width, seed) in enumerate(self._passes(attack_seed)):
            adversarial = self._craft(images, labels, drawn, seed, width=width)
            loss, outputs, adversarial_outputs = self._objective(
                images, labels, drawn, adversarial, training=False, width=width
            )
            total += loss
            self._record(index, loss, labels, zeros, outputs, adversarial_outputs)
        self.loss_tracker.update_state(total)
        return {m.name: m.result() for m in self.metrics}


def _sampling_from_dict(sampling_dict: Optional[Dict[str, Any]]) -> Optional[config_lib.LambdaSamplingConfig]:
    if sampling_dict is None:
        return None
    sampling_dict = dict(sampling_dict)
    sampling_dict["values"] = tuple(sampling_dict["values"])
    return config_lib.LambdaSamplingConfig(**sampling_dict)


@keras.saving.register_keras_serializable(package="oat_tf")
class OATTrainer(AdversarialTrainer):
    """The OAT trainer (Algorithm 1); PGD-AT with `sampling="fixed"`; Mixture BN.

    Args:
        network: keras.Model taking `{"image": [N,H,W,C], "lambda": [N]}` and
            returning logits.
        sampling: LambdaSamplingConfig, how λ is drawn per sample.
        attack: AttackConfig, the attack that generates training examples.
        seed: int, run seed for λ sampling and attack starts.
        adversarial_bn_statistics: str, "adversarial" or "mixed" (see
            `objectives.OATObjective`). Unused by "mixed_batch".
        objective: str, "oat" (`objectives.OATObjective`) or "mixed_batch"
            (`objectives.MixedBatchObjective`; `sampling` is unused).
        clean_fraction: float in [0, 1], clean share of a mixed batch.
        **kwargs: `keras.Model` keyword arguments.
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
        if objective not in config_lib.OBJECTIVES:
            raise ValueError(
                f"`objective` must be one of {config_lib.OBJECTIVES}. Received: objective={objective!r}"
            )
        objectives_lib.check_adversarial_bn_statistics(adversarial_bn_statistics)
        if objective == "mixed_batch":
            built = objectives_lib.MixedBatchObjective(attack, clean_fraction)
        else:
            config_lib.check_clean_fraction(clean_fraction)
            built = objectives_lib.OATObjective(sampling, attack, adversarial_bn_statistics)
        super().__init__(network, objective=built, seed=seed, widths=self._widths_of(network), **kwargs)
        self.sampling = sampling
        self.attack = attack
        self.adversarial_bn_statistics = adversarial_bn_statistics
        self.objective_name = objective
        self.clean_fraction = float(clean_fraction)

    @staticmethod
    def _widths_of(network: keras.Model) -> Optional[Tuple[float, ...]]:
        del network  # One pass: OATTrainer trains the network at its full width.
        return None

    def get_config(self):
        return {
            **keras.Model.get_config(self),
            "network": keras.saving.serialize_keras_object(self.network),
            "sampling": config_lib.to_dict(self.sampling),
            "attack": config_lib.to_dict(self.attack),
            "seed": self.seed,
            "adversarial_bn_statistics": self.adversarial_bn_statistics,
            "objective": self.objective_name,
            "clean_fraction": self.clean_fraction,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        sampling = _sampling_from_dict(config.pop("sampling"))
        attack = config_lib.AttackConfig(**config.pop("attack"))
        return cls(network, sampling=sampling, attack=attack, **config)


@keras.saving.register_keras_serializable(package="oat_tf")
class OATSTrainer(OATTrainer):
    """The OATS trainer (Algorithm 2): OAT summed over a slimmable network's widths.

    PGD-ATS is the same trainer on the variant "ats" with `sampling="fixed"`.

    Args:
        network: a slimmable network (`SlimmableSmallCNN`, `SlimmableResNet`):
            a keras.Model with a `widths` tuple, called as
            `network(inputs, training=..., width=α)`.
        sampling: LambdaSamplingConfig, one λ draw per batch shared by every width.
        attack: AttackConfig, the attack that generates training examples.
        seed: int, run seed for λ sampling and attack starts.
        adversarial_bn_statistics: str, "adversarial" or "mixed".
        **kwargs: the other arguments of `OATTrainer` (`objective`,
            `clean_fraction`) and `keras.Model` keyword arguments.
    """

    @staticmethod
    def _widths_of(network: keras.Model) -> Optional[Tuple[float, ...]]:
        return slimmable_widths(network)


@keras.saving.register_keras_serializable(package="oat_tf")
class MultiExitTrainer(AdversarialTrainer):
    """The RDI-Nets trainer: a multi-exit network with a multi-exit defence.

    Args:
        network: keras.Model taking `{"image": [N,H,W,C], "lambda": [N]}` and
            returning a dict of logits `{"exit_1", …, "exit_M", "final"}`.
        attack: AttackConfig, the attacker ("pgd" or "fgsm"); None only for
            `defence="none"`.
        defence: str, one of `config.DEFENCES` (see
            `objectives.MultiExitHybridObjective`).
        exit_weights: None (all 1) or M + 1 non-negative weights in output order.
        sampling: LambdaSamplingConfig for an OAT backbone, or None.
        seed: int, run seed for λ sampling and the attack's random draws.
        adversarial_bn_statistics: str, "adversarial" or "mixed".
        **kwargs: `keras.Model` keyword arguments.
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
        objective = objectives_lib.MultiExitHybridObjective(
            objectives_lib.network_output_names(network),
            attack=attack,
            defence=defence,
            exit_weights=exit_weights,
            sampling=sampling,
            adversarial_bn_statistics=adversarial_bn_statistics,
        )
        super().__init__(network, objective=objective, seed=seed, **kwargs)
        # Not `output_names`: keras.Model reads that attribute when compiling.
        self.output_keys = objective.output_names
        self.exit_weights = objective.exit_weights
        self.attack = attack
        self.defence = defence
        self.sampling = sampling
        self.adversarial_bn_statistics = adversarial_bn_statistics

    @property
    def lambda_conditioned(self) -> bool:
        """Whether λ is sampled per sample (OAT backbone) rather than a domain indicator."""
        return self.sampling is not None

    def get_config(self):
        return {
            **keras.Model.get_config(self),
            "network": keras.saving.serialize_keras_object(self.network),
            **self.objective.get_config(),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        attack_dict = config.pop("attack")
        attack = None if attack_dict is None else config_lib.AttackConfig(**attack_dict)
        sampling = _sampling_from_dict(config.pop("sampling"))
        return cls(network, attack=attack, sampling=sampling, **config)
