"""RDI-MobileNetV2: the CIFAR MobileNetV2 with two side exits (Triple Wins, SPEC §3).

The backbone is kuangliu's CIFAR MobileNetV2 (`pytorch-cifar`, also the
RDI-Nets reference code's, width 1.0): a 3×3 stem convolution with 32
filters and **stride 1**, 17 inverted residual blocks in seven groups
(expansion t, output channels c, blocks n, stride s of the first block):

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
86.92 × 2^20: the paper's "86.91 MFLOPs" are convolution MACs in units of
2^20 (the authors' `cal_flops.py` counts conv MACs and divides by
1024·1024), truncated. With BN and the dense layer (thop's convention,
`oat_tf.models.flops`), 94.60 M MACs.

Exit positions. The paper's Appendix B puts two branch classifiers after two
inverted residual blocks whose numbers are lost in the text. We attach them at
about 1/3 and 2/3 of the network, **after blocks 6 and 13** (1-based, of 17):
the ends of the 32-channel group (16×16) and of the 96-channel group (8×8).
By blocks that is 6/17 and 13/17; by the backbone's MACs, 0.32 and 0.67 of
the convolutions have run at those points, so the exits are close to
equidistant in compute.

Exit branches: a 2×2 max-pool (`{exit}_prepool`), then
`exit_branch.apply_exit_branch` with a 3×3 unpadded stride-1 convolution
(64 channels for exit 1, 128 for exit 2) + BN(-FiLM) + ReLU, global average
pooling and the logits layer: 0.67 M + 0.44 M MACs, 1.2% of the backbone
(< 2%, asserted by the tests).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import model_arguments
from oat_tf.models import multi_exit
from oat_tf.models import rdi_resnet
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
DEFAULT_EXIT_BLOCKS = (6, 13)
DEFAULT_EXIT_FILTERS = (64, 128)
EXIT_CONV_STRIDE = 1
# Features an exit reads must be at least this large: 2×2 pre-pool, then an
# unpadded 3×3 convolution.
_MIN_EXIT_FEATURE_SIZE = 2 * 3


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


def _block_plan(block_settings) -> Tuple[Tuple[int, int, int], ...]:
    """(expansion, channels, stride) of every block, in order."""
    return tuple(
        (expansion, channels, stride if index == 0 else 1)
        for expansion, channels, blocks, stride in block_settings
        for index in range(blocks)
    )


def _exit_feature_size(size: int, plan, exit_block: int) -> int:
    """Spatial size of the features after block `exit_block` (1-based) for input `size`."""
    for _, _, stride in plan[:exit_block]:
        size = (size + stride - 1) // stride  # a padded 3×3 convolution of that stride
    return size


def _min_image_size(plan, exit_blocks: Sequence[int]) -> int:
    """The smallest input size for which every exit sees at least a 6×6 map."""
    size = 8
    while any(_exit_feature_size(size, plan, b) < _MIN_EXIT_FEATURE_SIZE for b in exit_blocks):
        size += 1
    return size


def apply_depthwise_conv(
    x: keras.KerasTensor, strides: int, *, name: str
) -> keras.KerasTensor:
    """A 3×3 depthwise convolution padded like PyTorch's `padding=1` (see `Conditioning.conv`)."""
    pad, padding = conditioning_lib.conv_padding(3, strides)
    if pad:
        x = keras.layers.ZeroPadding2D(padding=pad, name=f"{name}_pad")(x)
    return keras.layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding=padding,
        use_bias=False,
        depthwise_initializer="he_normal",
        name=name,
    )(x)


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
    y = apply_depthwise_conv(y, stride, name=f"{name}_conv2")
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
    convolution, global average pooling and the logits. `RDIMobileNetV2`
    taps block outputs for its exits (`multi_exit.tap_layer_outputs`).

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
    for index, (expansion, channels, stride) in enumerate(_block_plan(block_settings)):
        x = apply_inverted_residual_block(
            x, conditioning, expansion, channels, stride, name=f"block{index + 1}"
        )
    x = conditioning.conv(x, head_filters, 1, 1, name="head_conv")
    x = conditioning_lib.apply_normalization_relu(x, conditioning, prefix="head")
    return conditioning_lib.apply_logits(x, num_classes, pool=True)


