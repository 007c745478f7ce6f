"""Surrogate losses for the attacks in `oat_tf.attacks.pgd`.

A loss here maps `(logits, labels)` to one value per sample, shape [N]. The
attacks ascend it for untargeted attacks and descend it (on the target labels)
for targeted ones, so a loss never needs to know which kind of attack uses it.

Example:

```python
loss = losses.sparse_cross_entropy(logits, labels)  # [N]
```
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

# (logits, labels) -> per-sample loss [N]. `logits` is whatever the attack's
# `logits_fn` returns (a [N, K] tensor for the default loss).
LossFn = Callable[[Any, tf.Tensor], tf.Tensor]


def sparse_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-sample softmax cross-entropy of integer labels, in float32.

    Args:
        logits: tf.Tensor of shape [N, K], unnormalised class scores (any
            float dtype; computed in float32).
        labels: tf.Tensor of shape [N], integer class ids in [0, K).

    Returns:
        tf.Tensor of shape [N] and dtype float32: `-log softmax(logits)[label]`.
    """
    shape = getattr(logits, "shape", None)  # None for e.g. a dict of exits.
    if shape is None or tf.TensorShape(shape).rank != 2:
        raise ValueError(
            "`logits` must have shape [N, K] (the attack's `logits_fn` must return "
            "class logits, or the attack needs a `loss_fn` for its output). "
            f"Received: logits of type {type(logits).__name__} with shape {shape}"
        )
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)
    )
