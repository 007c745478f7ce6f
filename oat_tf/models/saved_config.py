"""The constructor arguments a network is rebuilt from: kept once, returned by `get_config`."""

from __future__ import annotations

from typing import Any, Dict, Mapping


def jsonable(value: Any) -> Any:
    """`value` with tuples and lists as lists and mappings as dicts, recursively.

    Args:
        value: a config value (tuples of ints, the encoder's dict, None, ...).

    Returns:
        The same value in the JSON types `keras.saving` writes.
    """
    if isinstance(value, Mapping):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [jsonable(item) for item in value]
    return value


class SavedConfig:
    """Mixin of a `keras.Model` subclass whose config is its checked arguments.

    The constructor calls `save_config(depth=..., encoder=..., ...)` once it has
    checked and normalised its arguments: each becomes an attribute, and
    `get_config` returns them (with `name` and `trainable`) in the order saved,
    so `cls.from_config(model.get_config())` builds the same network. A
    subclass's `save_config` adds to its base class's.

    Example:
    >>> class Net(SavedConfig, keras.Model):
    ...     def __init__(self, depth=2, **kwargs):
    ...         super().__init__(inputs=..., outputs=..., **kwargs)
    ...         self.save_config(depth=int(depth))
    """

    def save_config(self, **arguments: Any) -> None:
        """Sets each argument as an attribute and adds it to the config.

        Args:
            **arguments: the checked constructor arguments, by name.
        """
        for key, value in arguments.items():
            setattr(self, key, value)
        self._saved_config_keys = tuple(getattr(self, "_saved_config_keys", ())) + tuple(arguments)

    def get_config(self) -> Dict[str, Any]:
        config = {"name": self.name, "trainable": self.trainable}
        for key in self._saved_config_keys:
            config[key] = jsonable(getattr(self, key))
        return config
