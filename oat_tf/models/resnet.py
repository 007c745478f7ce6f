"""CIFAR-style ResNet, basic or bottleneck blocks, plain or conditioned on λ (OAT).

The network of the OAT reference code for CIFAR-10 (kuangliu's
`pytorch-cifar` ResNet): a 3×3 stem convolution with 64 filters and stride 1,
no max-pooling, four stages of residual blocks (64/128/256/512 filters, the
first block of stages 2–4 with stride 2 and a 1×1 convolution + BN shortcut),
global average pooling and a dense layer. In the OAT variants FiLM follows the
stem BN and every BN of every residual branch; the shortcut BN is dual but
unmodulated, as in the reference `ResNet34OAT`.

Depth is one parameter of one builder (`ResNet(depth=...)`, or
`"resnet<depth>"` in the registry):

- basic blocks (two 3×3 convolutions) for the shallow depths: 18 → (2, 2, 2, 2),
  34 → (3, 4, 6, 3), and any other depth with (depth − 2) % 8 == 0 (not a
  bottleneck depth below) → (depth − 2) / 8 blocks per stage;
- bottleneck blocks (1×1 reduce, 3×3, 1×1 expand ×4, as kuangliu's
  `Bottleneck` and torchvision) for the deep ones: 50 → (3, 4, 6, 3),
  101 → (3, 4, 23, 3), 152 → (3, 8, 36, 3), 200 → (3, 24, 36, 3). Deeper
  settings (the very deep ResNets of Xie & Yuille, SPEC §4) are
  `ResNet(block="bottleneck", stage_blocks=...)`, whose depth is
  3·Σblocks + 2.

A basic-block ResNet has 2·Σblocks + 2 weighted layers on its main path
(2·Σblocks + 1 convolutions, one dense layer), a bottleneck ResNet
3·Σblocks + 2; stages 2–4 add one 1×1 shortcut convolution each (stage 1 too
for bottleneck blocks, whose output is 4× wider than the stem).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import saved_config

BLOCK_TYPES = ("basic", "bottleneck")
# Blocks per stage for the standard depths; any other depth with
# (depth - 2) % 8 == 0 gets (depth - 2) / 8 basic blocks in every stage.
STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
# The bottleneck ResNets of He et al. (50, 101, 152) and He et al. 2016
# (200), each block 3 weighted layers.
BOTTLENECK_STAGE_BLOCKS = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
BOTTLENECK_DEPTHS = tuple(BOTTLENECK_STAGE_BLOCKS)
# Output channels of a bottleneck block per unit of its stage width.
BOTTLENECK_EXPANSION = 4
DEFAULT_STAGE_FILTERS = (64, 128, 256, 512)


def check_stage_ints(
    name: str, values: Sequence[int], length: Optional[int] = None
) -> Tuple[int, ...]:
    """Returns `values` as positive ints, one per stage (blocks or filters per stage).

    Args:
        name: str, the argument's name, for the error message.
        values: sequence of positive ints.
        length: int or None, the number of stages required; None: any, at
            least one.

    Returns:
        tuple of ints.

    Raises:
        ValueError: naming the argument, for a wrong count or a value below 1.
    """
    try:
        result = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        result = ()
    if not result or (length is not None and len(result) != length) or min(result) < 1:
        count = "one or more" if length is None else str(length)
        raise ValueError(f"`{name}` must be {count} positive ints. Received: {name}={values!r}")
    return result


def stage_blocks_for_depth(depth: int) -> tuple:
    """Returns the basic blocks per stage of a 4-stage ResNet of this depth.

    Args:
        depth: int, number of weighted layers (2 per basic block, plus stem and
            classifier): 18 → (2, 2, 2, 2), 34 → (3, 4, 6, 3), otherwise
            (depth − 2) / 8 blocks in each stage. The bottleneck depths 50,
            101, 152 and 200 are refused (see `blocks_for_depth`).

    Returns:
        Tuple of four ints.

    Raises:
        ValueError: if no basic-block ResNet has this depth.
    """
    if depth in BOTTLENECK_DEPTHS:
        raise ValueError(
            f"`depth` {depth} names a bottleneck ResNet, which has no basic-block "
            f"form; use `blocks_for_depth`. Received: depth={depth}"
        )
    if depth in STAGE_BLOCKS:
        return STAGE_BLOCKS[depth]
    if isinstance(depth, int) and depth >= 10 and (depth - 2) % 8 == 0:
        return ((depth - 2) // 8,) * 4
    raise ValueError(
        "`depth` must be 18, 34, another depth of a 4-stage basic-block ResNet "
        "((depth - 2) % 8 == 0, depth >= 10) or a bottleneck depth "
        f"{BOTTLENECK_DEPTHS}. Received: depth={depth!r}"
    )


def blocks_for_depth(depth: int) -> Tuple[str, tuple]:
    """Returns the block type and blocks per stage of a ResNet of this depth.

    Args:
        depth: int, 50, 101, 152 or 200 (bottleneck blocks), or a basic-block
            depth (see `stage_blocks_for_depth`).

    Returns:
        Tuple ("basic" or "bottleneck", tuple of four ints).

    Raises:
        ValueError: if no ResNet has this depth.
    """
    if isinstance(depth, int) and depth in BOTTLENECK_STAGE_BLOCKS:
        return "bottleneck", BOTTLENECK_STAGE_BLOCKS[depth]
    return "basic", stage_blocks_for_depth(depth)


def depth_of(block: str, stage_blocks: Sequence[int]) -> int:
    """Weighted layers on the main path: 2·Σblocks + 2 (basic) or 3·Σblocks + 2."""
    per_block = 2 if block == "basic" else 3
    return per_block * sum(stage_blocks) + 2


def _add_shortcut(
    x: keras.KerasTensor,
    y: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    stride: int,
    *,
    in_channels: int,
    out_channels: int,
    name: str,
) -> keras.KerasTensor:
    """ReLU(y + shortcut(x)): the identity, or a 1×1 convolution and BN when the shape changes.

    The channel counts are the full-width ones, so that a slimmable network
    has the same graph at every width.

    Args:
        x: KerasTensor [N, H, W, C_in], the block's input.
        y: KerasTensor [N, H / stride, W / stride, C_out], the residual branch.
        conditioning: `Conditioning` of the network.
        stride: int, the block's stride.
        in_channels: int, C_in at full width.
        out_channels: int, C_out at full width.
        name: str, the block's prefix.

    Returns:
        KerasTensor shaped like `y`.
    """
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = conditioning.conv(x, out_channels, 1, stride, name=f"{name}_shortcut_conv")
        shortcut = conditioning.normalize(shortcut, norm_name=f"{name}_shortcut_bn")
    add = conditioning.layer(f"{name}_add", lambda: keras.layers.Add(name=f"{name}_add"))
    y = add([y, shortcut])
    return conditioning.relu(y, name=f"{name}_out_relu")


def apply_basic_block(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    filters: int,
    stride: int,
    *,
    in_channels: int,
    name: str,
) -> keras.KerasTensor:
    """A post-activation basic block: conv-BN(-FiLM)-ReLU-conv-BN(-FiLM) + shortcut, ReLU.

    Args:
        x: KerasTensor [N, H, W, C_in].
        conditioning: `Conditioning` of the network.
        filters: int, output channels.
        stride: int, stride of the first convolution and of the shortcut.
        in_channels: int, C_in at full width.
        name: str, prefix of every layer name (e.g. "stage2_block1").

    Returns:
        KerasTensor [N, H / stride, W / stride, filters].
    """
    y = conditioning.conv(x, filters, 3, stride, name=f"{name}_conv1")
    y = conditioning_lib.apply_normalization_relu(y, conditioning, prefix=name, suffix="1")
    y = conditioning.conv(y, filters, 3, 1, name=f"{name}_conv2")
    y = conditioning_lib.apply_normalization_relu(y, conditioning, prefix=name, suffix="2", relu=False)
    return _add_shortcut(
        x, y, conditioning, stride, in_channels=in_channels, out_channels=filters, name=name
    )


def apply_bottleneck_block(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    filters: int,
    stride: int,
    *,
    in_channels: int,
    name: str,
) -> keras.KerasTensor:
    """A post-activation bottleneck block: 1×1, 3×3 (strided), 1×1 ×4, + shortcut, ReLU.

    Each convolution is followed by BN (and FiLM in the conditioned
    variants); ReLU after the first two. As kuangliu's `Bottleneck` (the
    stride sits on the 3×3 convolution); the shortcut is a 1×1 convolution +
    BN whenever the stride or the channel count changes.

    Args:
        x: KerasTensor [N, H, W, C_in].
        conditioning: `Conditioning` of the network.
        filters: int, the block's inner width; it outputs 4 × filters channels.
        stride: int, stride of the 3×3 convolution and of the shortcut.
        in_channels: int, C_in at full width.
        name: str, prefix of every layer name (e.g. "stage2_block1").

    Returns:
        KerasTensor [N, H / stride, W / stride, 4 × filters].
    """
    out_channels = BOTTLENECK_EXPANSION * filters
    y = x
    for index, (width, kernel, step) in enumerate(
        ((filters, 1, 1), (filters, 3, stride), (out_channels, 1, 1)), start=1
    ):
        y = conditioning.conv(y, width, kernel, step, name=f"{name}_conv{index}")
        y = conditioning_lib.apply_normalization_relu(
            y, conditioning, prefix=name, suffix=str(index), relu=index < 3
        )
    return _add_shortcut(
        x, y, conditioning, stride, in_channels=in_channels, out_channels=out_channels, name=name
    )


def apply_resnet(
    image: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    *,
    num_classes: int,
    stage_filters: Sequence[int],
    stage_blocks: Sequence[int],
    block_type: str = "basic",
) -> keras.KerasTensor:
    """The ResNet graph from the image to the logits: the one definition of the network.

    A 3×3 stem (the first stage's width, stride 1, BN(-FiLM)-ReLU), then the
    stages, each downsampling by 2 in its first block except the first
    stage, then global average pooling and the logits. `ResNet` wraps it in
    a model (four stages for ImageNet-style depths, three for the CIFAR 6n + 2
    ResNets whose block outputs the RDI-Nets exits tap); `SlimmableResNet`
    runs it with its slimmable layer kit. Every layer is made through `conditioning`.

    Args:
        image: KerasTensor [N, H, W, C], the image input.
        conditioning: `Conditioning` of the network.
        num_classes: int, number of logits.
        stage_filters: sequence of int, channels of each stage.
        stage_blocks: sequence of int, blocks of each stage (same length).
        block_type: str, "basic" or "bottleneck".

    Returns:
        KerasTensor [N, num_classes], the logits (layer "logits"); blocks are
        named "stage{s}_block{i}" (1-based), their outputs
        "stage{s}_block{i}_out_relu".
    """
    apply_block = apply_basic_block if block_type == "basic" else apply_bottleneck_block
    expansion = 1 if block_type == "basic" else BOTTLENECK_EXPANSION
    x = conditioning.conv(image, stage_filters[0], 3, 1, name="stem_conv")
    x = conditioning_lib.apply_normalization_relu(x, conditioning, prefix="stem")
    channels = stage_filters[0]
    for stage, (stage_width, num_blocks) in enumerate(zip(stage_filters, stage_blocks)):
        for index in range(num_blocks):
            x = apply_block(
                x,
                conditioning,
                stage_width,
                stride=2 if stage > 0 and index == 0 else 1,
                in_channels=channels,
                name=f"stage{stage + 1}_block{index + 1}",
            )
            channels = expansion * stage_width
    return conditioning.logits(x, num_classes, pool=True)


@keras.saving.register_keras_serializable(package="oat_tf")
class ResNet(saved_config.SavedConfig, keras.Model):
    """CIFAR-style ResNet (basic or bottleneck blocks) with inputs `{"image", "lambda"}`.

    Layer names: `stem_conv`, `stem_bn`, `stem_film`, `stem_relu`, then
    `stage{s}_block{b}_{conv1,bn1,film1,relu1,conv2,bn2,film2,shortcut_conv,
    shortcut_bn,add,out_relu}` (bottleneck blocks add `relu2`, `conv3`, `bn3`,
    `film3`), `avg_pool`, `logits`; OAT variants add `lambda_encoder`, and
    "oat" and "mixture_bn" add `clean_route`.

    Args:
        depth: int, 18, 34 or another basic-block depth, or a bottleneck depth
            50, 101, 152, 200 (see `blocks_for_depth`); ignored when
            `stage_blocks` is given.
        num_classes: int, number of logits.
        image_shape: tuple (H, W, C), height and width at least 8.
        variant: str, "plain", "oat", "oat_single_bn" or "mixture_bn".
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "plain").
        stage_filters: positive ints, channels of the stages (the stem has
            the first stage's width): four, or one per entry of
            `stage_blocks`.
        stage_blocks: None or positive ints, blocks per stage (overrides
            `depth`), e.g. (6, 6, 6) for the CIFAR ResNet-38 of RDI-Nets.
        block: None, "basic" or "bottleneck": the block type; None takes it
            from `depth` (basic when `stage_blocks` is given).
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
        block: Optional[str] = None,
        **kwargs,
    ):
        # === Validation ===
        if block is not None and block not in BLOCK_TYPES:
            raise ValueError(
                f"`block` must be None or one of {BLOCK_TYPES}. Received: block={block!r}"
            )
        if stage_blocks is None:
            block_type, blocks = blocks_for_depth(depth)
            if block is not None and block != block_type:
                raise ValueError(
                    f"`block` must match `depth`: depth {depth} has {block_type} blocks "
                    f"(give `stage_blocks` for another layout). Received: block={block!r}"
                )
        else:
            block_type = block or "basic"
            blocks = check_stage_ints("stage_blocks", stage_blocks)
        filters = check_stage_ints("stage_filters", stage_filters, len(blocks))
        common = conditioning_lib.check_network_arguments(
            num_classes, image_shape, variant, encoder, min_size=8
        )
        shape, encoder = common["image_shape"], common["encoder"]
        kwargs.setdefault("name", f"resnet{depth_of(block_type, blocks)}_{variant}")

        # === Functional Model ===
        inputs, conditioning = conditioning_lib.conditioned_inputs(shape, variant, encoder)
        image = inputs[conditioning_lib.IMAGE_KEY]
        logits = apply_resnet(image, conditioning, num_classes=num_classes, stage_filters=filters,
                              stage_blocks=blocks, block_type=block_type)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.save_config(
            depth=depth,
            **common,
            stage_filters=filters,
            stage_blocks=None if stage_blocks is None else blocks,
            block=block,
        )
        self.block_type = block_type
