"""Pages regenerated from results: written atomically, or checked without writing."""

import os

import pytest

from oat_tf.reporting import pages


def _render(directory):
    with open(os.path.join(directory, "plot.png"), "w", encoding="utf-8") as f:
        f.write("png")
    return f"# page\n![plot]({os.path.basename(directory)}/plot.png)\n"


def test_write_then_check_round_trips(tmp_path):
    page, plots = str(tmp_path / "study.md"), str(tmp_path / "study")
    assert pages.write_or_check(page, plots, _render, source="results.json") == page
    assert open(page, encoding="utf-8").read() == "# page\n![plot](study/plot.png)\n"
    assert os.path.isfile(os.path.join(plots, "plot.png"))
    assert pages.write_or_check(page, plots, _render, source="results.json", check=True) == page


def test_check_writes_nothing_and_reports_a_differing_or_missing_page(tmp_path):
    page, plots = str(tmp_path / "study.md"), str(tmp_path / "study")
    with pytest.raises(ValueError, match=r"study.md differs from the page regenerated from r.json"):
        pages.write_or_check(page, plots, _render, source="r.json", check=True)
    assert not os.path.exists(page) and not os.path.exists(plots)
    with open(page, "w", encoding="utf-8") as f:
        f.write("# an edited page\n")
    with pytest.raises(ValueError, match="differs"):
        pages.write_or_check(page, plots, _render, source="r.json", check=True)
    assert open(page, encoding="utf-8").read() == "# an edited page\n"
