"""The operating point of a conditioned network: what a user chooses at test time.

An OAT network is run at a loss weight λ, an OATS network also at a width,
and a multi-exit network with an entropy threshold per side exit. An
`OperatingPoint` holds one such choice, validated once, with one JSON form
and one key format. Evaluation grids (`evaluation.width_grid`), the model
card, the adaptive export's λ → thresholds table and the multi-exit
evaluation take lists of them; adding an axis means adding a field here.

    >>> point = OperatingPoint(lambda_=0.1, width=0.5)
    >>> point.to_json()
    {'lambda': 0.1, 'width': 0.5}
    >>> OperatingPoint.from_json({"lambda": 1, "exit_thresholds": ["inf", 0.3]})
    OperatingPoint(lambda_=1.0, width=1.0, exit_thresholds=(inf, 0.3))
    >>> [p.lambda_ for p in grid([0, 1], widths=[0.5, 1])]
    [0.0, 1.0, 0.0, 1.0]

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

FULL_WIDTH = 1.0
LAMBDA_KEY = "lambda"
WIDTH_KEY = "width"
EXIT_THRESHOLDS_KEY = "exit_thresholds"
_JSON_KEYS = (LAMBDA_KEY, WIDTH_KEY, EXIT_THRESHOLDS_KEY)


def value_key(value: float) -> str:
    """Returns the dictionary key of a λ or width value in an evaluation result.

    The key is Python's shortest round-trip form of the float ("0.0", "0.1",
    "0.15", "1.0"), so `float(value_key(v)) == v`.

    Args:
        value: float, a λ or width value.

    Returns:
        str, the key.
    """
    return repr(float(value))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_lambda(value: Any, name: str = "lambda_") -> float:
    """Returns `value` as a float λ, or raises ValueError naming `name`.

    Args:
        value: a real number in [0, 1] (not a bool).
        name: str, the argument named in the error.

    Returns:
        float.
    """
    if not _is_real(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")
    return float(value)


def check_width(value: Any, name: str = "width") -> float:
    """Returns `value` as a float width, or raises ValueError naming `name`.

    Args:
        value: a real number in (0, 1] (not a bool).
        name: str, the argument named in the error.

    Returns:
        float.
    """
    if not _is_real(value) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"`{name}` must be a number in (0, 1]. Received: {name}={value!r}")
    return float(value)


def check_thresholds(
    values: Any,
    num_side_exits: Optional[int] = None,
    name: str = "exit_thresholds",
    exit_names: Sequence[str] = (),
) -> Tuple[float, ...]:
    """Returns entropy thresholds as a tuple of floats, or raises ValueError naming `name`.

    Args:
        values: a flat sequence of numbers, or of the strings "inf" / "-inf"
            (their JSON form). NaN is refused; +inf means every sample that
            reaches that exit leaves there, -inf that none does.
        num_side_exits: int or None, the number of values required.
        name: str, the argument named in the error.
        exit_names: names of the side exits, for the error message.

    Returns:
        tuple of float, one per side exit.
    """
    try:
        if isinstance(values, (str, bytes, Mapping)):
            raise TypeError
        floats = tuple(_threshold_float(v) for v in values)
    except (TypeError, ValueError):
        floats = None
    if (
        floats is None
        or not floats
        or any(math.isnan(t) for t in floats)
        or (num_side_exits is not None and len(floats) != num_side_exits)
    ):
        count = "a non-empty list of " if num_side_exits is None else f"{num_side_exits} "
        exits = f" ({', '.join(exit_names)})" if exit_names else ""
        raise ValueError(
            f"`{name}` must be {count}floats, one entropy threshold per side exit{exits} (not NaN; "
            "+inf or \"inf\": every sample leaves at that exit, -inf or \"-inf\": none does). "
            f"Received: {name}={values!r}"
        )
    return floats


def _threshold_float(value: Any) -> float:
    if isinstance(value, str):
        if value not in ("inf", "-inf"):
            raise ValueError(value)
        return float(value)
    if isinstance(value, bool) or not _is_real(value):
        # numpy floats are numbers.Real; nested lists and None are not.
        raise TypeError(value)
    return float(value)


def thresholds_to_json(thresholds: Sequence[float]) -> List[Any]:
    """Thresholds as JSON values: finite floats, or the strings "inf" / "-inf" (JSON has no infinity).

    Args:
        thresholds: sequence of float.

    Returns:
        list of float or str.
    """
    return [
        float(t) if math.isfinite(float(t)) else ("inf" if float(t) > 0 else "-inf") for t in thresholds
    ]


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """One test-time choice: λ, width and exit thresholds.

    Attributes:
        lambda_: float in [0, 1], the loss weight the network is conditioned
            on (0: standard, 1: adversarial; a plain network ignores it).
        width: float in (0, 1], the slimmable width (1.0: the full network).
        exit_thresholds: tuple of floats or None, the entropy threshold of
            each side exit of a multi-exit network (None: no early exit, or
            the export's default).

    Raises:
        ValueError: at construction, for a value out of range or of the wrong
            type, naming the field.
    """

    lambda_: float
    width: float = FULL_WIDTH
    exit_thresholds: Optional[Tuple[float, ...]] = None

    def __post_init__(self):
        object.__setattr__(self, "lambda_", check_lambda(self.lambda_))
        object.__setattr__(self, "width", check_width(self.width))
        if self.exit_thresholds is not None:
            object.__setattr__(self, "exit_thresholds", check_thresholds(self.exit_thresholds))

    @property
    def lambda_key(self) -> str:
        """The key of this point's λ in an evaluation result (`value_key`)."""
        return value_key(self.lambda_)

    @property
    def width_key(self) -> str:
        """The key of this point's width in a width-grid result (`value_key`)."""
        return value_key(self.width)

    def with_thresholds(self, exit_thresholds: Optional[Sequence[Any]]) -> "OperatingPoint":
        """Returns this point with other exit thresholds (checked)."""
        return dataclasses.replace(
            self, exit_thresholds=None if exit_thresholds is None else tuple(exit_thresholds)
        )

    def to_json(self) -> Dict[str, Any]:
        """Returns the point as plain JSON: `lambda`, `width`, and `exit_thresholds` when set."""
        value: Dict[str, Any] = {LAMBDA_KEY: self.lambda_, WIDTH_KEY: self.width}
        if self.exit_thresholds is not None:
            value[EXIT_THRESHOLDS_KEY] = thresholds_to_json(self.exit_thresholds)
        return value

    @classmethod
    def from_json(cls, value: Any) -> "OperatingPoint":
        """Inverse of `to_json`; `width` defaults to 1.0 and `exit_thresholds` to None.

        Args:
            value: dict with `lambda` and optionally `width` and
                `exit_thresholds`.

        Returns:
            OperatingPoint.

        Raises:
            ValueError: for a value that is not such a dict, an unknown key,
                or a field out of range.
        """
        if not isinstance(value, Mapping) or LAMBDA_KEY not in value:
            raise ValueError(
                f"An operating point must be a dict with {LAMBDA_KEY!r} (and optionally "
                f"{WIDTH_KEY!r}, {EXIT_THRESHOLDS_KEY!r}). Received: {value!r}"
            )
        unknown = sorted(set(value) - set(_JSON_KEYS))
        if unknown:
            raise ValueError(
                f"An operating point has only the keys {list(_JSON_KEYS)}. Received unknown keys "
                f"{unknown} in {value!r}"
            )
        thresholds = value.get(EXIT_THRESHOLDS_KEY)
        return cls(
            lambda_=value[LAMBDA_KEY],
            width=value.get(WIDTH_KEY, FULL_WIDTH),
            exit_thresholds=None if thresholds is None else check_thresholds(thresholds),
        )

    def __str__(self) -> str:
        text = f"λ={self.lambda_:g}, width={self.width:g}"
        if self.exit_thresholds is not None:
            text += f", exit_thresholds={list(self.exit_thresholds)}"
        return text


def grid(lambdas: Sequence[Any], widths: Sequence[Any] = (FULL_WIDTH,)) -> Tuple[OperatingPoint, ...]:
    """Every (width, λ) pair as operating points, width-major, each axis sorted.

    Args:
        lambdas: non-empty sequence of λ values in [0, 1].
        widths: non-empty sequence of widths in (0, 1].

    Returns:
        tuple of OperatingPoint: for each width (increasing), every λ
        (increasing); duplicates removed.

    Raises:
        ValueError: for an empty axis or a value out of range.
    """
    for name, values in (("lambdas", lambdas), ("widths", widths)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"`{name}` must be a non-empty list of numbers. Received: {name}={values!r}")
    lambda_values = sorted({check_lambda(v, "lambdas") for v in lambdas})
    width_values = sorted({check_width(w, "widths") for w in widths})
    return tuple(OperatingPoint(lam, w) for w in width_values for lam in lambda_values)


def check_points(points: Any, name: str = "operating_points") -> Tuple[OperatingPoint, ...]:
    """Returns `points` as a non-empty tuple of distinct OperatingPoints, or raises ValueError.

    Args:
        points: sequence of OperatingPoint.
        name: str, the argument named in the error.

    Returns:
        tuple of OperatingPoint, in the given order.
    """
    if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence) or not points:
        raise ValueError(f"`{name}` must be a non-empty list of OperatingPoint. Received: {name}={points!r}")
    for point in points:
        if not isinstance(point, OperatingPoint):
            raise ValueError(
                f"`{name}` must hold OperatingPoint objects. Received an element {point!r} in {name}"
            )
    if len(set(points)) != len(points):
        raise ValueError(f"`{name}` must not repeat a point. Received: {[str(p) for p in points]}")
    return tuple(points)


