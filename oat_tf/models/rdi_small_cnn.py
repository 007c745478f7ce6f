"""RDI-SmallCNN: SmallCNN with two side exits (SPEC §3), plain or conditioned on λ.

Backbone (the SmallCNN of `oat_tf.models.small_cnn`, same layer names):

    conv3×3(32) → ReLU → [exit 1] → conv3×3(32) → ReLU → maxpool2 →
    conv3×3(64) → ReLU → [exit 2] → conv3×3(64) → ReLU → maxpool2 →
    FC 200 → ReLU → dropout 0.5 → FC 200 → ReLU → FC 10          ("final")

Exits (`oat_tf.models.exit_branch.apply_exit_branch`):

    exit 1: conv3×3(16, stride 2) → ReLU → maxpool2 → FC 200 → ReLU → dropout →
            FC 200 → ReLU → FC 10
    exit 2: maxpool2 → FC 200 → ReLU → dropout → FC 200 → ReLU → FC 10

No padding anywhere. With `use_batch_norm` a normalisation (followed by FiLM
in the OAT variants) comes after every convolution and hidden dense layer,
exit branches included, before the ReLU. The plain network without it is the
paper's RDI-SmallCNN (the default for "plain").
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import exit_branch
from oat_tf.models import model_arguments
from oat_tf.models import multi_exit
from oat_tf.models import saved_config
from oat_tf.models import small_cnn

# Where the side exits attach: after the ReLU of the first and of the third
# convolution (block 1's first, block 2's first).
EXIT_FEATURE_LAYERS = ("block1_relu1", "block2_relu1")


@keras.saving.register_keras_serializable(package="oat_tf")
class RDISmallCNN(saved_config.SavedConfig, keras.Model):
    """SmallCNN with two side exits, inputs `{"image", "lambda"}`, dict of logits out.

    Layer names: the backbone's are those of `SmallCNN`
    (`block{1,2}_{conv,bn,film,relu}{1,2}`, `block{1,2}_pool`, `flatten`,
    `fc{1,2}`, ..., `logits`); the exits' are prefixed `exit1_` and `exit2_`
    (`exit_branch.apply_exit_branch`).

    Args:
        num_classes: int, number of logits of every output.
        image_shape: tuple (H, W, C); 28×28×1 for MNIST (at least 16×16).
        variant: str, "plain", "oat" or "oat_single_bn".
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "plain").
        filters: pair of int, channels of the two convolutional blocks.
        hidden_units: int, units of the backbone's two hidden dense layers.
        dropout: float in [0, 1), dropout after the backbone's first hidden
            dense layer.
        use_batch_norm: bool or None, normalise after every convolution and
            hidden dense layer (exits included); None: False for "plain" (the
            paper's network), True for the OAT variants, which require it.
        exit_conv_filters: int, channels of exit 1's strided convolution.
        exit_hidden_units: int, units of the two hidden dense layers of each
            exit.
        exit_dropout: float in [0, 1) or None, dropout after each exit's
            first hidden layer; None: `dropout`.
        seed: int, seed of the backbone's dropout layer; exit i's uses
            `seed + i`.
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in the normalisations, dropout on.

    Returns:
        Dict of logits [N, num_classes]: "exit_1", "exit_2", "final".

    Attributes:
        exit_feature_layers: ("block1_relu1", "block2_relu1"), where the side
            exits attach (`oat_tf.models.multi_exit.stage_views`).

    Example:
    >>> model = RDISmallCNN(variant="oat", filters=(4, 8), hidden_units=16)
    >>> outputs = model({"image": digits, "lambda": lambdas})
    >>> outputs["exit_1"], outputs["final"]

    Reference:
    - Hu et al., Triple Wins: Boosting Accuracy, Robustness and Efficiency
      Together by Enabling Input-Adaptive Inference, ICLR 2020.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: Sequence[int] = (28, 28, 1),
        variant: str = "plain",
        encoder: Optional[Any] = None,
        filters: Sequence[int] = (32, 64),
        hidden_units: int = 200,
        dropout: float = 0.5,
        use_batch_norm: Optional[bool] = None,
        exit_conv_filters: int = 16,
        exit_hidden_units: int = 200,
        exit_dropout: Optional[float] = None,
        seed: int = 0,
        **kwargs,
    ):
        # === Validation ===
        filters = model_arguments.check_positive_ints("filters", filters, length=2)
        for argument, value in (
            ("hidden_units", hidden_units),
            ("exit_conv_filters", exit_conv_filters),
            ("exit_hidden_units", exit_hidden_units),
        ):
            model_arguments.check_positive_int(argument, value)
        model_arguments.check_rate("dropout", dropout)
        exit_dropout = model_arguments.check_rate(
            "exit_dropout", dropout if exit_dropout is None else exit_dropout
        )
        common = conditioning_lib.check_network_arguments(
            num_classes,
            image_shape,
            variant,
            encoder,
            min_size=small_cnn.min_image_size(len(filters)),
            variants=multi_exit.MULTI_EXIT_VARIANTS,
        )
        shape, encoder = common["image_shape"], common["encoder"]
        if use_batch_norm is None:
            use_batch_norm = variant != "plain"
        model_arguments.check_batch_norm_for_variant(use_batch_norm, variant, optional=True)
        kwargs.setdefault("name", f"rdi_small_cnn_{variant}")

        # === Functional Model ===
        # The backbone is SmallCNN's graph; the exits tap its features by layer name.
        inputs, conditioning = conditioning_lib.conditioned_inputs(shape, variant, encoder)
        backbone = dict(
            filters=filters,
            hidden_units=int(hidden_units),
            dropout=float(dropout),
            use_batch_norm=bool(use_batch_norm),
            seed=int(seed),
        )
        image = inputs[conditioning_lib.IMAGE_KEY]
        logits = small_cnn.apply_small_cnn(image, conditioning, num_classes=num_classes, **backbone)
        features = multi_exit.tap_layer_outputs(inputs, logits, EXIT_FEATURE_LAYERS)
        exit_kwargs = dict(
            num_classes=num_classes,
            hidden_units=(exit_hidden_units, exit_hidden_units),
            dropout=float(exit_dropout),
            use_batch_norm=bool(use_batch_norm),
            pool_size=2,
        )
        outputs = {
            multi_exit.exit_output_name(1): exit_branch.apply_exit_branch(
                features[0],
                conditioning,
                name="exit1",
                conv_filters=exit_conv_filters,
                conv_stride=2,
                seed=seed + 1,
                **exit_kwargs,
            ),
            multi_exit.exit_output_name(2): exit_branch.apply_exit_branch(
                features[1], conditioning, name="exit2", seed=seed + 2, **exit_kwargs
            ),
            multi_exit.FINAL_OUTPUT_NAME: logits,
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.save_config(
            **common,
            **backbone,
            exit_conv_filters=int(exit_conv_filters),
            exit_hidden_units=int(exit_hidden_units),
            exit_dropout=float(exit_dropout),
        )
        self.exit_feature_layers = EXIT_FEATURE_LAYERS
