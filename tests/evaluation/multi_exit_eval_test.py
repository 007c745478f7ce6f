"""Tests of the multi-exit evaluation and its report on a small RDI-SmallCNN."""

import json

import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config as config_lib
from oat_tf.evaluation import multi_exit_eval
from oat_tf.models import exit_rule
from oat_tf.models import multi_exit
from oat_tf.models import rdi_networks

NAMES = ("exit_1", "exit_2", "final")


def _model(variant="plain", seed=0):
    import keras  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(seed)
    encoder = {"lambda_values": (0.0, 1.0), "scheme": "rand", "dim": 4, "seed": 0} if variant != "plain" else None
    return rdi_networks.rdi_small_cnn(
        variant=variant, encoder=encoder, filters=(4, 8), hidden_units=16,
        exit_conv_filters=4, exit_hidden_units=16,
    )


def _data(num=24, seed=0):
    rng = np.random.RandomState(seed)
    images = rng.uniform(size=(num, 28, 28, 1)).astype("float32")
    labels = rng.randint(0, 10, num).astype("int32")
    return images, labels


def _dataset(images, labels, batch_size=10):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


def _outputs(model, images, lam):
    out = model({"image": images, "lambda": np.full([len(images)], lam, np.float32)}, training=False)
    return {n: np.asarray(out[n]) for n in NAMES}


def _thresholds_for_mixed_exits(outputs):
    # Medians of each side exit's entropy: some samples leave at every output.
    entropies = np.stack([exit_rule.entropy_numpy(outputs[n]) for n in NAMES[:-1]], axis=1)
    return np.median(entropies, axis=0).astype(np.float32), entropies


def test_clean_accuracy_exits_and_cost_match_numpy():
    model = _model()
    images, labels = _data()
    outputs = _outputs(model, images, 1.0)
    thresholds, entropies = _thresholds_for_mixed_exits(outputs)
    # Independent exit rule: first side exit under its threshold, else final.
    fires = entropies < thresholds[None, :]
    exits = np.where(fires.any(1), fires.argmax(1), 2)
    assert set(exits) == {0, 1, 2}
    chosen = np.stack([outputs[n] for n in NAMES], 0)[exits, np.arange(len(labels))]
    expected_accuracy = np.mean(chosen.argmax(-1) == labels)
    result = multi_exit_eval.evaluate_multi_exit(
        model, _dataset(images, labels), thresholds=thresholds, lambdas=[1.0], attacks=[],
        efficiency_attack=False,
    )
    entry = result["per_lambda"]["1.0"]
    assert entry["clean"]["accuracy"] == pytest.approx(expected_accuracy)
    distribution = np.bincount(exits, minlength=3) / len(labels)
    np.testing.assert_allclose(entry["clean"]["exit_distribution"], distribution)
    macs = multi_exit.exit_macs(model)
    assert entry["clean"]["average_macs"] == pytest.approx(
        float(np.dot(distribution, [macs[n] for n in NAMES]))
    )
    for index, name in enumerate(NAMES):
        assert entry["per_output_clean_accuracy"][name] == pytest.approx(
            np.mean(outputs[name].argmax(-1) == labels)
        )
    assert result["backbone_macs"] == multi_exit.backbone_macs(model)
    assert json.loads(json.dumps(result)) == result


def test_no_early_exit_costs_the_backbone():
    model = _model()
    images, labels = _data(num=12)
    result = multi_exit_eval.evaluate_multi_exit(
        model, _dataset(images, labels), thresholds=[-np.inf, -np.inf], lambdas=[0.5], attacks=[],
        efficiency_attack=False,
    )
    entry = result["per_lambda"]["0.5"]
    assert entry["clean"]["exit_distribution"] == [0.0, 0.0, 1.0]
    assert entry["clean"]["average_macs"] == pytest.approx(multi_exit.backbone_macs(model))
    assert entry["clean"]["accuracy"] == pytest.approx(entry["per_output_clean_accuracy"]["final"])
    assert result["thresholds"] == ["-inf", "-inf"]
    np.testing.assert_array_equal(multi_exit_eval.thresholds_from_json(result["thresholds"]), [-np.inf, -np.inf])


def test_zero_epsilon_attacks_change_nothing_and_worst_case_is_consistent():
    model = _model()
    images, labels = _data(num=20, seed=1)
    thresholds, _ = _thresholds_for_mixed_exits(_outputs(model, images, 1.0))
    zero = config_lib.AttackConfig(name="pgd", epsilon=0.0, step_size=0.01, num_steps=2)
    result = multi_exit_eval.evaluate_multi_exit(
        model, _dataset(images, labels), thresholds=thresholds, lambdas=[1.0], attacks=[zero],
        efficiency_attack=True, seed=3,
    )
    entry = result["per_lambda"]["1.0"]
    forms = entry["attacks"]["PGD-2"]
    assert sorted(forms) == sorted(["Branch 1", "Branch 2", "Main Branch", "Average", "Max-Average", "Random"])
    for tally in forms.values():
        assert tally["accuracy"] == entry["clean"]["accuracy"]
        assert tally["exit_distribution"] == entry["clean"]["exit_distribution"]
    assert entry["efficiency_attack"]["exit_distribution"] == entry["clean"]["exit_distribution"]
    worst = entry["worst_case"]["PGD-2"]
    assert worst["accuracy"] == entry["clean"]["accuracy"] == worst["per_sample_accuracy"]


