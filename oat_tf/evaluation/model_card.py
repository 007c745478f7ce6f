"""The model card a SavedModel carries in assets.extra/: what the model is and what it measured.

`make_model_card` turns a run's config (and its test evaluation) into plain
JSON: architecture, λ encoding, training attack and data, the serving
contract (`serving_contract`) and the SA/RA table measured on the test split.
`oat_tf.train` exports with it; `oat_tf.calibrate` adds its `calibration` entry.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Sequence

from oat_tf import export
from oat_tf import operating_point
from oat_tf.evaluation import results as results_lib
from oat_tf.evaluation import tables
from oat_tf.evaluation import width_grid

MODEL_CARD_VERSION = 1
# The largest request batch the model card recommends. A request's memory and
# time grow linearly with its batch and the signature has no cap of its own:
# 50,000 MNIST images in one request took 25 s and 3.2 GB on the 2-core CPU
# machine (issue 15), so 1,024 keeps a SmallCNN request near 70 MB and half a
# second there; larger models need proportionally smaller batches.
RECOMMENDED_MAX_SERVING_BATCH = 1024


def serving_contract(input_shape: Sequence[int]) -> Dict[str, Any]:
    """What a serving request must send, for the model card.

    Args:
        input_shape: (H, W, C) of the images.

    Returns:
        dict with `inputs` (name → dtype, shape and range), `dtype_note` (how
        TF Serving reports a wrong dtype) and `recommended_max_batch`.
    """
    height, width, channels = (int(d) for d in input_shape)
    return {
        "inputs": {
            export.IMAGE_INPUT_NAME: {
                "dtype": "float32", "shape": [-1, height, width, channels], "range": [0.0, 1.0],
            },
            export.LAMBDA_INPUT_NAME: {"dtype": "float32", "shape": [-1], "range": [0.0, 1.0]},
        },
        "dtype_note": (
            "Both inputs must be float32 (REST: JSON numbers). A float64 or int tensor is "
            "refused by TensorFlow's signature dispatch, which names the input by position "
            f"(input #0 is {export.IMAGE_INPUT_NAME!r}, input #1 {export.LAMBDA_INPUT_NAME!r})."
        ),
        "recommended_max_batch": RECOMMENDED_MAX_SERVING_BATCH,
    }


def make_model_card(
    run_config: Mapping[str, Any],
    test_results: Optional[Mapping[str, Any]] = None,
    width_results: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Returns the model card of a run: plain JSON for `assets.extra/`.

    Args:
        run_config: dict, the run's resolved config (`config_lib.to_dict` of
            its ExperimentConfig, i.e. its `config.json`).
        test_results: dict or None, the run's test evaluation
            (`evaluate_lambda_grid` result, i.e. its `test_eval.json`).
        width_results: dict or None, the test evaluation of every width of a
            slimmable run (`evaluate_width_grid` result, its
            `test_eval_widths.json`).

    Returns:
        dict with `model_card_version`, `name`, `dataset`, `architecture`,
        `variant`, `input_shape`, `num_classes`, `lambda_encoding`,
        `serving` (`serving_contract`: input dtypes, shapes and ranges, and
        the recommended maximum request batch),
        `seen_lambdas`, `lambda_sampling`, `train_attack` (the training
        attack's settings), `data` (the run's data config, from which
        `oat_tf.calibrate` finds the held-out validation split), `objective`
        and `clean_fraction` (the training objective and the clean share of
        a mixed batch), `test_bn` (the BN of a "mixture_bn" network used at
        test time), `bn_statistics` (BN statistics of the test evaluation,
        "moving" or "batch"), `export_bn_statistics` (those of the exported
        signatures), `accuracy` (a note on units) and, with `test_results`,
        `test_evaluation`: the
        results (SA per λ, RA per attack and λ, worst case, number of
        examples, attack settings, seed) plus `split` ("test"),
        `robust_accuracy_definition` (the worst case is the RA to quote),
        `table` (the Markdown table, in percent, the worst case right after
        SA) and, when the evaluation has them, `masking_checks` (the checks
        that need only its paired counts, e.g. a weaker attack overstating
        robustness). With `width_results`,
        `widths` (the exported widths with their signature names) and
        `test_evaluation_per_width`: `widths`, `per_width` (the measured
        results of each width) and `table` (the λ × width Markdown table).
        With either, `operating_points`: the (λ, width) points the card's
        measurements cover, as `OperatingPoint.to_json` dicts.
    """
    model = run_config["model"]
    sampling = run_config["lambda_sampling"]
    # Runs saved before these settings existed read as their defaults.
    train = run_config.get("train", {})
    evaluation_config = run_config.get("evaluation", {})
    card = {
        "model_card_version": MODEL_CARD_VERSION,
        "name": run_config["name"],
        "dataset": run_config["data"]["dataset"],
        "architecture": model["architecture"],
        "variant": model["variant"],
        "input_shape": list(model["input_shape"]),
        "num_classes": model["num_classes"],
        "lambda_encoding": {
            "scheme": model["encoder"]["scheme"],
            "dim": model["encoder"]["dim"],
        },
        "seen_lambdas": list(sampling["values"]),
        "lambda_sampling": sampling["sampling"],
        "train_attack": dict(run_config["train_attack"]),
        "data": dict(run_config["data"]),
        "objective": train.get("objective", "oat"),
        "clean_fraction": float(train.get("clean_fraction", 0.5)),
        "test_bn": evaluation_config.get("test_bn", "adversarial"),
        "bn_statistics": evaluation_config.get("bn_statistics", "moving"),
        "export_bn_statistics": run_config.get("export_bn_statistics", "moving"),
        "accuracy": "fractions in [0, 1]; the Markdown tables are in percent",
        "serving": serving_contract(model["input_shape"]),
    }
    if test_results is not None:
        card["operating_points"] = [p.to_json() for p in operating_point.grid(list(test_results["lambdas"]))]
        # The measurement only (a report's JSON may hold more, e.g. plot names).
        measured = {k: test_results[k] for k in results_lib.MEASURED_KEYS if k in test_results}
        card["test_evaluation"] = {
            **json.loads(json.dumps(measured)),
            "split": "test",
            "robust_accuracy_definition": (
                "worst_case_accuracy is the robustness to quote: per sample, correct clean "
                "and under every attack in robust_accuracy"
            ),
            "table": tables.format_table(dict(test_results), seen_lambdas=sampling["values"]),
        }
        if "masking_checks" in test_results:
            card["test_evaluation"]["masking_checks"] = json.loads(
                json.dumps(test_results["masking_checks"])
            )
    if width_results is not None:
        # Every width's measured λ (a width may have its own).
        card["operating_points"] = [
            operating_point.OperatingPoint(lam, w).to_json()
            for w in width_results["widths"]
            for lam in width_results["per_width"][width_grid.width_key(w)]["lambdas"]
        ]
        per_width = {
            key: {k: result[k] for k in results_lib.MEASURED_KEYS if k in result}
            for key, result in width_results["per_width"].items()
        }
        card["widths"] = {
            export.width_signature_name(w): float(w) for w in width_results["widths"]
        }
        card["test_evaluation_per_width"] = {
            "widths": [float(w) for w in width_results["widths"]],
            "per_width": json.loads(json.dumps(per_width)),
            "split": "test",
            "table": width_grid.format_width_table(dict(width_results)),
        }
    return card