def lambdas_of(points: Sequence[OperatingPoint]) -> Tuple[float, ...]:
    """The distinct λ values of `points`, increasing."""
    return tuple(sorted({p.lambda_ for p in check_points(points, "points")}))


def widths_of(points: Sequence[OperatingPoint]) -> Tuple[float, ...]:
    """The distinct widths of `points`, increasing."""
    return tuple(sorted({p.width for p in check_points(points, "points")}))


def lambdas_by_width(points: Sequence[OperatingPoint]) -> Dict[float, Tuple[float, ...]]:
    """{width: its λ values, increasing}, widths increasing.

    Args:
        points: sequence of OperatingPoint (thresholds are ignored).

    Returns:
        dict.
    """
    by_width: Dict[float, set] = {}
    for point in check_points(points, "points"):
        by_width.setdefault(point.width, set()).add(point.lambda_)
    return {w: tuple(sorted(by_width[w])) for w in sorted(by_width)}


def threshold_table(
    points: Sequence[OperatingPoint], num_side_exits: Optional[int] = None
) -> Dict[float, Tuple[float, ...]]:
    """The λ → exit thresholds table of points that all carry thresholds, λ increasing.

    Args:
        points: sequence of OperatingPoint, each with `exit_thresholds`, at
            one width and distinct λ values.
        num_side_exits: int or None, the row length required.

    Returns:
        dict {λ: thresholds}.

    Raises:
        ValueError: for a point without thresholds, rows of another length,
            more than one width, or a repeated λ.
    """
    points = check_points(points, "points")
    if len({p.width for p in points}) != 1:
        raise ValueError(
            "A λ → thresholds table is for one width. Received points at widths "
            f"{sorted({p.width for p in points})}"
        )
    table: Dict[float, Tuple[float, ...]] = {}
    for point in points:
        if point.exit_thresholds is None:
            raise ValueError(f"Every point of a λ → thresholds table needs `exit_thresholds`. Received: {point}")
        if point.lambda_ in table:
            raise ValueError(f"A λ → thresholds table has one row per λ. Received λ={point.lambda_:g} twice")
        table[point.lambda_] = check_thresholds(point.exit_thresholds, num_side_exits)
    return dict(sorted(table.items()))


