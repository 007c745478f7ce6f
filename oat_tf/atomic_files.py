"""Atomic file writes: the one helper every oat_tf output file goes through (JSON, text, PNG).

Every file is written to a temporary sibling file, flushed and synced, then
renamed over the target with `os.replace`: a reader never sees a half-written
file, and a failed write leaves the previous file untouched and no temporary
file behind. Files get mode 0644 less the umask (`output_paths.file_mode`).
Local file systems only (`os.replace` is atomic there). Directories (run
directories, SavedModels) are swapped in by `output_paths`.

```python
atomic_files.write_text("out/evaluation.md", markdown)
atomic_files.write_figure("out/evaluation_ra_vs_sa.png", fig)
```
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Callable, IO

from matplotlib import figure as figure_lib

from oat_tf import output_paths


def write_atomic(path: str, write_fn: Callable[[IO], None], *, binary: bool) -> None:
    """Writes `path` through `write_fn(file)` and an atomic rename.

    Args:
        path: str, the target file; its directory must exist.
        write_fn: callable taking the open temporary file.
        binary: bool, open the file in binary mode (else UTF-8 text).
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        mode, encoding = ("wb", None) if binary else ("w", "utf-8")
        with os.fdopen(fd, mode, encoding=encoding) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp_path, output_paths.file_mode())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp_path)
        raise


def write_text(path: str, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    write_atomic(path, lambda f: f.write(text), binary=False)


def write_json(path: str, payload: Any, *, sort_keys: bool = False) -> None:
    """Writes `payload` as indented JSON (no NaN/Infinity) to `path` atomically.

    Args:
        path: str, the target file; its directory must exist.
        payload: JSON-serialisable object without NaN or infinities.
        sort_keys: bool, write object keys sorted (records that are read
            back and compared, such as a run's config.json).
    """

    def write(f: IO) -> None:
        json.dump(payload, f, indent=2, allow_nan=False, sort_keys=sort_keys)
        f.write("\n")

    write_atomic(path, write, binary=False)


def write_figure(path: str, fig: figure_lib.Figure) -> None:
    """Renders a matplotlib figure as PNG to `path` atomically.

    Args:
        path: str, the target `.png` file.
        fig: matplotlib.figure.Figure with an Agg canvas.
    """
    write_atomic(path, lambda f: fig.savefig(f, format="png"), binary=True)
