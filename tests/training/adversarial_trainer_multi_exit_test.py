"""Tests of the RDI-Nets trainer: the hybrid / OAT multi-exit losses, updates, distribution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.attacks import multi_exit as multi_exit_attacks
from oat_tf.layers import dual_batch_norm
from oat_tf.models import conditioning
from oat_tf.training import adversarial_trainer
from oat_tf.training import optimizers
from tests import testing

ENCODER = {"lambda_values": [0.0, 0.1, 0.2, 0.3, 0.4, 1.0], "dim": 8, "seed": 0}
ATTACK = config_lib.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2, random_start=True)
DETERMINISTIC_ATTACK = config_lib.AttackConfig(
    epsilon=0.1, step_size=0.05, num_steps=2, random_start=False
)
WEIGHTS = (0.5, 2.0, 1.0)
NAMES = ("exit_1", "exit_2", "final")
SIZE = 12


def _network(variant="plain", seed=0):
    """A toy two-exit network on 12×12×1 images, 3 classes."""
    keras.utils.set_random_seed(seed)
    inputs = conditioning.model_inputs((SIZE, SIZE, 1))
    cond = conditioning.apply_lambda_conditioning(
        inputs["lambda"], variant, encoder=None if variant == "plain" else ENCODER
    )

    def block(x, filters, strides, index):
        x = cond.conv(x, filters, 3, strides, name=f"conv{index}")
        x = conditioning.apply_normalization(
            x, cond, norm_name=f"bn{index}", film_name=f"film{index}"
        )
        return keras.layers.ReLU(name=f"relu{index}")(x)

    x = block(inputs["image"], 4, 1, 1)  # 12×12×4
    exit_1 = keras.layers.GlobalAveragePooling2D(name="exit_1_pool")(x)
    exit_1 = keras.layers.Dense(3, name="exit_1_fc")(exit_1)
    x = block(x, 6, 2, 2)  # 6×6×6
    exit_2 = keras.layers.MaxPooling2D(2, name="exit_2_pool")(x)
    exit_2 = keras.layers.Flatten(name="exit_2_flat")(exit_2)
    exit_2 = keras.layers.Dense(3, name="exit_2_fc")(exit_2)
    x = block(x, 8, 2, 3)  # 3×3×8
    final = keras.layers.Dense(3, name="final_fc")(keras.layers.Flatten(name="flat")(x))
    outputs = {"exit_1": exit_1, "exit_2": exit_2, "final": final}
    return keras.Model(inputs, outputs, name=f"toy_multi_exit_{variant}")


def _data(n=8, seed=0):
    """Learnable toy data: class k has a bright band in rows 4k..4k+3."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 3, size=n).astype("int32")
    images = rng.uniform(0.0, 0.3, size=(n, SIZE, SIZE, 1)).astype("float32")
    for i, k in enumerate(labels):
        images[i, 4 * k : 4 * k + 4] += 0.6
    return images, labels


def _trainer(
    network,
    defence="max_average",
    sampling=None,
    attack=ATTACK,
    exit_weights=WEIGHTS,
    lr=0.05,
    momentum=0.9,
    l2=0.0,
    **kwargs,
):
    trainer = adversarial_trainer.MultiExitTrainer(
        network,
        attack=attack,
        defence=defence,
        exit_weights=exit_weights,
        sampling=sampling,
        seed=3,
        **kwargs,
    )
    trainer.compile(optimizer=optimizers.SGDWithL2(l2=l2, learning_rate=lr, momentum=momentum))
    return trainer


def _ce(logits, y):
    logits = np.asarray(logits, np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(y)), y]


def _weighted_ce(outputs, labels, weights=WEIGHTS):
    return sum(w * _ce(outputs[name].numpy(), labels) for name, w in zip(NAMES, weights))


def _batch(images, labels):
    return tf.constant(images), tf.constant(labels)


