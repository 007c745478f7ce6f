"""On the device: TFLite size, batch-1 latency, SA and RA per λ (and width) after quantization (issue 20).

    python benchmarks/tflite_on_device.py --run_dirs=runs/quickstart,runs/quickstart_oats

For each training run: its network (latest checkpoint) is exported as the usual
SavedModel, converted with `oat_tf.export.tflite.convert_saved_model` at every
`--quantizations` level (int8 calibrated on the first 500 training images, λ ~
U[0, 1]), and measured on the first `--num_examples` test images of the run's
dataset at the run's training ε:

- size of the .tflite file (all widths' signatures) and of the SavedModel's
  variables;
- latency per image at batch 1: the TFLite signature runner with 1 and 2
  interpreter threads, and the float SavedModel's serving signature (TF's own
  thread pools) for comparison; the median of `--latency_runs` calls after 20
  warm-up calls, images taken in turn from the test set;
- SA of the TFLite model and its argmax agreement with the float SavedModel,
  per λ and width;
- RA after quantization, per λ and width, as the per-sample worst case of two
  families, each reported alone too:
  - transfer: PGD-20 (the run's step size, random start) and APGD-CE-100 crafted
    on the float network (white box), then classified by the TFLite model;
  - Square with `--square_queries` queries run on the TFLite interpreter itself
    (no gradients needed), from every correctly classified image;
- the float network's own RA under the same attacks, white box, for reference.

Prints Markdown tables for BENCHMARKS.md and writes everything to `--output` (JSON).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from oat_tf import config as config_lib  # noqa: E402
from oat_tf import data  # noqa: E402
from oat_tf.attacks import registry  # noqa: E402
from oat_tf.evaluation import loading  # noqa: E402
from oat_tf.export import saved_model  # noqa: E402
from oat_tf.export import tflite  # noqa: E402

NUM_CALIBRATION = 500
WARMUP_CALLS = 20


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _median_ms(call, images, runs):
    for i in range(WARMUP_CALLS):
        call(images[i % len(images)][None])
    times = []
    for i in range(runs):
        x = images[i % len(images)][None]
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _logits_fn(network, lam, width):
    def logits(x):
        lambdas = tf.fill(tf.shape(x)[:1], tf.constant(lam, tf.float32))
        kwargs = {} if width is None else {"width": width}
        return tf.cast(network({"image": x, "lambda": lambdas}, training=False, **kwargs), tf.float32)

    return logits


def _accuracy(correct):
    return float(np.mean(correct))


def measure_run(run_dir, args):
    network, run_config = loading.load_network_from_run(run_dir)
    splits = data.load_splits(loading.data_config_from_run(run_config, args.num_examples))
    images = splits.test.images[: args.num_examples].astype(np.float32) / 255.0
    labels = splits.test.labels[: args.num_examples].astype(np.int32)
    calibration = splits.train.images[:NUM_CALIBRATION]
    epsilon = float(run_config["train_attack"]["epsilon"])
    step = float(run_config["train_attack"]["step_size"])
    attacks = {
        "PGD-20": config_lib.AttackConfig(name="pgd", epsilon=epsilon, step_size=step, num_steps=20),
        "APGD-CE": config_lib.AttackConfig(name="apgd_ce", epsilon=epsilon, num_steps=100),
    }
    square = config_lib.AttackConfig(name="square", epsilon=epsilon, num_queries=args.square_queries)
    widths = run_config["model"].get("widths") if run_config["model"]["variant"] in ("oats", "ats") else None
    image_shape = tuple(images.shape[1:])
    record = {"run_dir": run_dir, "name": run_config["name"], "variant": run_config["model"]["variant"],
              "dataset": run_config["data"]["dataset"], "epsilon": epsilon, "num_examples": len(labels),
              "square_queries": args.square_queries, "quantizations": {}}
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = saved_model.export_saved_model(network, os.path.join(tmp, "export"), image_shape=image_shape)
        record["saved_model_variables_bytes"] = sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, files in os.walk(os.path.join(export_dir, "variables")) for name in files
        )
        serve = saved_model.load_serving_fn(export_dir)
        serving_fns = {float(w): saved_model.load_serving_fn(export_dir, name)
                       for name, w in saved_model.signature_widths(export_dir).items()}
        record["saved_model_ms"] = _median_ms(
            lambda x: serve(image=x, lambda_value=np.zeros([1], np.float32)), images, args.latency_runs
        )
        # White-box adversarial images of the float network, per (λ, width): the transfer set.
        # --latency_only: sizes and latencies alone (for a quiet machine), no accuracy.
        points = [] if args.latency_only else [(lam, w) for lam in args.lambdas for w in (widths or [None])]
        crafted, float_results = {}, {}
        for lam, width in points:
            logits_fn = _logits_fn(network, lam, width)
            x, y = tf.constant(images), tf.constant(labels)
            clean = np.argmax(logits_fn(x).numpy(), 1) == labels
            if args.no_attacks:
                crafted[(lam, width)] = {}
                float_results[(lam, width)] = {"sa": _accuracy(clean)}
                continue
            crafted[(lam, width)] = {
                name: registry.run_attack(attack, logits_fn, x, y, seed=[args.seed, i]).numpy()
                for i, (name, attack) in enumerate(attacks.items())
            }
            per_attack = {name: np.argmax(logits_fn(tf.constant(xa)).numpy(), 1) == labels
                          for name, xa in crafted[(lam, width)].items()}
            robust = clean & np.logical_and.reduce(list(per_attack.values()))
            x_sq = registry.run_attack(square, logits_fn, x, y, seed=[args.seed, 9]).numpy()
            square_ok = np.argmax(logits_fn(tf.constant(x_sq)).numpy(), 1) == labels
            float_results[(lam, width)] = {
                "sa": _accuracy(clean),
                **{f"ra_{name}": _accuracy(clean & ok) for name, ok in per_attack.items()},
                "ra_square": _accuracy(clean & square_ok),
                "ra_worst": _accuracy(robust & square_ok),
            }
        record["float"] = {f"lambda={lam:g} width={w or 1:g}": v for (lam, w), v in float_results.items()}
        for quantization in args.quantizations:
            start = time.perf_counter()
            flatbuffer = tflite.convert_saved_model(
                export_dir, quantization=quantization,
                calibration_images=calibration if quantization == "int8" else None, seed=args.seed,
            )
            entry = {"bytes": len(flatbuffer), "convert_s": time.perf_counter() - start, "latency_ms": {},
                     "points": {}}
            for threads in (1, 2):
                classifier = tflite.TFLiteClassifier(flatbuffer, num_threads=threads)
                for name, width in classifier.widths.items():
                    runner = classifier.interpreter.get_signature_runner(name)
                    entry["latency_ms"][f"threads={threads} width={width:g}"] = _median_ms(
                        lambda x: runner(image=x, lambda_value=np.zeros([1], np.float32)), images, args.latency_runs
                    )
            classifier = tflite.TFLiteClassifier(flatbuffer, num_threads=2)
            for lam, width in points:
                w = 1.0 if width is None else width
                lambdas = np.full([len(labels)], lam, np.float32)
                predicted = classifier.predict(images, lambdas, width=w)["classes"]
                reference = serving_fns[w]
                float_classes = reference(image=images, lambda_value=lambdas)["classes"].numpy()
                clean = predicted == labels
                if args.no_attacks:
                    entry["points"][f"lambda={lam:g} width={w:g}"] = {
                        "sa": _accuracy(clean), "agreement": _accuracy(predicted == float_classes),
                    }
                    continue
                transfer = {name: classifier.predict(xa, lambdas, width=w)["classes"] == labels
                            for name, xa in crafted[(lam, width)].items()}
                robust = clean & np.logical_and.reduce(list(transfer.values()))
                # Square on the interpreter itself, from every correctly classified image.
                square_ok = clean.copy()
                if clean.any():
                    idx = np.flatnonzero(clean)
                    x_sq = registry.run_attack(
                        square, classifier.logits_fn(lam, width=w), tf.constant(images[idx]),
                        tf.constant(labels[idx]), seed=[args.seed, 9],
                    ).numpy()
                    square_ok[idx] = classifier.predict(x_sq, lambdas[idx], width=w)["classes"] == labels[idx]
                entry["points"][f"lambda={lam:g} width={w:g}"] = {
                    "sa": _accuracy(clean),
                    "agreement": _accuracy(predicted == float_classes),
                    **{f"ra_transfer_{name}": _accuracy(clean & ok) for name, ok in transfer.items()},
                    "ra_transfer": _accuracy(robust),
                    "ra_square": _accuracy(square_ok),
                    "ra_worst": _accuracy(robust & square_ok),
                }
            record["quantizations"][quantization] = entry
            print(f"{run_config['name']} {quantization}: {json.dumps(entry['points'])}", flush=True)
    return record


def _tables(records):
    lines = []
    for record in records:
        lines.append(f"\n**{record['name']}** ({record['variant']}, {record['dataset']}, ε = {record['epsilon']:g}, "
                     f"{record['num_examples']} test images, Square {record['square_queries']} queries)\n")
        lines.append("| quantization | file (KB) | ms/image, 1 thread | ms/image, 2 threads |")
        lines.append("|---|---:|---:|---:|")
        lines.append(f"| float SavedModel (TF) | {record['saved_model_variables_bytes'] / 1024:.0f} (variables) | "
                     f"{record['saved_model_ms']:.2f} (TF threads) | |")
        for q, entry in record["quantizations"].items():
            full = {k.split()[0]: v for k, v in entry["latency_ms"].items() if k.endswith("width=1")}
            lines.append(f"| {q} | {entry['bytes'] / 1024:.0f} | {full['threads=1']:.3f} | {full['threads=2']:.3f} |")
        lines.append("")
        lines.append("| point | float SA | float RA (white box) | quantization | SA | agreement | RA transfer | "
                     "RA Square on TFLite | RA worst |")
        lines.append("|---|---:|---:|---|---:|---:|---:|---:|---:|")
        for point, ref in record["float"].items():
            for q, entry in record["quantizations"].items():
                p = entry["points"][point]

                def cell(values, key):
                    return f"{100 * values[key]:.1f}" if key in values else "—"

                lines.append(f"| {point} | {100 * ref['sa']:.1f} | {cell(ref, 'ra_worst')} | {q} | "
                             f"{100 * p['sa']:.1f} | {100 * p['agreement']:.1f} | {cell(p, 'ra_transfer')} | "
                             f"{cell(p, 'ra_square')} | {cell(p, 'ra_worst')} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dirs", required=True, help="Comma-separated training runs.")
    parser.add_argument("--quantizations", default="none,dynamic,int8")
    parser.add_argument("--lambdas", default="0,0.2,1")
    parser.add_argument("--num_examples", type=int, default=1000)
    parser.add_argument("--square_queries", type=int, default=1000)
    parser.add_argument("--latency_runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency_only", action="store_true", help="Sizes and latencies only.")
    parser.add_argument("--no_attacks", action="store_true",
                        help="Sizes, latencies, SA and argmax agreement only (no RA): cheap enough for 1,000 images.")
    parser.add_argument("--output", default=None, help="JSON file for the results.")
    args = parser.parse_args()
    args.quantizations = args.quantizations.split(",")
    for q in args.quantizations:
        tflite.check_quantization(q)
    args.lambdas = [float(v) for v in args.lambdas.split(",")]
    started = time.time()
    records = [measure_run(run_dir, args) for run_dir in args.run_dirs.split(",")]
    machine = {"cpu": _cpu_model(), "cores": os.cpu_count(), "tensorflow": tf.__version__}
    print(f"\nMachine: {machine}; {time.time() - started:.0f} s in all.")
    print(_tables(records))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
