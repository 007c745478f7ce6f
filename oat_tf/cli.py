"""Runs a command-line tool the same way as `python -m` and as a console script.

Each tool of oat_tf (`oat_tf.train`, `oat_tf.evaluate`, ...) has a `run()` that
calls `run_main(main, __name__, define_flags)`; `python -m <module>` and
the console script pyproject.toml installs for it (`oat-train`, `oat-evaluate`,
...) both call that `run()`.

absl's `--help` prints the docstring of the `__main__` module and the flags the
main module defined. Under `python -m` the tool's module is `__main__`; under a
console script `__main__` is pip's small wrapper, which would leave `--help`
with neither, so `run_main` lends the wrapper the tool's docstring and flags.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags


def run_main(
    main: Callable[[Sequence[str]], None],
    module_name: str,
    define_flags: Optional[Callable[[], None]] = None,
) -> None:
    """Defines the tool's flags, parses the command line and runs `main`, with `module_name`'s help for `--help`.

    Args:
        main: Callable[[Sequence[str]], None], the tool's `main(argv)`, run
            through `absl.app.run`, which exits the process.
        module_name: str, the `__name__` of the tool's module: `"__main__"`
            under `python -m`, where nothing is lent.
        define_flags: optional callable that defines the tool's flags, called
            first (a tool may also define them itself before calling this).

    Returns:
        None; `absl.app.run` exits the process.
    """
    if define_flags is not None:
        define_flags()
    module = sys.modules[module_name]
    entry = sys.modules["__main__"]
    if entry is not module:
        for flag in flags.FLAGS.get_key_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
        if not entry.__doc__:
            entry.__doc__ = module.__doc__
    app.run(main)
