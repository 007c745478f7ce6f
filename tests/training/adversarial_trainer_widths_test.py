"""Tests of the OATS trainer (Algorithm 2): summed per-width gradients, BN isolation, distribution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import attacks
from oat_tf import config as config_lib
from oat_tf.layers import switchable_batch_norm
from oat_tf.models import slimmable_small_cnn
from oat_tf.models import small_cnn
from oat_tf.training import adversarial_trainer
from oat_tf.training import optimizers
from tests import testing

ENCODER = {"lambda_values": [0.0, 0.1, 0.2, 0.3, 0.4, 1.0], "dim": 8, "seed": 0}
ATTACK = config_lib.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2, random_start=True)
# No random start: the adversarial images do not depend on the attack seed.
DETERMINISTIC_ATTACK = config_lib.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2, random_start=False)
ELEMENT_WISE = config_lib.LambdaSamplingConfig()
FIXED_ONE = config_lib.LambdaSamplingConfig(sampling="fixed", values=(1.0,))


def _network(variant="oats", seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    args = dict(num_classes=3, image_shape=(16, 16, 1), encoder=ENCODER, filters=(4, 8), hidden_units=8, dropout=0.0)
    args.update(kwargs)
    return slimmable_small_cnn.SlimmableSmallCNN(variant=variant, **args)


def _data(n=12, seed=0):
    """Learnable toy data: class k has a bright band in rows 5k..5k+4."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 3, size=n).astype("int32")
    images = rng.uniform(0.0, 0.3, size=(n, 16, 16, 1)).astype("float32")
    for i, k in enumerate(labels):
        images[i, 5 * k : 5 * k + 5] += 0.6
    return images, labels


def _compile(trainer, lr=0.1, momentum=0.0, l2=0.0, run_eagerly=True):
    trainer.compile(
        optimizer=optimizers.SGDWithL2(l2=l2, learning_rate=lr, momentum=momentum),
        run_eagerly=run_eagerly,
    )
    return trainer


def _oats(network, sampling=ELEMENT_WISE, attack=DETERMINISTIC_ATTACK, **compile_kwargs):
    trainer = adversarial_trainer.OATSTrainer(network, sampling=sampling, attack=attack, seed=3)
    return _compile(trainer, **compile_kwargs)


@pytest.mark.parametrize("variant, sampling", [("oats", ELEMENT_WISE), ("ats", FIXED_ONE)])
def test_one_step_applies_the_sum_of_the_per_width_oat_steps(variant, sampling):
    """OATS = Σ over widths of the OAT step of that width's sub-network, then one update.

    Each width's OAT step runs separately from the same start (an `OATTrainer`
    on the functional width view, same seed so the same λ). With plain SGD
    the OATS change of every weight is the sum of the per-width changes: the
    gradients add up, and each width's BN statistics move only in its own step.
    """
    images, labels = _data(12)
    network = _network(variant)
    initial = network.get_weights()
    deltas = []
    for width in network.widths:
        network.set_weights(initial)
        trainer = adversarial_trainer.OATTrainer(
            network.width_model(width), sampling=sampling, attack=DETERMINISTIC_ATTACK, seed=3
        )
        _compile(trainer).train_on_batch(images, labels)
        deltas.append([w - w0 for w, w0 in zip(network.get_weights(), initial)])
        assert max(np.abs(d).max() for d in deltas[-1]) > 1e-4

    network.set_weights(initial)
    _oats(network, sampling=sampling).train_on_batch(images, labels)
    for variable, start, *per_width in zip(network.weights, initial, *deltas):
        np.testing.assert_allclose(
            variable.numpy() - start, sum(per_width), atol=2e-6, err_msg=variable.path
        )
    # Every width's statistics moved, each in its own step only.
    for index, width in enumerate(network.widths):
        moved = {
            v.path for v, d in zip(network.weights, deltas[index])
            if "moving_" in v.path and np.abs(d).max() > 0
        }
        assert moved and all(f"/width_{width}/" in path for path in moved)


def test_logged_loss_is_the_sum_of_the_width_losses():
    images, labels = _data(12)
    trainer = _oats(_network())
    logs = trainer.train_on_batch(images, labels, return_dict=True)
    widths = (1.0, 0.75, 0.5)
    assert trainer.widths == widths
    per_width = [float(logs[adversarial_trainer.width_metric_name("loss", w)]) for w in widths]
    assert float(logs["loss"]) == pytest.approx(sum(per_width), rel=1e-5)
    for name in ("clean_accuracy", "adversarial_accuracy"):
        for width in widths:
            assert 0.0 <= float(logs[f"{name}_w{width:g}"]) <= 1.0
    assert "loss_w0.5" in logs and "clean_accuracy_w1" in logs


