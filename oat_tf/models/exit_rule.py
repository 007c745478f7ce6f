"""The early-exit rule of multi-exit networks (RDI-Nets, Appendix C).

A network with M side exits and the final output (M + 1 outputs, exit index
0..M, M meaning "final") lets each input leave at the first side exit i whose
softmax entropy is below its threshold t_i:

    H(p) = −Σ_c p_c log(p_c + ENTROPY_EPSILON),   p = softmax(logits),
    exit(x) = min{i < M : H(f_i(x)) < t_i}, or M when no side exit fires.

The comparison is strict, and a NaN entropy never exits. `entropy` and
`select_exits` compute the rule in TensorFlow (float32); `entropy_numpy` and
`assign_exits` are the numpy forms. The thresholds are chosen by
`oat_tf.evaluation.early_exit.calibrate_thresholds`; the attacks on the rule
are in `oat_tf.attacks.multi_exit`, and the export that skips the work after
an exit is `oat_tf.export.adaptive_saved_model`.

Example:

```python
logits = model({"image": x, "lambda": lam}, training=False)
exit_index, chosen = exit_rule.select_exits([logits[n] for n in names], thresholds)
```
"""

from __future__ import annotations

from typing import Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

# The ε of H(p) = −Σ p log(p + ε). It keeps log finite when a probability
# underflows to 0 (0 · log 0 would be NaN) and its effect is negligible:
# H_ε ≤ H and H − H_ε = Σ_c p_c log(1 + ε / p_c) ≤ K·ε (1e-7 for 10
# classes), below the float32 resolution of the entropy itself (the top
# class's term −p log p ≈ 1 − p is only resolved to ~6e-8). log(1 + ε) rounds
# to 0 in float32, so a one-hot prediction has entropy exactly 0.
ENTROPY_EPSILON = 1e-8


# === Entropy ===


def entropy(logits: tf.Tensor) -> tf.Tensor:
    """Softmax entropy per sample, H(p) = −Σ_c p_c log(p_c + ENTROPY_EPSILON).

    Args:
        logits: tf.Tensor of shape [N, K] (any float dtype; computed in
            float32).

    Returns:
        tf.Tensor of shape [N], float32, in [0, log K] (up to rounding).
    """
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank != 2 or not logits.dtype.is_floating:
        raise ValueError(
            "`logits` must be a float tensor of shape [N, K]. Received: logits "
            f"with dtype {logits.dtype.name} and shape {logits.shape}"
        )
    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return -tf.reduce_sum(probs * tf.math.log(probs + ENTROPY_EPSILON), axis=-1)


def entropy_numpy(logits: np.ndarray) -> np.ndarray:
    """The numpy reference of `entropy`, computed in float64.

    Args:
        logits: array of shape [N, K].

    Returns:
        np.ndarray of shape [N], float64.
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2:
        raise ValueError(
            f"`logits` must have shape [N, K]. Received: logits.shape={logits.shape}"
        )
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    return -(probs * np.log(probs + ENTROPY_EPSILON)).sum(axis=1)


# === Exit rule ===


def select_exits(
    logits_list: Sequence[tf.Tensor], thresholds
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Applies the early-exit rule to the logits of every output.

    Sample n leaves at the first side exit i < M with
    `entropy(logits_list[i])[n] < thresholds[i]`, else at the final output M.
    All outputs are given, so this evaluates the rule; it does not skip work
    (see `oat_tf.export.adaptive_saved_model` for that).

    Args:
        logits_list: sequence of M + 1 tensors of shape [N, K] (same dtype),
            the side exits in order and then the final output.
        thresholds: M entropy thresholds, a sequence, array or float tensor of
            shape [M].

    Returns:
        Tuple `(exit_index, chosen_logits)`: int32 [N] in 0..M, and the
        logits of each sample's exit, shape [N, K].
    """
    if isinstance(logits_list, Mapping) or not isinstance(logits_list, Sequence):
        raise ValueError(
            "`logits_list` must be a sequence of M + 1 logits tensors [N, K], "
            "side exits first and the final output last (for a dict, pass "
            "[logits[name] for name in output_names]). Received: "
            f"{type(logits_list).__name__}"
        )
    if not logits_list:
        raise ValueError("`logits_list` must hold at least the final output. Received: []")
    logits_list = [tf.convert_to_tensor(logits) for logits in logits_list]
    num_side = len(logits_list) - 1
    thresholds = tf.cast(tf.convert_to_tensor(thresholds), tf.float32)
    if not thresholds.shape.is_compatible_with([num_side]):
        raise ValueError(
            f"`thresholds` must have shape [M] = [{num_side}] (one per side exit "
            f"of the {num_side + 1} outputs). Received: thresholds.shape="
            f"{thresholds.shape}"
        )
    stacked = tf.stack(logits_list, axis=1)  # [N, M + 1, K]
    batch = tf.shape(stacked)[0]
    if num_side == 0:
        exit_index = tf.zeros([batch], tf.int32)
    else:
        entropies = tf.stack([entropy(l) for l in logits_list[:-1]], axis=1)
        fires = entropies < thresholds[tf.newaxis, :]
        positions = tf.broadcast_to(tf.range(num_side, dtype=tf.int32), tf.shape(fires))
        exit_index = tf.reduce_min(
            tf.where(fires, positions, tf.fill(tf.shape(fires), num_side)), axis=1
        )
    chosen = tf.gather(stacked, exit_index, axis=1, batch_dims=1)
    return exit_index, chosen


def assign_exits(entropies: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The exit rule in numpy, on precomputed side-exit entropies (float32).

    Args:
        entropies: array [N, M], the entropy of each side exit.
        thresholds: array [M].

    Returns:
        np.ndarray of shape [N], int32 exit indices in 0..M.
    """
    entropies = np.asarray(entropies, np.float32)
    thresholds = np.asarray(thresholds, np.float32)
    if entropies.ndim != 2 or thresholds.shape != (entropies.shape[1],):
        raise ValueError(
            "`entropies` must have shape [N, M] and `thresholds` shape [M]. "
            f"Received: entropies.shape={entropies.shape}, "
            f"thresholds.shape={thresholds.shape}"
        )
    fires = entropies < thresholds[np.newaxis, :]
    num_side = entropies.shape[1]
    first = np.where(fires.any(axis=1), fires.argmax(axis=1), num_side)
    return first.astype(np.int32)
