"""Results pages regenerated from their results.json: write them, or check them byte for byte."""

from __future__ import annotations

import os
import tempfile
from typing import Callable

from oat_tf import atomic_files


def write_or_check(
    markdown_path: str,
    plot_dir: str,
    render: Callable[[str], str],
    *,
    source: str,
    check: bool = False,
) -> str:
    """Renders a page and writes it, or compares it with the page on disk.

    Args:
        markdown_path: str, the page's Markdown file.
        plot_dir: str, the directory of its plots (the page links them as
            `<basename(plot_dir)>/<plot>`).
        render: callable taking an existing directory to write the plots into
            and returning the Markdown.
        source: str, the results file the page comes from (for the error).
        check: bool, render into a scratch directory and compare the Markdown
            with `markdown_path` instead of writing anything.

    Returns:
        str, `markdown_path`.

    Raises:
        ValueError: with `check`, if the page on disk differs (or is missing).
    """
    if check:
        with tempfile.TemporaryDirectory() as scratch:
            scratch_dir = os.path.join(scratch, os.path.basename(plot_dir))
            os.makedirs(scratch_dir)
            text = render(scratch_dir)
        existing = None
        if os.path.isfile(markdown_path):
            with open(markdown_path, encoding="utf-8") as f:
                existing = f.read()
        if existing != text:
            raise ValueError(
                f"{markdown_path} differs from the page regenerated from {source}. "
                "Expected identical Markdown; rerun without --check to rewrite it."
            )
        return markdown_path
    os.makedirs(plot_dir, exist_ok=True)
    atomic_files.write_text(markdown_path, render(plot_dir))
    return markdown_path