def points_from_table(
    table: Mapping[Any, Sequence[Any]],
    width: float = FULL_WIDTH,
    *,
    num_side_exits: Optional[int] = None,
    name: str = "lambda_thresholds",
    exit_names: Sequence[str] = (),
) -> Tuple[OperatingPoint, ...]:
    """Operating points of a {λ: thresholds} table (λ keys may be strings, as in JSON).

    Args:
        table: non-empty mapping λ → thresholds.
        width: float, the width of every point.
        num_side_exits: int or None, the row length required.
        name: str, the argument named in errors.
        exit_names: names of the side exits, for errors.

    Returns:
        tuple of OperatingPoint, λ increasing.

    Raises:
        ValueError: for an empty table, a key that is not a λ in [0, 1], or
            a malformed row.
    """
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"`{name}` must be a non-empty dict {{λ: thresholds}}. Received: {name}={table!r}")
    points = []
    for key, row in table.items():
        try:
            lam = float(key)
        except (TypeError, ValueError):
            lam = math.nan
        if not 0.0 <= lam <= 1.0:
            raise ValueError(
                f"`{name}` keys must be λ values in [0, 1]. Received: key {key!r} in {name}={table!r}"
            )
        points.append(
            OperatingPoint(lam, width, check_thresholds(row, num_side_exits, "thresholds", exit_names))
        )
    return tuple(sorted(points, key=lambda p: p.lambda_))


def checked_table(
    table: Any, num_side_exits: Optional[int] = None, exit_names: Sequence[str] = ()
) -> Dict[float, Tuple[float, ...]]:
    """A λ → thresholds table given as a dict or as points, checked, λ increasing.

    Args:
        table: dict {λ: thresholds} (`points_from_table`) or a sequence of
            `OperatingPoint`s carrying `exit_thresholds` (`threshold_table`).
        num_side_exits: int or None, the row length required.
        exit_names: names of the side exits, for errors.

    Returns:
        dict {λ: thresholds}.
    """
    if isinstance(table, Mapping):
        points = points_from_table(table, num_side_exits=num_side_exits, exit_names=exit_names)
    else:
        points = check_points(table, "lambda_thresholds")
    return threshold_table(points, num_side_exits)

