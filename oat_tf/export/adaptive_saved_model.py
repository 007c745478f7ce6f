"""Export of a multi-exit (RDI-Nets) network as a SavedModel that really exits early.

Inference skips work: the network runs stage by stage
(`oat_tf.models.multi_exit.stage_views`). After each side exit i (0-based,
i < M) the softmax entropy of its logits, H(p) = −Σ_c p_c log(p_c + ε)
(`oat_tf.models.exit_rule.entropy`, the rule of the evaluation), is
compared with the exit's threshold t_i; the samples with H < t_i take that exit, and only the others
(gathered with `tf.where` + `tf.gather`) go on to the next stage. A stage
whose remaining set is empty is not run at all (`tf.cond`). The results are
stitched back into the batch order (`tf.dynamic_stitch`). The computation of
a sample that exits at i is therefore exactly that of stages 0..i and heads
1..i+1, the cost `oat_tf.models.multi_exit.exit_macs` counts.

Signatures (the conventions of `oat_tf.export.saved_model`: input names, the
in-graph validation of `image` and `lambda_value`, warmup requests, model card,
atomic write):

    serving_default:
        inputs:  image          float32 [-1, H, W, C], pixels in [0, 1]
                 lambda_value   float32 [-1], λ in [0, 1] (ignored by a
                                "plain" network)
        outputs: logits         float32 [-1, K], those of the exit taken
                 probabilities  float32 [-1, K], their softmax
                 classes        int64   [-1], their argmax
                 exit           int32   [-1], the exit taken: 0..M-1 for the
                                side exits exit_1..exit_M, M for "final"
        thresholds: those given to `export_adaptive_saved_model`, constants
        of the graph; or, with `lambda_thresholds` (a {λ: thresholds} table,
        e.g. calibrated at each λ of multi-exit OAT), per sample the row of
        the calibrated λ nearest its `lambda_value`.
    with_thresholds:
        the same, with a third input `thresholds` float32 [M] (one per side
        exit, in order; declared [-1] in the signature, the length M is
        checked in the graph; no NaN; +inf sends every sample out at that exit,
        −inf or 0 none, since entropies are >= 0).

Invalid inputs raise `InvalidArgumentError` naming the input, as in
`oat_tf.export.saved_model` (`thresholds` must have shape [M] and no NaN).

`assets.extra/` holds the TF Serving warmup requests, the model card when
given, and `early_exit.json`: the output names, the exported thresholds, the
MACs per image of each exit (`exit_macs`) and of the backbone
(`backbone_macs`), and the λ table (`lambda_thresholds`: `lambdas` and one
`thresholds` row each, or null, and the same rows as `operating_points`, the
JSON of `oat_tf.operating_point.OperatingPoint`), read back with
`load_early_exit_info`.

Example:

```python
path = export_adaptive_saved_model(
    network, "saved_models/rdi/1", thresholds=[0.3, 0.5], image_shape=(28, 28, 1)
)
serve = load_adaptive_fn(path)
outputs = serve(image=images, lambda_value=tf.zeros([n]))
outputs["classes"], outputs["exit"]
serve_at = load_adaptive_fn(path, WITH_THRESHOLDS_SIGNATURE_KEY)
outputs = serve_at(image=images, lambda_value=tf.zeros([n]), thresholds=tf.constant([0.1, 0.2]))
```
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from oat_tf import operating_point
from oat_tf import output_paths
from oat_tf.export import saved_model
from oat_tf.models import exit_rule
from oat_tf.models import multi_exit

SIGNATURE_KEY = saved_model.SIGNATURE_KEY
WITH_THRESHOLDS_SIGNATURE_KEY = "with_thresholds"
IMAGE_INPUT_NAME = saved_model.IMAGE_INPUT_NAME
LAMBDA_INPUT_NAME = saved_model.LAMBDA_INPUT_NAME
THRESHOLDS_INPUT_NAME = "thresholds"
LOGITS_OUTPUT_NAME = saved_model.LOGITS_OUTPUT_NAME
PROBABILITIES_OUTPUT_NAME = saved_model.PROBABILITIES_OUTPUT_NAME
CLASSES_OUTPUT_NAME = saved_model.CLASSES_OUTPUT_NAME
EXIT_OUTPUT_NAME = "exit"
EARLY_EXIT_FILENAME = "early_exit.json"



def _check_thresholds(thresholds, num_exits: int, names: Sequence[str]) -> Tuple[float, ...]:
    return operating_point.check_thresholds(thresholds, num_exits, "thresholds", names[:-1])


def _check_lambda_thresholds(
    lambda_thresholds, num_exits: int, names: Sequence[str]
) -> Optional[Tuple[Tuple[float, ...], Tuple[Tuple[float, ...], ...]]]:
    """(λ values sorted, their threshold rows) of a λ → thresholds table, or None.

    The table is a dict {λ: thresholds} or a list of `OperatingPoint`s that
    carry `exit_thresholds` (one width, distinct λ).
    """
    if lambda_thresholds is None:
        return None
    table = operating_point.checked_table(lambda_thresholds, num_exits, names[:-1])
    return tuple(table), tuple(table.values())


def select_lambda_thresholds(
    lambda_value: tf.Tensor, table_lambdas: tf.Tensor, table: tf.Tensor
) -> tf.Tensor:
    """Each sample's threshold row: that of the calibrated λ nearest its own λ.

    Args:
        lambda_value: float32 [N], the samples' λ.
        table_lambdas: float32 [L], the calibrated λ values, increasing.
        table: float32 [L, M], their thresholds.

    Returns:
        float32 [N, M]; a λ halfway between two calibrated ones takes the
        smaller one's row.
    """
    distance = tf.abs(lambda_value[:, tf.newaxis] - table_lambdas[tf.newaxis, :])
    return tf.gather(table, tf.argmin(distance, axis=1, output_type=tf.int32))


def _checked_thresholds(thresholds: tf.Tensor, num_exits: int) -> tf.Tensor:
    """`thresholds` behind in-graph checks of its shape [M] and of NaN.

    The result keeps the signature's unknown length on purpose: the graph
    optimizer infers shapes backwards (a `tf.ensure_shape` or `tf.reshape` to
    [M] downstream makes it assume the input has M elements) and would then
    fold the shape check away.
    """
    padded_shape = tf.concat([tf.shape(thresholds), tf.fill([2], -1)], axis=0)
    shape_check = tf.debugging.assert_equal(
        padded_shape[:2],
        tf.constant([num_exits, -1]),
        message=f"`{THRESHOLDS_INPUT_NAME}` must have shape [{num_exits}], one threshold per "
        "side exit (x = the received shape padded with -1)",
    )
    # The NaN check reduces over the signature's rank: run it only once the
    # shape is known to be right, so a wrong shape is reported as such.
    with tf.control_dependencies([shape_check]):
        thresholds = tf.identity(thresholds)
    nan_check = tf.debugging.assert_equal(
        tf.reduce_any(tf.math.is_nan(thresholds)),
        False,
        message=f"`{THRESHOLDS_INPUT_NAME}` values must not be NaN",
    )
    with tf.control_dependencies([shape_check, nan_check]):
        return tf.identity(thresholds)


def _empty_like(tensor: keras.KerasTensor) -> tf.Tensor:
    """A zero-sample tensor with the static shape of a symbolic stage output."""
    return tf.zeros([0, *[int(d) for d in tensor.shape[1:]]], tensor.dtype)


def adaptive_forward(
    views: Sequence[multi_exit.StageView],
    image: tf.Tensor,
    lambda_value: tf.Tensor,
    thresholds: tf.Tensor,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Early-exit inference over the stages: each sample runs only up to its exit.

    The samples that leave at a side exit are gathered out of the later
    stages, and a stage with no sample left is not run. (A chain of scalar `tf.cond` for a batch of one image, with no gather or
    stitch, was measured 1.5× slower than this path at batch 1 on RDI-SmallCNN
    in a SavedModel, and was dropped; see BENCHMARKS.md.)

    Args:
        views: the network's `multi_exit.stage_views` (M + 1 stages).
        image: float32 [N, H, W, C].
        lambda_value: float32 [N].
        thresholds: float32 [M], entropy threshold of each side exit, or
            [N, M], one row per sample (`select_lambda_thresholds`).

    Returns:
        Tuple (logits [N, K] float32 of the exit each sample took, exit index
        [N] int32 in 0..M).
    """
    thresholds = tf.convert_to_tensor(thresholds, tf.float32)
    if thresholds.shape.rank == 1:
        thresholds = tf.broadcast_to(thresholds, tf.stack([tf.shape(image)[0], tf.size(thresholds)]))
    batch_size = tf.shape(image)[0]
    positions = tf.range(batch_size, dtype=tf.int32)  # Batch positions of the remaining samples.
    features, lambdas = image, lambda_value
    stitch_positions, stitch_logits, stitch_exits = [], [], []
    for index, view in enumerate(views):
        if view.is_final:
            empty_logits = _empty_like(view.model.outputs[0])

            def run_final(view=view, features=features, lambdas=lambdas):
                return tf.cast(view(features, lambdas, training=False)[1], tf.float32)

            logits = tf.cond(
                tf.size(positions) > 0, run_final, lambda e=empty_logits: tf.cast(e, tf.float32)
            )
            taken = positions
        else:
            empty = (_empty_like(view.model.outputs[0]), _empty_like(view.model.outputs[1]))

            def run_stage(view=view, features=features, lambdas=lambdas):
                next_features, logits = view(features, lambdas, training=False)
                return next_features, tf.cast(logits, tf.float32)

            next_features, logits = tf.cond(
                tf.size(positions) > 0,
                run_stage,
                lambda e=empty: (e[0], tf.cast(e[1], tf.float32)),
            )
            exits_here = exit_rule.entropy(logits) < thresholds[:, index]
            exiting = tf.reshape(tf.where(exits_here), [-1])
            staying = tf.reshape(tf.where(tf.logical_not(exits_here)), [-1])
            taken = tf.gather(positions, exiting)
            logits = tf.gather(logits, exiting)
            positions = tf.gather(positions, staying)
            features = tf.gather(next_features, staying)
            lambdas = tf.gather(lambdas, staying)
            thresholds = tf.gather(thresholds, staying)
        stitch_positions.append(taken)
        stitch_logits.append(logits)
        stitch_exits.append(tf.fill(tf.shape(taken), tf.constant(index, tf.int32)))
    logits = tf.dynamic_stitch(stitch_positions, stitch_logits)
    exits = tf.dynamic_stitch(stitch_positions, stitch_exits)
    # dynamic_stitch sizes its result by the largest position: every sample
    # exits exactly once, so it is the batch size (shapes made explicit).
    num_classes = int(views[-1].model.outputs[0].shape[-1])
    logits = tf.reshape(logits, [batch_size, num_classes])
    exits = tf.reshape(exits, [batch_size])
    return logits, exits


