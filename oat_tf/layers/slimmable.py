"""Width multipliers of slimmable layers: the channel rule and width checks.

Every slimmable layer of oat_tf (`SlimmableConv2D`, `SlimmableDense`,
`SwitchableBatchNormalization`, `SwitchableDualBatchNormalization`,
`SlimmableFiLM`) takes a list of widths (default `DEFAULT_WIDTHS`) and a static
`width` call argument, and keeps the first `slimmed_channels(C, width)`
channels of each slimmed axis. Models use the same function, so the layers of
a network agree on every channel count.

The width is a Python float chosen per call (`layer(x, width=0.5)`): there is
no global width list and no width attribute to mutate, and inside a
`tf.function` each width is its own trace with static shapes.

A layer is built with its full-width shapes: its first call must be at width
1.0 (or `build()` is called with the full-width shapes), since the full channel
count cannot be recovered from a slimmed one (`slimmed_channels(5, 0.5) ==
slimmed_channels(6, 0.5)`).

```python
conv = slimmable_conv.SlimmableConv2D(64, 3, slim_inputs=False)
full = conv(images, width=1.0)   # [N, H, W, 64], builds the layer
half = conv(images, width=0.5)   # [N, H, W, 32], the first 32 filters
```
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Optional, Sequence, Tuple

DEFAULT_WIDTHS = (0.5, 0.75, 1.0)
FULL_WIDTH = 1.0


def slimmed_channels(channels: int, width: float) -> int:
    """Returns the number of channels kept at `width`: ⌈width·channels⌉.

    The ceiling (never zero channels) is the rule of every slimmable layer and
    model in oat_tf. It equals the OATS reference code's `int(width·C)` when
    `width·C` is an integer, as for the default widths and channel counts
    divisible by 4. The product is rounded to 6 decimals first, so that float
    error (0.3·10 = 3.0000000000000004) does not add a channel.

    Args:
        channels: int, the channel count at full width (width 1.0).
        width: float in (0, 1], the width multiplier.

    Returns:
        int in [1, channels]; `channels` at width 1.0.
    """
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
        raise ValueError(f"`channels` must be a positive integer. Received: channels={channels!r}")
    if not 0.0 < width <= 1.0:
        raise ValueError(f"`width` must be in (0, 1]. Received: width={width!r}")
    return max(1, int(math.ceil(round(float(width) * int(channels), 6))))


def _is_real_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_widths(widths: Sequence[float]) -> Tuple[float, ...]:
    """Validates a width list and returns it as a sorted tuple of floats.

    Args:
        widths: sequence of distinct floats in (0, 1] that contains 1.0 (the
            full network, whose shapes the layers are built with).

    Returns:
        Tuple of floats in increasing order.

    Raises:
        ValueError: if the list is empty, has duplicates, a value outside
            (0, 1] or a non-number, or lacks 1.0.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
        raise ValueError(
            "`widths` must be a non-empty sequence of floats in (0, 1]. "
            f"Received: widths={widths!r}"
        )
    if not all(_is_real_number(w) and 0.0 < float(w) <= 1.0 for w in widths):
        raise ValueError(f"`widths` must hold floats in (0, 1]. Received: widths={widths!r}")
    values = tuple(sorted(float(w) for w in widths))
    if any(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(values, values[1:])):
        raise ValueError(f"`widths` must be distinct. Received: widths={widths!r}")
    if not math.isclose(values[-1], FULL_WIDTH, abs_tol=1e-6):
        raise ValueError(
            "`widths` must contain 1.0 (the full network, whose shapes the "
            f"layers are built with). Received: widths={widths!r}"
        )
    return values[:-1] + (FULL_WIDTH,)


def check_width(width: Optional[float], widths: Sequence[float]) -> float:
    """Returns the entry of `widths` that a static `width` call argument names.

    Args:
        width: Python float (or int) from `widths`, or None for full width.
        widths: tuple of floats, a layer's checked width list.

    Returns:
        The matching float of `widths` (1.0 for None).

    Raises:
        ValueError: if `width` is a tensor or not one of `widths`.
    """
    if width is None:
        return FULL_WIDTH
    if not _is_real_number(width):
        raise ValueError(
            "`width` must be a Python float from the layer's `widths` (a static "
            f"choice: each width is its own trace). Expected one of {tuple(widths)}. "
            f"Received: width={width!r}"
        )
    for candidate in widths:
        if math.isclose(float(width), candidate, abs_tol=1e-6):
            return candidate
    raise ValueError(f"`width` must be one of {tuple(widths)}. Received: width={width!r}")


