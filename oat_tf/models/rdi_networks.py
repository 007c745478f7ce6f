"""The RDI-Nets (Triple Wins, SPEC §3): three backbones with the paper's side exits.

Each network is a `multi_exit_network.MultiExitNetwork`: a backbone written
once (`SmallCNN`, `ResNet`, `MobileNetV2`) and the exit layout below, as
`exit_branch.ExitBranch`es on named backbone layers. `rdi_small_cnn`,
`rdi_resnet38` and `rdi_mobilenet_v2` build them (the registry's
architectures of the same names); the `*_exits` functions give the layout for
a backbone built elsewhere. Variants "plain", "oat" and "oat_single_bn"; the
branches are normalised (and modulated) like the backbone.

**RDI-SmallCNN** (MNIST). The SmallCNN without padding:

    conv3×3(32) → ReLU → [exit 1] → conv3×3(32) → ReLU → maxpool2 →
    conv3×3(64) → ReLU → [exit 2] → conv3×3(64) → ReLU → maxpool2 →
    FC 200 → ReLU → dropout 0.5 → FC 200 → ReLU → FC 10          ("final")

    exit 1: conv3×3(16, stride 2) → ReLU → maxpool2 → FC 200 → ReLU → dropout →
            FC 200 → ReLU → FC 10
    exit 2: maxpool2 → FC 200 → ReLU → dropout → FC 200 → ReLU → FC 10

With `use_batch_norm` a normalisation (followed by FiLM in the OAT variants)
comes after every convolution and hidden dense layer, exits included, before
the ReLU. The plain network without it is the paper's (the default for
"plain"). Exit i's dropout has seed `seed + i`.

**RDI-ResNet-38** (CIFAR). The 6n + 2 CIFAR ResNet of He et al. used by the
reference code (`cifar10_resnet_38`, n = 6): a 3×3 stem with 16 filters,
three stages of n post-activation basic blocks (16, 32, 64 filters), global
average pooling and a dense layer; its convolutions cost 83,279,872 MACs per
32×32 image, the paper's "79.42 MFLOPs" (convolution MACs / 2^20, as the
authors' `cal_flops.py` counts them). The paper's Appendix B puts two branch
classifiers per stage "at equidistant points"; the figure's block numbers are
lost in the text, and the authors' code attaches them after the blocks of
0-based index ⌊n/4⌋ and ⌊3n/4⌋ of every stage, i.e. **after blocks 2 and 5**
(1-based) of each 6-block stage, and so do we (`exit_blocks=None`): over the
whole network blocks 2, 5, 8, 11, 14 and 17 of 18, three blocks apart.
Branches are lighter than the reference code's (whose first branches alone
exceed the paper's 2% budget): a 2×2 max-pool, a 3×3 unpadded convolution
(`exit_filters[s]` channels, stride 2/2/1 for stage s; 32/32/64 by default) +
BN(-FiLM) + ReLU, global average pooling and the logits: about 0.93 M MACs
for all six, 1.1% of the backbone's 84.0 M (thop's convention, BN included).

**RDI-MobileNetV2** (CIFAR). kuangliu's CIFAR MobileNetV2
(`oat_tf.models.mobilenet_v2`) with two exits at about 1/3 and 2/3 of the
network, **after blocks 6 and 13** (1-based, of 17): the ends of the
32-channel group (16×16) and of the 96-channel group (8×8); by the
backbone's MACs, 0.32 and 0.67 of the convolutions have run there, so the
exits are close to equidistant in compute. Branches as ResNet-38's with
stride 1 and 64 and 128 channels: 0.67 M + 0.44 M MACs, 1.2% of the backbone.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import exit_branch
from oat_tf.models import mobilenet_v2
from oat_tf.models import model_arguments
from oat_tf.models import multi_exit
from oat_tf.models import multi_exit_network
from oat_tf.models import resnet
from oat_tf.models import small_cnn

# Where the SmallCNN's exits attach: after the ReLU of the first convolution
# of each block.
SMALL_CNN_EXIT_LAYERS = ("block1_relu1", "block2_relu1")
RESNET_STAGES = 3
RESNET_STAGE_FILTERS = (16, 32, 64)
RESNET_BLOCKS_PER_STAGE = 6  # ResNet-38: 6·6 + 2 weighted layers.
RESNET_EXIT_CONV_STRIDES = (2, 2, 1)
MOBILENET_V2_EXIT_BLOCKS = (6, 13)
MOBILENET_V2_EXIT_FILTERS = (64, 128)
# The light CIFAR branch: 2×2 max-pool, 3×3 unpadded convolution, global pool.
_CIFAR_BRANCH = dict(
    prepool_size=2, global_pool=True, pool_size=None, hidden_units=(), use_batch_norm=True
)


def resnet_default_exit_blocks(blocks_per_stage: int) -> Tuple[int, int]:
    """The reference code's exit positions in a stage of `blocks_per_stage` blocks.

    Args:
        blocks_per_stage: int, n.

    Returns:
        Tuple of the two 1-based blocks after which exits attach:
        (⌊n/4⌋ + 1, ⌊3n/4⌋ + 1), i.e. (2, 5) for n = 6.
    """
    return (blocks_per_stage // 4 + 1, (3 * blocks_per_stage) // 4 + 1)


def resnet_default_exit_filters(stage_filters: Sequence[int]) -> Tuple[int, ...]:
    """Exit-convolution channels per stage: twice the first stage's width, then the widths."""
    return (2 * stage_filters[0], *stage_filters[1:])


