"""The per-λ validation callback writes SA/RA scalars to TensorBoard."""

import os

import numpy as np
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf import evaluation
from oat_tf.training import callbacks
from tests.training import adversarial_trainer_test


def _scalars(log_dir):
    values = {}
    for root, _, files in os.walk(log_dir):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    values[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    return values


def test_lambda_grid_evaluation_logs_every_k_epochs(tmp_path):
    images, labels = adversarial_trainer_test._data(16)
    network = adversarial_trainer_test._network()
    trainer = adversarial_trainer_test._trainer(network)
    validation = tf.data.Dataset.from_tensor_slices((images[:8], labels[:8])).batch(8)
    attack = config_lib.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2)
    callback = callbacks.LambdaGridEvaluation(
        validation, lambdas=(0.0, 0.5), attacks=(attack,), every_epochs=2, log_dir=str(tmp_path)
    )
    train = tf.data.Dataset.from_tensors((images, labels)).repeat()
    trainer.fit(train, epochs=3, steps_per_epoch=1, callbacks=[callback], verbose=0)

    scalars = _scalars(str(tmp_path))
    steps = sorted({step for _, step in scalars})
    assert steps == [2, 3]  # every 2nd epoch, and the last one
    expected = evaluation.evaluate_lambda_grid(network, validation, (0.0, 0.5), (attack,), seed=0)
    assert callback.last_results == expected
    sa_tags = [tag for tag, step in scalars if step == 3 and tag.startswith("sa")]
    assert len(sa_tags) == 2
    for tag in sa_tags:
        lam = "0.0" if "0.0" in tag else "0.5"
        np.testing.assert_allclose(scalars[(tag, 3)], expected["clean_accuracy"][lam], atol=1e-6)