def width_index(width: float, widths: Sequence[float]) -> int:
    """Returns the position of `width` (checked with `check_width`) in `widths`."""
    return tuple(widths).index(check_width(width, widths))


def width_name(width: float) -> str:
    """Returns the name of a width's sublayer, e.g. `"width_0.75"`."""
    return f"width_{float(width)}"


def check_built_at_full_width(layer, width: float) -> None:
    """Raises if an unbuilt layer with slimmed inputs is first called below full width.

    Args:
        layer: keras.layers.Layer, a slimmable layer.
        width: float, the checked width of the call.

    Raises:
        ValueError: if `layer` is not built and `width` is not 1.0.
    """
    if not layer.built and width != FULL_WIDTH:
        raise ValueError(
            f"`{type(layer).__name__}` '{layer.name}' is built with its full-width "
            "shapes, which a slimmed input does not determine: call it first with "
            "width=1.0, or call `build()` with the full-width input shape. "
            f"Received: width={width} on an unbuilt layer"
        )


def check_channels(
    layer, channels: Optional[int], expected: int, width: float, argument: str = "inputs"
) -> None:
    """Raises if a call's channel (last) dimension is not the one `width` expects.

    Args:
        layer: keras.layers.Layer, the slimmable layer (for the message).
        channels: int or None, the last dimension of the call's input.
        expected: int, the channel count at `width`.
        width: float, the checked width of the call.
        argument: str, name of the call argument.

    Raises:
        ValueError: if `channels` is known and differs from `expected`.
    """
    if channels is not None and int(channels) != expected:
        raise ValueError(
            f"`{argument}` of `{type(layer).__name__}` '{layer.name}' must have "
            f"{expected} channels (last axis) at width={width}. "
            f"Received: {argument} with {channels} channels"
        )


class SlimmableKernelMixin:
    """Width handling of a layer with one full-width kernel [..., C_in, C_out].

    Mixed into `SlimmableConv2D` and `SlimmableDense` before their Keras base
    class: it validates the per-call `width`, checks that a layer with
    slimmed inputs was built at full width, and gives the kernel's channel
    counts at a width. The layer sets `widths`, `slim_inputs` and
    `slim_outputs` with `_set_widths` in its constructor.
    """

    def _set_widths(self, widths: Sequence[float], slim_inputs: bool, slim_outputs: bool) -> None:
        self.widths = check_widths(widths)
        self.slim_inputs = bool(slim_inputs)
        self.slim_outputs = bool(slim_outputs)

    def __call__(self, inputs, *args, width=None, **kwargs):
        width = check_width(width, self.widths)
        if self.slim_inputs:
            check_built_at_full_width(self, width)
        return super().__call__(inputs, *args, width=width, **kwargs)

    def channels_at(self, width: float) -> Tuple[int, int]:
        """Returns (input channels, output channels) of the kernel at `width`.

        Args:
            width: float from the layer's `widths`.

        Returns:
            tuple of two ints.
        """
        width = check_width(width, self.widths)
        in_channels, out_channels = self._kernel.shape[-2], self._kernel.shape[-1]
        if self.slim_inputs:
            in_channels = slimmed_channels(in_channels, width)
        if self.slim_outputs:
            out_channels = slimmed_channels(out_channels, width)
        return in_channels, out_channels


def add_slimming_config(config: Dict[str, Any], layer: Any) -> Dict[str, Any]:
    """`config` of a slimmable layer with its `widths`, `slim_inputs` and `slim_outputs`.

    Args:
        config: dict, the config of the layer it extends (Conv2D, Dense).
        layer: the slimmable layer (`SlimmableConv2D`, `SlimmableDense`).

    Returns:
        `config`, updated in place.
    """
    config.update(
        {
            "widths": list(layer.widths),
            "slim_inputs": layer.slim_inputs,
            "slim_outputs": layer.slim_outputs,
        }
    )
    return config