@keras.saving.register_keras_serializable(package="oat_tf")
class RDIMobileNetV2(saved_config.SavedConfig, keras.Model):
    """CIFAR MobileNetV2 with two side exits; inputs `{"image", "lambda"}`.

    Outputs a dict of logits `{"exit_1", "exit_2", "final"}` (one side exit
    per entry of `exit_blocks`). See the module docstring for the backbone,
    the exit positions (after blocks 6 and 13) and the branches.

    Layer names: `stem_conv`, `stem_bn`, `stem_film`, `stem_relu`, then
    `block{b}_{conv1,bn1,film1,relu1,conv2,bn2,film2,relu2,conv3,bn3,film3,
    shortcut_conv,shortcut_bn,add,out}` (b = 1..17 over all groups),
    `head_conv`, `head_bn`, `head_film`, `head_relu`, `avg_pool`, `logits`;
    exit i's are `exit{i}_prepool`, `exit{i}_conv`, `exit{i}_conv_bn`,
    `exit{i}_conv_film`, `exit{i}_conv_relu`, `exit{i}_gap`,
    `exit{i}_flatten`, `exit{i}_logits`. `exit_feature_layers` names the
    `block{b}_out` layers the exits read.

    Args:
        num_classes: int, number of logits of every output.
        image_shape: tuple (H, W, C); at least 24×24 with the default exits
            (every exit must see a map of at least 6×6).
        variant: str, "plain", "oat" or "oat_single_bn"; the exit branches
            are normalised (and modulated) like the backbone.
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "plain").
        block_settings: sequence of (expansion, channels, blocks, stride)
            groups; kuangliu's CIFAR configuration by default.
        stem_filters: int, channels of the stem convolution.
        head_filters: int, channels of the last 1×1 convolution.
        exit_blocks: strictly increasing 1-based indices of the blocks after
            which the exits attach, counted over all groups; (6, 13).
        exit_filters: positive ints, one per exit, channels of the exit
            convolutions; (64, 128).
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in the normalisations.

    Returns:
        Dict of logits [N, num_classes] (no softmax): "exit_1", ...,
        "exit_M", "final".

    Example:
    >>> model = RDIMobileNetV2(variant="oat", encoder={"dim": 128})
    >>> outputs = model({"image": images, "lambda": lambdas})

    Reference:
    - Hu et al., Triple Wins: Boosting Accuracy, Robustness and Efficiency
      Together by Enabling Input-Adaptive Inference, ICLR 2020, Appendix B.
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
        exit_blocks: Sequence[int] = DEFAULT_EXIT_BLOCKS,
        exit_filters: Sequence[int] = DEFAULT_EXIT_FILTERS,
        **kwargs,
    ):
        # === Validation ===
        model_arguments.check_positive_int("stem_filters", stem_filters)
        model_arguments.check_positive_int("head_filters", head_filters)
        settings = check_block_settings(block_settings)
        plan = _block_plan(settings)
        positions = model_arguments.check_exit_blocks(exit_blocks, len(plan))
        branch_filters = model_arguments.check_positive_ints("exit_filters", exit_filters)
        if len(branch_filters) != len(positions):
            raise ValueError(
                "`exit_filters` must have one entry per exit "
                f"({len(positions)} exit_blocks). Received: exit_filters={exit_filters!r}"
            )
        common = conditioning_lib.check_network_arguments(
            num_classes,
            image_shape,
            variant,
            encoder,
            min_size=_min_image_size(plan, positions),
            variants=multi_exit.MULTI_EXIT_VARIANTS,
        )
        shape, encoder = common["image_shape"], common["encoder"]
        kwargs.setdefault("name", f"rdi_mobilenet_v2_{variant}")

        # === Functional Model ===
        # The backbone graph, then the exits on the outputs of the blocks at
        # `positions`, tapped by layer name.
        inputs, conditioning = conditioning_lib.conditioned_inputs(shape, variant, encoder)
        image = inputs[conditioning_lib.IMAGE_KEY]
        logits = apply_mobilenet_v2(image, conditioning, num_classes=num_classes, block_settings=settings,
                                    stem_filters=int(stem_filters), head_filters=int(head_filters))
        feature_layers = [f"block{position}_out" for position in positions]
        features = multi_exit.tap_layer_outputs(inputs, logits, feature_layers)
        outputs = {}
        for exit_index, feature in enumerate(features, start=1):
            outputs[multi_exit.exit_output_name(exit_index)] = rdi_resnet.apply_rdi_exit(
                feature,
                conditioning,
                num_classes=num_classes,
                conv_filters=branch_filters[exit_index - 1],
                conv_stride=EXIT_CONV_STRIDE,
                name=f"exit{exit_index}",
            )
        outputs[multi_exit.FINAL_OUTPUT_NAME] = logits
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.save_config(
            **common,
            block_settings=settings,
            stem_filters=int(stem_filters),
            head_filters=int(head_filters),
            exit_blocks=positions,
            exit_filters=branch_filters,
        )
        self.exit_feature_layers: Tuple[str, ...] = tuple(feature_layers)
        self.num_exits = len(feature_layers)