def test_plain_objective_is_the_weighted_hybrid_loss():
    images, labels = _data(8)
    network = _network("plain")
    trainer = _trainer(network, defence="max_average")
    assert trainer.output_keys == NAMES
    images_t, labels_t, drawn, adversarial, _ = trainer._prepare(_batch(images, labels))
    assert drawn is None and adversarial.shape == images.shape
    loss, outputs, adversarial_outputs = trainer._objective(
        images_t, labels_t, drawn, adversarial, training=False
    )
    # Without sampling, λ is the domain: 0 for the clean pass, 1 for the adversarial one.
    clean = network({"image": images, "lambda": np.zeros(8, "float32")}, training=False)
    attacked = network(
        {"image": adversarial.numpy(), "lambda": np.ones(8, "float32")}, training=False
    )
    expected = np.mean(_weighted_ce(clean, labels) + _weighted_ce(attacked, labels))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(outputs["final"].numpy(), clean["final"].numpy(), atol=1e-6)
    np.testing.assert_allclose(
        adversarial_outputs["exit_1"].numpy(), attacked["exit_1"].numpy(), atol=1e-6
    )
    delta = np.abs(adversarial.numpy() - images).max()
    assert 0 < delta <= ATTACK.epsilon + 1e-6
    assert adversarial.numpy().min() >= 0 and adversarial.numpy().max() <= 1


def test_oat_objective_weighs_each_exit_by_lambda():
    images, labels = _data(12)
    network = _network("oat")
    trainer = _trainer(network, defence="average", sampling=config_lib.LambdaSamplingConfig())
    images_t, labels_t, drawn, adversarial, _ = trainer._prepare(_batch(images, labels))
    zeros = drawn.num_zeros
    assert zeros == 2 and adversarial.shape[0] == 10  # ceil(12 / 6) samples at λ = 0 first
    loss, _, _ = trainer._objective(images_t, labels_t, drawn, adversarial, training=False)
    lam = drawn.lambdas.numpy()
    assert len(set(lam[zeros:])) > 1  # several λ, so λ really is passed per sample
    clean = network({"image": images, "lambda": lam}, training=False)
    attacked = network({"image": adversarial.numpy(), "lambda": lam[zeros:]}, training=False)
    adversarial_loss = np.concatenate([np.zeros(zeros), _weighted_ce(attacked, labels[zeros:])])
    expected = np.mean((1 - lam) * _weighted_ce(clean, labels) + lam * adversarial_loss)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # The attack ran with each sample's λ: the same call reproduces it.
    _, attack_seed, _ = trainer._step_seeds()
    reference = multi_exit_attacks.multi_exit_attack(
        lambda x: network({"image": x, "lambda": tf.constant(lam[zeros:])}, training=False),
        images[zeros:],
        labels[zeros:],
        form="average",
        attack=ATTACK,
        output_names=NAMES,
        seed=attack_seed,
    )
    np.testing.assert_allclose(adversarial.numpy(), reference.numpy(), atol=1e-6)


def test_standard_training_runs_no_attack_and_is_the_weighted_clean_loss(monkeypatch):
    calls = []
    original = multi_exit_attacks.multi_exit_attack

    def spy(*args, **kwargs):
        calls.append(kwargs["form"])
        return original(*args, **kwargs)

    monkeypatch.setattr(multi_exit_attacks, "multi_exit_attack", spy)
    images, labels = _data(8)
    network = _network("plain")
    trainer = _trainer(network, defence="none", attack=None)
    images_t, labels_t, drawn, adversarial, _ = trainer._prepare(_batch(images, labels))
    assert adversarial is None
    loss, _, adversarial_outputs = trainer._objective(
        images_t, labels_t, drawn, adversarial, training=False
    )
    assert adversarial_outputs is None
    clean = network({"image": images, "lambda": np.zeros(8, "float32")}, training=False)
    np.testing.assert_allclose(float(loss), np.mean(_weighted_ce(clean, labels)), rtol=1e-5)
    logs = trainer.train_on_batch(images, labels, return_dict=True)
    assert calls == [] and np.isfinite(logs["loss"])
    assert trainer.adversarial_accuracy.count.numpy() == 0
    # The spy does see the attacks of an adversarial defence.
    _trainer(_network("plain"), defence="main")._prepare(_batch(images, labels))
    assert calls and set(calls) == {"single"}


def test_main_defence_attacks_the_final_output_with_the_trainer_seed():
    images, labels = _data(8)
    network = _network("plain")
    trainer = _trainer(network, defence="main")
    _, _, _, adversarial, _ = trainer._prepare(_batch(images, labels))
    _, attack_seed, _ = trainer._step_seeds()

    def logits_fn(x):
        return network({"image": x, "lambda": tf.ones([8])}, training=False)

    expected = multi_exit_attacks.multi_exit_attack(
        logits_fn, images, labels, form="single", attack=ATTACK, output_names=NAMES,
        exit_name="final", seed=attack_seed,
    )
    np.testing.assert_allclose(adversarial.numpy(), expected.numpy(), atol=1e-6)
    # Another seed gives another random start: the trainer's seed is really used.
    other = multi_exit_attacks.multi_exit_attack(
        logits_fn, images, labels, form="single", attack=ATTACK, output_names=NAMES,
        exit_name="final", seed=tf.constant([7, 7], tf.int64),
    )
    assert np.abs(other.numpy() - expected.numpy()).max() > 1e-3


