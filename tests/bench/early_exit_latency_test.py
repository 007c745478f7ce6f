"""Tests of the early-exit latency benchmark's pieces (no timing is asserted)."""

import numpy as np
import pytest
import tensorflow as tf

from oat_tf import export
from oat_tf.bench import early_exit_latency
from oat_tf.export import adaptive_saved_model
from oat_tf.models import exit_rule
from oat_tf.models import rdi_networks
from oat_tf.models import small_cnn


def _network():
    import keras  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    return rdi_networks.rdi_small_cnn(filters=(4, 8), hidden_units=16, exit_conv_filters=4, exit_hidden_units=16)


def test_backbone_model_is_the_final_output_without_side_exits():
    network = _network()
    backbone = early_exit_latency.backbone_model(network)
    images = np.random.RandomState(0).uniform(size=(5, 28, 28, 1)).astype("float32")
    inputs = {"image": images, "lambda": np.ones([5], np.float32)}
    np.testing.assert_allclose(backbone(inputs), network(inputs)["final"], rtol=1e-6, atol=1e-6)
    assert not any(layer.name.startswith("exit") for layer in backbone.layers)
    with pytest.raises(ValueError, match="multi-exit"):
        keras_model = small_cnn.SmallCNN(variant="plain", filters=(4, 8), hidden_units=8)
        early_exit_latency.backbone_model(keras_model)


def test_measure_reports_both_models_and_the_exits(tmp_path):
    network = _network()
    images = np.random.RandomState(1).uniform(size=(6, 28, 28, 1)).astype("float32")
    adaptive_dir = adaptive_saved_model.export_adaptive_saved_model(
        network, str(tmp_path / "adaptive"), thresholds=np.array([np.inf, -np.inf], np.float32),
        image_shape=(28, 28, 1),
    )
    backbone_dir = export.export_saved_model(
        early_exit_latency.backbone_model(network), str(tmp_path / "backbone"), image_shape=(28, 28, 1)
    )
    row = early_exit_latency.measure(
        adaptive_saved_model.load_adaptive_fn(adaptive_dir), export.load_serving_fn(backbone_dir),
        images, 1.0, 4, runs=1, warmup=0,
    )
    # +inf at exit 1: every image leaves there.
    np.testing.assert_array_equal(row["exit_index"], np.zeros(6, np.int32))
    assert row["adaptive_s"] > 0 and row["backbone_s"] > 0 and row["batch_size"] == 4
    assert row["wall_clock_saving"] == pytest.approx(1 - row["adaptive_s"] / row["backbone_s"])
    row.pop("exit_index")
    row["macs_saving"] = 0.5
    assert "| 4 |" in early_exit_latency.format_table([row])


def test_infinite_thresholds_survive_the_export(tmp_path):
    network = _network()
    export_dir = adaptive_saved_model.export_adaptive_saved_model(
        network, str(tmp_path / "export"), thresholds=[-np.inf, np.inf], image_shape=(28, 28, 1)
    )
    info = adaptive_saved_model.load_early_exit_info(export_dir)
    assert info["thresholds"] == [-np.inf, np.inf]
    serve = adaptive_saved_model.load_adaptive_fn(export_dir)
    images = np.random.RandomState(2).uniform(size=(3, 28, 28, 1)).astype("float32")
    outputs = serve(image=tf.constant(images), lambda_value=tf.ones([3]))
    # exit_1 never fires (-inf), exit_2 always does (+inf).
    np.testing.assert_array_equal(outputs["exit"].numpy(), [1, 1, 1])


@pytest.mark.parametrize(
    "distribution", [(0.4, 0.3, 0.3), (0.0, 0.5, 0.5), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.25, 0.75, 0.0)]
)
def test_thresholds_produce_the_asked_exit_distribution(distribution):
    rng = np.random.default_rng(3)
    entropies = np.stack(
        [exit_rule.entropy_numpy(rng.normal(scale=3.0, size=(200, 10))) for _ in range(2)], axis=1
    ).astype(np.float32)
    thresholds = early_exit_latency.thresholds_for_distribution(entropies, distribution)
    exits = exit_rule.assign_exits(entropies, np.asarray(thresholds, np.float32))
    np.testing.assert_allclose(np.bincount(exits, minlength=3) / 200, distribution, atol=1e-9)


@pytest.mark.parametrize("distribution", [(0.5, 0.5), (0.5, 0.6, 0.1), (-0.1, 0.6, 0.5)])
def test_thresholds_refuse_a_bad_distribution(distribution):
    with pytest.raises(ValueError, match="`exit_distribution` must be 3 fractions >= 0 summing to 1"):
        early_exit_latency.thresholds_for_distribution(np.zeros((4, 2), np.float32), distribution)


def test_stage_time_bound_against_a_hand_count():
    # Stages of 1, 2 and 3 s; exits 0, 1, 2, 2: every sample runs stage 0,
    # three run stage 1 and two run stage 2.
    bound = early_exit_latency.stage_time_bound([1.0, 2.0, 3.0], np.array([0, 1, 2, 2]))
    assert bound == pytest.approx(1 - (1.0 * 1 + 0.75 * 2 + 0.5 * 3) / 6)
    # Everything to the final output: no saving.
    assert early_exit_latency.stage_time_bound([1.0, 2.0], np.array([1, 1])) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "seconds, exits, match",
    [([], [0], "seconds"), ([1.0, -1.0], [0], "seconds"), ([1.0, 2.0], [2], "exit_index"), ([1.0], [], "exit_index")],
)
def test_stage_time_bound_refuses_bad_input(seconds, exits, match):
    with pytest.raises(ValueError, match=match):
        early_exit_latency.stage_time_bound(seconds, np.array(exits, np.int64))


def test_stage_seconds_times_every_stage_once_per_view():
    from oat_tf.models import multi_exit  # pylint: disable=import-outside-toplevel

    network = _network()
    views = multi_exit.stage_views(network)
    images = np.random.RandomState(2).uniform(size=(4, 28, 28, 1)).astype("float32")
    seconds = early_exit_latency.stage_seconds(views, images, 1.0, 4, runs=1)
    assert len(seconds) == len(views) == 3
    assert all(s > 0 for s in seconds)


def test_the_command_writes_infinite_thresholds_as_json(tmp_path):
    import json  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    output = tmp_path / "latency.json"
    # Every image at exit 1: its threshold is +inf, the next one's -inf.
    subprocess.run(
        [sys.executable, "-m", "oat_tf.bench.early_exit_latency", "--architecture=rdi_small_cnn",
         "--image_shape=28,28,1", "--exit_distribution=1,0,0", "--num_examples=8", "--batch_sizes=4",
         "--runs=1", "--warmup=0", "--variant=plain", f"--output_json={output}"],
        check=True, capture_output=True, text=True,
    )
    record = json.loads(output.read_text())
    assert record["thresholds"] == ["inf", "-inf"]
    (row,) = record["rows"]
    assert row["exit_distribution"] == [1.0, 0.0, 0.0]
    assert len(row["stage_seconds"]) == 3
    assert row["stage_time_bound"] == pytest.approx(
        early_exit_latency.stage_time_bound(row["stage_seconds"], np.zeros(8, np.int64))
    )
