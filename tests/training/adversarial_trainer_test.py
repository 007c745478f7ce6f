"""Tests of the OAT trainer: the loss of Algorithm 1, updates and distribution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import attacks
from oat_tf import config as config_lib
from oat_tf.layers import dual_batch_norm
from oat_tf.models import small_cnn
from oat_tf.training import adversarial_trainer
from oat_tf.training import objectives
from oat_tf.training import optimizers
from tests import testing

ENCODER = {"lambda_values": [0.0, 0.1, 0.2, 0.3, 0.4, 1.0], "dim": 8, "seed": 0}
ATTACK = config_lib.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2, random_start=True)
DETERMINISTIC_ATTACK = config_lib.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2, random_start=False)
MOMENTUM = 0.9


def _network(variant="oat", dropout=0.0, seed=0):
    keras.utils.set_random_seed(seed)
    return small_cnn.SmallCNN(
        num_classes=3, image_shape=(16, 16, 1), variant=variant, encoder=ENCODER,
        filters=(4, 8), hidden_units=8, dropout=dropout,
    )


def _data(n=8, seed=0):
    """Learnable toy data: class k has a bright band in rows 5k..5k+4."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 3, size=n).astype("int32")
    images = rng.uniform(0.0, 0.3, size=(n, 16, 16, 1)).astype("float32")
    for i, k in enumerate(labels):
        images[i, 5 * k : 5 * k + 5] += 0.6
    return images, labels


def _trainer(network, sampling=None, attack=ATTACK, lr=0.05, momentum=0.9, l2=0.0, jit_compile=False):
    trainer = adversarial_trainer.OATTrainer(
        network, sampling=sampling or config_lib.LambdaSamplingConfig(), attack=attack, seed=3
    )
    trainer.compile(
        optimizer=optimizers.SGDWithL2(l2=l2, learning_rate=lr, momentum=momentum),
        jit_compile=jit_compile,
    )
    return trainer


def test_a_few_oat_steps_lower_the_loss():
    images, labels = _data(16)
    trainer = _trainer(_network())
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    first = trainer.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0).history["loss"][0]
    history = trainer.fit(dataset, epochs=1, steps_per_epoch=40, verbose=0).history
    trainer.loss_tracker.reset_state()
    last = trainer.evaluate(dataset, steps=1, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(history["loss"][0])
    assert last < 0.7 * first, (first, last)


def test_objective_is_the_weighted_clean_and_adversarial_cross_entropy():
    images, labels = _data(12)
    network = _network()
    trainer = _trainer(network)
    images_t, labels_t, drawn, adversarial, _ = trainer._prepare((tf.constant(images), tf.constant(labels)))
    zeros = drawn.num_zeros
    assert zeros == 2 and adversarial.shape[0] == 10
    loss, _, _ = trainer._objective(images_t, labels_t, drawn, adversarial, training=False)

    lam = drawn.lambdas.numpy()
    clean_logits = network({"image": images, "lambda": lam}, training=False).numpy()
    adv_logits = network({"image": adversarial.numpy(), "lambda": lam[zeros:]}, training=False).numpy()

    def ce(logits, y):
        logits = logits - logits.max(axis=1, keepdims=True)
        return np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(y)), y]

    adv_loss = np.concatenate([np.zeros(zeros), ce(adv_logits, labels[zeros:])])
    expected = np.mean((1 - lam) * ce(clean_logits, labels) + lam * adv_loss)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # Adversarial images stay in the ε-ball and [0, 1].
    delta = np.abs(adversarial.numpy() - images[zeros:]).max()
    assert delta <= ATTACK.epsilon + 1e-6
    assert adversarial.numpy().min() >= 0 and adversarial.numpy().max() <= 1