@pytest.mark.parametrize(
    "variant, defence, sampling",
    [("plain", "average", None), ("oat", "main", config_lib.LambdaSamplingConfig())],
)
def test_one_step_equals_manual_sgd_on_the_loss(variant, defence, sampling):
    images, labels = _data(12)
    network = _network(variant)
    trainer = _trainer(network, defence=defence, sampling=sampling, lr=1.0, momentum=0.0)
    before = [v.numpy() for v in network.trainable_variables]
    # Same seeds as the step will use (optimizer step 0): recompute the loss by hand.
    images_t, labels_t, drawn, adversarial, _ = trainer._prepare(_batch(images, labels))
    if drawn is None:
        zeros, clean_lam = 0, tf.zeros([12])
        adv_lam, clean_w, adv_w = tf.ones([12]), tf.ones([12]), tf.ones([12])
    else:
        zeros, clean_lam = drawn.num_zeros, drawn.lambdas
        adv_lam, clean_w, adv_w = clean_lam[zeros:], 1 - clean_lam, clean_lam[zeros:]
    reference = _network(variant, seed=1)
    reference.set_weights(network.get_weights())
    ce = keras.losses.sparse_categorical_crossentropy
    with tf.GradientTape() as tape:
        with dual_batch_norm.unchanged_moving_statistics(
            dual_batch_norm.layers_of(reference), dual_batch_norm.ADVERSARIAL
        ):
            clean = reference({"image": images_t, "lambda": clean_lam}, training=True)
        adv = reference({"image": adversarial, "lambda": adv_lam}, training=True)
        loss = 0.0
        for name, w in zip(NAMES, WEIGHTS):
            adv_loss = adv_w * ce(labels_t[zeros:], adv[name], from_logits=True)
            adv_loss = tf.concat([tf.zeros([zeros]), adv_loss], 0)
            loss += w * (clean_w * ce(labels_t, clean[name], from_logits=True) + adv_loss)
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, reference.trainable_variables)
    logs = trainer.train_on_batch(images, labels, return_dict=True)
    np.testing.assert_allclose(logs["loss"], float(loss), rtol=1e-5)
    for w0, g, w1 in zip(before, grads, network.trainable_variables):
        np.testing.assert_allclose(w1.numpy(), w0 - g.numpy(), atol=1e-5, err_msg=w1.path)
    # Moving statistics: the clean pass left the adversarial BN group alone, as OATTrainer.
    for a, b in zip(reference.non_trainable_weights, network.non_trainable_weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6, err_msg=a.path)


