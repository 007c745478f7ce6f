"""RDI-ResNet-38: the CIFAR ResNet-38 with six side exits (Triple Wins, SPEC §3).

The backbone is the 6n + 2 CIFAR ResNet of He et al. used by the RDI-Nets
reference code (`cifar10_resnet_38`, n = 6): a 3×3 stem convolution with 16
filters, three stages of n post-activation basic blocks (16, 32 and 64 filters;
the first block of stages 2 and 3 with stride 2 and a 1×1 convolution + BN
shortcut), global average pooling and a dense layer. Its convolutions cost
83,279,872 multiply-accumulates per 32×32 image, the paper's "79.42 MFLOPs"
(convolution MACs / 2^20, as the authors' `cal_flops.py` counts them).

Exit positions (the paper's Appendix B: two branch classifiers per residual
stage, at equidistant points). The figure's block numbers are lost in the
paper's text; the authors' code attaches the branches after the blocks of
0-based index ⌊n/4⌋ and ⌊3n/4⌋ of every stage, i.e. **after blocks 2 and 5**
(1-based) of each 6-block stage, and so do we (`exit_blocks=None`). Over the
whole network the exits then follow blocks 2, 5, 8, 11, 14 and 17 of 18,
exactly three blocks apart (blocks 2 and 4, another reading of "two per
stage", would not be equidistant).

Exit branches are lighter than the reference code's (whose first branches
alone exceed the paper's 2% budget): a 2×2 max-pool (`{exit}_prepool`), then
`exit_branch.apply_exit_branch` with a 3×3 unpadded convolution + BN(-FiLM) +
ReLU, global average pooling and the logits layer. The convolution has
`exit_filters[s]` channels and stride `EXIT_CONV_STRIDES[s]` for stage s
(defaults 32/32/64 and strides 2/2/1). All six branches together cost
about 0.93 M MACs, 1.1% of the backbone's 84.0 M (thop's convention,
BN included); the tests assert < 2%.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import exit_branch
from oat_tf.models import model_arguments
from oat_tf.models import multi_exit
from oat_tf.models import resnet
from oat_tf.models import saved_config

NUM_STAGES = 3
DEFAULT_STAGE_FILTERS = (16, 32, 64)
DEFAULT_BLOCKS_PER_STAGE = 6  # ResNet-38: 6·6 + 2 weighted layers.
# Channels of each stage's exit convolutions (None: 2·16, 32, 64 from the
# stage widths, see `default_exit_filters`) and their strides.
EXIT_CONV_STRIDES = (2, 2, 1)
EXIT_PREPOOL_SIZE = 2
# The smallest input for which every exit's pooling and unpadded convolution
# still sees at least a 3×3 map (stage 3 runs at 1/4 of the input size).
MIN_IMAGE_SIZE = 24


def default_exit_blocks(blocks_per_stage: int) -> Tuple[int, int]:
    """The reference code's exit positions in a stage of `blocks_per_stage` blocks.

    Args:
        blocks_per_stage: int, n.

    Returns:
        Tuple of the two 1-based blocks after which exits attach:
        (⌊n/4⌋ + 1, ⌊3n/4⌋ + 1), i.e. (2, 5) for n = 6.
    """
    return (blocks_per_stage // 4 + 1, (3 * blocks_per_stage) // 4 + 1)


def default_exit_filters(stage_filters: Sequence[int]) -> Tuple[int, ...]:
    """Exit-convolution channels per stage: twice the first stage's width, then the widths."""
    return (2 * stage_filters[0], *stage_filters[1:])


def apply_rdi_exit(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    *,
    num_classes: int,
    conv_filters: int,
    conv_stride: int,
    name: str,
) -> keras.KerasTensor:
    """A light CIFAR exit: 2×2 max-pool, then `apply_exit_branch` (conv-BN-ReLU, GAP, logits).

    Args:
        x: KerasTensor [N, H, W, C], the backbone features at the exit.
        conditioning: `Conditioning` of the network.
        num_classes: int, number of logits.
        conv_filters: int, channels of the branch's 3×3 unpadded convolution.
        conv_stride: int, its stride.
        name: str, prefix of the layer names (e.g. "exit1"); the pooling is
            `{name}_prepool`.

    Returns:
        KerasTensor [N, num_classes], the exit's logits.
    """
    x = keras.layers.MaxPooling2D(EXIT_PREPOOL_SIZE, name=f"{name}_prepool")(x)
    return exit_branch.apply_exit_branch(
        x,
        conditioning,
        num_classes=num_classes,
        name=name,
        conv_filters=conv_filters,
        conv_stride=conv_stride,
        global_pool=True,
        hidden_units=(),
        use_batch_norm=True,
    )


