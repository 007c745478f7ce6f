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
from oat_tf.layers import slimmable_conv
from oat_tf.layers import slimmable_dense
from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import model_arguments
from oat_tf.models import slimmable_network
from oat_tf.models import small_cnn


def flat_dense_initializer(spatial_size: int, channels: int, units: int):
    """Glorot-uniform init of a dense layer on H·W·C features, for a kernel [H, W, C, U].

    Keras' Glorot for a convolution counts the spatial size in both fans; this
    `VarianceScaling` gives the uniform limit sqrt(6 / (H·W·C + U)) of a
    `Dense` layer on the flattened features (`SmallCNN`'s fc1).

    Args:
        spatial_size: int, H·W of the feature map.
        channels: int, C.
        units: int, U.

    Returns:
        keras.initializers.VarianceScaling.
    """
    fan_in = spatial_size * channels
    return keras.initializers.VarianceScaling(
        scale=2.0 * fan_in / (fan_in + units), mode="fan_in", distribution="uniform"
    )


@keras.saving.register_keras_serializable(package="oat_tf")
class SlimmableSmallCNN(slimmable_network.SlimmableNetwork):
    """SmallCNN whose width is chosen per call, with inputs `{"image", "lambda"}`.

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
        conditioning = self._conditioning(inputs[conditioning_lib.LAMBDA_KEY])
        x = inputs[conditioning_lib.IMAGE_KEY]
        for block, block_filters in enumerate(self.filters, start=1):
            for index in (1, 2):
                name = f"block{block}_conv{index}"
                first = block == 1 and index == 1
                x = self._sublayer(
                    name,
                    lambda: slimmable_conv.SlimmableConv2D(
                        block_filters,
                        3,
                        widths=self.widths,
                        slim_inputs=not first,
                        padding="valid",
                        use_bias=False,
                        kernel_initializer="he_normal",
                        name=name,
                    ),
                )(x, width=width)
                x = self._normalize(
                    x,
                    conditioning,
                    width=width,
                    training=training,
                    norm_name=f"block{block}_bn{index}",
                    film_name=f"block{block}_film{index}",
                )
                x = self._sublayer(
                    f"block{block}_relu{index}",
                    lambda: keras.layers.ReLU(name=f"block{block}_relu{index}"),
                )(x)
            x = self._sublayer(
                f"block{block}_pool",
                lambda: keras.layers.MaxPooling2D(2, name=f"block{block}_pool"),
            )(x)

        height, width_px = int(x.shape[1]), int(x.shape[2])
        x = self._sublayer(
            "fc1",
            lambda: slimmable_conv.SlimmableConv2D(
                self.hidden_units,
                (height, width_px),
                widths=self.widths,
                padding="valid",
                use_bias=False,
                kernel_initializer=flat_dense_initializer(
                    height * width_px, self.filters[-1], self.hidden_units
                ),
                name="fc1",
            ),
        )(x, width=width)
        x = self._sublayer("fc1_flatten", lambda: keras.layers.Flatten(name="fc1_flatten"))(x)
        x = self._dense_tail(x, conditioning, "fc1", width, training)
        if self.dropout > 0.0:
            x = self._sublayer(
                "fc1_dropout",
                lambda: keras.layers.Dropout(self.dropout, seed=self.seed, name="fc1_dropout"),
            )(x, training=training)
        x = self._sublayer(
            "fc2",
            lambda: slimmable_dense.SlimmableDense(
                self.hidden_units, widths=self.widths, use_bias=False, name="fc2"
            ),
        )(x, width=width)
        x = self._dense_tail(x, conditioning, "fc2", width, training)
        return self._sublayer(
            "logits",
            lambda: slimmable_dense.SlimmableDense(
                self.num_classes, widths=self.widths, slim_outputs=False, name="logits", dtype="float32"
            ),
        )(x, width=width)

    def _dense_tail(self, x, conditioning, name, width, training):
        """BN(-FiLM) and ReLU after a hidden dense layer."""
        x = self._normalize(
            x,
            conditioning,
            width=width,
            training=training,
            norm_name=f"{name}_bn",
            film_name=f"{name}_film",
        )
        return self._sublayer(f"{name}_relu", lambda: keras.layers.ReLU(name=f"{name}_relu"))(x)