def test_no_attack_compute_on_zero_lambda_samples(monkeypatch):
    attacked = []
    original = attacks.run_attack

    def spy(config, logits_fn, images, labels, **kwargs):
        attacked.append(images.shape[0])
        return original(config, logits_fn, images, labels, **kwargs)

    monkeypatch.setattr(attacks, "run_attack", spy)
    images, labels = _data(12)
    trainer = _trainer(_network())
    trainer.fit(tf.data.Dataset.from_tensors((images, labels)), epochs=1, verbose=0)
    # Recorded once per trace: always the 12 − ceil(12 / 6) samples with λ ≠ 0.
    assert attacked and set(attacked) == {10}
    attacked.clear()
    standard = _trainer(_network(), sampling=config_lib.LambdaSamplingConfig(sampling="fixed", values=(0.0,)))
    standard.fit(tf.data.Dataset.from_tensors((images, labels)), epochs=1, verbose=0)
    assert attacked == []


def test_one_step_equals_manual_sgd_on_the_objective():
    images, labels = _data(8)
    network = _network()
    trainer = _trainer(network, lr=0.1, momentum=0.0)
    before = [v.numpy() for v in network.trainable_variables]
    data = (tf.constant(images), tf.constant(labels))
    # Same seeds as the step will use (optimizer step 0): recompute the loss by hand.
    images_t, labels_t, drawn, adversarial, _ = trainer._prepare(data)
    reference = _network()
    reference.set_weights(network.get_weights())
    with tf.GradientTape() as tape:
        clean = reference({"image": images_t, "lambda": drawn.lambdas}, training=True)
        adv = reference({"image": adversarial, "lambda": drawn.lambdas[drawn.num_zeros:]}, training=True)
        ce = keras.losses.sparse_categorical_crossentropy
        adv_loss = tf.concat([tf.zeros([drawn.num_zeros]), ce(labels_t[drawn.num_zeros:], adv, from_logits=True)], 0)
        loss = tf.reduce_mean((1 - drawn.lambdas) * ce(labels_t, clean, from_logits=True) + drawn.lambdas * adv_loss)
    grads = tape.gradient(loss, reference.trainable_variables)
    trainer.train_on_batch(images, labels)
    for w0, g, w1 in zip(before, grads, network.trainable_variables):
        np.testing.assert_allclose(w1.numpy(), w0 - 0.1 * g.numpy(), atol=1e-6)


def test_fixed_lambda_one_skips_the_clean_pass():
    images, labels = _data(8)
    trainer = _trainer(_network("plain"), sampling=config_lib.LambdaSamplingConfig(sampling="fixed", values=(1.0,)))
    logs = trainer.train_on_batch(images, labels, return_dict=True)
    assert float(logs["clean_accuracy"]) == 0.0 and trainer.clean_accuracy.count.numpy() == 0


@pytest.mark.parametrize("variant", ["oat", "plain"])
def test_mirrored_strategy_step_equals_single_device_step(variant):
    images, labels = _data(8)
    sampling = config_lib.LambdaSamplingConfig(sampling="fixed", values=(0.5,))

    single = _network(variant)
    initial = single.get_weights()
    single_trainer = _trainer(single, sampling=sampling, attack=DETERMINISTIC_ATTACK, l2=5e-4)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8, drop_remainder=True)
    single_trainer.fit(dataset, epochs=1, verbose=0)

    strategy = testing.two_cpu_mirrored_strategy()
    with strategy.scope():
        mirrored = _network(variant)
        mirrored.set_weights(initial)
        mirrored_trainer = _trainer(mirrored, sampling=sampling, attack=DETERMINISTIC_ATTACK, l2=5e-4)
    mirrored_trainer.fit(dataset, epochs=1, verbose=0)

    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=2e-6, err_msg=a.path)
    # A hand-written mean without the replica scaling would double this update.
    moved = max(np.abs(w.numpy() - w0).max() for w, w0 in zip(single.weights, initial))
    assert moved > 1e-4


