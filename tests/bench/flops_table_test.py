"""Tests for oat_tf.bench.flops_table: the Markdown table of
`oat_tf.models.flops` counts, its rows per width and its argument checks."""

import pytest

from oat_tf.bench import flops_table
from oat_tf.models import flops
from oat_tf.models import small_cnn


def test_markdown_table():
    table = flops_table.flops_table(["small_cnn:16"], ["plain", "oat"])
    lines = table.strip().splitlines()
    assert lines[0].startswith("| model | variant | input |")
    assert len(lines) == 4
    assert lines[2].startswith("| small_cnn | plain | 16×16×1 | 1.0 |")
    assert lines[3].startswith("| small_cnn | oat |") and lines[3].endswith("% |")


def test_markdown_table_rows_per_width():
    table = flops_table.flops_table(["small_cnn:16", "wrn16_8"], ["ats", "oats"], widths=(0.5, 1.0))
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 4  # wrn16_8 has no slimmable network: no rows
    assert lines[2].startswith("| small_cnn | ats | 16×16×1 | 1.0 |") and lines[2].endswith("+0.00% |")
    assert lines[5].startswith("| small_cnn | oats | 16×16×1 | 0.5 |")


def test_rows_hold_the_counts_of_the_built_models():
    table = flops_table.flops_table(["small_cnn:16"], ["plain"])
    row = table.strip().splitlines()[2]
    expected = flops.count_flops(small_cnn.SmallCNN(variant="plain", image_shape=(16, 16, 1)))
    assert f"| {expected['params']:,} |" in row
    assert f"| {expected['macs'] / 1e6:,.2f} M |" in row


def test_rejects_a_bad_size():
    with pytest.raises(ValueError, match="NAME:SIZE with a positive integer SIZE"):
        flops_table.flops_table(["small_cnn:x"], ["plain"])
