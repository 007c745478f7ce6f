"""Mixed precision: the Keras dtype policy a network is built under.

A network built under `"mixed_float16"` or `"mixed_bfloat16"` keeps its
variables in float32 and computes its layers in the low-precision type; its
normalisations (Keras' and `DualBatchNormalization`) and its logits layers
compute in float32, so the logits an attack or a loss reads are float32 under
every policy. `"float32"` is full precision.

A Keras layer takes its dtype policy when it is created. `dtype_policy_scope`
sets Keras' global policy for the duration of a block (the construction of a
network) and restores the previous one when the block ends, so no policy
outlives the network it was meant for.

Loss scaling: float16 has 5 exponent bits, so small gradients underflow to
zero. Training under `"mixed_float16"` wraps the optimizer in a loss-scale
optimizer (`oat_tf.training.optimizers.make_optimizer`), and attacks scale
their objective before differentiating it (`oat_tf.attacks.core.input_gradient`).
bfloat16 has float32's exponent range and needs neither.

Example:

```python
with precision.dtype_policy_scope("mixed_bfloat16"):
    network = SmallCNN(num_classes=10, image_shape=(28, 28, 1), variant="oat", encoder=None)
```
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras

from oat_tf import config as config_lib

# Keras policy names; "float32" is full precision.
PRECISIONS = config_lib.PRECISIONS


def check_precision(precision: str) -> str:
    """Returns `precision` if it names a policy of `PRECISIONS`.

    Args:
        precision: str, "float32", "mixed_float16" or "mixed_bfloat16".

    Returns:
        The same string.

    Raises:
        ValueError: for any other value.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"`mixed_precision` must be one of {PRECISIONS}. Received: mixed_precision={precision!r}"
        )
    return precision


def uses_loss_scaling(precision: str) -> bool:
    """Whether training under `precision` needs loss scaling (float16 only).

    Args:
        precision: str, one of `PRECISIONS`.

    Returns:
        bool.
    """
    return check_precision(precision) == "mixed_float16"


@contextlib.contextmanager
def dtype_policy_scope(precision: str) -> Iterator[None]:
    """Builds the layers created inside the block under the policy `precision`.

    Args:
        precision: str, one of `PRECISIONS`.

    Yields:
        None; on exit Keras' global dtype policy is what it was on entry.

    Raises:
        ValueError: if `precision` is not one of `PRECISIONS`.
    """
    check_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def compute_dtype(model: keras.layers.Layer) -> str:
    """The dtype a model's convolutions compute in: "float32", "float16" or "bfloat16".

    Args:
        model: a Keras layer or model.

    Returns:
        str, the compute dtype of the model's own policy.
    """
    return keras.backend.standardize_dtype(model.compute_dtype)