def test_config_round_trip():
    trainer = adversarial_trainer.OATTrainer(
        _network(), sampling=config_lib.LambdaSamplingConfig(sampling="uniform"), attack=ATTACK, seed=9
    )
    rebuilt = adversarial_trainer.OATTrainer.from_config(trainer.get_config())
    assert rebuilt.sampling == trainer.sampling and rebuilt.attack == ATTACK and rebuilt.seed == 9
    assert rebuilt.adversarial_bn_statistics == "adversarial"


def test_dynamic_batch_size_is_rejected():
    images, labels = _data(10)
    trainer = _trainer(_network())
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)  # remainder: dynamic shape
    with pytest.raises(ValueError, match="drop_remainder"):
        trainer.fit(dataset, epochs=1, verbose=0)


def test_xla_step_matches_graph_step():
    # A fixed λ and ε = 0 keep random draws and the attack's sign steps out of
    # the comparison: `tf.random.stateless_*` may pick another algorithm under
    # XLA, and a sign can flip on a near-zero gradient. The attacks' own XLA
    # equivalence is tested in tests/attacks.
    images, labels = _data(12)
    sampling = config_lib.LambdaSamplingConfig(sampling="fixed", values=(0.5,))
    attack = config_lib.AttackConfig(epsilon=0.0, step_size=0.05, num_steps=2)
    graph = _network()
    initial = graph.get_weights()
    _trainer(graph, sampling=sampling, attack=attack, l2=5e-4).train_on_batch(images, labels)
    xla = _network()
    xla.set_weights(initial)
    _trainer(xla, sampling=sampling, attack=attack, l2=5e-4, jit_compile=True).train_on_batch(images, labels)
    moved = max(np.abs(w.numpy() - w0).max() for w, w0 in zip(graph.weights, initial))
    assert moved > 1e-3
    for a, b in zip(graph.weights, xla.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-5, err_msg=a.path)


