"""Slimmable SmallCNN (OATS / PGD-ATS on MNIST-sized digits, trains on a CPU).

The `SmallCNN` backbone with BN after every convolution and hidden dense
layer, every hidden layer slimmed: conv3×3(32) → conv3×3(32) → maxpool2 →
conv3×3(64) → conv3×3(64) → maxpool2 → FC 200 → dropout 0.5 → FC 200 → FC K,
each hidden layer keeping its first ⌈α·C⌉ channels at width α; the image
channels and the K logits are never slimmed.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras

from oat_tf.layers import slimmable
from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import model_arguments
from oat_tf.models import slimmable_network
from oat_tf.models import small_cnn


@keras.saving.register_keras_serializable(package="oat_tf")
class SlimmableSmallCNN(slimmable_network.SlimmableNetwork):
    """SmallCNN whose width is chosen per call, with inputs `{"image", "lambda"}`.

    The network is `small_cnn.apply_small_cnn`, run with the slimmable layer
    kit (`slimmable_network.SlimmableConditioning`).

    At width α every hidden layer keeps its first ⌈α·C⌉ channels
    (`slimmable.slimmed_channels`), every normalisation uses that width's own
    batch norm(s), and FiLM generators are slimmed with their features (see
    `SlimmableNetwork` for the variants). The first hidden dense layer, fc1,
    is a `SlimmableConv2D` whose kernel covers the whole last feature map
    ([H, W, C, 200], "valid", then `Flatten`): it computes exactly `Dense` on
    the flattened features (the same kernel reshaped to [H·W·C, 200]), and
    slicing its input channels keeps the first α·C channels at every spatial
    position, which the rows of a flattened dense kernel would not.

    Layer names: those of `SmallCNN` (`block{1,2}_{conv1,bn1,film1,relu1,
    conv2,bn2,film2,relu2,pool}`, `fc{1,2}`, `fc{1,2}_{bn,film,relu}`,
    `fc1_dropout`, `logits`, `lambda_encoder`, `clean_route`), with
    `fc1_flatten` after fc1 instead of `flatten` before it. At width 1.0 the
    network computes what `SmallCNN` of the matching variant ("oats" ↔ "oat",
    "oats_single_bn" ↔ "oat_single_bn", "ats" ↔ "plain") computes with the
    same weights (fc1's kernel reshaped, each switchable BN's full-width
    sublayer in place of the BN).

    Args:
        num_classes: int, number of logits.
        image_shape: tuple (H, W, C); 28×28×1 for MNIST.
        variant: str, "oats", "oats_single_bn" or "ats".
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "ats").
        widths: sequence of float in (0, 1] containing 1.0.
        filters: sequence of int, channels of each convolutional block at
            full width.
        hidden_units: int, units of the two hidden dense layers at full width.
        dropout: float in [0, 1), dropout after the first hidden dense layer.
        seed: int, seed of the dropout layer.
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in this width's normalisations,
            dropout on.
        width: Python float from `widths` (keyword only), default 1.0.

    Returns:
        Logits [N, num_classes] (no softmax).

    Example:
    >>> model = SlimmableSmallCNN(variant="oats", filters=(4, 8), hidden_units=16)
    >>> logits = model({"image": digits, "lambda": lambdas}, width=0.5)

    Reference:
    - Wang et al., Once-for-All Adversarial Training, NeurIPS 2020, §3.3 (OATS).
    - Yu et al., Slimmable Neural Networks, ICLR 2019.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: Sequence[int] = (28, 28, 1),
        variant: str = "oats",
        encoder: Optional[Any] = None,
        widths: Sequence[float] = slimmable.DEFAULT_WIDTHS,
        filters: Sequence[int] = (32, 64),
        hidden_units: int = 200,
        dropout: float = 0.5,
        seed: int = 0,
        **kwargs,
    ):
        # === Validation ===
        filters = model_arguments.check_positive_ints("filters", filters)
        model_arguments.check_positive_int("hidden_units", hidden_units)
        model_arguments.check_rate("dropout", dropout)
        kwargs.setdefault("name", f"slimmable_small_cnn_{variant}")
        super().__init__(
            num_classes=num_classes,
            image_shape=image_shape,
            variant=variant,
            encoder=encoder,
            widths=widths,
            min_image_size=small_cnn.min_image_size(len(filters)),
            **kwargs,
        )

        # === Config ===
        self.save_config(
            filters=filters, hidden_units=int(hidden_units), dropout=float(dropout), seed=int(seed)
        )

        # === Layers (created and built at full width) ===
        self._build_full_width()

    def _forward(self, inputs, *, width, training):
        return small_cnn.apply_small_cnn(
            inputs[conditioning_lib.IMAGE_KEY],
            self._conditioning(inputs, width=width, training=training),
            num_classes=self.num_classes,
            filters=self.filters,
            hidden_units=self.hidden_units,
            dropout=self.dropout,
            use_batch_norm=True,
            seed=self.seed,
        )
