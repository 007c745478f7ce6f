"""Jacobian saliency: input gradients of the clean loss per λ (paper Fig. 10-12).

The OAT paper (§4.5, after Etmann et al., ICML 2019) shows the Jacobian
∇ₓ L_c of the *clean* cross-entropy loss, L_c = CE(f(x, λ), y) with the true
label y, next to the image x: the more robust the model (the larger λ), the
more the map looks like the image. This module computes those maps for any
model called as `model({"image": x, "lambda": λ}, training=False)` -> logits:
a Keras network or `loading.SavedModelClassifier` (gradients flow through the
serving signature).

- `input_gradients(model, images, labels, lam)`: ∇ₓ CE per image, [N, H, W, C].
  Each image's map is the gradient of its own loss (the batch loss is a sum
  and the model runs in inference mode, so images do not interact).
- `display_maps(gradients)`: maps in [0, 1] for display, per map: zero is
  mid-gray 0.5, ±3 root-mean-square of the map are 0 and 1 (values beyond are
  clipped; the visualisation of Tsipras et al., ICLR 2019). An all-zero
  gradient (a sign of gradient masking) is a flat mid-gray map.
- `alignment(images, gradients)`: |cos(x, ∇ₓ L_c)| per image, the
  normalised alignment of Etmann et al.; 0 for a zero gradient.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf


def select_indices(num_examples: int, count: int, indices: Optional[Sequence[int]] = None) -> list:
    """Returns the example indices to show: `indices`, or the first `count`.

    Args:
        num_examples: int, examples in the split.
        count: int >= 0, how many of the first examples (without `indices`).
        indices: optional sequence of int, explicit indices into the split.

    Returns:
        list of int.

    Raises:
        ValueError: an index is out of range or repeated, or `count` < 0.
    """
    if indices:
        chosen = [int(i) for i in indices]
        bad = [i for i in chosen if not 0 <= i < num_examples]
        if bad or len(set(chosen)) != len(chosen):
            raise ValueError(
                f"`indices` must be distinct integers in [0, {num_examples}). Received: indices={list(indices)}"
            )
        return chosen
    if count < 0:
        raise ValueError(f"`count` must be >= 0. Received: count={count}")
    return list(range(min(count, num_examples)))


def input_gradients(model, images, labels, lam: float) -> np.ndarray:
    """Returns ∇ₓ CE(f(x, λ), y) for every image.

    Args:
        model: callable as `model({"image": x, "lambda": lam}, training=False)`
            returning logits [N, K].
        images: float array [N, H, W, C] in [0, 1].
        labels: int array [N], the true classes.
        lam: float, the λ every image is evaluated at.

    Returns:
        np.ndarray float32 [N, H, W, C].

    Raises:
        ValueError: the logits do not depend on the images.
    """
    images = tf.convert_to_tensor(np.asarray(images, np.float32))
    labels = tf.convert_to_tensor(np.asarray(labels).reshape([-1]), tf.int32)
    lam_vector = tf.fill(tf.shape(images)[:1], tf.constant(float(lam), tf.float32))
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = tf.cast(model({"image": images, "lambda": lam_vector}, training=False), tf.float32)
        loss = tf.reduce_sum(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
    gradients = tape.gradient(loss, images)
    if gradients is None:
        raise ValueError(
            "`model` must give logits that depend on the input image. Received: a model "
            "whose loss has no gradient with respect to the image"
        )
    return gradients.numpy()


def display_maps(gradients: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """Scales each gradient map to [0, 1] for display (0 → 0.5).

    Args:
        gradients: float array [..., H, W, C]; each [H, W, C] map is scaled
            on its own.
        clip: float > 0, the map's root-mean-square multiple mapped to 0 and 1.

    Returns:
        np.ndarray float32, same shape, values in [0, 1].
    """
    if clip <= 0:
        raise ValueError(f"`clip` must be positive. Received: clip={clip}")
    g = np.asarray(gradients, np.float64)
    rms = np.sqrt(np.mean(np.square(g), axis=(-3, -2, -1), keepdims=True))
    scale = clip * rms
    scaled = np.divide(g, scale, out=np.zeros_like(g), where=scale > 0)
    return (0.5 + 0.5 * np.clip(scaled, -1.0, 1.0)).astype(np.float32)


def alignment(images: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Returns |cos(x, g)| per image: |<x, g>| / (‖x‖ ‖g‖), 0 where g = 0.

    Args:
        images: float array [N, H, W, C].
        gradients: float array [N, H, W, C].

    Returns:
        np.ndarray float64 [N], values in [0, 1].
    """
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    g = np.asarray(gradients, np.float64).reshape(len(gradients), -1)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(g, axis=1)
    dots = np.abs(np.sum(x * g, axis=1))
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
