"""Tests for oat_tf.reporting.plots: the plotted data equal the result's."""

import numpy as np
import pytest
from matplotlib import image as image_lib
from matplotlib import markers

from oat_tf import atomic_files
from oat_tf.evaluation import bn_statistics
from oat_tf.evaluation import frontier
from oat_tf.reporting import plots


def _result():
    return {
        "num_examples": 100,
        "seed": 0,
        "lambdas": [0.0, 0.15, 0.3, 1.0],
        "clean_accuracy": {"0.0": 0.93, "0.15": 0.9, "0.3": 0.88, "1.0": 0.81},
        "robust_accuracy": {
            "PGD-7": {"0.0": 0.1, "0.15": 0.4, "0.3": 0.45, "1.0": 0.5},
            "FGSM": {"0.0": 0.2, "0.15": 0.5, "0.3": 0.52, "1.0": 0.55},
        },
        "worst_case_accuracy": {"0.0": 0.05, "0.15": 0.39, "0.3": 0.44, "1.0": 0.49},
        "attacks": [],
    }


def _point(lam, sa, ra, notes=()):
    return frontier.FrontierPoint(
        name=f"pgdat_{lam}", directory="d", lambda_value=lam, lambda_key=repr(lam),
        clean_accuracy=sa, robust_accuracy=ra, attack="PGD-7", notes=tuple(notes),
    )


FRONTIER = [_point(1.0, 0.8, 0.52), _point(0.3, 0.87, 0.46, notes=("other attack",))]


def _percent(values):
    return [100.0 * v for v in values]


def _artists(ax):
    """{label: (x, y)} of every line and scatter collection of `ax`."""
    found = {}
    for line in ax.get_lines():
        found[line.get_label()] = (list(line.get_xdata()), list(line.get_ydata()))
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets())
        found[collection.get_label()] = (list(offsets[:, 0]), list(offsets[:, 1]))
    return found


def _assert_png(fig, tmp_path):
    path = str(tmp_path / "figure.png")
    atomic_files.write_figure(path, fig)
    pixels = image_lib.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    # Not blank: many distinct colours.
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 10


def test_ra_vs_sa_plots_each_lambda_and_the_frontier(tmp_path):
    fig = plots.ra_vs_sa_figure(
        _result(), seen_lambdas=[0.0, 0.3, 1.0], attack="FGSM", frontier=FRONTIER
    )
    ax = fig.axes[0]
    artists = _artists(ax)
    sa = _percent([0.93, 0.9, 0.88, 0.81])
    ra = _percent([0.2, 0.5, 0.52, 0.55])
    np.testing.assert_allclose(artists["_oat_line"], [sa, ra])
    np.testing.assert_allclose(artists["OAT, seen λ"], [[sa[0], sa[2], sa[3]], [ra[0], ra[2], ra[3]]])
    np.testing.assert_allclose(artists["OAT, unseen λ"], [[sa[1]], [ra[1]]])
    # Frontier sorted by λ.
    np.testing.assert_allclose(artists["PGD-AT"], [[87.0, 80.0], [46.0, 52.0]])
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["λ=0.0", "λ=0.15", "λ=0.3", "λ=1.0", "λ=0.3*", "λ=1"]
    assert ax.get_ylabel() == "RA under FGSM (%)"
    assert any("another attack" in t.get_text() for t in fig.texts)
    _assert_png(fig, tmp_path)


def test_ra_vs_sa_defaults_to_the_strongest_attack_and_the_worst_case():
    ax = plots.ra_vs_sa_figure(_result()).axes[0]
    assert ax.get_ylabel() == "RA under PGD-7 (%)"
    np.testing.assert_allclose(_artists(ax)["OAT"][1], _percent([0.1, 0.4, 0.45, 0.5]))
    result = _result()
    result["robust_accuracy"] = {}
    ax = plots.ra_vs_sa_figure(result).axes[0]
    np.testing.assert_allclose(_artists(ax)["OAT"][1], _percent([0.05, 0.39, 0.44, 0.49]))
    with pytest.raises(ValueError, match="attack"):
        plots.ra_vs_sa_figure(_result(), attack="PGD-20")


