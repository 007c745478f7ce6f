"""Tests of oat_tf.evaluation.loading's config readers (the network loaders are covered by the CLI tests)."""

import json

from oat_tf import config as config_lib
from oat_tf.evaluation import loading


def _saved(data: config_lib.DataConfig) -> dict:
    """A run's config.json as training writes it and `read_run_config` reads it."""
    return json.loads(json.dumps(config_lib.to_dict(config_lib.ExperimentConfig(data=data))))


DATA = config_lib.DataConfig(
    dataset="npz:/data/digits.npz", validation_size=500, num_train_examples=2000, num_eval_examples=300,
    augment=True,
)


def test_evaluation_reads_the_split_settings_only():
    got = loading.data_config_from_run(_saved(DATA))
    assert got == config_lib.DataConfig(dataset="npz:/data/digits.npz", validation_size=500, num_eval_examples=300)
    # An explicit number of test examples wins over the run's.
    assert loading.data_config_from_run(_saved(DATA), 50).num_eval_examples == 50


def test_training_also_reads_the_training_subset_and_augmentation():
    assert loading.data_config_from_run(_saved(DATA), training=True) == DATA
    defaults = config_lib.DataConfig(dataset="mnist")
    assert loading.data_config_from_run(_saved(defaults), training=True) == defaults


def test_a_run_saved_before_the_training_settings_existed_reads_their_defaults():
    saved = _saved(DATA)
    del saved["data"]["num_train_examples"], saved["data"]["augment"]
    got = loading.data_config_from_run(saved, training=True)
    assert got.num_train_examples is None and got.augment is None