def test_each_width_attacks_with_its_own_sub_network_and_seed(monkeypatch):
    calls = []
    original = attacks.run_attack

    def spy(config, logits_fn, images, labels, *, seed, **kwargs):
        calls.append((logits_fn, tuple(np.asarray(seed).tolist())))
        return original(config, logits_fn, images, labels, seed=seed, **kwargs)

    monkeypatch.setattr(attacks, "run_attack", spy)
    images, labels = _data(12)
    network = _network()
    trainer = _oats(network, attack=ATTACK)
    _, _, drawn, attack_seed, _ = trainer._draw((tf.constant(images), tf.constant(labels)))
    seeds = trainer._width_seeds(attack_seed)
    for index, width in enumerate(trainer.widths):
        adversarial = trainer._craft(
            tf.constant(images), tf.constant(labels), drawn, seeds[index], width=width,
        )
        # The attack's logits are those of this width, in inference mode.
        logits_fn = calls[-1][0]
        np.testing.assert_allclose(
            logits_fn(adversarial).numpy(),
            network({"image": adversarial, "lambda": drawn.lambdas[drawn.num_zeros:]}, width=width).numpy(),
            atol=1e-6,
        )
    assert len({seed for _, seed in calls}) == len(trainer.widths)


def test_pgd_ats_uses_a_fixed_lambda_and_no_clean_pass():
    images, labels = _data(8)
    network = _network("ats")
    assert not any("film" in layer.name for layer in network.layers)
    norms = [layer for layer in network.layers if layer.name.endswith(("_bn", "_bn1", "_bn2"))]
    assert norms and all(type(n) is switchable_batch_norm.SwitchableBatchNormalization for n in norms)
    trainer = _oats(network, sampling=FIXED_ONE)
    logs = trainer.train_on_batch(images, labels, return_dict=True)
    for width in trainer.widths:
        assert float(logs[adversarial_trainer.width_metric_name("clean_accuracy", width)]) == 0.0
    assert all(m.clean[0].count.numpy() == 0 for m in trainer.pass_metrics)
    assert all(m.adversarial[0].count.numpy() == 8 for m in trainer.pass_metrics)


def test_a_few_steps_lower_the_training_loss_of_every_width():
    images, labels = _data(24)
    # Channels 8/16 and 16 hidden units: at width 0.5 (4/8 channels, 8 units) the loss falls
    # from 1.09 to about 0.5 in 25 steps with either CPU kernel family (oneDNN or Eigen); the
    # 2/4-channel half-width of the 4/8 network hardly learns and passed or failed by rounding.
    trainer = _oats(_network(filters=(8, 16), hidden_units=16), attack=ATTACK, lr=0.05, momentum=0.9,
                    run_eagerly=False)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    first = trainer.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0).history
    trainer.fit(dataset, epochs=1, steps_per_epoch=19, verbose=0)
    last = trainer.fit(dataset, epochs=1, steps_per_epoch=5, verbose=0).history
    for width in trainer.widths:
        key = adversarial_trainer.width_metric_name("loss", width)
        assert last[key][0] < 0.8 * first[key][0], (key, first[key], last[key])


def test_mirrored_strategy_step_equals_single_device_step():
    images, labels = _data(8)
    sampling = config_lib.LambdaSamplingConfig(sampling="fixed", values=(0.5,))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8, drop_remainder=True)

    # Two widths and one attack step keep the two traces short.
    attack = config_lib.AttackConfig(epsilon=0.1, step_size=0.1, num_steps=1, random_start=False)
    options = dict(sampling=sampling, attack=attack, lr=0.05, momentum=0.9, l2=5e-4, run_eagerly=False)

    single = _network(widths=(0.5, 1.0))
    initial = single.get_weights()
    _oats(single, **dict(options, run_eagerly=True)).fit(dataset, epochs=1, verbose=0)

    strategy = testing.two_cpu_mirrored_strategy()
    with strategy.scope():
        mirrored = _network(widths=(0.5, 1.0))
        mirrored.set_weights(initial)
        trainer = _oats(mirrored, **options)
    trainer.fit(dataset, epochs=1, verbose=0)

    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=2e-6, err_msg=a.path)
    # A hand-written mean without the replica scaling would double this update.
    moved = max(np.abs(w.numpy() - w0).max() for w, w0 in zip(single.weights, initial))
    assert moved > 1e-4


def test_config_round_trip():
    trainer = adversarial_trainer.OATSTrainer(
        _network(), sampling=config_lib.LambdaSamplingConfig(sampling="uniform"), attack=ATTACK, seed=9,
        adversarial_bn_statistics="mixed",
    )
    rebuilt = adversarial_trainer.OATSTrainer.from_config(trainer.get_config())
    assert type(rebuilt) is adversarial_trainer.OATSTrainer
    assert rebuilt.sampling == trainer.sampling and rebuilt.attack == ATTACK and rebuilt.seed == 9
    assert rebuilt.adversarial_bn_statistics == "mixed"
    assert rebuilt.widths == (1.0, 0.75, 0.5) and rebuilt.network.get_config() == trainer.network.get_config()


def test_a_non_slimmable_network_is_rejected():
    network = small_cnn.SmallCNN(variant="oat", encoder=ENCODER, filters=(4, 8), hidden_units=8, image_shape=(16, 16, 1))
    with pytest.raises(ValueError, match="slimmable network.*Received: network=SmallCNN"):
        adversarial_trainer.OATSTrainer(network, sampling=ELEMENT_WISE, attack=ATTACK)