def small_cnn_exits(
    backbone: small_cnn.SmallCNN,
    *,
    exit_conv_filters: int = 16,
    exit_hidden_units: int = 200,
    exit_dropout: Optional[float] = None,
) -> Tuple[exit_branch.ExitBranch, ...]:
    """The two RDI-SmallCNN exits (module docstring) for a SmallCNN of two blocks.

    Args:
        backbone: SmallCNN with two convolutional blocks.
        exit_conv_filters: int, channels of exit 1's strided convolution.
        exit_hidden_units: int, units of the two hidden dense layers of each exit.
        exit_dropout: float in [0, 1) or None, dropout after each exit's first
            hidden layer; None: the backbone's `dropout`.

    Returns:
        Tuple of two `ExitBranch`es.

    Raises:
        ValueError: naming the argument that is wrong.
    """
    model_arguments.check_positive_ints("filters", backbone.filters, length=2)
    model_arguments.check_positive_int("exit_conv_filters", exit_conv_filters)
    model_arguments.check_positive_int("exit_hidden_units", exit_hidden_units)
    rate = model_arguments.check_rate(
        "exit_dropout", backbone.dropout if exit_dropout is None else exit_dropout
    )
    shared = dict(
        pool_size=2,
        hidden_units=(int(exit_hidden_units),) * 2,
        dropout=rate,
        use_batch_norm=backbone.use_batch_norm,
    )
    return (
        exit_branch.ExitBranch(
            SMALL_CNN_EXIT_LAYERS[0],
            conv_filters=int(exit_conv_filters),
            conv_stride=2,
            seed=backbone.seed + 1,
            **shared,
        ),
        exit_branch.ExitBranch(SMALL_CNN_EXIT_LAYERS[1], seed=backbone.seed + 2, **shared),
    )


