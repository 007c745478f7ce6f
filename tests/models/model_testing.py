"""Shared helpers of the model tests: tiny networks, random inputs, width-α weight slices, checkpoint fixtures."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from oat_tf.layers import slimmable
from oat_tf.layers import slimmable_film
from oat_tf.layers import switchable_batch_norm
from oat_tf.models import resnet
from oat_tf.models import slimmable_resnet
from oat_tf.models import slimmable_small_cnn
from oat_tf.models import small_cnn
from oat_tf.models import wide_resnet

FAMILIES = ("resnet", "wide_resnet", "small_cnn")
VARIANTS = ("plain", "oat", "oat_single_bn")
TINY_ENCODER = {"lambda_values": [0.0, 0.1, 0.2, 0.3, 0.4, 1.0], "dim": 8, "seed": 0}
# The encoder of the networks whose checkpoints are in testdata/ (testdata/README.md).
FIXTURE_ENCODER = {"lambda_values": (0.0, 1.0), "scheme": "rand", "dim": 4, "seed": 0}
TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")


def tiny_model(family: str, variant: str, **kwargs):
    """Returns a small network of the family (fast to build and run on CPU)."""
    if family == "resnet":
        args = dict(
            stage_blocks=(1, 1, 1, 1), stage_filters=(4, 8, 8, 8), image_shape=(8, 8, 3)
        )
        args.update(kwargs)
        return resnet.ResNet(variant=variant, encoder=TINY_ENCODER, **args)
    if family == "wide_resnet":
        args = dict(depth=10, width=1, image_shape=(8, 8, 3), dropout=0.3)
        args.update(kwargs)
        return wide_resnet.WideResNet(variant=variant, encoder=TINY_ENCODER, **args)
    if family == "small_cnn":
        args = dict(filters=(4, 8), hidden_units=8, image_shape=(16, 16, 1))
        args.update(kwargs)
        return small_cnn.SmallCNN(variant=variant, encoder=TINY_ENCODER, **args)
    raise ValueError(f"unknown family {family!r}")


def random_inputs(image_shape: Sequence[int], lambdas: Sequence[float], seed: int = 0):
    """Returns {"image", "lambda"} numpy inputs with images uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(len(lambdas), *image_shape)).astype("float32")
    return {"image": images, "lambda": np.asarray(lambdas, dtype="float32")}


def trainable_count(model) -> int:
    """Number of trainable scalars (PyTorch's parameter count)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


SLIMMABLE_VARIANTS = ("oats", "oats_single_bn", "ats")
# The non-slimmable variant each slimmable variant equals at full width.
MATCHING_VARIANT = {"oats": "oat", "oats_single_bn": "oat_single_bn", "ats": "plain"}


def tiny_slimmable_model(family: str, variant: str, **kwargs):
    """Returns a small slimmable network of the family (fast on CPU)."""
    if family == "resnet":
        args = dict(
            stage_blocks=(1, 2, 1, 1), stage_filters=(4, 8, 8, 8), image_shape=(8, 8, 3)
        )
        args.update(kwargs)
        return slimmable_resnet.SlimmableResNet(variant=variant, encoder=TINY_ENCODER, **args)
    if family == "small_cnn":
        args = dict(filters=(4, 8), hidden_units=8, image_shape=(20, 20, 1), dropout=0.0)
        args.update(kwargs)
        return slimmable_small_cnn.SlimmableSmallCNN(variant=variant, encoder=TINY_ENCODER, **args)
    raise ValueError(f"unknown slimmable family {family!r}")


def randomize_normalizations(network, seed: int = 0) -> None:
    """Gives every BN weight (γ, β, moving mean and variance) a random value."""
    rng = np.random.default_rng(seed)
    for weight in network.weights:
        name = weight.path.split("/")[-1]
        if name in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
        elif name in ("beta", "moving_mean"):
            weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))


def _width_values(source, reference_layer, width: float):
    """The weights of `reference_layer` taken from a slimmable layer at `width`."""
    targets = [w.shape for w in reference_layer.weights]
    if isinstance(
        source,
        (
            switchable_batch_norm.SwitchableBatchNormalization,
            switchable_batch_norm.SwitchableDualBatchNormalization,
        ),
    ):
        return [w.numpy() for w in source.norm_at(width).weights]
    if isinstance(source, slimmable_film.SlimmableFiLM):
        channels = slimmable.slimmed_channels(source.channels, width)
        hidden = 2 * channels * source.hidden_multiplier
        columns = np.r_[0:channels, source.channels : source.channels + channels]
        return [
            source.hidden_kernel.numpy()[:, :hidden],
            source.hidden_bias.numpy()[:hidden],
            source.output_kernel.numpy()[:hidden][:, columns],
            source.output_bias.numpy()[columns],
        ]
    values = []
    for weight, target in zip(source.weights, targets):
        value = weight.numpy()
        if value.ndim == 4 and len(target) == 2:
            # A full-map convolution (slimmable fc1) → the Dense on flattened features.
            value = value[:, :, : target[0] // (value.shape[0] * value.shape[1]), : target[1]]
            values.append(value.reshape(target))
        else:
            values.append(value[tuple(slice(0, int(d)) for d in target)])
    return values


def copy_width_weights(network, width: float, reference) -> None:
    """Loads the width-α weights of a slimmable network into a plain network.

    `reference` is a functional oat_tf network of the matching variant whose
    layers have the slimmable network's names and the channel counts of
    width α; each of its layers receives the slice (or switchable BN sublayer)
    that the slimmable layer of the same name uses at that width.
    """
    for layer in reference.layers:
        if not layer.weights:
            continue
        source = getattr(network, layer.name)
        layer.set_weights(_width_values(source, layer, width))


def assert_restores_fixture(
    network, checkpoint: str, outputs_file: str, prefix: str, widths: Sequence[float] = ()
) -> None:
    """Asserts a testdata/ checkpoint loads whole into `network` and reproduces its outputs.

    Args:
        network: a freshly built network (other initial weights than the
            writer's).
        checkpoint: str, the checkpoint prefix in testdata/, written with
            `tf.train.Checkpoint(network=...)`.
        outputs_file: str, the .npz in testdata/ with "images", "lambdas" and
            the writer's outputs under "<prefix>_<output name>": the output
            dict's keys for a multi-exit network, "logits" for a one-output
            network, "width_<α>" per width of a slimmable one.
        prefix: str, the key prefix of this network's outputs.
        widths: the widths of a slimmable network to run; empty for others.
    """
    tf.train.Checkpoint(network=network).read(os.path.join(TESTDATA, checkpoint)).assert_consumed()
    expected = np.load(os.path.join(TESTDATA, outputs_file))
    inputs = {"image": expected["images"], "lambda": expected["lambdas"]}
    if widths:
        outputs = {f"width_{width}": network(inputs, training=False, width=width) for width in widths}
    else:
        outputs = network(inputs, training=False)
        if not isinstance(outputs, dict):
            outputs = {"logits": outputs}
    # The writer's outputs, in its order (exits first, "final" last).
    names = [key[len(prefix) + 1:] for key in expected.files if key.startswith(prefix + "_")]
    assert list(outputs) == names, (list(outputs), names)
    for name, value in outputs.items():
        np.testing.assert_allclose(value, expected[f"{prefix}_{name}"], rtol=1e-5, atol=1e-6)