@pytest.mark.parametrize("mode", ["adversarial", "mixed"])
def test_oat_at_lambda_one_runs_the_clean_pass_for_the_statistics_only_in_mixed_mode(mode):
    """λ fixed at 1: the clean loss has weight 0, and "mixed" runs the clean pass anyway.

    As `OATTrainer` (and the reference loops): the first dual BN's adversarial
    group takes one momentum update with conv1 of the clean images, then one
    with the adversarial ones; "adversarial" mode takes only the second. The
    trainable weights take the same step in both modes.
    """
    images, labels = _data(8)
    sampling = config_lib.LambdaSamplingConfig(sampling="fixed", values=(1.0,))
    network = _network("oat")
    initial = network.get_weights()
    bn = network.get_layer("bn1")
    features = keras.Model(network.inputs, network.get_layer("conv1").output)
    lam = np.ones([8], "float32")
    clean_mean = features({"image": images, "lambda": lam}).numpy().mean(axis=(0, 1, 2))
    start_mean = bn.moving_mean.numpy()[dual_batch_norm.ADVERSARIAL].copy()

    def step(statistics):
        network.set_weights(initial)
        trainer = _trainer(
            network, sampling=sampling, attack=DETERMINISTIC_ATTACK, adversarial_bn_statistics=statistics
        )
        _, _, _, adversarial, _ = trainer._prepare(_batch(images, labels))
        adversarial_mean = features({"image": adversarial.numpy(), "lambda": lam}).numpy().mean(axis=(0, 1, 2))
        network.set_weights(initial)
        trainer.train_on_batch(images, labels)
        moved = bn.moving_mean.numpy()[dual_batch_norm.ADVERSARIAL].copy()
        return moved, adversarial_mean, [w.numpy() for w in network.trainable_weights]

    moved, adversarial_mean, trainable = step(mode)
    momentum = conditioning.BN_MOMENTUM
    expected = momentum * start_mean + (1 - momentum) * adversarial_mean
    if mode == "mixed":
        before = momentum * start_mean + (1 - momentum) * clean_mean
        expected = momentum * before + (1 - momentum) * adversarial_mean
    np.testing.assert_allclose(moved, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(clean_mean - adversarial_mean).max() > 1e-3  # The two modes differ here.
    _, _, other = step("mixed" if mode == "adversarial" else "adversarial")
    for a, b in zip(trainable, other):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_lowers_the_loss_and_logs_every_exit():
    images, labels = _data(16)
    trainer = _trainer(_network("plain"), defence="max_average", exit_weights=None)
    assert trainer.exit_weights == (1.0, 1.0, 1.0)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    first = trainer.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0).history
    assert {
        "loss", "clean_accuracy", "adversarial_accuracy", "clean_accuracy_exit_1",
        "clean_accuracy_exit_2", "adversarial_accuracy_exit_1", "adversarial_accuracy_exit_2",
    } <= set(first)
    trainer.fit(dataset, epochs=1, steps_per_epoch=25, verbose=0)
    last = trainer.evaluate(dataset, steps=1, verbose=0, return_dict=True)
    assert last["loss"] < 0.7 * first["loss"][0], (first["loss"], last["loss"])
    assert last["clean_accuracy"] == 1.0 and last["clean_accuracy_exit_2"] > 0.5


@pytest.mark.parametrize(
    "variant, defence, sampling",
    [
        ("plain", "main", None),
        ("oat", "main", config_lib.LambdaSamplingConfig(sampling="fixed", values=(0.5,))),
    ],
)
def test_mirrored_strategy_step_equals_single_device_step(variant, defence, sampling):
    images, labels = _data(8)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8, drop_remainder=True)
    kwargs = dict(defence=defence, sampling=sampling, attack=DETERMINISTIC_ATTACK, l2=5e-4)

    single = _network(variant)
    initial = single.get_weights()
    _trainer(single, **kwargs).fit(dataset, epochs=1, verbose=0)

    strategy = testing.two_cpu_mirrored_strategy()
    with strategy.scope():
        mirrored = _network(variant)
        mirrored.set_weights(initial)
        mirrored_trainer = _trainer(mirrored, **kwargs)
    mirrored_trainer.fit(dataset, epochs=1, verbose=0)

    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=2e-6, err_msg=a.path)
    # A replica mean without the replica scaling would double this update.
    moved = max(np.abs(w.numpy() - w0).max() for w, w0 in zip(single.weights, initial))
    assert moved > 1e-4


def test_checkpoint_round_trip_resumes_the_same_run(tmp_path):
    images, labels = _data(8)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    network = _network("plain")
    trainer = _trainer(network, defence="main")
    trainer.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
    checkpoint = tf.train.Checkpoint(trainer=trainer, optimizer=trainer.optimizer)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    saved = testing.weights_by_path(network)
    trainer.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)  # the uninterrupted run

    restored_network = _network("plain", seed=5)
    restored = _trainer(restored_network, defence="main")
    restored.optimizer.build(restored_network.trainable_variables)
    status = tf.train.Checkpoint(trainer=restored, optimizer=restored.optimizer).restore(path)
    status.assert_existing_objects_matched()
    testing.assert_weights_equal(saved, testing.weights_by_path(restored_network))
    assert int(restored.optimizer.iterations.numpy()) == 1
    restored.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
    testing.assert_weights_equal(
        testing.weights_by_path(network), testing.weights_by_path(restored_network), atol=1e-6
    )


