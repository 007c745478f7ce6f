"""Tests for oat_tf.evaluation.width_grid: λ × width evaluation, table, plot."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from oat_tf import config
from oat_tf import operating_point
from oat_tf.evaluation import robust_eval
from oat_tf.evaluation import width_grid
from tests.models import model_testing

ATTACK = config.AttackConfig(epsilon=0.1, step_size=0.05, num_steps=2)
LAMBDAS = [0.0, 1.0]


def _network():
    keras.utils.set_random_seed(0)
    network = model_testing.tiny_slimmable_model("small_cnn", "oats")
    model_testing.randomize_normalizations(network)
    return network


def _dataset(num_examples=6):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(num_examples, 20, 20, 1)).astype("float32")
    labels = rng.integers(0, 10, size=num_examples).astype("int64")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)


@pytest.fixture(scope="module")
def evaluated():
    network = _network()
    dataset = _dataset()
    grid = width_grid.evaluate_width_grid(network, dataset, LAMBDAS, [ATTACK], seed=3)
    return network, dataset, grid


def test_every_width_equals_the_lambda_grid_of_its_view(evaluated):
    network, dataset, grid = evaluated
    assert grid["widths"] == [0.5, 0.75, 1.0]
    assert list(grid["per_width"]) == ["0.5", "0.75", "1.0"]
    expected = robust_eval.evaluate_lambda_grid(
        network.width_model(0.5), dataset, LAMBDAS, [ATTACK], seed=3
    )
    assert grid["per_width"]["0.5"] == expected
    assert json.loads(json.dumps(grid)) == grid
    assert grid["operating_points"] == [
        operating_point.OperatingPoint(lam, w).to_json() for w in (0.5, 0.75, 1.0) for lam in sorted(LAMBDAS)
    ]


def test_operating_points_may_give_each_width_its_own_lambdas(evaluated):
    network, dataset, grid = evaluated
    points = [operating_point.OperatingPoint(LAMBDAS[0], 0.5), operating_point.OperatingPoint(LAMBDAS[-1], 1.0)]
    result = width_grid.evaluate_operating_points(network, dataset, points, [ATTACK], seed=3)
    assert result["widths"] == [0.5, 1.0]
    for point in points:
        measured = result["per_width"][point.width_key]
        assert measured["lambdas"] == [point.lambda_]
        # The same numbers as the full grid's at that point (same seed, same batches).
        full = grid["per_width"][point.width_key]
        assert measured["clean_accuracy"][point.lambda_key] == full["clean_accuracy"][point.lambda_key]
        assert measured["worst_case_accuracy"][point.lambda_key] == full["worst_case_accuracy"][point.lambda_key]


def test_operating_points_are_checked_before_anything_runs(evaluated):
    network, dataset, _ = evaluated
    with pytest.raises(ValueError, match="must not carry exit thresholds"):
        width_grid.evaluate_operating_points(
            network, dataset, [operating_point.OperatingPoint(0.0, exit_thresholds=[1.0])], [ATTACK]
        )
    with pytest.raises(ValueError, match="`width` must be one of"):
        width_grid.evaluate_operating_points(network, dataset, [operating_point.OperatingPoint(0.0, 0.3)], [ATTACK])


def test_widths_are_checked():
    network = _network()
    assert width_grid.check_widths_of(network, [1.0, 0.5]) == (0.5, 1.0)
    with pytest.raises(ValueError, match="must be one of"):
        width_grid.check_widths_of(network, [0.3])
    image = keras.Input(shape=(20, 20, 1), name="image")
    lam = keras.Input(shape=(), name="lambda")
    plain = keras.Model({"image": image, "lambda": lam}, keras.layers.Flatten()(image))
    assert width_grid.check_widths_of(plain, None) == (1.0,)
    assert width_grid.check_widths_of(plain, [1.0]) == (1.0,)
    with pytest.raises(ValueError, match="slimmable network"):
        width_grid.check_widths_of(plain, [0.5, 1.0])


def test_table_has_an_sa_and_ra_column_per_width(evaluated):
    _, _, grid = evaluated
    table = width_grid.format_width_table(grid)
    lines = table.strip().split("\n")
    label = ATTACK.describe()
    assert lines[0] == (
        "| λ | SA α=0.5 (%) | RA "
        + label
        + " α=0.5 (%) | SA α=0.75 (%) | RA "
        + label
        + " α=0.75 (%) | SA α=1.0 (%) | RA "
        + label
        + " α=1.0 (%) |"
    )
    assert len(lines) == 2 + len(LAMBDAS)
    cells = lines[2].strip("| ").split(" | ")
    assert cells[0] == "0.0"
    assert float(cells[1]) == pytest.approx(100 * grid["per_width"]["0.5"]["clean_accuracy"]["0.0"], abs=0.01)
    with pytest.raises(ValueError, match="attack"):
        width_grid.format_width_table(grid, attack="PGD-999")
    with pytest.raises(ValueError, match="per_width"):
        width_grid.format_width_table({"widths": [1.0]})


def test_report_writes_json_markdown_and_plot(evaluated, tmp_path):
    _, _, grid = evaluated
    paths = width_grid.write_width_report(grid, str(tmp_path), prefix="eval_widths", title="tiny")
    with open(paths["json"]) as f:
        assert json.load(f) == grid
    with open(paths["markdown"], encoding="utf-8") as f:
        assert "SA α=0.75 (%)" in f.read()
    with open(paths["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    figure = width_grid.width_trade_off_figure(grid)
    assert len(figure.axes) == 2
    assert len(figure.axes[0].lines) == 2 * 3  # SA and RA per width.
    assert len(figure.axes[1].lines) == 3
    assert os.path.basename(paths["plot"]) == "eval_widths.png"


def test_table_shows_the_worst_case_over_several_attacks(evaluated):
    _, _, grid = evaluated
    grid = json.loads(json.dumps(grid))
    second = "Square-10"
    for result in grid["per_width"].values():
        result["robust_accuracy"][second] = {k: 1.0 for k in result["clean_accuracy"]}
        # A worst case that is neither attack's own RA, so the table cannot take it from one.
        result["worst_case_accuracy"] = {k: 0.125 for k in result["clean_accuracy"]}
    table = width_grid.format_width_table(grid)
    lines = table.strip().split("\n")
    assert "worst-case RA α=1.0 (%)" in lines[0] and "RA " + ATTACK.describe() not in lines[0]
    assert lines[-1] == f"Worst-case RA: per sample, the worst over {ATTACK.describe()}, {second}."
    cells = lines[2].strip("| ").split(" | ")
    assert float(cells[2]) == pytest.approx(12.5)
    named = width_grid.format_width_table(grid, attack=second)
    assert float(named.strip().split("\n")[2].strip("| ").split(" | ")[2]) == pytest.approx(100.0)
