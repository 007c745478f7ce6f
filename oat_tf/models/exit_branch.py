"""Side-exit branches of multi-exit (RDI-Nets) networks, plain or conditioned on λ.

An exit branch turns the features of a backbone stage into logits with a few
cheap layers (SPEC §3, the paper's Appendix B: pooling, a light convolution,
fully connected layers), in this order:

0. optional max-pool of `prepool_size` before everything else;
1. optional 3×3 convolution (`conv_filters` channels, stride `conv_stride`,
   no padding), with a normalisation (and FiLM in the OAT variants) when
   `use_batch_norm`, then ReLU;
2. optional max-pool of `pool_size`, or a global average pool;
3. flatten;
4. hidden dense layers, each Dense [+ normalisation (+ FiLM)] + ReLU, with
   dropout after the first;
5. Dense(num_classes) logits.

Normalisations go through `oat_tf.models.conditioning.apply_normalization`, the
same code path as the backbones: dual BN routed by λ == 0 and FiLM on the λ
code for "oat", one BN and FiLM for "oat_single_bn". A multi-exit OAT network
therefore has both its λ and its exit thresholds chosen at test time.

Layer names are prefixed with `name`: `{name}_prepool`, `{name}_conv`, `{name}_conv_bn`,
`{name}_conv_film`, `{name}_conv_relu`, `{name}_pool` (or `{name}_gap`),
`{name}_flatten`, `{name}_fc{i}` with `{name}_fc{i}_{bn,film,relu}`,
`{name}_fc1_dropout` and `{name}_logits`.

Example (SPEC §3's first SmallCNN exit):

```python
logits = apply_exit_branch(
    features, conditioning, num_classes=10, name="exit1",
    conv_filters=16, conv_stride=2, pool_size=2, hidden_units=(200, 200), dropout=0.5,
)
```

`ExitBranch` holds the same arguments, plus the backbone layer whose output
the branch reads, as one serialisable value: a multi-exit network
(`oat_tf.models.multi_exit_network.MultiExitNetwork`) is a backbone and a
list of them.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import small_cnn

CONV_KERNEL_SIZE = 3


class FeaturesTooSmallError(ValueError):
    """The features are smaller than an exit branch's pooling or convolution needs."""


def _positive_int_or_none(value, argument: str) -> Optional[int]:
    """Returns `value` as an int if it is None or a positive int, else raises."""
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise ValueError(
            f"`{argument}` must be None or a positive int. Received: {argument}={value!r}"
        )
    return int(value)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _static_spatial_size(x: keras.KerasTensor) -> Sequence[Optional[int]]:
    return tuple(x.shape[1:-1])


