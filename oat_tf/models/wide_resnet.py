"""Wide ResNet (WRN-depth-width), plain or conditioned on λ (OAT).

Zagoruyko & Komodakis' pre-activation network as in the OAT reference code
(`models/svhn/wide_resnet_OAT.py`, `models/stl10/wide_resnet_CAT.py`): a 3×3
stem convolution with 16 filters, three stages of (depth − 4) / 6 blocks with
16·k, 32·k and 64·k channels (strides 1, 2, 2), a final BN and ReLU, global
average pooling and a dense layer. A block is BN(-FiLM)-ReLU-conv3×3(stride)-
BN(-FiLM)-ReLU-dropout-conv3×3, added to the input, or to a 1×1 convolution of
the first activation where the shape changes.

The reference STL-10 model is the same network at 96×96 (its last feature map
is 24×24 and is average-pooled whole); global average pooling makes one
definition serve 32×32 and 96×96 inputs. As in the reference, the final BN is
dual in the "oat" variant but has no FiLM (`film_after_final_norm` adds one).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import model_arguments
from oat_tf.models import saved_config

STEM_FILTERS = 16
STAGE_BASE_FILTERS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


def blocks_per_stage(depth: int) -> int:
    """Returns (depth − 4) / 6, the blocks in each of the three stages.

    Args:
        depth: int, WRN depth, of the form 6n + 4 with n >= 1.

    Returns:
        int n.

    Raises:
        ValueError: if `depth` is not 6n + 4.
    """
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(
            "`depth` must be of the form 6n + 4 with n >= 1 (10, 16, 22, 28, 34, "
            f"40, ...). Received: depth={depth!r}"
        )
    return (depth - 4) // 6


def apply_wide_basic_block(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    filters: int,
    stride: int,
    *,
    dropout: float = 0.0,
    seed: Optional[int] = None,
    name: str,
) -> keras.KerasTensor:
    """A pre-activation wide basic block.

    BN(-FiLM)-ReLU, then conv3×3(stride)-BN(-FiLM)-ReLU-dropout-conv3×3, added to
    the input or, when the shape changes, to a 1×1 convolution of the first
    activation.

    Args:
        x: KerasTensor [N, H, W, C_in].
        conditioning: `Conditioning` of the network.
        filters: int, output channels.
        stride: int, stride of the first convolution and of the shortcut.
        dropout: float, dropout rate between the two convolutions.
        seed: int or None, seed of the dropout layer.
        name: str, prefix of every layer name (e.g. "stage2_block1").

    Returns:
        KerasTensor [N, H / stride, W / stride, filters].
    """
    y = conditioning_lib.apply_normalization_relu(x, conditioning, prefix=name, suffix="1")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conditioning.conv(
            y, filters, 1, stride, name=f"{name}_shortcut_conv"
        )
    else:
        shortcut = x
    y = conditioning.conv(y, filters, 3, stride, name=f"{name}_conv1")
    y = conditioning_lib.apply_normalization_relu(y, conditioning, prefix=name, suffix="2")
    if dropout > 0.0:
        y = keras.layers.Dropout(dropout, seed=seed, name=f"{name}_dropout")(y)
    y = conditioning.conv(y, filters, 3, 1, name=f"{name}_conv2")
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


@keras.saving.register_keras_serializable(package="oat_tf")
class WideResNet(saved_config.SavedConfig, keras.Model):
    """WRN-depth-width with inputs `{"image", "lambda"}`.

    Layer names: `stem_conv`, then `stage{s}_block{b}_{bn1,film1,relu1,
    shortcut_conv,conv1,bn2,film2,relu2,dropout,conv2,add}`, `final_bn`,
    (`final_film`), `final_relu`, `avg_pool`, `logits`; OAT variants add
    `lambda_encoder` (and `clean_route` for "oat").

    Args:
        depth: int, 6n + 4 (16 for SVHN's WRN-16-8, 40 for STL-10's WRN-40-2).
        width: int, widening factor k.
        num_classes: int, number of logits.
        image_shape: tuple (H, W, C), height and width at least 4 (32×32 for
            SVHN/CIFAR, 96×96 for STL-10).
        variant: str, "plain", "oat" or "oat_single_bn".
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "plain").
        dropout: float in [0, 1), dropout rate inside each block (the OAT
            reference uses 0.3; `build_model` passes that).
        seed: int, seed of the first dropout layer (the i-th gets seed + i).
        film_after_final_norm: bool, modulate the final BN with FiLM too (the
            reference does not).
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in the normalisations, dropout on.

    Returns:
        Logits [N, num_classes] (no softmax).

    Example:
    >>> model = WideResNet(depth=16, width=8, variant="oat", dropout=0.3)
    >>> logits = model({"image": images, "lambda": lambdas})

    Reference:
    - Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016.
    - Wang et al., Once-for-All Adversarial Training, NeurIPS 2020.
    """

    def __init__(
        self,
        depth: int = 16,
        width: int = 8,
        num_classes: int = 10,
        image_shape: Sequence[int] = (32, 32, 3),
        variant: str = "plain",
        encoder: Optional[Any] = None,
        dropout: float = 0.0,
        seed: int = 0,
        film_after_final_norm: bool = False,
        **kwargs,
    ):
        # === Validation ===
        num_blocks = blocks_per_stage(depth)
        model_arguments.check_positive_int("width", width)
        model_arguments.check_rate("dropout", dropout)
        common = conditioning_lib.check_network_arguments(
            num_classes, image_shape, variant, encoder, min_size=4
        )
        shape, encoder = common["image_shape"], common["encoder"]
        kwargs.setdefault("name", f"wrn{depth}_{width}_{variant}")

        # === Functional Model ===
        inputs, conditioning = conditioning_lib.conditioned_inputs(shape, variant, encoder)
        x = conditioning.conv(
            inputs[conditioning_lib.IMAGE_KEY], STEM_FILTERS, 3, 1, name="stem_conv"
        )
        dropout_index = 0
        for stage, (base, stride) in enumerate(zip(STAGE_BASE_FILTERS, STAGE_STRIDES)):
            for block in range(num_blocks):
                x = apply_wide_basic_block(
                    x,
                    conditioning,
                    base * width,
                    stride if block == 0 else 1,
                    dropout=dropout,
                    seed=seed + dropout_index,
                    name=f"stage{stage + 1}_block{block + 1}",
                )
                dropout_index += 1
        x = conditioning_lib.apply_normalization(
            x,
            conditioning,
            norm_name="final_bn",
            film_name="final_film" if film_after_final_norm else None,
        )
        x = keras.layers.ReLU(name="final_relu")(x)
        logits = conditioning_lib.apply_logits(x, num_classes, pool=True)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.save_config(
            depth=depth,
            width=width,
            **common,
            dropout=float(dropout),
            seed=int(seed),
            film_after_final_norm=bool(film_after_final_norm),
        )
