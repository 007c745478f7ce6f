"""Tests for oat_tf.atomic_files."""

import json
import os

import numpy as np
import pytest
from matplotlib import figure as figure_lib
from matplotlib import image as image_lib
from matplotlib.backends import backend_agg

from oat_tf import atomic_files


def test_write_json_and_text(tmp_path):
    atomic_files.write_json(str(tmp_path / "a.json"), {"x": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    atomic_files.write_text(str(tmp_path / "a.md"), "λ\n")
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == "λ\n"
    with pytest.raises(ValueError):
        atomic_files.write_json(str(tmp_path / "a.json"), {"x": float("nan")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["a.json", "a.md"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "out.txt")
    atomic_files.write_text(path, "old")

    def failing(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_files.write_atomic(path, failing, binary=False)
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_write_figure_writes_a_png_of_the_figure(tmp_path):
    fig = figure_lib.Figure(figsize=(2, 1), dpi=50)
    backend_agg.FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    path = str(tmp_path / "f.png")
    atomic_files.write_figure(path, fig)
    pixels = image_lib.imread(path)
    assert pixels.shape[:2] == (50, 100)
    assert np.ptp(pixels[..., :3]) > 0
