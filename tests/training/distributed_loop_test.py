"""The custom training loop: per-replica slices, equality with Keras' `fit`, callbacks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.training import distributed_loop
from tests import testing
from tests.training import adversarial_trainer_multi_exit_test as multi_exit_test
from tests.training import adversarial_trainer_test as trainer_test
from tests.training import adversarial_trainer_widths_test as widths_test


def _global_batches(n=32, batch=8):
    images, labels = trainer_test._data(n)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch, drop_remainder=True)


@pytest.mark.parametrize("replicas, pipelines", [(2, 2), (2, 1), (4, 2), (4, 4), (1, 1)])
def test_replica_batches_partition_every_global_batch_in_replica_order(replicas, pipelines):
    dataset = _global_batches()
    local = replicas // pipelines
    per_pipeline = [
        list(distributed_loop.replica_batches(dataset, replicas, tf.distribute.InputContext(pipelines, p, replicas)))
        for p in range(pipelines)
    ]
    for step, (images, labels) in enumerate(dataset):
        # Pipeline p's elements local·step … local·step + local − 1 are replicas p·local …
        pieces = [per_pipeline[p][step * local + i] for p in range(pipelines) for i in range(local)]
        np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in pieces]), images.numpy())
        np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in pieces]), labels.numpy())
        assert all(x.shape[0] == 8 // replicas for x, _ in pieces)
    options = distributed_loop.replica_batches(dataset, replicas, tf.distribute.InputContext(pipelines, 0, replicas)).options()
    assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF


def test_replica_batches_refuse_an_uneven_or_dynamic_batch():
    with pytest.raises(ValueError, match="divisible by the 3 replicas.*Received: batch size 8"):
        distributed_loop.replica_batches(_global_batches(), 3, tf.distribute.InputContext(1, 0, 3))
    images, labels = trainer_test._data(8)
    dynamic = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    with pytest.raises(ValueError, match="static"):
        distributed_loop.replica_batches(dynamic, 2, tf.distribute.InputContext(1, 0, 2))


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(f"epoch_begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(f"batch {batch} step {int(self.model.optimizer.iterations.numpy())}")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch} {sorted(logs)}")

    def on_train_end(self, logs=None):
        self.events.append("train_end")


def _eager(trainer):
    """Recompiled to run eagerly: no trace, cheaper for two tiny steps."""
    trainer.compile(optimizer=trainer.optimizer, run_eagerly=True)
    return trainer


# Each trainer of the project: (network factory, trainer factory, data factory).
TRAINERS = {
    "oat": (
        lambda: trainer_test._network("oat"),
        lambda n: trainer_test._trainer(n, sampling=config_lib.LambdaSamplingConfig(), l2=5e-4),
        trainer_test._data,
    ),
    "oats": (
        lambda: widths_test._network(widths=(0.5, 1.0)),
        lambda n: widths_test._oats(n, lr=0.05, momentum=0.9, l2=5e-4, run_eagerly=True),
        widths_test._data,
    ),
    "multi_exit": (
        lambda: multi_exit_test._network("oat"),
        lambda n: _eager(multi_exit_test._trainer(
            n, defence="max_average", sampling=config_lib.LambdaSamplingConfig(), l2=5e-4
        )),
        multi_exit_test._data,
    ),
}


def _mirrored_trainer(kind, initial):
    make_network, make_trainer, _ = TRAINERS[kind]
    strategy = testing.two_cpu_mirrored_strategy()
    with strategy.scope():
        network = make_network()
        network.set_weights(initial)
        trainer = make_trainer(network)
    return strategy, network, trainer


# Two epochs of two steps for OAT; one step of the costlier OATS and multi-exit trainers.
@pytest.mark.parametrize("kind, epochs, steps", [("oat", 2, 2), ("oats", 1, 1), ("multi_exit", 1, 1)])
def test_custom_loop_equals_keras_fit_under_mirrored_strategy(kind, epochs, steps):
    make_network, _, make_data = TRAINERS[kind]
    initial = make_network().get_weights()
    images, labels = make_data(32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8, drop_remainder=True)
    strategy, by_fit, trainer = _mirrored_trainer(kind, initial)
    fit_history = trainer.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0)
    strategy, by_loop, loop_trainer = _mirrored_trainer(kind, initial)
    recorder = _Recorder()
    history = distributed_loop.DistributedFit(loop_trainer, strategy)(
        dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[recorder], verbose=0
    )
    # The same λ draws, PGD starts and per-replica examples: the same updates.
    for a, b in zip(by_fit.weights, by_loop.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6, err_msg=a.path)
    assert int(loop_trainer.optimizer.iterations.numpy()) == epochs * steps
    assert max(np.abs(w.numpy() - w0).max() for w, w0 in zip(by_loop.weights, initial)) > 1e-4
    # Logs as fit reports them: the mean over replicas of each replica's running metric.
    assert sorted(history.history) == sorted(fit_history.history)
    for name, values in fit_history.history.items():
        np.testing.assert_allclose(history.history[name], values, rtol=1e-5, err_msg=name)
    names = sorted(fit_history.history)
    expected = ["train_begin"]
    for epoch in range(epochs):
        expected.append(f"epoch_begin {epoch}")
        expected += [f"batch {b} step {epoch * steps + b + 1}" for b in range(steps)]
        expected.append(f"epoch_end {epoch} {names}")
    assert recorder.events == expected + ["train_end"]


def test_custom_loop_starts_at_initial_epoch_and_stops_on_request():
    initial = trainer_test._network("oat").get_weights()
    strategy, _, trainer = _mirrored_trainer("oat", initial)

    class StopAfterThree(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 3:
                self.model.stop_training = True

    recorder = _Recorder()
    fit = distributed_loop.DistributedFit(trainer, strategy)
    fit(_global_batches(), epochs=4, initial_epoch=2, steps_per_epoch=2, callbacks=[StopAfterThree(), recorder], verbose=0)
    assert int(trainer.optimizer.iterations.numpy()) == 3
    assert recorder.events[1] == "epoch_begin 2" and recorder.events[-2].startswith("epoch_end 3")
    # A later call (a resumed run's next epochs) reuses the traced step.
    traced = dict(fit._train_functions)
    fit(_global_batches(), epochs=1, steps_per_epoch=1, verbose=0)
    assert int(trainer.optimizer.iterations.numpy()) == 4 and fit._train_functions == traced


def test_only_multi_worker_strategies_use_the_custom_loop():
    assert not distributed_loop.uses_custom_loop(testing.two_cpu_mirrored_strategy())
    assert not distributed_loop.uses_custom_loop(tf.distribute.get_strategy())
    # One process without TF_CONFIG and agreeing on the start step trivially.
    distributed_loop.check_same_start_step(testing.two_cpu_mirrored_strategy(), 7)


def test_replicas_holding_different_values_are_refused():
    strategy = testing.two_cpu_mirrored_strategy()
    distributed_loop.check_same_on_every_replica(strategy, lambda: tf.constant(12), "the step")
    replica_id = lambda: tf.distribute.get_replica_context().replica_id_in_sync_group
    with pytest.raises(ValueError, match=r"disagree on the step: this worker has \[0.0, 1.0\].*readable by every worker"):
        distributed_loop.check_same_on_every_replica(strategy, replica_id, "the step")
    # Values whose mean is one of them still differ.
    three = lambda: tf.gather([4, 6, 5], replica_id())
    with pytest.raises(ValueError, match="disagree"):
        distributed_loop.check_same_on_every_replica(strategy, three, "the step")