def _assert_moving_mean(moved, mode, start_mean, clean_mean, adversarial_mean):
    """One momentum update with the adversarial moments, preceded in "mixed" mode by one with the clean ones."""
    if mode == "adversarial":
        expected = MOMENTUM * start_mean + (1 - MOMENTUM) * adversarial_mean
    else:
        expected = MOMENTUM * (MOMENTUM * start_mean + (1 - MOMENTUM) * clean_mean) + (1 - MOMENTUM) * adversarial_mean
    np.testing.assert_allclose(moved, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(clean_mean - adversarial_mean).max() > 1e-3  # the two modes differ here


@pytest.mark.parametrize("mode", ["adversarial", "mixed"])
def test_clean_pass_updates_the_adversarial_bn_only_in_mixed_mode(mode):
    """All samples at λ = 0.5 route to the adversarial group of every dual BN.

    The first dual BN sees conv1 of the images (weights before the update):
    "adversarial" mode applies one momentum update with the adversarial
    moments; "mixed" first applies one with the clean moments (the clean
    pass), then the adversarial one. The adversarial images are the same in
    both modes (same seed, same start weights).
    """
    images, labels = _data(8)
    sampling = config_lib.LambdaSamplingConfig(sampling="fixed", values=(0.5,))
    network = _network()
    initial = network.get_weights()
    conv = next(l for l in network.layers if isinstance(l, keras.layers.Conv2D))
    bn = next(l for l in network.layers if isinstance(l, dual_batch_norm.DualBatchNormalization))
    features = keras.Model(network.inputs, conv.output)
    start_mean = bn.moving_mean.numpy()[1].copy()

    trainer = adversarial_trainer.OATTrainer(
        network, sampling=sampling, attack=DETERMINISTIC_ATTACK, seed=3, adversarial_bn_statistics=mode
    )
    trainer.compile(optimizer=optimizers.SGDWithL2(l2=0.0, learning_rate=0.05, momentum=0.9))
    _, _, drawn, adversarial, _ = trainer._prepare((tf.constant(images), tf.constant(labels)))
    lam = drawn.lambdas.numpy()
    clean_mean = features({"image": images, "lambda": lam}).numpy().mean(axis=(0, 1, 2))
    adversarial_mean = features({"image": adversarial.numpy(), "lambda": lam}).numpy().mean(axis=(0, 1, 2))
    network.set_weights(initial)

    trainer.train_on_batch(images, labels)
    moved = bn.moving_mean.numpy()[1]
    _assert_moving_mean(moved, mode, start_mean, clean_mean, adversarial_mean)


@pytest.mark.parametrize("mode", ["adversarial", "mixed"])
def test_pgd_at_at_lambda_one_runs_the_clean_pass_for_the_statistics_only_in_mixed_mode(mode):
    """PGD-AT at λ = 1 on a plain (single-BN) network.

    The reference loop runs a clean training pass at every step, with loss
    weight 1 − λ = 0: "mixed" reproduces it, so the BN's moving mean sees
    conv1 of the clean images, then of the adversarial ones; "adversarial"
    runs no clean pass. The weights move identically in both modes.
    """
    images, labels = _data(8)
    sampling = config_lib.LambdaSamplingConfig(sampling="fixed", values=(1.0,))
    network = _network(variant="plain")
    initial = network.get_weights()
    conv = next(l for l in network.layers if isinstance(l, keras.layers.Conv2D))
    bn = next(l for l in network.layers if isinstance(l, keras.layers.BatchNormalization))
    features = keras.Model(network.inputs, conv.output)
    lam = np.ones([8], "float32")
    clean_mean = features({"image": images, "lambda": lam}).numpy().mean(axis=(0, 1, 2))
    start_mean = bn.moving_mean.numpy().copy()

    def step(statistics):
        network.set_weights(initial)
        trainer = adversarial_trainer.OATTrainer(
            network, sampling=sampling, attack=DETERMINISTIC_ATTACK, seed=3,
            adversarial_bn_statistics=statistics,
        )
        trainer.compile(optimizer=optimizers.SGDWithL2(l2=0.0, learning_rate=0.05, momentum=0.9))
        _, _, _, adversarial, _ = trainer._prepare((tf.constant(images), tf.constant(labels)))
        adversarial_mean = features({"image": adversarial.numpy(), "lambda": lam}).numpy().mean(axis=(0, 1, 2))
        network.set_weights(initial)
        trainer.train_on_batch(images, labels)
        trainable = [w.numpy() for w in network.trainable_weights]
        return bn.moving_mean.numpy().copy(), adversarial_mean, trainable

    moved, adversarial_mean, trainable = step(mode)
    _assert_moving_mean(moved, mode, start_mean, clean_mean, adversarial_mean)
    # The clean pass has loss weight 0: the weights take the same step as without it.
    _, _, other = step("mixed" if mode == "adversarial" else "adversarial")
    for a, b in zip(trainable, other):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_adversarial_bn_statistics_is_rejected():
    with pytest.raises(ValueError, match="adversarial_bn_statistics.*Received: adversarial_bn_statistics='both'"):
        adversarial_trainer.OATTrainer(
            _network(), sampling=config_lib.LambdaSamplingConfig(), attack=ATTACK, adversarial_bn_statistics="both"
        )


# --- The mixed-batch objective (clean fraction, single BN / Mixture BN). ---


def _mixed_trainer(network, clean_fraction=0.5, attack=DETERMINISTIC_ATTACK, lr=0.05, momentum=0.9):
    trainer = adversarial_trainer.OATTrainer(
        network,
        sampling=config_lib.LambdaSamplingConfig(),
        attack=attack,
        seed=3,
        objective="mixed_batch",
        clean_fraction=clean_fraction,
    )
    trainer.compile(optimizer=optimizers.SGDWithL2(l2=0.0, learning_rate=lr, momentum=momentum))
    return trainer


def _ce(logits, y):
    logits = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(y)), y]