def resnet_exits(
    backbone: resnet.ResNet,
    *,
    exit_blocks: Optional[Sequence[int]] = None,
    exit_filters: Optional[Sequence[int]] = None,
) -> Tuple[exit_branch.ExitBranch, ...]:
    """The RDI-ResNet exits for a three-stage basic-block ResNet: two (or more) per stage.

    Args:
        backbone: ResNet with three stages of equal block counts.
        exit_blocks: None or strictly increasing 1-based block indices, at
            most the blocks per stage, after which every stage gets an exit;
            None: `resnet_default_exit_blocks`, (2, 5) for 6 blocks.
        exit_filters: None or three positive ints, channels of each stage's
            exit convolutions; None: `resnet_default_exit_filters`.

    Returns:
        Tuple of `ExitBranch`es, stage by stage.

    Raises:
        ValueError: naming the argument that is wrong.
    """
    blocks = backbone.stage_blocks or ()
    if len(blocks) != RESNET_STAGES or len(set(blocks)) != 1 or backbone.block_type != "basic":
        raise ValueError(
            "`backbone` must be a basic-block ResNet with three stages of equal length. "
            f"Received: stage_blocks={backbone.stage_blocks!r}, block={backbone.block_type!r}"
        )
    positions = (
        resnet_default_exit_blocks(blocks[0])
        if exit_blocks is None
        else model_arguments.check_exit_blocks(exit_blocks, blocks[0])
    )
    filters = (
        resnet_default_exit_filters(backbone.stage_filters)
        if exit_filters is None
        else model_arguments.check_positive_ints("exit_filters", exit_filters, RESNET_STAGES)
    )
    return tuple(
        exit_branch.ExitBranch(
            f"stage{stage + 1}_block{position}_out_relu",
            conv_filters=filters[stage],
            conv_stride=RESNET_EXIT_CONV_STRIDES[stage],
            **_CIFAR_BRANCH,
        )
        for stage in range(RESNET_STAGES)
        for position in positions
    )


def mobilenet_v2_exits(
    backbone: mobilenet_v2.MobileNetV2,
    *,
    exit_blocks: Sequence[int] = MOBILENET_V2_EXIT_BLOCKS,
    exit_filters: Sequence[int] = MOBILENET_V2_EXIT_FILTERS,
) -> Tuple[exit_branch.ExitBranch, ...]:
    """The RDI-MobileNetV2 exits: one after each block of `exit_blocks`.

    Args:
        backbone: MobileNetV2.
        exit_blocks: strictly increasing 1-based block indices over all
            groups; (6, 13).
        exit_filters: positive ints, one per exit, channels of the exit
            convolutions; (64, 128).

    Returns:
        Tuple of `ExitBranch`es.

    Raises:
        ValueError: naming the argument that is wrong.
    """
    positions = model_arguments.check_exit_blocks(exit_blocks, backbone.num_blocks)
    filters = model_arguments.check_positive_ints("exit_filters", exit_filters)
    if len(filters) != len(positions):
        raise ValueError(
            "`exit_filters` must have one entry per exit "
            f"({len(positions)} exit_blocks). Received: exit_filters={exit_filters!r}"
        )
    return tuple(
        exit_branch.ExitBranch(f"block{position}_out", conv_filters=channels, **_CIFAR_BRANCH)
        for position, channels in zip(positions, filters)
    )


def _check_variant(arguments: dict) -> None:
    """Refuses, before anything is built, a variant no multi-exit network has."""
    variant = arguments.get("variant", "plain")
    conditioning_lib.check_variant(variant, multi_exit.MULTI_EXIT_VARIANTS)


def rdi_small_cnn(
    *,
    exit_conv_filters: int = 16,
    exit_hidden_units: int = 200,
    exit_dropout: Optional[float] = None,
    name: Optional[str] = None,
    **backbone_arguments: Any,
) -> multi_exit_network.MultiExitNetwork:
    """RDI-SmallCNN: a `SmallCNN` with the two exits of `small_cnn_exits`.

    Args:
        exit_conv_filters, exit_hidden_units, exit_dropout: see `small_cnn_exits`.
        name: str or None, the network's name; None: "rdi_small_cnn_<variant>".
        **backbone_arguments: `SmallCNN` arguments (`variant`, `filters`
            (two blocks), `hidden_units`, ...); `use_batch_norm` None or
            absent: False for "plain" (the paper's network), True otherwise.

    Returns:
        MultiExitNetwork with outputs "exit_1", "exit_2", "final".
    """
    _check_variant(backbone_arguments)
    model_arguments.check_positive_ints("filters", backbone_arguments.get("filters", (32, 64)), 2)
    if backbone_arguments.get("use_batch_norm") is None:
        backbone_arguments["use_batch_norm"] = backbone_arguments.get("variant", "plain") != "plain"
    backbone = small_cnn.SmallCNN(**backbone_arguments)
    exits = small_cnn_exits(
        backbone,
        exit_conv_filters=exit_conv_filters,
        exit_hidden_units=exit_hidden_units,
        exit_dropout=exit_dropout,
    )
    return multi_exit_network.MultiExitNetwork(backbone, exits, name=name)