@keras.saving.register_keras_serializable(package="oat_tf")
class RDIResNet38(saved_config.SavedConfig, keras.Model):
    """CIFAR ResNet-38 with two side exits per stage; inputs `{"image", "lambda"}`.

    Outputs a dict of logits `{"exit_1", ..., "exit_6", "final"}` (M = 3 ×
    len(exit_blocks) side exits in general). See the module docstring for the
    exit positions (after blocks 2 and 5 of every stage) and the branches.

    Layer names: the backbone's are those of `resnet.ResNet` (`stem_conv`,
    `stem_bn`, `stem_film`, `stem_relu`, `stage{s}_block{b}_...`, `avg_pool`,
    `logits`); exit i's are `exit{i}_prepool`, `exit{i}_conv`,
    `exit{i}_conv_bn`, `exit{i}_conv_film`, `exit{i}_conv_relu`, `exit{i}_gap`,
    `exit{i}_flatten`, `exit{i}_logits`. `exit_feature_layers` names, in
    order, the layers whose outputs feed the exits
    (`stage{s}_block{b}_out_relu`).

    Args:
        num_classes: int, number of logits of every output.
        image_shape: tuple (H, W, C), height and width at least 24.
        variant: str, "plain", "oat" or "oat_single_bn"; the exit branches
            are normalised (and modulated) like the backbone.
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "plain").
        stage_filters: three positive ints, channels of the stages (the stem
            has the first stage's width); (16, 32, 64) for ResNet-38.
        blocks_per_stage: int, n (the depth is 6n + 2); 6 for ResNet-38.
        exit_blocks: None or strictly increasing 1-based block indices
            (at most `blocks_per_stage`) after which every stage gets an exit;
            None: (⌊n/4⌋ + 1, ⌊3n/4⌋ + 1), i.e. (2, 5) for n = 6.
        exit_filters: None or three positive ints, channels of the exit
            convolutions of each stage; None: (2·stage_filters[0],
            stage_filters[1], stage_filters[2]) = (32, 32, 64).
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in the normalisations.

    Returns:
        Dict of logits [N, num_classes] (no softmax): "exit_1", ...,
        "exit_M", "final".

    Example:
    >>> model = RDIResNet38(variant="oat", encoder={"dim": 128})
    >>> outputs = model({"image": images, "lambda": lambdas})
    >>> outputs["exit_1"], outputs["final"]

    Reference:
    - Hu et al., Triple Wins: Boosting Accuracy, Robustness and Efficiency
      Together by Enabling Input-Adaptive Inference, ICLR 2020, Appendix B.
    - He et al., Deep Residual Learning for Image Recognition, CVPR 2016.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: Sequence[int] = (32, 32, 3),
        variant: str = "plain",
        encoder: Optional[Any] = None,
        stage_filters: Sequence[int] = DEFAULT_STAGE_FILTERS,
        blocks_per_stage: int = DEFAULT_BLOCKS_PER_STAGE,
        exit_blocks: Optional[Sequence[int]] = None,
        exit_filters: Optional[Sequence[int]] = None,
        **kwargs,
    ):
        # === Validation ===
        model_arguments.check_positive_int("blocks_per_stage", blocks_per_stage)
        filters = model_arguments.check_positive_ints("stage_filters", stage_filters, NUM_STAGES)
        positions = (
            default_exit_blocks(blocks_per_stage)
            if exit_blocks is None
            else model_arguments.check_exit_blocks(exit_blocks, blocks_per_stage)
        )
        branch_filters = (
            default_exit_filters(filters)
            if exit_filters is None
            else model_arguments.check_positive_ints("exit_filters", exit_filters, NUM_STAGES)
        )
        common = conditioning_lib.check_network_arguments(
            num_classes,
            image_shape,
            variant,
            encoder,
            min_size=MIN_IMAGE_SIZE,
            variants=multi_exit.MULTI_EXIT_VARIANTS,
        )
        shape, encoder = common["image_shape"], common["encoder"]
        kwargs.setdefault("name", f"rdi_resnet{6 * blocks_per_stage + 2}_{variant}")

        # === Functional Model ===
        # The backbone is ResNet's graph with three stages; the exits tap the
        # outputs of the blocks at `positions` of each stage by layer name.
        inputs, conditioning = conditioning_lib.conditioned_inputs(shape, variant, encoder)
        logits = resnet.apply_resnet(
            inputs[conditioning_lib.IMAGE_KEY],
            conditioning,
            num_classes=num_classes,
            stage_filters=filters,
            stage_blocks=(blocks_per_stage,) * NUM_STAGES,
        )
        # (stage, layer) of each exit, in exit order.
        taps = [
            (stage, f"stage{stage + 1}_block{index}_out_relu")
            for stage in range(NUM_STAGES)
            for index in positions
        ]
        feature_layers = [name for _, name in taps]
        features = multi_exit.tap_layer_outputs(inputs, logits, feature_layers)
        outputs = {}
        for exit_index, ((stage, _), feature) in enumerate(zip(taps, features), start=1):
            outputs[multi_exit.exit_output_name(exit_index)] = apply_rdi_exit(
                feature,
                conditioning,
                num_classes=num_classes,
                conv_filters=branch_filters[stage],
                conv_stride=EXIT_CONV_STRIDES[stage],
                name=f"exit{exit_index}",
            )
        outputs[multi_exit.FINAL_OUTPUT_NAME] = logits
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.save_config(
            **common,
            stage_filters=filters,
            blocks_per_stage=int(blocks_per_stage),
            exit_blocks=None if exit_blocks is None else positions,
            exit_filters=None if exit_filters is None else branch_filters,
        )
        self.exit_feature_layers: Tuple[str, ...] = tuple(feature_layers)
        self.num_exits = len(feature_layers)