@pytest.mark.parametrize("variant", ["plain", "mixture_bn"])
def test_mixed_batch_objective_is_the_mean_cross_entropy_of_one_pass(variant):
    images, labels = _data(8)
    network = _network(variant)
    trainer = _mixed_trainer(network, clean_fraction=0.5, attack=ATTACK)
    images_t, labels_t, drawn, adversarial, _ = trainer._prepare((tf.constant(images), tf.constant(labels)))
    assert drawn.num_zeros == 4 and adversarial.shape[0] == 4
    np.testing.assert_array_equal(drawn.lambdas.numpy(), [0, 0, 0, 0, 1, 1, 1, 1])
    loss, logits, adversarial_logits = trainer._objective(
        images_t, labels_t, drawn, adversarial, training=False
    )
    mixed = np.concatenate([images[:4], adversarial.numpy()])
    reference = network({"image": mixed, "lambda": drawn.lambdas.numpy()}, training=False).numpy()
    np.testing.assert_allclose(float(loss), _ce(reference, labels).mean(), rtol=1e-5)
    np.testing.assert_allclose(logits.numpy(), reference[:4], atol=1e-6)
    np.testing.assert_allclose(adversarial_logits.numpy(), reference[4:], atol=1e-6)
    assert np.abs(adversarial.numpy() - images[4:]).max() <= ATTACK.epsilon + 1e-6


def test_one_mixed_batch_step_equals_manual_sgd_with_one_training_pass():
    images, labels = _data(8)
    network = _network("plain")
    trainer = _mixed_trainer(network, clean_fraction=0.25, lr=0.1, momentum=0.0)
    before = [v.numpy() for v in network.trainable_variables]
    images_t, labels_t, drawn, adversarial, _ = trainer._prepare((tf.constant(images), tf.constant(labels)))
    reference = _network("plain")
    reference.set_weights(network.get_weights())
    with tf.GradientTape() as tape:
        mixed = tf.concat([images_t[:2], adversarial], 0)
        logits = reference({"image": mixed, "lambda": drawn.lambdas}, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels_t, logits, from_logits=True))
    grads = tape.gradient(loss, reference.trainable_variables)
    trainer.train_on_batch(images, labels)
    for w0, g, w1 in zip(before, grads, network.trainable_variables):
        np.testing.assert_allclose(w1.numpy(), w0 - 0.1 * g.numpy(), atol=1e-6)
    # The single BN's moving statistics saw the mixture (one update, not two).
    for a, b in zip(reference.non_trainable_weights, network.non_trainable_weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6, err_msg=a.path)


def test_clean_fraction_zero_is_madry_adversarial_training(monkeypatch):
    attacked = []
    original = attacks.run_attack

    def spy(config, logits_fn, images, labels, **kwargs):
        attacked.append(images.shape[0])
        return original(config, logits_fn, images, labels, **kwargs)

    monkeypatch.setattr(attacks, "run_attack", spy)
    images, labels = _data(8)
    trainer = _mixed_trainer(_network("plain"), clean_fraction=0.0)
    logs = trainer.train_on_batch(images, labels, return_dict=True)
    assert set(attacked) == {8}
    assert trainer.clean_accuracy.count.numpy() == 0 and np.isfinite(logs["loss"])
    attacked.clear()
    clean_only = _mixed_trainer(_network("plain"), clean_fraction=1.0)
    clean_only.train_on_batch(images, labels)
    assert attacked == [] and clean_only.adversarial_accuracy.count.numpy() == 0


