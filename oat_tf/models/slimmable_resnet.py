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
from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import resnet
from oat_tf.models import slimmable_network


@keras.saving.register_keras_serializable(package="oat_tf")
class SlimmableResNet(slimmable_network.SlimmableNetwork):
    """CIFAR-style ResNet whose width is chosen per call, inputs `{"image", "lambda"}`.

    The network is `resnet.apply_resnet` (basic blocks), run with the
    slimmable layer kit (`slimmable_network.SlimmableConditioning`).

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
            blocks = resnet.check_stage_ints("stage_blocks", stage_blocks, 4)
        filters = resnet.check_stage_ints("stage_filters", stage_filters, 4)
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

    def _forward(self, inputs, *, width, training):
        return resnet.apply_resnet(
            inputs[conditioning_lib.IMAGE_KEY],
            self._conditioning(inputs, width=width, training=training),
            num_classes=self.num_classes,
            stage_filters=self.stage_filters,
            stage_blocks=self._blocks,
        )