def test_accuracy_vs_lambda_plots_sa_every_attack_and_worst_case(tmp_path):
    fig = plots.accuracy_vs_lambda_figure(_result(), frontier=FRONTIER)
    top, bottom = fig.axes
    lambdas = [0.0, 0.15, 0.3, 1.0]
    np.testing.assert_allclose(_artists(top)["SA"], [lambdas, _percent([0.93, 0.9, 0.88, 0.81])])
    np.testing.assert_allclose(_artists(top)["PGD-AT"], [[0.3, 1.0], [87.0, 80.0]])
    lines = _artists(bottom)
    np.testing.assert_allclose(lines["RA PGD-7"], [lambdas, _percent([0.1, 0.4, 0.45, 0.5])])
    np.testing.assert_allclose(lines["RA FGSM"], [lambdas, _percent([0.2, 0.5, 0.52, 0.55])])
    np.testing.assert_allclose(lines["worst case"], [lambdas, _percent([0.05, 0.39, 0.44, 0.49])])
    np.testing.assert_allclose(lines["PGD-AT PGD-7"], [[0.3, 1.0], [46.0, 52.0]])
    _assert_png(fig, tmp_path)


def test_seen_vs_unseen_marks_training_lambdas(tmp_path):
    fig = plots.seen_vs_unseen_figure(_result(), [0.0, 0.3, 1.0], attack="PGD-7", frontier=FRONTIER[:1])
    left, right = fig.axes
    sa, ra = _artists(left), _artists(right)
    np.testing.assert_allclose(sa["OAT, seen λ"], [[0.0, 0.3, 1.0], _percent([0.93, 0.88, 0.81])])
    np.testing.assert_allclose(sa["OAT, unseen λ"], [[0.15], [90.0]])
    np.testing.assert_allclose(ra["OAT, seen λ"], [[0.0, 0.3, 1.0], _percent([0.1, 0.45, 0.5])])
    np.testing.assert_allclose(ra["OAT, unseen λ"], [[0.15], [40.0]])
    np.testing.assert_allclose(sa["PGD-AT"], [[1.0], [80.0]])
    np.testing.assert_allclose(ra["PGD-AT"], [[1.0], [52.0]])
    # Stars for unseen λ, circles for seen ones.
    paths = {c.get_label(): c.get_paths()[0].vertices for c in right.collections}
    for label, marker in (("OAT, unseen λ", "*"), ("OAT, seen λ", "o"), ("PGD-AT", "o")):
        style = markers.MarkerStyle(marker)
        np.testing.assert_allclose(paths[label], style.get_path().transformed(style.get_transform()).vertices)
    _assert_png(fig, tmp_path)


def test_saliency_figure_shows_each_image_and_map(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.uniform(size=(2, 8, 8, 1)).astype(np.float32)
    maps = rng.uniform(size=(2, 3, 8, 8, 1)).astype(np.float32)
    fig = plots.saliency_figure(
        images, maps, [0.0, 0.5, 1.0], labels=[3, 7], alignment=np.full((2, 3), 0.25)
    )
    assert len(fig.axes) == 2 * 4
    for i in range(2):
        row = fig.axes[i * 4: (i + 1) * 4]
        np.testing.assert_array_equal(row[0].images[0].get_array(), images[i, ..., 0])
        for j in range(3):
            np.testing.assert_array_equal(row[1 + j].images[0].get_array(), maps[i, j, ..., 0])
            assert row[1 + j].get_xlabel() == "0.25"
        assert row[0].get_ylabel() == f"class {[3, 7][i]}"
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "λ=0", "λ=0.5", "λ=1"]
    _assert_png(fig, tmp_path)
    rgb = plots.saliency_figure(np.zeros((1, 4, 4, 3)), np.ones((1, 1, 4, 4, 3)), [1.0])
    assert rgb.axes[1].images[0].get_array().shape == (4, 4, 3)
    with pytest.raises(ValueError, match="maps"):
        plots.saliency_figure(images, maps[:, :2], [0.0, 0.5, 1.0])


def test_bn_statistics_figure_scatters_mean_against_variance(tmp_path):
    series = [
        bn_statistics.RunningStatistics("a clean", "bn", np.array([0.0, 1.0]), np.array([2.0, 3.0])),
        bn_statistics.RunningStatistics("a adversarial", "bn", np.array([-1.0, 0.5]), np.array([0.5, 4.0])),
    ]
    fig = plots.bn_statistics_figure(series)
    artists = _artists(fig.axes[0])
    np.testing.assert_allclose(artists["a clean"], [[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_allclose(artists["a adversarial"], [[-1.0, 0.5], [0.5, 4.0]])
    assert fig.axes[0].get_xlabel() == "running mean" and "bn" in fig.axes[0].get_title()
    _assert_png(fig, tmp_path)
    with pytest.raises(ValueError, match="series"):
        plots.bn_statistics_figure([])