def test_domain_route_sends_adversarial_images_to_adversarial_statistics():
    """Mixture BN: the clean half updates the clean BN, the attacked half the adversarial BN."""
    images, labels = _data(8)
    network = _network("mixture_bn")
    conv = network.get_layer("block1_conv1")
    bn = network.get_layer("block1_bn1")
    assert isinstance(bn, dual_batch_norm.DualBatchNormalization)
    features = keras.Model(network.inputs, conv.output)
    start = bn.moving_mean.numpy().copy()
    trainer = _mixed_trainer(network, clean_fraction=0.5)
    images_t, labels_t, drawn, adversarial, _ = trainer._prepare((tf.constant(images), tf.constant(labels)))
    lam = drawn.lambdas.numpy()
    clean_mean = features({"image": images[:4], "lambda": lam[:4]}).numpy().mean(axis=(0, 1, 2))
    adversarial_mean = features({"image": adversarial.numpy(), "lambda": lam[4:]}).numpy().mean(axis=(0, 1, 2))
    assert np.abs(clean_mean - adversarial_mean).max() > 1e-3

    trainer._objective(images_t, labels_t, drawn, adversarial, training=True)

    moved = bn.moving_mean.numpy()
    np.testing.assert_allclose(moved[0], MOMENTUM * start[0] + (1 - MOMENTUM) * clean_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        moved[1], MOMENTUM * start[1] + (1 - MOMENTUM) * adversarial_mean, rtol=1e-4, atol=1e-5
    )


def test_mixed_batch_config_round_trip_and_errors():
    trainer = _mixed_trainer(_network("mixture_bn"), clean_fraction=0.25)
    rebuilt = adversarial_trainer.OATTrainer.from_config(trainer.get_config())
    assert isinstance(rebuilt.objective, objectives.MixedBatchObjective)
    assert rebuilt.objective.name == "mixed_batch" and rebuilt.objective.clean_fraction == 0.25
    assert rebuilt.objective_name == "mixed_batch" and rebuilt.clean_fraction == 0.25
    sampling = config_lib.LambdaSamplingConfig()
    with pytest.raises(ValueError, match="`objective` must be one of.*Received: objective='madry'"):
        adversarial_trainer.OATTrainer(_network(), sampling=sampling, attack=ATTACK, objective="madry")
    with pytest.raises(ValueError, match="`clean_fraction` must be.*Received: clean_fraction=1.5"):
        adversarial_trainer.OATTrainer(_network(), sampling=sampling, attack=ATTACK, clean_fraction=1.5)


def test_loss_scaling_gives_the_unscaled_update():
    # Under float32 a power-of-two loss scale is exact: the trainer multiplies
    # its loss by the scale and the optimizer divides the gradients back.
    images, labels = _data(8)
    plain = _network()
    initial = plain.get_weights()
    _trainer(plain, lr=0.1).train_on_batch(images, labels)
    scaled = _network()
    scaled.set_weights(initial)
    trainer = adversarial_trainer.OATTrainer(
        scaled, sampling=config_lib.LambdaSamplingConfig(), attack=ATTACK, seed=3
    )
    trainer.compile(
        optimizer=optimizers.StepCountingLossScaleOptimizer(
            optimizers.SGDWithL2(l2=0.0, learning_rate=0.1, momentum=0.9), initial_scale=2.0**10
        )
    )
    trainer.train_on_batch(images, labels)
    for a, b in zip(plain.weights, scaled.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6, err_msg=a.path)
    assert max(np.abs(w.numpy() - w0).max() for w, w0 in zip(scaled.weights, initial)) > 1e-4
    # No step was skipped as overflowing.
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0**10


def test_compile_builds_the_optimizer_so_fit_traces_the_step_once(monkeypatch):
    images, labels = _data(8)
    trainer = _trainer(_network())
    # One zero-initialised momentum slot per trainable weight, before any step.
    assert trainer.optimizer.built
    slots = [v for v in trainer.optimizer.variables if v.path.endswith("_momentum")]
    assert len(slots) == len(trainer.network.trainable_variables)
    assert all(not np.any(v.numpy()) for v in slots)
    traces = []
    real_step = adversarial_trainer.OATTrainer.train_step

    def counting_step(self, data):
        traces.append(1)  # Python runs only while TensorFlow traces the step.
        return real_step(self, data)

    monkeypatch.setattr(adversarial_trainer.OATTrainer, "train_step", counting_step)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    trainer.fit(dataset, epochs=2, steps_per_epoch=2, verbose=0)
    assert len(traces) == 1
    assert int(trainer.optimizer.iterations.numpy()) == 4