@pytest.mark.parametrize(
    "defence, sampling",
    [("max_average", config_lib.LambdaSamplingConfig(sampling="uniform")), ("none", None)],
)
def test_config_round_trip(defence, sampling):
    variant = "plain" if sampling is None else "oat"
    trainer = adversarial_trainer.MultiExitTrainer(
        _network(variant), attack=ATTACK, defence=defence, exit_weights=WEIGHTS,
        sampling=sampling, seed=9, adversarial_bn_statistics="mixed",
    )
    rebuilt = adversarial_trainer.MultiExitTrainer.from_config(trainer.get_config())
    assert rebuilt.defence == defence and rebuilt.sampling == sampling
    assert rebuilt.attack == ATTACK and rebuilt.seed == 9 and rebuilt.exit_weights == WEIGHTS
    assert rebuilt.adversarial_bn_statistics == "mixed" and rebuilt.output_keys == NAMES
    serialized = keras.saving.serialize_keras_object(trainer)
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(deserialized, adversarial_trainer.MultiExitTrainer)
    assert deserialized.get_config() == trainer.get_config()


def test_dynamic_batch_size_is_rejected():
    images, labels = _data(10)
    trainer = _trainer(_network("plain"), defence="none", attack=None)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    with pytest.raises(ValueError, match="drop_remainder"):
        trainer.fit(dataset, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"defence": "random"}, r"`defence` must be one of .*Received: defence='random'"),
        (
            {"exit_weights": (1.0, 1.0)},
            r"`exit_weights` must hold one weight per output \(3: exit_1, exit_2, final\)",
        ),
        (
            {"exit_weights": (1.0, -1.0, 1.0)},
            r"`exit_weights` must be finite and >= 0.*Received: exit_weights=",
        ),
        ({"exit_weights": (1.0, float("nan"), 1.0)}, r"`exit_weights` must be finite"),
        ({"exit_weights": (0.0, 0.0, 0.0)}, r"`exit_weights` must have at least one positive"),
        ({"exit_weights": ("a", 1, 1)}, r"`exit_weights` must be a sequence of 3 numbers"),
        ({"exit_weights": "111"}, r"`exit_weights` must be a sequence of 3 numbers"),
        ({"attack": None}, r"`attack` must be an AttackConfig for defence='max_average'"),
        (
            {"attack": config_lib.AttackConfig(name="square")},
            r"`attack.name` must be one of \('pgd', 'fgsm'\).*Received: attack.name='square'",
        ),
        (
            {"defence": "none", "sampling": config_lib.LambdaSamplingConfig()},
            r"`sampling` must be None for defence='none'",
        ),
        ({"adversarial_bn_statistics": "both"}, r"`adversarial_bn_statistics` must be one of"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    arguments = {"attack": ATTACK, **kwargs}
    with pytest.raises(ValueError, match=message):
        adversarial_trainer.MultiExitTrainer(_network("plain"), **arguments)


def test_single_output_network_is_rejected():
    inputs = conditioning.model_inputs((SIZE, SIZE, 1))
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(inputs["image"]))
    with pytest.raises(ValueError, match=r"`network` must be a multi-exit network"):
        adversarial_trainer.MultiExitTrainer(keras.Model(inputs, logits), attack=ATTACK)


def test_zero_weight_exit_gets_no_update():
    images, labels = _data(8)
    network = _network("plain")
    trainer = _trainer(network, defence="main", exit_weights=(0.0, 1.0, 1.0), lr=0.5, momentum=0.0)
    head = network.get_layer("exit_1_fc")
    before = [w.numpy() for w in head.weights]
    trainer.train_on_batch(images, labels)
    for w0, w1 in zip(before, head.weights):
        np.testing.assert_array_equal(w1.numpy(), w0)


def test_rdi_small_cnn_trains_with_the_max_average_defence():
    from oat_tf.models import rdi_networks  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    network = rdi_networks.rdi_small_cnn(
        num_classes=3, image_shape=(16, 16, 1), variant="plain", filters=(4, 8),
        hidden_units=8, exit_conv_filters=4, exit_hidden_units=8, dropout=0.0,
    )
    trainer = _trainer(network, defence="max_average")
    rng = np.random.RandomState(0)
    images = rng.uniform(size=(4, 16, 16, 1)).astype("float32")
    labels = rng.randint(0, 3, size=4).astype("int32")
    before = testing.weights_by_path(network)
    logs = trainer.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["loss"]) and "adversarial_accuracy_exit_2" in logs
    changed = testing.weights_by_path(network)
    assert all(np.abs(changed[k] - before[k]).max() > 0 for k in before if k.endswith("kernel"))
