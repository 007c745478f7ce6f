"""Tests of oat_tf.operating_point: validation, the JSON round trip, grids and tables."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from oat_tf import operating_point
from oat_tf.operating_point import OperatingPoint


def test_defaults_and_normalised_types():
    point = OperatingPoint(1)
    assert point == OperatingPoint(1.0, 1.0, None)
    assert isinstance(point.lambda_, float) and isinstance(point.width, float)
    # numpy scalars and JSON's strings for infinities are accepted and stored as floats.
    point = OperatingPoint(np.float32(0.5), np.float64(0.25), [np.float32(0.1), "inf", "-inf"])
    assert point.lambda_ == 0.5 and point.width == 0.25
    assert point.exit_thresholds[0] == float(np.float32(0.1))
    assert point.exit_thresholds[1:] == (math.inf, -math.inf)
    assert all(type(t) is float for t in point.exit_thresholds)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lambda_": -0.1}, r"`lambda_` must be a number in \[0, 1\]"),
        ({"lambda_": 1.5}, r"`lambda_` must be a number in \[0, 1\]"),
        ({"lambda_": math.nan}, "`lambda_`"),
        ({"lambda_": True}, "`lambda_`"),
        ({"lambda_": "0.5"}, "`lambda_`"),
        ({"lambda_": 0.5, "width": 0.0}, r"`width` must be a number in \(0, 1\]"),
        ({"lambda_": 0.5, "width": 1.01}, "`width`"),
        ({"lambda_": 0.5, "exit_thresholds": [0.1, math.nan]}, "`exit_thresholds`.*not NaN"),
        ({"lambda_": 0.5, "exit_thresholds": []}, "`exit_thresholds`"),
        ({"lambda_": 0.5, "exit_thresholds": [[0.1, 0.2]]}, "`exit_thresholds`"),
        ({"lambda_": 0.5, "exit_thresholds": "0.1"}, "`exit_thresholds`"),
        ({"lambda_": 0.5, "exit_thresholds": ["infinity"]}, "`exit_thresholds`"),
        ({"lambda_": 0.5, "exit_thresholds": [None]}, "`exit_thresholds`"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OperatingPoint(**kwargs)


@pytest.mark.parametrize(
    "point",
    [
        OperatingPoint(0.0),
        OperatingPoint(0.1, 0.75),
        OperatingPoint(1.0, 0.5, (math.inf, 0.3, -math.inf)),
        OperatingPoint(0.15, exit_thresholds=(float(np.float32(0.123)),)),
    ],
)
def test_json_round_trip(point):
    text = json.dumps(point.to_json())  # Plain JSON: no infinities (json.dumps would write Infinity).
    assert "Infinity" not in text
    assert OperatingPoint.from_json(json.loads(text)) == point


def test_to_json_leaves_out_absent_thresholds():
    assert OperatingPoint(0.1, 0.5).to_json() == {"lambda": 0.1, "width": 0.5}
    assert OperatingPoint(1.0, exit_thresholds=[math.inf]).to_json() == {
        "lambda": 1.0, "width": 1.0, "exit_thresholds": ["inf"]
    }


@pytest.mark.parametrize(
    "value, match",
    [
        ([0.1], "must be a dict with 'lambda'"),
        ({"width": 0.5}, "must be a dict with 'lambda'"),
        ({"lambda": 0.1, "widht": 0.5}, r"unknown keys \['widht'\]"),
        ({"lambda": 2.0}, "`lambda_`"),
        ({"lambda": 0.1, "exit_thresholds": "inf"}, "`exit_thresholds`"),
    ],
)
def test_from_json_refuses_malformed_points(value, match):
    with pytest.raises(ValueError, match=match):
        OperatingPoint.from_json(value)


def test_keys_round_trip_and_match_the_result_keys():
    from oat_tf.evaluation import robust_eval  # pylint: disable=import-outside-toplevel
    from oat_tf.evaluation import width_grid  # pylint: disable=import-outside-toplevel

    for value in (0.0, 0.1, 0.15, 1 / 3, 1.0):
        point = OperatingPoint(value, value or 1.0)
        assert float(point.lambda_key) == value
        assert point.lambda_key == robust_eval.lambda_key(value)
        assert point.width_key == width_grid.width_key(value or 1.0)
    assert OperatingPoint(0.1).lambda_key == "0.1" and OperatingPoint(0.0).width_key == "1.0"


def test_with_thresholds_checks_and_replaces():
    point = OperatingPoint(0.2, 0.5)
    assert point.with_thresholds([0.1, 0.2]) == OperatingPoint(0.2, 0.5, (0.1, 0.2))
    assert point.with_thresholds([0.1]).with_thresholds(None) == point
    with pytest.raises(ValueError, match="`exit_thresholds`"):
        point.with_thresholds([math.nan])


def test_points_are_hashable_values():
    assert len({OperatingPoint(0.1), OperatingPoint(0.1, 1.0), OperatingPoint(0.1, 1.0, None)}) == 1
    assert OperatingPoint(0.1, exit_thresholds=[0.5]) != OperatingPoint(0.1, exit_thresholds=[0.6])


def test_grid_is_width_major_sorted_and_deduplicated():
    points = operating_point.grid([1, 0.1, 0, 0.1], widths=[1.0, 0.5])
    assert [(p.width, p.lambda_) for p in points] == [
        (0.5, 0.0), (0.5, 0.1), (0.5, 1.0), (1.0, 0.0), (1.0, 0.1), (1.0, 1.0)
    ]
    assert operating_point.grid([0.3]) == (OperatingPoint(0.3),)
    assert operating_point.lambdas_of(points) == (0.0, 0.1, 1.0)
    assert operating_point.widths_of(points) == (0.5, 1.0)
    assert operating_point.lambdas_by_width(points[:4]) == {0.5: (0.0, 0.1, 1.0), 1.0: (0.0,)}


@pytest.mark.parametrize(
    "lambdas, widths, match",
    [
        ([], [1.0], "`lambdas` must be a non-empty list"),
        ("0.1", [1.0], "`lambdas` must be a non-empty list"),
        ([0.1], [], "`widths` must be a non-empty list"),
        ([1.2], [1.0], "`lambdas`"),
        ([0.1], [0.0], "`widths`"),
    ],
)
def test_grid_refuses_bad_axes(lambdas, widths, match):
    with pytest.raises(ValueError, match=match):
        operating_point.grid(lambdas, widths)


def test_check_points_refuses_other_objects_and_repeats():
    with pytest.raises(ValueError, match="non-empty list of OperatingPoint"):
        operating_point.check_points([])
    with pytest.raises(ValueError, match="OperatingPoint objects"):
        operating_point.check_points([OperatingPoint(0.1), {"lambda": 0.2}])
    with pytest.raises(ValueError, match="must not repeat"):
        operating_point.check_points([OperatingPoint(0.1), OperatingPoint(0.1)])


def test_threshold_table_round_trip_through_points():
    table = {"0.0": [1e9, "inf"], 1: [0.0, -math.inf], 0.5: [0.2, 0.3]}
    points = operating_point.points_from_table(table, num_side_exits=2)
    assert [p.lambda_ for p in points] == [0.0, 0.5, 1.0]
    assert operating_point.threshold_table(points, 2) == {
        0.0: (1e9, math.inf), 0.5: (0.2, 0.3), 1.0: (0.0, -math.inf)
    }


@pytest.mark.parametrize(
    "table, match",
    [
        ({}, "`lambda_thresholds` must be a non-empty dict"),
        ({"a": [0.1]}, r"`lambda_thresholds` keys must be λ values in \[0, 1\]"),
        ({1.5: [0.1]}, r"keys must be λ values in \[0, 1\]"),
        ({0.0: [0.1, 0.2, 0.3]}, "`thresholds` must be 2 floats"),
    ],
)
def test_points_from_table_refuses_bad_tables(table, match):
    with pytest.raises(ValueError, match=match):
        operating_point.points_from_table(table, num_side_exits=2)


def test_threshold_table_refuses_mixed_points():
    with pytest.raises(ValueError, match="needs `exit_thresholds`"):
        operating_point.threshold_table([OperatingPoint(0.0)])
    with pytest.raises(ValueError, match="one width"):
        operating_point.threshold_table([OperatingPoint(0.0, 0.5, [1.0]), OperatingPoint(0.0, 1.0, [1.0])])
    with pytest.raises(ValueError, match="one row per λ"):
        operating_point.threshold_table([OperatingPoint(0.0, 1.0, [1.0]), OperatingPoint(0.0, 1.0, [2.0])])
    with pytest.raises(ValueError, match="must be 2 floats"):
        operating_point.threshold_table([OperatingPoint(0.0, 1.0, [1.0])], num_side_exits=2)


def test_thresholds_to_json_against_the_json_module():
    values = [0.25, math.inf, -math.inf, np.float32(1.5)]
    assert operating_point.thresholds_to_json(values) == [0.25, "inf", "-inf", 1.5]
    assert operating_point.check_thresholds(json.loads(json.dumps(operating_point.thresholds_to_json(values)))) == (
        0.25, math.inf, -math.inf, 1.5
    )


def test_importing_the_module_imports_neither_tensorflow_nor_keras():
    code = (
        "import sys; import oat_tf.operating_point; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_checked_table_takes_a_dict_or_points_alike():
    table = {"1.0": [0.2], 0.0: ["inf"]}
    expected = {0.0: (math.inf,), 1.0: (0.2,)}
    assert operating_point.checked_table(table, 1) == expected
    assert operating_point.checked_table(operating_point.points_from_table(table), 1) == expected
    with pytest.raises(ValueError, match="must be 2 floats"):
        operating_point.checked_table(table, 2)
    with pytest.raises(ValueError, match="OperatingPoint objects"):
        operating_point.checked_table([[0.2]], 1)