def test_attacks_bite_and_the_per_sample_worst_case_is_lowest():
    model = _model(seed=2)
    images, labels = _data(num=20, seed=2)
    # Labels the model gets right, so that attacks have something to break.
    labels = _outputs(model, images, 1.0)["final"].argmax(-1).astype("int32")
    thresholds, _ = _thresholds_for_mixed_exits(_outputs(model, images, 1.0))
    pgd = config_lib.AttackConfig(name="pgd", epsilon=0.3, step_size=0.1, num_steps=3)
    result = multi_exit_eval.evaluate_multi_exit(
        model, _dataset(images, labels), thresholds=thresholds, lambdas=[1.0], attacks=[pgd],
        forms=("single", "max_average"), efficiency_attack=False, seed=0,
    )
    entry = result["per_lambda"]["1.0"]
    accuracies = {f: t["accuracy"] for f, t in entry["attacks"]["PGD-3"].items()}
    worst = entry["worst_case"]["PGD-3"]
    assert worst["accuracy"] == min(accuracies.values())
    assert worst["form"] == min(accuracies, key=accuracies.get)
    assert worst["per_sample_accuracy"] <= worst["accuracy"]
    assert worst["accuracy"] < entry["clean"]["accuracy"]


def test_delay_exit_attack_moves_samples_to_later_exits():
    model = _model(seed=4)
    images, labels = _data(num=20, seed=4)
    thresholds, _ = _thresholds_for_mixed_exits(_outputs(model, images, 1.0))
    pgd = config_lib.AttackConfig(name="pgd", epsilon=0.3, step_size=0.1, num_steps=5)
    result = multi_exit_eval.evaluate_multi_exit(
        model, _dataset(images, labels), thresholds=thresholds, lambdas=[1.0], attacks=[pgd],
        forms=("average",), efficiency_attack=True,
    )
    entry = result["per_lambda"]["1.0"]
    assert entry["efficiency_attack"]["average_macs"] > entry["clean"]["average_macs"]


def test_oat_backbone_is_evaluated_per_lambda():
    model = _model(variant="oat")
    images, labels = _data(num=12)
    result = multi_exit_eval.evaluate_multi_exit(
        model, _dataset(images, labels), thresholds=[np.inf, np.inf], lambdas=[0.0, 1.0], attacks=[],
        efficiency_attack=False,
    )
    assert list(result["per_lambda"]) == ["0.0", "1.0"]
    for key, lam in (("0.0", 0.0), ("1.0", 1.0)):
        # +inf thresholds: everyone leaves at exit 1.
        assert result["per_lambda"][key]["clean"]["exit_distribution"] == [1.0, 0.0, 0.0]
        expected = np.mean(_outputs(model, images, lam)["exit_1"].argmax(-1) == labels)
        assert result["per_lambda"][key]["clean"]["accuracy"] == pytest.approx(expected)


def test_each_lambda_uses_its_own_threshold_row():
    model = _model(variant="oat")
    images, labels = _data(num=12)
    # λ = 0: nobody exits early (the backbone's final output); λ = 1: everyone leaves at exit 1.
    result = multi_exit_eval.evaluate_multi_exit(
        model, _dataset(images, labels), thresholds=[0.5, 0.5], lambdas=[0.0, 1.0], attacks=[],
        efficiency_attack=False, lambda_thresholds={0.0: [-np.inf, -np.inf], 1.0: [np.inf, np.inf]},
    )
    assert result["per_lambda"]["0.0"]["clean"]["exit_distribution"] == [0.0, 0.0, 1.0]
    assert result["per_lambda"]["1.0"]["clean"]["exit_distribution"] == [1.0, 0.0, 0.0]
    expected = np.mean(_outputs(model, images, 0.0)["final"].argmax(-1) == labels)
    assert result["per_lambda"]["0.0"]["clean"]["accuracy"] == pytest.approx(expected)
    assert result["lambda_thresholds"] == {"0.0": ["-inf", "-inf"], "1.0": ["inf", "inf"]}
    with pytest.raises(ValueError, match="must have a row for every λ"):
        multi_exit_eval.evaluate_multi_exit(
            model, _dataset(images, labels), thresholds=[0.5, 0.5], lambdas=[0.0, 1.0], attacks=[],
            lambda_thresholds={1.0: [0.1, 0.1]},
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"thresholds": [0.1]}, "thresholds"),
        ({"thresholds": [0.1, float("nan")]}, "thresholds"),
        ({"lambdas": [1.5]}, "lambdas"),
        ({"attacks": [config_lib.AttackConfig(name="square")]}, "attacks"),
        ({"forms": ("sideways",)}, "forms"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    model = _model()
    images, labels = _data(num=4)
    arguments = {"thresholds": [0.1, 0.1], "lambdas": [1.0], "attacks": [], **kwargs}
    with pytest.raises(ValueError, match=match):
        multi_exit_eval.evaluate_multi_exit(model, _dataset(images, labels), **arguments)


def test_single_output_model_is_rejected():
    import keras  # pylint: disable=import-outside-toplevel

    from oat_tf.models import small_cnn  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    model = small_cnn.SmallCNN(variant="plain", filters=(4, 8), hidden_units=8)
    images, labels = _data(num=4)
    with pytest.raises(ValueError, match="multi-exit"):
        multi_exit_eval.evaluate_multi_exit(model, _dataset(images, labels), thresholds=[], lambdas=[1.0], attacks=[])


def test_form_labels():
    assert multi_exit_eval.form_label("single", "exit_2") == "Branch 2"
    assert multi_exit_eval.form_label("single", "final") == "Main Branch"
    assert multi_exit_eval.form_label("max_average") == "Max-Average"
    with pytest.raises(ValueError, match="exit_name"):
        multi_exit_eval.form_label("single", None)