def _outputs(logits: tf.Tensor, exits: tf.Tensor) -> Dict[str, tf.Tensor]:
    return {
        LOGITS_OUTPUT_NAME: logits,
        PROBABILITIES_OUTPUT_NAME: tf.nn.softmax(logits, axis=-1),
        CLASSES_OUTPUT_NAME: tf.argmax(logits, axis=-1, output_type=tf.int64),
        EXIT_OUTPUT_NAME: exits,
    }


def _build_archive(network, views, image_shape, thresholds: Tuple[float, ...], table=None):
    num_exits = len(thresholds)
    archive = keras.export.ExportArchive()
    archive.track(network)
    image_spec = tf.TensorSpec([None, *image_shape], tf.float32, name=IMAGE_INPUT_NAME)
    lambda_spec = tf.TensorSpec([None], tf.float32, name=LAMBDA_INPUT_NAME)
    # [-1], not [M]: with a static length the graph optimizer folds the
    # in-graph shape check away, and a wrong shape then fails inside another
    # op with a message that does not name the input. The length is checked
    # in the graph (`_checked_thresholds`).
    thresholds_spec = tf.TensorSpec([None], tf.float32, name=THRESHOLDS_INPUT_NAME)

    def serve(image, lambda_value):
        image, lambda_value = saved_model.checked_inputs(image, lambda_value, image_shape)
        if table is None:
            sample_thresholds = tf.constant(thresholds, tf.float32)
        else:
            sample_thresholds = select_lambda_thresholds(
                lambda_value, tf.constant(table[0], tf.float32), tf.constant(table[1], tf.float32)
            )
        return _outputs(*adaptive_forward(views, image, lambda_value, sample_thresholds))

    def serve_with_thresholds(image, lambda_value, thresholds):
        image, lambda_value = saved_model.checked_inputs(image, lambda_value, image_shape)
        thresholds = _checked_thresholds(thresholds, num_exits)
        return _outputs(*adaptive_forward(views, image, lambda_value, thresholds))

    archive.add_endpoint(SIGNATURE_KEY, serve, input_signature=[image_spec, lambda_spec])
    archive.add_endpoint(
        WITH_THRESHOLDS_SIGNATURE_KEY,
        serve_with_thresholds,
        input_signature=[image_spec, lambda_spec, thresholds_spec],
    )
    return archive


