"""Slimmable CIFAR-style ResNet (basic blocks): the OATS / PGD-ATS network of the paper.

The `ResNet` of oat_tf (kuangliu's CIFAR ResNet, as the OAT reference code's
`SlimmableResNet34OAT`) with every hidden layer slimmed: the stem, every
residual branch and every shortcut keep their first ⌈α·C⌉ channels at width
α; the image channels and the logits are never slimmed. FiLM follows the stem
BN and both BNs of every residual branch; the shortcut BN is unmodulated.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras

from oat_tf.layers import slimmable
from oat_tf.layers import slimmable_conv
from oat_tf.layers import slimmable_dense
from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import resnet
from oat_tf.models import slimmable_network


@keras.saving.register_keras_serializable(package="oat_tf")
class SlimmableResNet(slimmable_network.SlimmableNetwork):
    """CIFAR-style ResNet whose width is chosen per call, inputs `{"image", "lambda"}`.

    At width α every hidden layer keeps its first ⌈α·C⌉ channels, every
    normalisation uses that width's own batch norm(s), and the FiLM
    generators are slimmed with their features (see `SlimmableNetwork` for
    the variants). Layer names are those of `ResNet` (`stem_conv`, `stem_bn`,
    `stem_film`, `stage{s}_block{b}_{conv1,bn1,film1,relu1,conv2,bn2,film2,
    shortcut_conv,shortcut_bn,add,out_relu}`, `avg_pool`, `logits`, and
    `lambda_encoder`, `clean_route`), and at width 1.0 the network computes
    what `ResNet` of the matching variant ("oats" ↔ "oat", "oats_single_bn" ↔
    "oat_single_bn", "ats" ↔ "plain") computes with the same weights.

    Args:
        depth: int, 18, 34 or another basic-block depth (see
            `resnet.stage_blocks_for_depth`); ignored when `stage_blocks` is
            given.
        num_classes: int, number of logits.
        image_shape: tuple (H, W, C), height and width at least 8.
        variant: str, "oats", "oats_single_bn" or "ats".
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "ats").
        widths: sequence of float in (0, 1] containing 1.0.
        stage_filters: four ints, channels of the stages at full width (the
            stem has the first stage's width).
        stage_blocks: None or four ints, blocks per stage (overrides `depth`).
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in this width's normalisations.
        width: Python float from `widths` (keyword only), default 1.0.

    Returns:
        Logits [N, num_classes] (no softmax).

    Example:
    >>> model = SlimmableResNet(depth=34, variant="oats", encoder={"dim": 128})
    >>> logits = model({"image": images, "lambda": lambdas}, width=0.75)

    Reference:
    - Wang et al., Once-for-All Adversarial Training, NeurIPS 2020, §3.3 (OATS).
    - Yu et al., Slimmable Neural Networks, ICLR 2019.
    """

    def __init__(
        self,
        depth: int = 34,
        num_classes: int = 10,
        image_shape: Sequence[int] = (32, 32, 3),
        variant: str = "oats",
        encoder: Optional[Any] = None,
        widths: Sequence[float] = slimmable.DEFAULT_WIDTHS,
        stage_filters: Sequence[int] = resnet.DEFAULT_STAGE_FILTERS,
        stage_blocks: Optional[Sequence[int]] = None,
        **kwargs,
    ):
        # === Validation ===
        if stage_blocks is None:
            blocks = resnet.stage_blocks_for_depth(depth)
        else:
            blocks = resnet.check_stage_ints("stage_blocks", stage_blocks)
        filters = resnet.check_stage_ints("stage_filters", stage_filters)
        kwargs.setdefault("name", f"slimmable_resnet{2 * sum(blocks) + 2}_{variant}")
        super().__init__(
            num_classes=num_classes,
            image_shape=image_shape,
            variant=variant,
            encoder=encoder,
            widths=widths,
            min_image_size=8,
            **kwargs,
        )

        # === Config ===
        self.save_config(
            depth=depth, stage_filters=filters, stage_blocks=None if stage_blocks is None else blocks
        )
        self._blocks = blocks

        # === Layers (created and built at full width) ===
        self._build_full_width()

    def _conv(self, x, filters, kernel_size, strides, *, name, width, slim_inputs=True):
        """A slimmable convolution padded like PyTorch's `padding=kernel_size // 2`.

        As `conditioning.apply_conv`: a strided convolution with a kernel
        larger than 1 gets a symmetric `ZeroPadding2D` (`name + "_pad"`) and
        "valid" padding, 1×1 convolutions "valid", the others "same".
        """
        padding = "same"
        if strides > 1 and kernel_size > 1:
            x = self._sublayer(
                f"{name}_pad",
                lambda: keras.layers.ZeroPadding2D(padding=kernel_size // 2, name=f"{name}_pad"),
            )(x)
            padding = "valid"
        elif kernel_size == 1:
            padding = "valid"
        return self._sublayer(
            name,
            lambda: slimmable_conv.SlimmableConv2D(
                filters,
                kernel_size,
                widths=self.widths,
                slim_inputs=slim_inputs,
                strides=strides,
                padding=padding,
                use_bias=False,
                kernel_initializer="he_normal",
                name=name,
            ),
        )(x, width=width)

    def _basic_block(self, x, conditioning, in_filters, filters, stride, *, name, width, training):
        """conv-BN(-FiLM)-ReLU-conv-BN(-FiLM) + shortcut, ReLU (as `resnet.apply_basic_block`)."""
        shortcut = x
        y = self._conv(x, filters, 3, stride, name=f"{name}_conv1", width=width)
        y = self._normalize(
            y, conditioning, width=width, training=training,
            norm_name=f"{name}_bn1", film_name=f"{name}_film1",
        )
        y = self._sublayer(f"{name}_relu1", lambda: keras.layers.ReLU(name=f"{name}_relu1"))(y)
        y = self._conv(y, filters, 3, 1, name=f"{name}_conv2", width=width)
        y = self._normalize(
            y, conditioning, width=width, training=training,
            norm_name=f"{name}_bn2", film_name=f"{name}_film2",
        )
        # Full-width channel counts decide, so every width has the same graph.
        if stride != 1 or in_filters != filters:
            shortcut = self._conv(x, filters, 1, stride, name=f"{name}_shortcut_conv", width=width)
            shortcut = self._normalize(
                shortcut, conditioning, width=width, training=training,
                norm_name=f"{name}_shortcut_bn",
            )
        y = self._sublayer(f"{name}_add", lambda: keras.layers.Add(name=f"{name}_add"))(
            [y, shortcut]
        )
        return self._sublayer(
            f"{name}_out_relu", lambda: keras.layers.ReLU(name=f"{name}_out_relu")
        )(y)

    def _forward(self, inputs, *, width, training):
        conditioning = self._conditioning(inputs[conditioning_lib.LAMBDA_KEY])
        x = self._conv(
            inputs[conditioning_lib.IMAGE_KEY],
            self.stage_filters[0],
            3,
            1,
            name="stem_conv",
            width=width,
            slim_inputs=False,
        )
        x = self._normalize(
            x, conditioning, width=width, training=training,
            norm_name="stem_bn", film_name="stem_film",
        )
        x = self._sublayer("stem_relu", lambda: keras.layers.ReLU(name="stem_relu"))(x)
        in_filters = self.stage_filters[0]
        for stage, (stage_width, num_blocks) in enumerate(zip(self.stage_filters, self._blocks)):
            for block in range(num_blocks):
                x = self._basic_block(
                    x,
                    conditioning,
                    in_filters,
                    stage_width,
                    stride=2 if stage > 0 and block == 0 else 1,
                    name=f"stage{stage + 1}_block{block + 1}",
                    width=width,
                    training=training,
                )
                in_filters = stage_width
        x = self._sublayer(
            "avg_pool", lambda: keras.layers.GlobalAveragePooling2D(name="avg_pool")
        )(x)
        return self._sublayer(
            "logits",
            lambda: slimmable_dense.SlimmableDense(
                self.num_classes, widths=self.widths, slim_outputs=False, name="logits", dtype="float32"
            ),
        )(x, width=width)