def rdi_resnet38(
    *,
    stage_filters: Sequence[int] = RESNET_STAGE_FILTERS,
    blocks_per_stage: int = RESNET_BLOCKS_PER_STAGE,
    exit_blocks: Optional[Sequence[int]] = None,
    exit_filters: Optional[Sequence[int]] = None,
    name: Optional[str] = None,
    **backbone_arguments: Any,
) -> multi_exit_network.MultiExitNetwork:
    """RDI-ResNet-38 (or another 6n + 2 depth): a CIFAR `ResNet` with `resnet_exits`.

    Args:
        stage_filters: three positive ints, channels of the stages; (16, 32, 64).
        blocks_per_stage: int, n (the depth is 6n + 2); 6.
        exit_blocks, exit_filters: see `resnet_exits`.
        name: str or None, the network's name; None: "rdi_resnet<depth>_<variant>".
        **backbone_arguments: further `ResNet` arguments (`variant`,
            `num_classes`, `image_shape`, `encoder`).

    Returns:
        MultiExitNetwork with outputs "exit_1", ..., "exit_6", "final".
    """
    _check_variant(backbone_arguments)
    blocks = model_arguments.check_positive_int("blocks_per_stage", blocks_per_stage)
    filters = model_arguments.check_positive_ints("stage_filters", stage_filters, RESNET_STAGES)
    if exit_blocks is not None:
        model_arguments.check_exit_blocks(exit_blocks, blocks)
    if exit_filters is not None:
        model_arguments.check_positive_ints("exit_filters", exit_filters, RESNET_STAGES)
    backbone = resnet.ResNet(
        depth=2 * RESNET_STAGES * blocks + 2,
        stage_filters=filters,
        stage_blocks=(blocks,) * RESNET_STAGES,
        block="basic",
        **backbone_arguments,
    )
    exits = resnet_exits(backbone, exit_blocks=exit_blocks, exit_filters=exit_filters)
    return multi_exit_network.MultiExitNetwork(backbone, exits, name=name)


def rdi_mobilenet_v2(
    *,
    exit_blocks: Sequence[int] = MOBILENET_V2_EXIT_BLOCKS,
    exit_filters: Sequence[int] = MOBILENET_V2_EXIT_FILTERS,
    name: Optional[str] = None,
    **backbone_arguments: Any,
) -> multi_exit_network.MultiExitNetwork:
    """RDI-MobileNetV2: a `MobileNetV2` with the exits of `mobilenet_v2_exits`.

    Args:
        exit_blocks, exit_filters: see `mobilenet_v2_exits`.
        name: str or None, the network's name; None: "rdi_mobilenet_v2_<variant>".
        **backbone_arguments: `MobileNetV2` arguments (`variant`,
            `block_settings`, `stem_filters`, `head_filters`, ...).

    Returns:
        MultiExitNetwork with outputs "exit_1", "exit_2", "final".
    """
    _check_variant(backbone_arguments)
    settings = mobilenet_v2.check_block_settings(
        backbone_arguments.get("block_settings", mobilenet_v2.DEFAULT_BLOCK_SETTINGS)
    )
    model_arguments.check_exit_blocks(exit_blocks, len(mobilenet_v2.block_plan(settings)))
    backbone = mobilenet_v2.MobileNetV2(**backbone_arguments)
    exits = mobilenet_v2_exits(backbone, exit_blocks=exit_blocks, exit_filters=exit_filters)
    return multi_exit_network.MultiExitNetwork(backbone, exits, name=name)
