"""AutoAttack (Croce & Hein, ICML 2020): the standard L∞ ensemble, in native TF.

Standard AutoAttack runs four attacks one after another, each only on the
samples that all earlier ones left classified correctly, and reports the
robust accuracy after each and at the end (the per-sample worst case over the
four):

1. APGD-CE: `apgd.apgd`, cross-entropy, 100 steps, 1 restart, ρ = 0.75.
2. APGD-T: `apgd.apgd_targeted`, targeted DLR loss, 100 steps, 9 target
   classes (the classes ranked 2 … 10 by the clean logits), 1 restart each.
3. FAB-T: `fab.fab_targeted`, 100 steps, 9 target classes, 1 restart each.
4. Square: `square.square_linf`, 5,000 queries, p_init = 0.8.

`autoattack_fast` is a cheaper preset that says what it is: APGD-CE, then
APGD-T with 3 target classes (no FAB-T, no Square). It costs about
100 + 300 forward-backward passes per robust sample against 1,900 gradient
steps plus up to 5,000 queries for the standard version.

The members are ordinary `AttackConfig`s whose `ensemble` field names the
sequence ("AutoAttack", "AutoAttack-fast"); the evaluation
(`oat_tf.evaluation.robust_eval`) runs them in order on the surviving samples
and keys each member's cumulative robust accuracy by its `describe()` name
("AutoAttack: APGD-T-100/9"). `autoattack` here does the same for one batch
and a `logits_fn`, for use outside the evaluation (e.g. a cross-check against
the reference PyTorch implementation, `benchmarks/autoattack_crosscheck.py`).

Example:

```python
from oat_tf.attacks import autoattack

logits_fn = lambda x: model({"image": x, "lambda": lam}, training=False)
x_adv, robust = autoattack.autoattack(
    logits_fn, images, labels, epsilon=8 / 255, version="standard", seed=[0, 1])
robust["AutoAttack: Square-5000"].mean()  # robust accuracy after all four
```
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from oat_tf import config as config_lib
from oat_tf.attacks import core
from oat_tf.attacks import registry

# The presets live in the config (`config.autoattack_configs`), so that flag
# parsing needs no TensorFlow; the names are repeated here for callers.
ENSEMBLE_NAMES = config_lib.AUTOATTACK_NAMES
VERSIONS = tuple(ENSEMBLE_NAMES)
attack_configs = config_lib.autoattack_configs


def autoattack(
    logits_fn: core.LogitsFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    version: str = "standard",
    seed: core.Seed,
) -> Tuple[tf.Tensor, Dict[str, np.ndarray]]:
    """Runs AutoAttack on one batch, eagerly, each attack on the survivors only.

    Attack i runs with the seed `core.restart_seeds(seed, n)[i]` on the samples
    classified correctly on the clean image and under every earlier attack.

    Args:
        logits_fn: callable mapping images [N, H, W, C] to logits [N, K] in
            inference mode (a closure over λ, width, ...).
        images: tf.Tensor of shape [N, H, W, C], float images in [0, 1].
        labels: tf.Tensor of shape [N], integer true class ids.
        epsilon: float in [0, 1], the L∞ radius.
        version: "standard" or "fast" (see `attack_configs`).
        seed: shape [2] integer tensor or pair of ints.

    Returns:
        Tuple `(x_adv, robust)`: the adversarial images [N, H, W, C] (per
        sample the image of the attack that broke it, the clean image where
        the clean image is already misclassified or nothing broke it), and
        {member name: [N] bool}, classified correctly after that member and
        all earlier ones (the last entry is the AutoAttack robustness).
    """
    configs = attack_configs(version, epsilon)
    images = tf.convert_to_tensor(images, tf.float32)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    seeds = core.restart_seeds(seed, len(configs))
    x_adv = images.numpy().copy()
    robust = _correct(logits_fn(images), labels)
    results: Dict[str, np.ndarray] = {}
    for index, attack in enumerate(configs):
        remaining = np.flatnonzero(robust)
        if remaining.size:
            subset_images = tf.gather(images, remaining)
            subset_labels = tf.gather(labels, remaining)
            adversarial = registry.run_attack(
                attack, logits_fn, subset_images, subset_labels, seed=seeds[index]
            )
            broken = ~_correct(logits_fn(adversarial), subset_labels)
            x_adv[remaining[broken]] = adversarial.numpy()[broken]
            robust = robust.copy()
            robust[remaining[broken]] = False
        results[attack.describe()] = robust
        logging.info(
            "%s: robust accuracy %.2f%% (%d of %d samples attacked).",
            attack.describe(),
            100.0 * robust.mean(),
            remaining.size,
            robust.size,
        )
    return tf.constant(x_adv), results


def _correct(logits: tf.Tensor, labels: tf.Tensor) -> np.ndarray:
    return np.asarray(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels))
