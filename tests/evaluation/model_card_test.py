"""The model card: what a run records for the export's assets.extra/model_card.json."""

import json

from oat_tf import config as config_lib
from oat_tf.evaluation import model_card


def test_model_card_records_the_objective_and_bn_statistics():
    config = config_lib.ExperimentConfig(
        model=config_lib.ModelConfig(variant="mixture_bn"),
        train=config_lib.TrainConfig(objective="mixed_batch", clean_fraction=0.3),
        evaluation=config_lib.EvalConfig(test_bn="clean", bn_statistics="batch"),
        export_bn_statistics="batch",
    )
    card = model_card.make_model_card(config_lib.to_dict(config))
    assert (card["objective"], card["clean_fraction"], card["test_bn"]) == ("mixed_batch", 0.3, "clean")
    assert card["bn_statistics"] == "batch" and card["export_bn_statistics"] == "batch"
    # A config.json saved before these settings existed gives their defaults.
    old = json.loads(json.dumps(config_lib.to_dict(config_lib.ExperimentConfig())))
    for section, key in (("train", "objective"), ("train", "clean_fraction"),
                         ("evaluation", "test_bn"), ("evaluation", "bn_statistics")):
        del old[section][key]
    del old["export_bn_statistics"]
    card = model_card.make_model_card(old)
    assert (card["objective"], card["clean_fraction"], card["test_bn"]) == ("oat", 0.5, "adversarial")
    assert card["bn_statistics"] == "moving" and card["export_bn_statistics"] == "moving"
    json.dumps(card)


def test_model_card_lists_the_measured_operating_points():
    config = config_lib.to_dict(config_lib.ExperimentConfig())
    result = {"lambdas": [0.0, 0.5], "clean_accuracy": {"0.0": 0.9, "0.5": 0.8}, "robust_accuracy": {},
              "worst_case_accuracy": {"0.0": 0.1, "0.5": 0.4}, "num_examples": 10}
    card = model_card.make_model_card(config, result)
    assert card["operating_points"] == [{"lambda": 0.0, "width": 1.0}, {"lambda": 0.5, "width": 1.0}]
    json.dumps(card)
