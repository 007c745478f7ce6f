"""SmallCNN for MNIST-sized digits (SPEC §3 without exits), plain or conditioned on λ.

conv3×3(32) → conv3×3(32) → maxpool2 → conv3×3(64) → conv3×3(64) → maxpool2 →
FC 200 → dropout 0.5 → FC 200 → FC K, without padding and with ReLU. With
`use_batch_norm` (the default) a normalisation, followed by FiLM in the OAT
variants, comes after every convolution and hidden dense layer, before the
ReLU; without it the network is the original RDI-Nets backbone (variant
"plain" only).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import model_arguments
from oat_tf.models import saved_config


def _conv_output_size(size: int, num_blocks: int) -> int:
    """Spatial size after the convolutional blocks (two valid 3×3 convs + pool each)."""
    for _ in range(num_blocks):
        size = (size - 4) // 2
    return size


def min_image_size(num_blocks: int) -> int:
    """The smallest height and width that leave at least 1×1 after `num_blocks` blocks.

    Args:
        num_blocks: int, the convolutional blocks (`len(filters)`).

    Returns:
        int, e.g. 16 for two blocks.
    """
    size = 4
    while _conv_output_size(size, num_blocks) < 1:
        size += 1
    return size


def normalization_relu(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    use_batch_norm: bool,
    *,
    prefix: str,
    suffix: str = "",
) -> keras.KerasTensor:
    """BN(-FiLM) and ReLU after a layer (`apply_normalization_relu`), or the ReLU alone.

    Args:
        x: KerasTensor, the layer's output.
        conditioning: `Conditioning` of the network.
        use_batch_norm: bool, normalise (and modulate) before the ReLU.
        prefix: str, the unit's prefix (e.g. "block1", "fc1").
        suffix: str, the unit's index in its block ("" for none).

    Returns:
        KerasTensor shaped like `x`.
    """
    if use_batch_norm:
        return conditioning_lib.apply_normalization_relu(x, conditioning, prefix=prefix, suffix=suffix)
    return conditioning.relu(x, name=f"{prefix}_relu{suffix}")


def apply_conv_unit(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    filters: int,
    *,
    use_batch_norm: bool,
    block: str,
    index: int,
) -> keras.KerasTensor:
    """One unpadded 3×3 convolution of a SmallCNN block, with BN(-FiLM) and ReLU.

    Half of `apply_small_cnn_conv_block`; RDI-SmallCNN's exits attach between
    the two.

    Args:
        x: KerasTensor [N, H, W, C].
        conditioning: `Conditioning` of the network.
        filters: int, output channels.
        use_batch_norm: bool, normalise (and modulate) after the convolution.
        block: str, the block's prefix (e.g. "block1").
        index: int, the convolution's index in its block (1 or 2).

    Returns:
        KerasTensor [N, H − 2, W − 2, filters].
    """
    x = conditioning.conv(
        x, filters, 3, padding="valid", use_bias=not use_batch_norm, name=f"{block}_conv{index}"
    )
    return normalization_relu(x, conditioning, use_batch_norm, prefix=block, suffix=str(index))


def apply_small_cnn_conv_block(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    filters: int,
    *,
    use_batch_norm: bool,
    name: str,
) -> keras.KerasTensor:
    """Two unpadded 3×3 convolutions, each with BN(-FiLM) and ReLU, then max-pool 2.

    Args:
        x: KerasTensor [N, H, W, C].
        conditioning: `Conditioning` of the network.
        filters: int, channels of both convolutions.
        use_batch_norm: bool, normalise (and modulate) after each convolution.
        name: str, prefix of every layer name (e.g. "block1").

    Returns:
        KerasTensor [N, (H − 4) // 2, (W − 4) // 2, filters].
    """
    for index in (1, 2):
        x = apply_conv_unit(
            x, conditioning, filters, use_batch_norm=use_batch_norm, block=name, index=index
        )
    pool = conditioning.layer(f"{name}_pool", lambda: keras.layers.MaxPooling2D(2, name=f"{name}_pool"))
    return pool(x)


def apply_small_cnn_dense_block(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    units: int,
    *,
    use_batch_norm: bool,
    dropout: float = 0.0,
    seed: Optional[int] = None,
    flatten: bool = False,
    name: str,
) -> keras.KerasTensor:
    """A hidden dense layer with BN(-FiLM), ReLU and optional dropout.

    Args:
        x: KerasTensor [N, F], or [N, H, W, C] with `flatten`.
        conditioning: `Conditioning` of the network.
        units: int, output features.
        use_batch_norm: bool, normalise (and modulate) before the ReLU.
        dropout: float, dropout rate after the ReLU (0: none).
        seed: int or None, seed of the dropout layer.
        flatten: bool, the layer reads the flattened feature map
            (`Conditioning.flatten_dense`; a slimmable network computes it
            as one convolution over the whole map).
        name: str, prefix of every layer name (e.g. "fc1").

    Returns:
        KerasTensor [N, units].
    """
    make_dense = conditioning.flatten_dense if flatten else conditioning.dense
    x = make_dense(x, units, use_bias=not use_batch_norm, name=name)
    x = normalization_relu(x, conditioning, use_batch_norm, prefix=name)
    if dropout > 0.0:
        x = conditioning.dropout(x, dropout, seed=seed, name=f"{name}_dropout")
    return x


def apply_small_cnn(
    image: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    *,
    num_classes: int,
    filters: Sequence[int],
    hidden_units: int,
    dropout: float,
    use_batch_norm: bool,
    seed: int,
) -> keras.KerasTensor:
    """The SmallCNN graph from the image to the logits: the one definition of the network.

    `SmallCNN` wraps it in a model (whose features the RDI-Nets exits tap
    by layer name, `rdi_networks.rdi_small_cnn`);
    `SlimmableSmallCNN` runs it with its slimmable layer kit. Every layer is
    made through `conditioning` (the layer kit). Arguments are those of
    `SmallCNN`, already checked.

    Args:
        image: KerasTensor [N, H, W, C], the image input.
        conditioning: `Conditioning` of the network.
        num_classes: int, number of logits.
        filters: sequence of int, channels of each convolutional block.
        hidden_units: int, units of the two hidden dense layers.
        dropout: float, dropout after the first hidden dense layer.
        use_batch_norm: bool, normalise after every convolution and hidden
            dense layer.
        seed: int, seed of the dropout layer.

    Returns:
        KerasTensor [N, num_classes], the logits (layer "logits").
    """
    x = image
    for index, block_filters in enumerate(filters):
        x = apply_small_cnn_conv_block(
            x, conditioning, block_filters, use_batch_norm=use_batch_norm, name=f"block{index + 1}"
        )
    x = apply_small_cnn_dense_block(
        x,
        conditioning,
        hidden_units,
        use_batch_norm=use_batch_norm,
        dropout=dropout,
        seed=seed,
        flatten=True,
        name="fc1",
    )
    x = apply_small_cnn_dense_block(
        x, conditioning, hidden_units, use_batch_norm=use_batch_norm, name="fc2"
    )
    return conditioning.logits(x, num_classes)


@keras.saving.register_keras_serializable(package="oat_tf")
class SmallCNN(saved_config.SavedConfig, keras.Model):
    """The RDI-Nets SmallCNN backbone with inputs `{"image", "lambda"}`.

    Layer names: `block{1,2}_{conv1,bn1,film1,relu1,conv2,bn2,film2,relu2,
    pool}`, `flatten`, `fc{1,2}`, `fc{1,2}_{bn,film,relu}`, `fc1_dropout`,
    `logits`; OAT variants add `lambda_encoder` (and `clean_route` for "oat").

    Args:
        num_classes: int, number of logits.
        image_shape: tuple (H, W, C); 28×28×1 for MNIST (at least 16×16 with
            the default two blocks).
        variant: str, "plain", "oat" or "oat_single_bn".
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "plain").
        filters: sequence of int, channels of each convolutional block.
        hidden_units: int, units of the two hidden dense layers.
        dropout: float in [0, 1), dropout after the first hidden dense layer.
        use_batch_norm: bool, normalise after every convolution and hidden
            dense layer; must be True for the OAT variants.
        seed: int, seed of the dropout layer.
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in the normalisations, dropout on.

    Returns:
        Logits [N, num_classes] (no softmax).

    Example:
    >>> model = SmallCNN(variant="oat", filters=(4, 8), hidden_units=16)
    >>> logits = model({"image": digits, "lambda": lambdas})

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
        use_batch_norm: bool = True,
        seed: int = 0,
        **kwargs,
    ):
        # === Validation ===
        filters = model_arguments.check_positive_ints("filters", filters)
        model_arguments.check_positive_int("hidden_units", hidden_units)
        model_arguments.check_rate("dropout", dropout)
        common = conditioning_lib.check_network_arguments(
            num_classes, image_shape, variant, encoder, min_size=min_image_size(len(filters))
        )
        shape, encoder = common["image_shape"], common["encoder"]
        model_arguments.check_batch_norm_for_variant(use_batch_norm, variant)
        kwargs.setdefault("name", f"small_cnn_{variant}")

        # === Functional Model ===
        inputs, conditioning = conditioning_lib.conditioned_inputs(shape, variant, encoder)
        image = inputs[conditioning_lib.IMAGE_KEY]
        logits = apply_small_cnn(image, conditioning, num_classes=num_classes, filters=filters,
                                 hidden_units=hidden_units, dropout=dropout,
                                 use_batch_norm=use_batch_norm, seed=seed)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.save_config(
            **common,
            filters=filters,
            hidden_units=int(hidden_units),
            dropout=float(dropout),
            use_batch_norm=bool(use_batch_norm),
            seed=int(seed),
        )