def apply_exit_branch(
    x: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    *,
    num_classes: int,
    name: str,
    conv_filters: Optional[int] = None,
    conv_stride: int = 1,
    prepool_size: Optional[int] = None,
    pool_size: Optional[int] = 2,
    global_pool: bool = False,
    hidden_units: Sequence[int] = (200, 200),
    dropout: float = 0.0,
    use_batch_norm: bool = False,
    seed: Optional[int] = None,
) -> keras.KerasTensor:
    """Appends a side-exit classifier to backbone features.

    Args:
        x: KerasTensor [N, H, W, C], the backbone features at the exit.
        conditioning: `Conditioning` of the network (from
            `conditioning.apply_lambda_conditioning`).
        num_classes: int, number of logits.
        name: str, prefix of every layer name (e.g. "exit1").
        conv_filters: int or None, channels of the 3×3 unpadded convolution;
            None for no convolution.
        conv_stride: int, stride of that convolution.
        prepool_size: int or None, max-pool window (and stride) applied to
            the features before the convolution (`{name}_prepool`); None for
            none.
        pool_size: int or None, max-pool window (and stride) after the
            convolution; None for no max-pool. Ignored when `global_pool`.
        global_pool: bool, global average pooling instead of the max-pool.
        hidden_units: sequence of int, units of the hidden dense layers (may
            be empty: flatten → logits).
        dropout: float in [0, 1), dropout rate after the first hidden layer
            (needs at least one hidden layer when positive).
        use_batch_norm: bool, normalise (and, in the OAT variants, modulate
            with FiLM) after the convolution and every hidden dense layer,
            before the ReLU. Must be True unless `conditioning.variant` is
            "plain", so that the branch is conditioned like the backbone.
        seed: int or None, seed of the dropout layer.

    Returns:
        KerasTensor [N, num_classes], the exit's logits (no softmax).

    Raises:
        ValueError: for a malformed argument.
        FeaturesTooSmallError: a ValueError, for features too small for the
            convolution or the pooling.
    """
    # === Validation ===
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty str. Received: name={name!r}")
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}"
        )
    conv_filters = _positive_int_or_none(conv_filters, "conv_filters")
    if not _is_int(conv_stride) or conv_stride < 1:
        raise ValueError(
            f"`conv_stride` must be a positive int. Received: conv_stride={conv_stride!r}"
        )
    conv_stride = int(conv_stride)
    if conv_filters is None and conv_stride != 1:
        raise ValueError(
            "`conv_stride` must be 1 when there is no convolution (`conv_filters=None`). "
            f"Received: conv_stride={conv_stride}, conv_filters=None"
        )
    pool_size = _positive_int_or_none(pool_size, "pool_size")
    prepool_size = _positive_int_or_none(prepool_size, "prepool_size")
    try:
        units = tuple(hidden_units)
    except TypeError:
        units = None
    if units is None or not all(_is_int(u) and u >= 1 for u in units):
        raise ValueError(
            "`hidden_units` must be a sequence of positive ints (possibly empty). "
            f"Received: hidden_units={hidden_units!r}"
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    if dropout > 0.0 and not units:
        raise ValueError(
            "`dropout` must be 0 when there is no hidden layer (it follows the first one). "
            f"Received: dropout={dropout}, hidden_units={hidden_units!r}"
        )
    if not isinstance(conditioning, conditioning_lib.Conditioning):
        raise ValueError(
            "`conditioning` must be a `Conditioning` (from `apply_lambda_conditioning`). "
            f"Received: conditioning of type {type(conditioning).__name__}"
        )
    if conditioning.variant != "plain" and not use_batch_norm:
        raise ValueError(
            "`use_batch_norm` must be True for a conditioned network (the branch is "
            "conditioned through its normalisations). Received: use_batch_norm="
            f"{use_batch_norm}, conditioning.variant={conditioning.variant!r}"
        )
    if len(x.shape) != 4:
        raise ValueError(
            "`x` must be a 4-D feature map [N, H, W, C]. "
            f"Received: x with shape {tuple(x.shape)}"
        )
    if prepool_size is not None:
        if any(d is not None and d < prepool_size for d in _static_spatial_size(x)):
            raise FeaturesTooSmallError(
                f"`prepool_size` must not exceed the spatial size of the features of exit "
                f"{name!r}. Received: prepool_size={prepool_size} for features of shape "
                f"{tuple(x.shape)}"
            )
        x = keras.layers.MaxPooling2D(prepool_size, name=f"{name}_prepool")(x)
    spatial = _static_spatial_size(x)
    if conv_filters is not None and any(
        d is not None and d < CONV_KERNEL_SIZE for d in spatial
    ):
        raise FeaturesTooSmallError(
            f"`x` must be at least {CONV_KERNEL_SIZE}×{CONV_KERNEL_SIZE} for the unpadded "
            f"convolution of exit {name!r}. Received: x with shape {tuple(x.shape)}"
        )

    # === Functional graph ===
    if conv_filters is not None:
        x = keras.layers.Conv2D(
            conv_filters,
            CONV_KERNEL_SIZE,
            strides=conv_stride,
            padding="valid",
            use_bias=not use_batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv",
        )(x)
        x = small_cnn.normalization_relu(x, conditioning, use_batch_norm, prefix=f"{name}_conv")
    if global_pool:
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
    elif pool_size is not None:
        spatial = _static_spatial_size(x)
        if any(d is not None and d < pool_size for d in spatial):
            raise FeaturesTooSmallError(
                f"`pool_size` must not exceed the spatial size of the features it pools "
                f"in exit {name!r}. Received: pool_size={pool_size} for features of shape "
                f"{tuple(x.shape)}"
            )
        x = keras.layers.MaxPooling2D(pool_size, name=f"{name}_pool")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    for index, layer_units in enumerate(units):
        x = small_cnn.apply_small_cnn_dense_block(
            x,
            conditioning,
            int(layer_units),
            use_batch_norm=use_batch_norm,
            dropout=float(dropout) if index == 0 else 0.0,
            seed=seed,
            name=f"{name}_fc{index + 1}",
        )
    return conditioning_lib.apply_logits(x, num_classes, name=f"{name}_logits")


@dataclasses.dataclass(frozen=True)
class ExitBranch:
    """One side exit: the backbone layer it reads and the arguments of its branch.

    The fields after `feature_layer` are the arguments of `apply_exit_branch`,
    with its defaults (checked there, when the branch is built).

    Attributes:
        feature_layer: str, the backbone layer whose output the branch reads.
        conv_filters, conv_stride, prepool_size, pool_size, global_pool,
        hidden_units, dropout, use_batch_norm, seed: see `apply_exit_branch`.

    Example:
    >>> branch = ExitBranch("block2_relu1", pool_size=2, hidden_units=(200, 200))
    >>> logits = branch.apply(features, conditioning, num_classes=10, name="exit2")
    """

    feature_layer: str
    conv_filters: Optional[int] = None
    conv_stride: int = 1
    prepool_size: Optional[int] = None
    pool_size: Optional[int] = 2
    global_pool: bool = False
    hidden_units: Tuple[int, ...] = (200, 200)
    dropout: float = 0.0
    use_batch_norm: bool = False
    seed: Optional[int] = None

    def __post_init__(self):
        if not isinstance(self.feature_layer, str) or not self.feature_layer:
            raise ValueError(
                "`feature_layer` must be a non-empty str, the name of a backbone layer. "
                f"Received: feature_layer={self.feature_layer!r}"
            )
        try:
            object.__setattr__(self, "hidden_units", tuple(self.hidden_units))
        except TypeError:
            pass  # `apply_exit_branch` names the argument.

    def apply(
        self,
        features: keras.KerasTensor,
        conditioning: conditioning_lib.Conditioning,
        *,
        num_classes: int,
        name: str,
    ) -> keras.KerasTensor:
        """Builds the branch on `features` (`apply_exit_branch`).

        Args:
            features: KerasTensor [N, H, W, C], the output of `feature_layer`.
            conditioning: `Conditioning` of the network.
            num_classes: int, number of logits.
            name: str, prefix of the branch's layer names (e.g. "exit1").

        Returns:
            KerasTensor [N, num_classes], the exit's logits.
        """
        arguments = dataclasses.asdict(self)
        del arguments["feature_layer"]
        return apply_exit_branch(
            features, conditioning, num_classes=num_classes, name=name, **arguments
        )

    def get_config(self) -> Dict[str, Any]:
        """The fields as JSON values (`from_config` rebuilds the branch)."""
        config = dataclasses.asdict(self)
        config["hidden_units"] = list(self.hidden_units)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ExitBranch":
        """Rebuilds an `ExitBranch` from `get_config`.

        Args:
            config: mapping of the fields.

        Returns:
            ExitBranch.

        Raises:
            ValueError: for a field it does not have.
        """
        fields = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(config, Mapping) or set(config) - fields:
            raise ValueError(
                f"`config` must be a mapping of the fields of ExitBranch {sorted(fields)}. "
                f"Received: config={config!r}"
            )
        return cls(**config)