def export_adaptive_saved_model(
    network: keras.Model,
    export_dir: str,
    *,
    thresholds: Sequence[float],
    image_shape: tuple,
    model_card: Optional[Mapping[str, Any]] = None,
    lambda_thresholds: Optional[Any] = None,
) -> str:
    """Exports a multi-exit network with early-exit inference for TF Serving, atomically.

    Writes the `serving_default` and `with_thresholds` signatures, the
    warmup requests, `early_exit.json` and, if given, the model card (see the
    module docstring for the contract).

    Args:
        network: keras.Model, a multi-exit network (`multi_exit.is_multi_exit`)
            recording `exit_feature_layers`.
        export_dir: str, local directory of the SavedModel; replaced if it
            exists.
        thresholds: sequence of M floats (not NaN; ±inf allowed), the entropy threshold of each
            side exit (e.g. from `early_exit.calibrate_thresholds`), used by
            `serving_default`.
        image_shape: tuple of three ints (H, W, C), the network's image shape.
        model_card: dict or None, written to `assets.extra/model_card.json`
            (plain JSON, as `saved_model.export_saved_model`).
        lambda_thresholds: dict {λ: M thresholds}, a list of
            `operating_point.OperatingPoint`s carrying `exit_thresholds`, or
            None. Given, e.g. the
            thresholds calibrated at each λ of a multi-exit OAT network,
            `serving_default` applies to each sample the row of the calibrated
            λ nearest its `lambda_value` (`select_lambda_thresholds`) instead
            of `thresholds`; `with_thresholds` still applies the thresholds
            it is given.

    Returns:
        str, `export_dir`.

    Raises:
        ValueError: if `network` is not a multi-exit network, or an argument
            is malformed.
    """
    names = multi_exit.output_names(network)
    thresholds = _check_thresholds(thresholds, len(names) - 1, names)
    table = _check_lambda_thresholds(lambda_thresholds, len(names) - 1, names)
    image_shape = saved_model.validate_image_shape(image_shape)
    network_shape = tuple(network.input[IMAGE_INPUT_NAME].shape[1:])
    if network_shape != image_shape:
        raise ValueError(
            f"`image_shape` must be the network's image shape {network_shape}. "
            f"Received: image_shape={image_shape}"
        )
    card_text = saved_model.serialize_model_card(model_card)
    views = multi_exit.stage_views(network)
    early_exit_info = {
        "output_names": list(names),
        "thresholds": operating_point.thresholds_to_json(thresholds),
        "lambda_thresholds": None if table is None else {
            "lambdas": list(table[0]), "thresholds": [operating_point.thresholds_to_json(row) for row in table[1]]
        },
        # The same table as operating points (`OperatingPoint.from_json` reads them back).
        "operating_points": None if table is None else [
            operating_point.OperatingPoint(lam, exit_thresholds=row).to_json() for lam, row in zip(*table)
        ],
        "exit_macs": multi_exit.exit_macs(network),
        "backbone_macs": multi_exit.backbone_macs(network),
    }
    export_dir = os.fspath(export_dir)
    target = output_paths.check_export_target(export_dir)

    archive = _build_archive(network, views, image_shape, thresholds, table)
    def write_contents(temp_dir: str) -> int:
        archive.write_out(temp_dir, verbose=False)
        return saved_model.write_warmup_requests(
            os.path.join(temp_dir, saved_model.ASSETS_EXTRA_DIR, saved_model.WARMUP_FILENAME),
            image_shape,
            (SIGNATURE_KEY, WITH_THRESHOLDS_SIGNATURE_KEY),
            {WITH_THRESHOLDS_SIGNATURE_KEY: {THRESHOLDS_INPUT_NAME: np.asarray(thresholds, np.float32)}},
        )

    num_warmup = saved_model.write_export_dir(
        target,
        write_contents,
        {
            EARLY_EXIT_FILENAME: json.dumps(early_exit_info, indent=2) + "\n",
            saved_model.MODEL_CARD_FILENAME: card_text,
        },
    )
    logging.info(
        "Exported adaptive SavedModel to %s: outputs %s, thresholds %s; signatures %s and %s; "
        "%d warmup requests%s.",
        export_dir,
        ", ".join(names),
        list(thresholds),
        SIGNATURE_KEY,
        WITH_THRESHOLDS_SIGNATURE_KEY,
        num_warmup,
        ", model card" if card_text is not None else "",
    )
    return export_dir


