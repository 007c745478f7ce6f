"""The PyTorch reference of `versus_torch` matches oat_tf's networks and attacks.

PyTorch is an optional extra (requirements-bench.txt): without it these tests skip.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from oat_tf import config as config_lib  # noqa: E402
from oat_tf import models  # noqa: E402
from oat_tf.attacks import apgd  # noqa: E402
from oat_tf.bench import torch_reference  # noqa: E402
from oat_tf.layers import lambda_encoding  # noqa: E402


def _keras_parameter_count(architecture, variant, shape):
    network = models.build_model(
        config_lib.ModelConfig(architecture=architecture, variant=variant, input_shape=shape)
    )
    return sum(int(np.prod(w.shape)) for w in network.trainable_weights)


@pytest.mark.parametrize("architecture, shape", [("small_cnn", (28, 28, 1)), ("resnet34", (32, 32, 3))])
@pytest.mark.parametrize("variant", ["plain", "oat"])
def test_the_same_network_has_the_same_trainable_parameters(architecture, shape, variant):
    ours = _keras_parameter_count(architecture, variant, shape)
    theirs = sum(p.numel() for p in torch_reference.build(architecture, variant).parameters())
    assert theirs == ours


def test_lambda_codes_match_the_oat_tf_encoder():
    np.testing.assert_allclose(
        torch_reference.encoding_matrix(6, 128),
        lambda_encoding.encoding_matrix("rand", 6, 128, seed=0), atol=1e-6,
    )
    lambdas = np.array([0.0, 0.05, 0.1, 0.35, 0.7, 1.0], np.float32)
    ours = lambda_encoding.LambdaEncoder()(lambdas).numpy()
    theirs = torch_reference.LambdaEncoder()(torch.from_numpy(lambdas)).numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-6)


def test_film_is_leaky_relu_gamma_times_h_plus_leaky_relu_beta():
    film = torch_reference.FiLM(channels=3, code_dim=4)
    h = torch.randn(2, 3, 5, 5)
    code = torch.randn(2, 4)
    hidden = code.numpy() @ film.hidden.weight.detach().numpy().T + film.hidden.bias.detach().numpy()
    hidden = np.where(hidden > 0, hidden, 0.01 * hidden)
    out = hidden @ film.output.weight.detach().numpy().T + film.output.bias.detach().numpy()
    out = np.where(out > 0, out, 0.01 * out)
    gamma, beta = out[:, :3], out[:, 3:]
    expected = h.numpy() * gamma[:, :, None, None] + beta[:, :, None, None]
    np.testing.assert_allclose(film(h, code).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_dual_batch_norm_statistics_come_only_from_their_own_samples():
    norm = torch_reference.DualBatchNorm(4)
    x = torch.randn(6, 4, 3, 3)
    changed = x.clone()
    changed[2:] *= 10.0  # Only the adversarial samples differ.
    clean_out = norm(x, num_clean=2)[:2]
    assert torch.allclose(norm(changed, num_clean=2)[:2], clean_out, atol=1e-5)
    # Two updates (momentum 0.1) by the same clean samples, from 0.
    mean = x[:2].mean(dim=(0, 2, 3))
    expected_running = 0.1 * mean + 0.9 * (0.1 * mean)
    assert torch.allclose(norm.clean.running_mean, expected_running, atol=1e-5)


def test_lambda_sampling_puts_ceil_n_over_6_zeros_first():
    lambdas, zeros = torch_reference.sample_lambdas(128, torch.Generator().manual_seed(0))
    assert zeros == 22
    assert torch.all(lambdas[:22] == 0) and torch.all(lambdas[22:] > 0)
    allowed = np.array(torch_reference.S1[1:], np.float32)
    assert np.isin(lambdas[22:].numpy(), allowed).all()


def test_pgd_and_apgd_stay_in_the_ball_and_raise_the_loss():
    torch.manual_seed(0)
    # Plain: a fresh OAT network's FiLM scales are near 0, so its logits hardly depend on the image.
    model = torch_reference.build("small_cnn", "plain")
    images = torch.rand(8, 1, 28, 28)
    labels = torch.randint(0, 10, (8,))
    lambdas = torch.ones(8)
    model.eval()
    clean_loss = torch.nn.functional.cross_entropy(model(images, lambdas, 0), labels)
    generator = torch.Generator().manual_seed(0)
    for adversarial in (
        torch_reference.pgd_linf(model, images, labels, lambdas, epsilon=0.1, step_size=0.025,
                                 num_steps=5, generator=generator),
        torch_reference.apgd_ce(model, images, labels, lambdas, epsilon=0.1, num_steps=10,
                                generator=generator),
    ):
        assert float((adversarial - images).abs().max()) <= 0.1 + 1e-6
        assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
        loss = torch.nn.functional.cross_entropy(model(adversarial, lambdas, 0), labels)
        assert float(loss.detach()) > float(clean_loss.detach())


def test_apgd_checkpoints_match_oat_tf():
    for steps in (10, 100):
        assert torch_reference.apgd_checkpoints(steps) == apgd.checkpoints(steps)


def test_a_few_oat_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = torch_reference.SmallCNN("oat", filters=(8, 16), hidden_units=32)
    step = torch_reference.OATStep(model, attack_steps=2, learning_rate=0.05, seed=0)
    images = torch.rand(32, 1, 28, 28)
    labels = torch.randint(0, 10, (32,))
    losses = [step(images, labels) for _ in range(15)]
    assert np.mean(losses[-3:]) < 0.95 * np.mean(losses[:3])


def test_the_benchmark_batch_reaches_pytorch_transposed_to_nchw():
    from oat_tf.bench import random_batch

    images, labels = random_batch.random_batch("resnet34", 3, seed=0)
    torch_images, torch_labels = torch_reference.from_nhwc(images, labels)
    assert tuple(torch_images.shape) == (3, 3, 32, 32) and torch_labels.dtype == torch.int64
    np.testing.assert_array_equal(torch_images.numpy(), images.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(torch_labels.numpy(), labels)


def test_mixed_bfloat16_computes_convolutions_in_bfloat16_and_returns_float32_logits():
    torch.manual_seed(0)
    network = torch_reference.SmallCNN("oat", filters=(8, 16), hidden_units=32)
    mixed = torch_reference.MixedBFloat16(network)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
             for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    images, lambdas = torch.rand(4, 1, 28, 28), torch.full((4,), 0.5)
    network.eval()
    reference = network(images, lambdas, 0)
    seen_float32, seen[:] = list(seen), []
    logits = mixed(images, lambdas, 0)
    for hook in hooks:
        hook.remove()
    assert seen_float32 and set(seen_float32) == {torch.float32}
    assert seen and set(seen) == {torch.bfloat16}
    assert logits.dtype == torch.float32
    # The same weights: bfloat16 keeps 8 significant bits, so the logits agree to about 1%.
    np.testing.assert_allclose(logits.detach().numpy(), reference.detach().numpy(), rtol=0.05, atol=0.05)
    assert all(p.dtype == torch.float32 for p in mixed.parameters())


def test_build_wraps_only_the_mixed_precision_and_refuses_other_precisions():
    assert isinstance(torch_reference.build("small_cnn", "plain", "mixed_bfloat16"),
                      torch_reference.MixedBFloat16)
    assert isinstance(torch_reference.build("small_cnn", "plain"), torch_reference.SmallCNN)
    with pytest.raises(ValueError, match="precision.*mixed_float16"):
        torch_reference.build("small_cnn", "plain", "mixed_float16")


def test_a_mixed_bfloat16_oat_step_trains_its_float32_weights():
    torch.manual_seed(0)
    model = torch_reference.build("small_cnn", "oat", "mixed_bfloat16")
    before = [p.detach().clone() for p in model.parameters()]
    step = torch_reference.OATStep(model, attack_steps=1, seed=0)
    loss = step(torch.rand(12, 1, 28, 28), torch.randint(0, 10, (12,)))
    assert np.isfinite(loss)
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(p.dtype == torch.float32 for p in model.parameters()) and any(moved)


def test_the_benchmark_offers_the_precisions_both_frameworks_run():
    from oat_tf.bench import versus_torch

    assert versus_torch.PRECISIONS == torch_reference.PRECISIONS
    assert set(torch_reference.PRECISIONS) <= set(config_lib.PRECISIONS)


@pytest.mark.parametrize("architecture, shape", [("small_cnn", (1, 28, 28)), ("resnet34", (3, 32, 32))])
def test_channels_last_keeps_the_shapes_and_the_logits(architecture, shape):
    torch.manual_seed(0)
    model = torch_reference.build(architecture, "oat")
    model.eval()
    images, lambdas = torch.rand(2, *shape), torch.tensor([0.0, 1.0])
    expected = model(images, lambdas, 1).detach()
    model, converted = torch_reference.channels_last(model, images)
    assert converted.shape == images.shape
    assert converted.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(converted, images)
    np.testing.assert_allclose(model(converted, lambdas, 1).detach().numpy(), expected.numpy(),
                               rtol=1e-4, atol=1e-5)
