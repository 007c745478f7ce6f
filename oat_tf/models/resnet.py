"""CIFAR-style ResNet with basic blocks, plain or conditioned on λ (OAT).

The network of the OAT reference code for CIFAR-10 (kuangliu's
`pytorch-cifar` ResNet): a 3×3 stem convolution with 64 filters and stride 1,
no max-pooling, four stages of basic blocks (64/128/256/512 filters, the first
block of stages 2–4 with stride 2 and a 1×1 convolution + BN shortcut), global
average pooling and a dense layer. In the OAT variants FiLM follows the stem BN
and both BNs of every residual branch; the shortcut BN is dual but unmodulated,
as in the reference `ResNet34OAT`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras

from oat_tf.models import conditioning as conditioning_lib

# Blocks per stage for the standard depths; any other depth with
# (depth - 2) % 8 == 0 gets (depth - 2) / 8 blocks in every stage.
STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
# Depths that name bottleneck ResNets elsewhere; refused rather than built
# with basic blocks under a misleading name.
BOTTLENECK_DEPTHS = (50, 101, 152, 200)
DEFAULT_STAGE_FILTERS = (64, 128, 256, 512)


def stage_blocks_for_depth(depth: int) -> tuple:
    """Returns the basic blocks per stage of a 4-stage ResNet of this depth.

    Args:
        depth: int, number of weighted layers (2 per basic block, plus stem and
            classifier): 18 → (2, 2, 2, 2), 34 → (3, 4, 6, 3), otherwise
            (depth − 2) / 8 blocks in each stage. The bottleneck depths 50,
            101, 152 and 200 are refused.

    Returns:
        Tuple of four ints.

    Raises:
        ValueError: if no basic-block ResNet has this depth.
    """
    if depth in BOTTLENECK_DEPTHS:
        raise ValueError(
            f"`depth` {depth} names a bottleneck ResNet, which oat_tf does not "
            f"implement; use a basic-block depth (18, 34, ...). Received: depth={depth}"
        )
    if depth in STAGE_BLOCKS:
        return STAGE_BLOCKS[depth]
    if isinstance(depth, int) and depth >= 10 and (depth - 2) % 8 == 0:
        return ((depth - 2) // 8,) * 4
    raise ValueError(
        "`depth` must be 18, 34 or another depth of a 4-stage basic-block ResNet "
        f"((depth - 2) % 8 == 0, depth >= 10). Received: depth={depth!r}"
    )


def apply_basic_block(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    filters: int,
    stride: int,
    *,
    name: str,
) -> keras.KerasTensor:
    """A post-activation basic block: conv-BN(-FiLM)-ReLU-conv-BN(-FiLM) + shortcut, ReLU.

    Args:
        x: KerasTensor [N, H, W, C_in].
        conditioning: `Conditioning` of the network.
        filters: int, output channels.
        stride: int, stride of the first convolution and of the shortcut.
        name: str, prefix of every layer name (e.g. "stage2_block1").

    Returns:
        KerasTensor [N, H / stride, W / stride, filters].
    """
    shortcut = x
    y = conditioning_lib.apply_conv(x, filters, 3, stride, name=f"{name}_conv1")
    y = conditioning_lib.apply_normalization(
        y, conditioning, norm_name=f"{name}_bn1", film_name=f"{name}_film1"
    )
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = conditioning_lib.apply_conv(y, filters, 3, 1, name=f"{name}_conv2")
    y = conditioning_lib.apply_normalization(
        y, conditioning, norm_name=f"{name}_bn2", film_name=f"{name}_film2"
    )
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conditioning_lib.apply_conv(
            x, filters, 1, stride, name=f"{name}_shortcut_conv"
        )
        shortcut = conditioning_lib.apply_normalization(
            shortcut, conditioning, norm_name=f"{name}_shortcut_bn"
        )
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out_relu")(y)


@keras.saving.register_keras_serializable(package="oat_tf")
class ResNet(keras.Model):
    """CIFAR-style ResNet (basic blocks) with inputs `{"image", "lambda"}`.

    Layer names: `stem_conv`, `stem_bn`, `stem_film`, `stem_relu`, then
    `stage{s}_block{b}_{conv1,bn1,film1,relu1,conv2,bn2,film2,shortcut_conv,
    shortcut_bn,add,out_relu}`, `avg_pool`, `logits`; OAT variants add
    `lambda_encoder` (and `clean_route` for "oat").

    Args:
        depth: int, 18, 34 or another basic-block depth (see
            `stage_blocks_for_depth`); ignored when `stage_blocks` is given.
        num_classes: int, number of logits.
        image_shape: tuple (H, W, C), height and width at least 8.
        variant: str, "plain", "oat" or "oat_single_bn".
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "plain").
        stage_filters: four ints, channels of the stages (the stem has the
            first stage's width).
        stage_blocks: None or four ints, blocks per stage (overrides `depth`).
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in the normalisations.

    Returns:
        Logits [N, num_classes] (no softmax).

    Example:
    >>> model = ResNet(depth=34, variant="oat", encoder={"dim": 128})
    >>> logits = model({"image": images, "lambda": lambdas})

    Reference:
    - He et al., Deep Residual Learning for Image Recognition, CVPR 2016.
    - Wang et al., Once-for-All Adversarial Training, NeurIPS 2020.
    """

    def __init__(
        self,
        depth: int = 34,
        num_classes: int = 10,
        image_shape: Sequence[int] = (32, 32, 3),
        variant: str = "plain",
        encoder: Optional[Any] = None,
        stage_filters: Sequence[int] = DEFAULT_STAGE_FILTERS,
        stage_blocks: Optional[Sequence[int]] = None,
        **kwargs,
    ):
        # === Validation ===
        if stage_blocks is None:
            blocks = stage_blocks_for_depth(depth)
        else:
            blocks = tuple(int(b) for b in stage_blocks)
            if len(blocks) != 4 or min(blocks) < 1:
                raise ValueError(
                    "`stage_blocks` must be four positive ints. "
                    f"Received: stage_blocks={stage_blocks!r}"
                )
        filters = tuple(int(f) for f in stage_filters)
        if len(filters) != 4 or min(filters) < 1:
            raise ValueError(
                "`stage_filters` must be four positive ints. "
                f"Received: stage_filters={stage_filters!r}"
            )
        if num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive int. Received: num_classes={num_classes}"
            )
        conditioning_lib.check_variant(variant)
        shape = conditioning_lib.check_image_shape(image_shape, min_size=8)
        encoder = conditioning_lib.encoder_kwargs(encoder)
        kwargs.setdefault("name", f"resnet{2 * sum(blocks) + 2}_{variant}")

        # === Functional Model ===
        inputs = conditioning_lib.model_inputs(shape)
        conditioning = conditioning_lib.apply_lambda_conditioning(
            inputs[conditioning_lib.LAMBDA_KEY], variant, encoder
        )
        x = conditioning_lib.apply_conv(
            inputs[conditioning_lib.IMAGE_KEY], filters[0], 3, 1, name="stem_conv"
        )
        x = conditioning_lib.apply_normalization(
            x, conditioning, norm_name="stem_bn", film_name="stem_film"
        )
        x = keras.layers.ReLU(name="stem_relu")(x)
        for stage, (stage_width, num_blocks) in enumerate(zip(filters, blocks)):
            for block in range(num_blocks):
                x = apply_basic_block(
                    x,
                    conditioning,
                    stage_width,
                    stride=2 if stage > 0 and block == 0 else 1,
                    name=f"stage{stage + 1}_block{block + 1}",
                )
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        logits = keras.layers.Dense(num_classes, name="logits")(x)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.depth = depth
        self.num_classes = num_classes
        self.image_shape = shape
        self.variant = variant
        self.encoder = encoder
        self.stage_filters = filters
        self.stage_blocks = None if stage_blocks is None else blocks

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "depth": self.depth,
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            "variant": self.variant,
            "encoder": dict(self.encoder),
            "stage_filters": list(self.stage_filters),
            "stage_blocks": None if self.stage_blocks is None else list(self.stage_blocks),
        }