def load_adaptive_fn(export_dir: str, signature_name: str = SIGNATURE_KEY):
    """Loads one signature of an adaptive export.

    Args:
        export_dir: str, a directory written by `export_adaptive_saved_model`.
        signature_name: str, `SIGNATURE_KEY` (the exported thresholds) or
            `WITH_THRESHOLDS_SIGNATURE_KEY`.

    Returns:
        The signature's concrete function, called with keyword arguments
        `image`, `lambda_value` (and `thresholds`) and returning a dict with
        `logits`, `probabilities`, `classes` and `exit`. It keeps the loaded
        SavedModel alive.
    """
    return saved_model.load_serving_fn(export_dir, signature_name)


def load_early_exit_info(export_dir: str) -> Dict[str, Any]:
    """Reads `assets.extra/early_exit.json` of an adaptive export.

    Args:
        export_dir: str, a directory written by `export_adaptive_saved_model`.

    Returns:
        dict with "output_names" (list of str), "thresholds" (list of float),
        "exit_macs" (dict name → int, MACs per image of taking each output),
        "backbone_macs" (int), "lambda_thresholds" (dict with "lambdas"
        and one "thresholds" row each, or None) and "operating_points" (the
        same table as `OperatingPoint.to_json` dicts, or None; rebuilt from
        "lambda_thresholds" for exports written before it was recorded).
    """
    path = os.path.join(os.fspath(export_dir), saved_model.ASSETS_EXTRA_DIR, EARLY_EXIT_FILENAME)
    if not os.path.isfile(path):
        raise ValueError(
            "`export_dir` must be a directory written by `export_adaptive_saved_model` "
            f"(with {saved_model.ASSETS_EXTRA_DIR}/{EARLY_EXIT_FILENAME}). "
            f"Received: export_dir={export_dir!r}"
        )
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    info["thresholds"] = [float(t) for t in info["thresholds"]]
    table = info.get("lambda_thresholds")  # Absent in exports written before the table existed.
    if table:
        table["lambdas"] = [float(v) for v in table["lambdas"]]
        table["thresholds"] = [[float(t) for t in row] for row in table["thresholds"]]
    info["lambda_thresholds"] = table or None
    if table and not info.get("operating_points"):
        points = operating_point.points_from_table(dict(zip(table["lambdas"], table["thresholds"])))
        info["operating_points"] = [point.to_json() for point in points]
    info.setdefault("operating_points", None)
    return info
