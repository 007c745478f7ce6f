"""Tests of the adaptive (early-exit) SavedModel of a multi-exit network.

The reference is computed independently of the export: the full network's
outputs for every exit, the entropy rule in numpy, and the logits of the exit
each sample takes.
"""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import prediction_log_pb2

from oat_tf import operating_point
from oat_tf.export import adaptive_saved_model
from oat_tf.export import saved_model
from oat_tf.models import multi_exit
from oat_tf.models import rdi_networks
from oat_tf.models import small_cnn
from tests.models import model_testing

SHAPE = (16, 16, 1)
OUTPUTS = ("exit_1", "exit_2", "final")
NUM_SAMPLES = 24
MODEL_CARD = {"model": "tiny rdi", "thresholds_from": "test"}


def _numpy_entropy(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return -(probabilities * np.log(probabilities + 1e-8)).sum(axis=1)


def _expected(full_logits, thresholds, indices=slice(None)):
    """Exit index and logits of each sample under the rule, from the full outputs."""
    entropies = np.stack([_numpy_entropy(full_logits[n]) for n in OUTPUTS[:-1]], axis=1)
    entropies = entropies[indices]
    exits = np.full(len(entropies), len(OUTPUTS) - 1)
    for index in reversed(range(len(OUTPUTS) - 1)):
        exits[entropies[:, index] < thresholds[index]] = index
    stacked = np.stack([full_logits[n][indices] for n in OUTPUTS], axis=0)
    return exits, stacked[exits, np.arange(len(exits))]


def _threshold_in_gap(values, fraction):
    """A threshold between two sorted values (gap > 2e-3) near the `fraction` quantile."""
    values = np.sort(values)
    gaps = [k for k in range(1, len(values)) if values[k] - values[k - 1] > 2e-3]
    k = min(gaps, key=lambda g: abs(g - fraction * len(values)))
    return float((values[k - 1] + values[k]) / 2)


def _mixed_thresholds(full_logits, fractions):
    first = _numpy_entropy(full_logits["exit_1"])
    t1 = _threshold_in_gap(first, fractions[0])
    remaining = first >= t1
    t2 = _threshold_in_gap(_numpy_entropy(full_logits["exit_2"])[remaining], fractions[1])
    return [t1, t2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    network = rdi_networks.rdi_small_cnn(
        variant="oat",
        image_shape=SHAPE,
        encoder=model_testing.TINY_ENCODER,
        filters=(4, 8),
        hidden_units=16,
        exit_conv_filters=4,
        exit_hidden_units=16,
    )
    model_testing.randomize_normalizations(network, seed=1)
    for layer in network.layers:  # Confident enough exits for a spread of entropies.
        if layer.name.endswith("logits"):
            layer.kernel.assign(layer.kernel.numpy() * 20.0)
    rng = np.random.default_rng(0)
    lambdas = rng.uniform(size=NUM_SAMPLES).astype("float32")
    lambdas[:6] = 0.0
    inputs = model_testing.random_inputs(SHAPE, lambdas, seed=0)
    full = {k: v.numpy() for k, v in network(inputs, training=False).items()}
    thresholds = _mixed_thresholds(full, (0.35, 0.5))
    export_dir = str(tmp_path_factory.mktemp("adaptive") / "rdi" / "1")
    path = adaptive_saved_model.export_adaptive_saved_model(
        network, export_dir, thresholds=thresholds, image_shape=SHAPE, model_card=MODEL_CARD
    )
    return types.SimpleNamespace(
        network=network,
        path=path,
        export_dir=export_dir,
        inputs=inputs,
        full=full,
        thresholds=thresholds,
        serve=adaptive_saved_model.load_adaptive_fn(export_dir),
        serve_with=adaptive_saved_model.load_adaptive_fn(
            export_dir, adaptive_saved_model.WITH_THRESHOLDS_SIGNATURE_KEY
        ),
    )


def _check_outputs(outputs, full, thresholds, indices=slice(None)):
    exits, logits = _expected(full, thresholds, indices)
    assert outputs["exit"].dtype == tf.int32
    np.testing.assert_array_equal(outputs["exit"], exits)
    np.testing.assert_allclose(outputs["logits"], logits, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(logits), atol=1e-5)
    assert outputs["classes"].dtype == tf.int64
    np.testing.assert_array_equal(outputs["classes"], np.argmax(logits, axis=-1))
    return exits


def _call(serve, inputs, indices=slice(None), **extra):
    return serve(
        image=tf.constant(inputs["image"][indices]),
        lambda_value=tf.constant(inputs["lambda"][indices]),
        **extra,
    )


def test_serving_default_equals_the_full_model_at_each_exit(exported):
    assert exported.path == exported.export_dir
    outputs = _call(exported.serve, exported.inputs)
    assert sorted(outputs) == ["classes", "exit", "logits", "probabilities"]
    exits = _check_outputs(outputs, exported.full, exported.thresholds)
    assert set(exits.tolist()) == {0, 1, 2}  # A mixed batch: every exit taken.


@pytest.mark.parametrize(
    "thresholds, expected_exits",
    [
        ([1e9, 1e9], {0}),  # Everybody at exit_1: nothing else runs.
        ([np.inf, 0.0], {0}),
        ([0.0, 0.0], {2}),  # Entropies are >= 0: nobody exits early.
        ([-np.inf, -np.inf], {2}),
        ([0.0, 1e9], {1}),
        (None, {0, 1, 2}),  # Mixed, other thresholds than the exported ones.
    ],
)
def test_with_thresholds_signature(exported, thresholds, expected_exits):
    if thresholds is None:
        thresholds = _mixed_thresholds(exported.full, (0.5, 0.3))
    outputs = _call(
        exported.serve_with, exported.inputs, thresholds=tf.constant(thresholds, tf.float32)
    )
    exits = _check_outputs(outputs, exported.full, thresholds)
    assert set(exits.tolist()) == expected_exits


@pytest.mark.parametrize("indices", [[0], [5], [23], [3, 17, 8, 1, 11]])
def test_any_batch_size(exported, indices):
    outputs = _call(exported.serve, exported.inputs, indices)
    _check_outputs(outputs, exported.full, exported.thresholds, indices)


class _RecordingView:
    """A stage view that records the batch size of every call."""

    def __init__(self, view, calls):
        self.view, self.calls = view, calls
        self.model, self.is_final = view.model, view.is_final

    def __call__(self, features, lambdas, training=False):
        self.calls.append((self.view.index, int(features.shape[0])))
        return self.view(features, lambdas, training=training)


@pytest.mark.parametrize(
    "thresholds, expected_calls",
    [
        ([1e9, 1e9], [(0, 24)]),  # All exit at exit_1: stages 1 and 2 never run.
        ([0.0, 1e9], [(0, 24), (1, 24)]),
        ([0.0, 0.0], [(0, 24), (1, 24), (2, 24)]),
        (None, None),
    ],
)
def test_later_stages_run_on_the_remaining_samples_only(exported, thresholds, expected_calls):
    if thresholds is None:
        thresholds = exported.thresholds
        exits, _ = _expected(exported.full, thresholds)
        expected_calls = [(0, 24), (1, int(np.sum(exits >= 1))), (2, int(np.sum(exits == 2)))]
    calls = []
    views = [_RecordingView(v, calls) for v in multi_exit.stage_views(exported.network)]
    logits, exits = adaptive_saved_model.adaptive_forward(
        views,
        tf.constant(exported.inputs["image"]),
        tf.constant(exported.inputs["lambda"]),
        tf.constant(thresholds, tf.float32),
    )
    assert calls == expected_calls
    _check_outputs(
        {
            "logits": logits,
            "exit": exits,
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, axis=-1),
        },
        exported.full,
        thresholds,
    )


def test_one_image_runs_only_the_stages_up_to_its_exit(exported):
    """At batch 1 too, stage i runs iff the exits before it declined (an empty stage is skipped)."""
    exits, logits = _expected(exported.full, exported.thresholds)
    assert set(exits.tolist()) == {0, 1, 2}
    for n in range(NUM_SAMPLES):
        calls = []
        views = [_RecordingView(v, calls) for v in multi_exit.stage_views(exported.network)]
        got_logits, got_exit = adaptive_saved_model.adaptive_forward(
            views,
            tf.constant(exported.inputs["image"][n : n + 1]),
            tf.constant(exported.inputs["lambda"][n : n + 1]),
            tf.constant(exported.thresholds, tf.float32),
        )
        assert calls == [(stage, 1) for stage in range(exits[n] + 1)], n
        assert got_exit.shape == (1,) and got_logits.shape == (1, logits.shape[1])
        assert int(got_exit[0]) == exits[n]
        np.testing.assert_allclose(got_logits[0], logits[n], rtol=1e-5, atol=1e-4)


def test_a_traced_graph_serves_every_batch_size(exported):
    """Traced with an unknown batch size and called with 1, 2 and 24 images."""
    forward = tf.function(
        lambda image, lam, thresholds: adaptive_saved_model.adaptive_forward(
            multi_exit.stage_views(exported.network), image, lam, thresholds
        ),
        input_signature=[
            tf.TensorSpec([None, *SHAPE], tf.float32),
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([2], tf.float32),
        ],
    )
    thresholds = tf.constant(exported.thresholds, tf.float32)
    exits, logits = _expected(exported.full, exported.thresholds)
    for indices in ([7], [7, 8], list(range(NUM_SAMPLES))):
        got_logits, got_exits = forward(
            tf.constant(exported.inputs["image"][indices]), tf.constant(exported.inputs["lambda"][indices]), thresholds
        )
        np.testing.assert_array_equal(got_exits, exits[indices])
        np.testing.assert_allclose(got_logits, logits[indices], rtol=1e-5, atol=1e-4)


def test_signatures(exported):
    args, kwargs = exported.serve.structured_input_signature
    assert args == ()
    image = tf.TensorSpec([None, *SHAPE], tf.float32, name="image")
    lam = tf.TensorSpec([None], tf.float32, name="lambda_value")
    assert kwargs == {"image": image, "lambda_value": lam}
    _, kwargs = exported.serve_with.structured_input_signature
    thresholds = tf.TensorSpec([None], tf.float32, name="thresholds")  # Length checked in-graph.
    assert kwargs == {"image": image, "lambda_value": lam, "thresholds": thresholds}
    expected_outputs = {
        "logits": tf.TensorSpec([None, 10], tf.float32, name="logits"),
        "probabilities": tf.TensorSpec([None, 10], tf.float32, name="probabilities"),
        "classes": tf.TensorSpec([None], tf.int64, name="classes"),
        "exit": tf.TensorSpec([None], tf.int32, name="exit"),
    }
    assert exported.serve.structured_outputs == expected_outputs
    assert exported.serve_with.structured_outputs == expected_outputs


_IMAGES = np.full((2, *SHAPE), 0.5, np.float32)
_LAMBDAS = np.array([0.0, 0.7], np.float32)
_THRESHOLDS = np.array([0.5, 0.5], np.float32)
_INVALID = {
    "lambda_above_1": (_IMAGES, np.array([0.2, 1.5], np.float32), _THRESHOLDS, "lambda_value"),
    "lambda_nan": (_IMAGES, np.array([np.nan, 0.5], np.float32), _THRESHOLDS, "lambda_value"),
    "lambda_batch": (_IMAGES, np.array([0.2], np.float32), _THRESHOLDS, "lambda_value"),
    "image_height": (np.full((2, 15, 16, 1), 0.5, np.float32), _LAMBDAS, _THRESHOLDS, "image"),
    "image_channels": (np.full((2, 16, 16, 3), 0.5, np.float32), _LAMBDAS, _THRESHOLDS, "image"),
    "image_rank_3": (
        np.full((16, 16, 1), 0.5, np.float32),
        np.full(16, 0.2, np.float32),
        _THRESHOLDS,
        "image",
    ),
    "image_0_to_255": (_IMAGES * 255, _LAMBDAS, _THRESHOLDS, "image"),
    "thresholds_nan": (_IMAGES, _LAMBDAS, np.array([0.5, np.nan], np.float32), "thresholds"),
    "thresholds_length": (_IMAGES, _LAMBDAS, np.array([0.5, 0.5, 0.5], np.float32), "thresholds"),
    "thresholds_rank_2": (_IMAGES, _LAMBDAS, _THRESHOLDS[None], "thresholds"),
    "thresholds_scalar": (_IMAGES, _LAMBDAS, np.float32(0.5), "thresholds"),
    "thresholds_empty": (_IMAGES, _LAMBDAS, np.zeros(0, np.float32), "thresholds"),
}


@pytest.mark.parametrize("case", sorted(_INVALID))
def test_invalid_inputs_raise_naming_the_input(exported, case):
    images, lambdas, thresholds, name = _INVALID[case]
    # The signature's own shape check may fail first; its message names the
    # input as "tensor thresholds".
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{name}`|tensor {name} "):
        exported.serve_with(
            image=tf.constant(images),
            lambda_value=tf.constant(lambdas),
            thresholds=tf.constant(thresholds),
        )
    if name != "thresholds":
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{name}`"):
            exported.serve(image=tf.constant(images), lambda_value=tf.constant(lambdas))


@pytest.fixture(scope="module")
def session_predict(exported):
    """`with_thresholds` run as TF Serving runs it: a C++ session fed by tensor name."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], exported.export_dir)
    signature = meta_graph.signature_def["with_thresholds"]
    options = config_pb2.CallableOptions(
        feed=[signature.inputs[name].name for name in ("image", "lambda_value", "thresholds")],
        fetch=[signature.outputs[name].name for name in ("logits", "exit")],
    )
    predict = session._make_callable_from_options(options)
    yield predict
    session.close()


@pytest.mark.parametrize("case", sorted(_INVALID))
def test_invalid_inputs_raise_in_a_tf_serving_session(session_predict, case):
    images, lambdas, thresholds, name = _INVALID[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{name}`|tensor {name} "):
        session_predict(images, lambdas, thresholds)


def test_valid_inputs_in_a_tf_serving_session(exported, session_predict):
    thresholds = np.float32(_mixed_thresholds(exported.full, (0.5, 0.3)))
    logits, exits = session_predict(exported.inputs["image"], exported.inputs["lambda"], thresholds)
    expected_exits, expected_logits = _expected(exported.full, thresholds)
    np.testing.assert_array_equal(exits, expected_exits)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-4)


def test_assets_extra(exported):
    assert saved_model.load_model_card(exported.export_dir) == MODEL_CARD
    info = adaptive_saved_model.load_early_exit_info(exported.export_dir)
    assert info["output_names"] == list(OUTPUTS)
    np.testing.assert_array_equal(
        np.float32(info["thresholds"]), np.float32(exported.thresholds)
    )
    assert info["exit_macs"] == multi_exit.exit_macs(exported.network)
    assert info["backbone_macs"] == multi_exit.backbone_macs(exported.network)
    assert info["lambda_thresholds"] is None
    assert json.loads(json.dumps(info)) == info


# Calibrated rows per λ: at λ = 0 everyone leaves at exit_1, at λ = 0.5 at exit_2, at λ = 1 nobody exits early.
LAMBDA_TABLE = {0.0: [1e9, 1e9], 0.5: [0.0, np.inf], 1.0: [0.0, 0.0]}


@pytest.fixture(scope="module")
def exported_with_table(exported, tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("adaptive_table") / "1")
    adaptive_saved_model.export_adaptive_saved_model(
        exported.network, export_dir, thresholds=exported.thresholds, image_shape=SHAPE,
        lambda_thresholds=LAMBDA_TABLE,
    )
    return export_dir


@pytest.mark.parametrize("indices", [list(range(NUM_SAMPLES)), [0], [9]])
def test_serving_picks_each_samples_row_of_the_lambda_table(exported, exported_with_table, indices):
    serve = adaptive_saved_model.load_adaptive_fn(exported_with_table)
    lambdas = np.resize(np.float32([0.0, 0.2, 0.26, 0.5, 0.74, 0.76, 1.0, 0.25]), NUM_SAMPLES)[indices]
    outputs = serve(image=tf.constant(exported.inputs["image"][indices]), lambda_value=tf.constant(lambdas))
    # The nearest calibrated λ (0.25, halfway, takes the smaller one's row).
    nearest = np.array([0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0, 0.0], np.float32)
    expected = {0.0: 0, 0.5: 1, 1.0: 2}
    want = [expected[float(v)] for v in np.resize(nearest, NUM_SAMPLES)[indices]]
    np.testing.assert_array_equal(outputs["exit"], want)
    # The logits are those of the exit taken, from the full network at each sample's λ.
    full = exported.network(
        {"image": exported.inputs["image"][indices], "lambda": lambdas}, training=False
    )
    stacked = np.stack([full[name].numpy() for name in OUTPUTS])
    np.testing.assert_allclose(outputs["logits"], stacked[want, np.arange(len(want))], rtol=1e-5, atol=1e-4)


def test_with_thresholds_still_overrides_the_lambda_table(exported, exported_with_table):
    serve = adaptive_saved_model.load_adaptive_fn(
        exported_with_table, adaptive_saved_model.WITH_THRESHOLDS_SIGNATURE_KEY
    )
    outputs = _call(serve, exported.inputs, thresholds=tf.constant([1e9, 1e9], tf.float32))
    np.testing.assert_array_equal(outputs["exit"], np.zeros(NUM_SAMPLES))


def test_the_lambda_table_is_recorded(exported_with_table):
    info = adaptive_saved_model.load_early_exit_info(exported_with_table)
    assert info["lambda_thresholds"] == {
        "lambdas": [0.0, 0.5, 1.0], "thresholds": [[1e9, 1e9], [0.0, np.inf], [0.0, 0.0]]
    }


@pytest.mark.parametrize(
    "table, match",
    [
        ({}, "must be a non-empty dict"),
        ({1.5: [0.1, 0.1]}, r"keys must be λ values in \[0, 1\]"),
        ({"a": [0.1, 0.1]}, r"keys must be λ values in \[0, 1\]"),
        ({0.0: [0.1]}, "`thresholds` must be 2 floats"),
        ({0.0: [0.1, np.nan]}, "`thresholds` must be 2 floats"),
        # The table as operating points.
        ([operating_point.OperatingPoint(0.0)], "needs `exit_thresholds`"),
        ([operating_point.OperatingPoint(0.0, exit_thresholds=(0.1,))], "must be 2 floats"),
        (
            [operating_point.OperatingPoint(0.0, 0.5, (0.1, 0.1)), operating_point.OperatingPoint(1.0, 1.0, (0.1, 0.1))],
            "one width",
        ),
        (["0.0"], "OperatingPoint"),
    ],
)
def test_a_bad_lambda_table_is_refused_before_writing(exported, tmp_path, table, match):
    with pytest.raises(ValueError, match=match):
        adaptive_saved_model.export_adaptive_saved_model(
            exported.network, str(tmp_path / "x"), thresholds=exported.thresholds, image_shape=SHAPE,
            lambda_thresholds=table,
        )
    assert not os.path.exists(tmp_path / "x")


def test_select_lambda_thresholds_against_numpy():
    rng = np.random.default_rng(5)
    table_lambdas = np.float32([0.0, 0.1, 0.4, 1.0])
    table = rng.uniform(size=(4, 3)).astype(np.float32)
    lambdas = rng.uniform(size=50).astype(np.float32)
    got = adaptive_saved_model.select_lambda_thresholds(
        tf.constant(lambdas), tf.constant(table_lambdas), tf.constant(table)
    ).numpy()
    nearest = np.abs(lambdas[:, None] - table_lambdas[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(got, table[nearest])


def test_warmup_requests_run_through_the_signatures(exported):
    path = os.path.join(exported.export_dir, "assets.extra", "tf_serving_warmup_requests")
    signatures = {
        "serving_default": exported.serve,
        "with_thresholds": exported.serve_with,
    }
    seen = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = signatures[request.model_spec.signature_name](**inputs)
        assert outputs["logits"].shape[0] == inputs["image"].shape[0]
        seen.append(request.model_spec.signature_name)
    assert sorted(set(seen)) == ["serving_default", "with_thresholds"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"thresholds": [0.5]}, "`thresholds` must be 2 floats"),
        ({"thresholds": [0.5, np.nan]}, "`thresholds`"),
        ({"thresholds": [[0.5, 0.5]]}, "`thresholds`"),
        ({"image_shape": (16, 16)}, "`image_shape`"),
        ({"image_shape": (28, 28, 1)}, "`image_shape` must be the network's image shape"),
        ({"model_card": ["not", "a", "dict"]}, "`model_card`"),
    ],
)
def test_bad_export_arguments_raise_before_writing(exported, tmp_path, kwargs, match):
    args = {"thresholds": [0.5, 0.5], "image_shape": SHAPE, **kwargs}
    export_dir = str(tmp_path / "export")
    with pytest.raises(ValueError, match=match):
        adaptive_saved_model.export_adaptive_saved_model(exported.network, export_dir, **args)
    assert not os.path.exists(export_dir)


def test_a_single_output_network_is_rejected(tmp_path):
    network = small_cnn.SmallCNN(image_shape=SHAPE, filters=(4, 8), hidden_units=8)
    with pytest.raises(ValueError, match="`model` must be a multi-exit network"):
        adaptive_saved_model.export_adaptive_saved_model(
            network, str(tmp_path / "x"), thresholds=[0.5], image_shape=SHAPE
        )


def test_the_lambda_table_is_recorded_as_operating_points(exported, exported_with_table, tmp_path):
    info = adaptive_saved_model.load_early_exit_info(exported_with_table)
    points = [operating_point.OperatingPoint.from_json(p) for p in info["operating_points"]]
    assert points == list(operating_point.points_from_table(LAMBDA_TABLE))
    assert json.loads(json.dumps(info)) == info
    # The same table given as operating points exports the same early_exit.json.
    export_dir = str(tmp_path / "points")
    adaptive_saved_model.export_adaptive_saved_model(
        exported.network, export_dir, thresholds=exported.thresholds, image_shape=SHAPE, lambda_thresholds=points,
    )
    assert adaptive_saved_model.load_early_exit_info(export_dir) == info
