"""Checks of the constructor arguments the backbones share, each naming the argument.

Every network checks its arguments before it builds a layer, and says which
argument was wrong, what it expected and what it received (`ValueError`).
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple


def is_int(value: Any) -> bool:
    """Whether `value` is an integral number (bools are not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any) -> int:
    """Returns `value` as an int if it is a positive int, or raises naming the argument.

    Args:
        name: str, the argument's name, for the error message.
        value: the argument.

    Returns:
        int.

    Raises:
        ValueError: if `value` is not a positive int (bools are refused).
    """
    if not is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def check_positive_ints(name: str, values: Any, length: Optional[int] = None) -> Tuple[int, ...]:
    """Returns `values` as a tuple of positive ints, or raises naming the argument.

    Args:
        name: str, the argument's name, for the error message.
        values: sequence of ints.
        length: int or None, the required number of values (None: any, at
            least one).

    Returns:
        Tuple of ints.

    Raises:
        ValueError: if `values` is not such a sequence.
    """
    try:
        result = tuple(values)
    except TypeError:
        result = None
    if (
        result is None
        or not result
        or not all(is_int(v) and v >= 1 for v in result)
        or (length is not None and len(result) != length)
    ):
        count = f"{length} positive ints" if length is not None else "positive ints"
        raise ValueError(f"`{name}` must be {count}. Received: {name}={values!r}")
    return tuple(int(v) for v in result)


def check_rate(name: str, value: Any) -> float:
    """Returns a dropout rate in [0, 1) as a float, or raises naming the argument.

    Args:
        name: str, the argument's name ("dropout", "exit_dropout").
        value: the argument.

    Returns:
        float.

    Raises:
        ValueError: if `value` is not a number in [0, 1).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value}")
    return float(value)


def check_batch_norm_for_variant(use_batch_norm: bool, variant: str, *, optional: bool = False) -> None:
    """Refuses a network without normalisations in an OAT variant (FiLM follows them).

    Args:
        use_batch_norm: bool, the network's `use_batch_norm` (already resolved
            when the network takes None).
        variant: str, the network's variant.
        optional: bool, the network accepts None for `use_batch_norm` (it is
            named in the message).

    Raises:
        ValueError: if `variant` is not "plain" and `use_batch_norm` is False.
    """
    if variant != "plain" and not use_batch_norm:
        allowed = "True (or None)" if optional else "True"
        raise ValueError(
            f"`use_batch_norm` must be {allowed} for the OAT variants (FiLM follows "
            f"the normalisations). Received: use_batch_norm={use_batch_norm}, "
            f"variant={variant!r}"
        )


def check_exit_blocks(exit_blocks: Any, num_blocks: int) -> Tuple[int, ...]:
    """Validates 1-based, strictly increasing exit positions within `num_blocks` blocks.

    Args:
        exit_blocks: sequence of ints.
        num_blocks: int, blocks in the stage (or the network).

    Returns:
        Tuple of ints.

    Raises:
        ValueError: if the positions are malformed or out of range.
    """
    blocks = check_positive_ints("exit_blocks", exit_blocks)
    if any(b > num_blocks for b in blocks) or any(
        later <= earlier for earlier, later in zip(blocks, blocks[1:])
    ):
        raise ValueError(
            "`exit_blocks` must be strictly increasing 1-based block indices no larger "
            f"than the number of blocks ({num_blocks}). Received: exit_blocks={exit_blocks!r}"
        )
    return blocks
