"""MobileNetV2 for CIFAR-sized images, plain or conditioned on λ.

kuangliu's CIFAR MobileNetV2 (`pytorch-cifar`, also the RDI-Nets reference
code's backbone, width 1.0): a 3×3 stem convolution with 32 filters and
**stride 1**, 17 inverted residual blocks in seven groups (expansion t, output
channels c, blocks n, stride s of the first block):

    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)

(the second group's stride is 1 instead of ImageNet's 2, so a 32×32 image
is reduced to 4×4), then a 1×1 convolution to 1280 channels, global average
pooling and a dense layer. Each block is 1×1 expansion (t·C_in channels, also
for t = 1 as in kuangliu's code) + BN + ReLU, 3×3 depthwise (stride s) + BN +
ReLU, 1×1 projection + BN; a stride-1 block adds a shortcut, the identity or,
when the channel count changes, a 1×1 convolution + BN. In the OAT variants
FiLM follows every BN but the shortcut's.

The convolutions cost 91,142,144 multiply-accumulates per 32×32 image,
86.92 × 2^20: the RDI-Nets paper's "86.91 MFLOPs" are convolution MACs in
units of 2^20 (the authors' `cal_flops.py` counts conv MACs and divides by
1024·1024), truncated. With BN and the dense layer (thop's convention,
`oat_tf.models.flops`), 94.60 M MACs.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import model_arguments
from oat_tf.models import saved_config

# (expansion, output channels, blocks, stride of the first block), kuangliu's CIFAR cfg.
DEFAULT_BLOCK_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
DEFAULT_STEM_FILTERS = 32
DEFAULT_HEAD_FILTERS = 1280
# Every stride-2 block halves the map; 8×8 keeps the default network's last map at 1×1.
MIN_IMAGE_SIZE = 8


def check_block_settings(block_settings: Any) -> Tuple[Tuple[int, int, int, int], ...]:
    """Validates MobileNetV2 block groups (expansion, channels, blocks, stride).

    Args:
        block_settings: non-empty sequence of 4-sequences of positive ints,
            the stride 1 or 2.

    Returns:
        Tuple of 4-tuples of ints.

    Raises:
        ValueError: if the settings are malformed.
    """
    try:
        groups = tuple(tuple(group) for group in block_settings)
    except TypeError:
        groups = ()
    valid = bool(groups) and all(
        len(group) == 4
        and all(model_arguments.is_int(v) and v >= 1 for v in group)
        and group[3] in (1, 2)
        for group in groups
    )
    if not valid:
        raise ValueError(
            "`block_settings` must be a non-empty sequence of (expansion, channels, "
            "blocks, stride) tuples of positive ints with stride 1 or 2. "
            f"Received: block_settings={block_settings!r}"
        )
    return tuple(tuple(int(v) for v in group) for group in groups)


def block_plan(block_settings) -> Tuple[Tuple[int, int, int], ...]:
    """(expansion, channels, stride) of every block, in order."""
    return tuple(
        (expansion, channels, stride if index == 0 else 1)
        for expansion, channels, blocks, stride in block_settings
        for index in range(blocks)
    )


def apply_inverted_residual_block(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    expansion: int,
    filters: int,
    stride: int,
    *,
    name: str,
) -> keras.KerasTensor:
    """kuangliu's MobileNetV2 block: expand, depthwise, project (+ shortcut at stride 1).

    conv1 (1×1, expansion·C_in) - BN(-FiLM) - ReLU, conv2 (3×3 depthwise,
    stride) - BN(-FiLM) - ReLU, conv3 (1×1, filters) - BN(-FiLM); at stride 1
    the shortcut (identity, or 1×1 convolution + BN when C_in != filters) is
    added. The block ends with an `Identity` layer `{name}_out`, the point
    where an exit can attach.

    Args:
        x: KerasTensor [N, H, W, C_in].
        conditioning: `Conditioning` of the network.
        expansion: int, expansion factor t of the hidden width.
        filters: int, output channels.
        stride: int, 1 or 2, stride of the depthwise convolution.
        name: str, prefix of every layer name (e.g. "block3").

    Returns:
        KerasTensor [N, H / stride, W / stride, filters].
    """
    hidden = expansion * x.shape[-1]
    y = conditioning.conv(x, hidden, 1, 1, name=f"{name}_conv1")
    y = conditioning_lib.apply_normalization_relu(y, conditioning, prefix=name, suffix="1")
    y = conditioning.depthwise_conv(y, 3, stride, name=f"{name}_conv2")
    y = conditioning_lib.apply_normalization_relu(y, conditioning, prefix=name, suffix="2")
    y = conditioning.conv(y, filters, 1, 1, name=f"{name}_conv3")
    y = conditioning_lib.apply_normalization_relu(y, conditioning, prefix=name, suffix="3", relu=False)
    if stride == 1:
        shortcut = x
        if x.shape[-1] != filters:
            shortcut = conditioning.conv(x, filters, 1, 1, name=f"{name}_shortcut_conv")
            shortcut = conditioning_lib.apply_normalization(
                shortcut, conditioning, norm_name=f"{name}_shortcut_bn"
            )
        y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Identity(name=f"{name}_out")(y)


def apply_mobilenet_v2(
    image: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    *,
    num_classes: int,
    block_settings: Sequence[Sequence[int]],
    stem_filters: int,
    head_filters: int,
) -> keras.KerasTensor:
    """The MobileNetV2 backbone graph from the image to the logits, written once.

    A 3×3 stem (stride 1, BN(-FiLM)-ReLU), the inverted residual blocks of
    `block_settings` (named "block{i}", outputs "block{i}_out"), a 1×1 head
    convolution, global average pooling and the logits. `MobileNetV2` wraps
    it in a model; the RDI-Nets exits (`rdi_exits.mobilenet_v2_exits`) tap
    the block outputs.

    Args:
        image: KerasTensor [N, H, W, C], the image input.
        conditioning: `Conditioning` of the network.
        num_classes: int, number of logits.
        block_settings: checked (t, c, n, s) rows (`check_block_settings`).
        stem_filters: int, channels of the stem.
        head_filters: int, channels of the head convolution.

    Returns:
        KerasTensor [N, num_classes], the logits (layer "logits").
    """
    x = conditioning.conv(image, stem_filters, 3, 1, name="stem_conv")
    x = conditioning_lib.apply_normalization_relu(x, conditioning, prefix="stem")
    for index, (expansion, channels, stride) in enumerate(block_plan(block_settings)):
        x = apply_inverted_residual_block(
            x, conditioning, expansion, channels, stride, name=f"block{index + 1}"
        )
    x = conditioning.conv(x, head_filters, 1, 1, name="head_conv")
    x = conditioning_lib.apply_normalization_relu(x, conditioning, prefix="head")
    return conditioning_lib.apply_logits(x, num_classes, pool=True)


@keras.saving.register_keras_serializable(package="oat_tf")
class MobileNetV2(saved_config.SavedConfig, keras.Model):
    """CIFAR MobileNetV2 with inputs `{"image", "lambda"}`; see the module docstring.

    Layer names: `stem_conv`, `stem_bn`, `stem_film`, `stem_relu`, then
    `block{b}_{conv1,bn1,film1,relu1,conv2,bn2,film2,relu2,conv3,bn3,film3,
    shortcut_conv,shortcut_bn,add,out}` (b = 1..17 over all groups),
    `head_conv`, `head_bn`, `head_film`, `head_relu`, `avg_pool`, `logits`;
    OAT variants add `lambda_encoder` (and `clean_route` for "oat" and
    "mixture_bn").

    Args:
        num_classes: int, number of logits.
        image_shape: tuple (H, W, C), height and width at least 8.
        variant: str, one of `conditioning.VARIANTS`.
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "plain").
        block_settings: sequence of (expansion, channels, blocks, stride)
            groups; kuangliu's CIFAR configuration by default.
        stem_filters: int, channels of the stem convolution.
        head_filters: int, channels of the last 1×1 convolution.
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in the normalisations.

    Returns:
        Logits [N, num_classes] (no softmax).

    Attributes:
        num_blocks: int, the inverted residual blocks over all groups.

    Example:
    >>> model = MobileNetV2(variant="oat", encoder={"dim": 128})
    >>> logits = model({"image": images, "lambda": lambdas})

    Reference:
    - Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks,
      CVPR 2018.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: Sequence[int] = (32, 32, 3),
        variant: str = "plain",
        encoder: Optional[Any] = None,
        block_settings: Sequence[Sequence[int]] = DEFAULT_BLOCK_SETTINGS,
        stem_filters: int = DEFAULT_STEM_FILTERS,
        head_filters: int = DEFAULT_HEAD_FILTERS,
        **kwargs,
    ):
        # === Validation ===
        model_arguments.check_positive_int("stem_filters", stem_filters)
        model_arguments.check_positive_int("head_filters", head_filters)
        settings = check_block_settings(block_settings)
        common = conditioning_lib.check_network_arguments(
            num_classes, image_shape, variant, encoder, min_size=MIN_IMAGE_SIZE
        )
        kwargs.setdefault("name", f"mobilenet_v2_{variant}")

        # === Functional Model ===
        inputs, conditioning = conditioning_lib.conditioned_inputs(
            common["image_shape"], variant, common["encoder"]
        )
        logits = apply_mobilenet_v2(
            inputs[conditioning_lib.IMAGE_KEY],
            conditioning,
            num_classes=common["num_classes"],
            block_settings=settings,
            stem_filters=int(stem_filters),
            head_filters=int(head_filters),
        )
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.save_config(
            **common,
            block_settings=settings,
            stem_filters=int(stem_filters),
            head_filters=int(head_filters),
        )
        self.num_blocks = len(block_plan(settings))
