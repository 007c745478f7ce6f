"""Mixed precision on CPU: step time, SA and PGD-10 RA with and without it (issue 19).

    python benchmarks/mixed_precision.py --epochs=5 --num_train_examples=10000

Two measurements on MNIST (../shared/data/mnist.npz), SmallCNN 16/32/100 OAT,
ε = 0.3, PGD-7 training with step 0.075, batch 128, SGD lr 0.05 cosine (study
B's network and budget, `experiments/study_oat_mnist.flags`), the train step under XLA
(`--jit_compile`; without XLA this CPU has no fast bfloat16 or float16
kernels, see BENCHMARKS.md):

1. Training precision: one run per policy (float32, mixed_bfloat16,
   mixed_float16 with dynamic loss scaling), same seed and data. Each trained
   network is evaluated as trained on the first `--num_eval_examples` test
   digits at λ = 0 and λ = 1: SA, and RA under PGD-10 (step 0.075, random
   start) and APGD-CE-100, with their worst case.
2. Attack precision: the float32 run's weights in networks built under each
   policy, attacked with PGD-10; under float16 also without the attack's loss
   scale (`core.GRADIENT_LOSS_SCALE` = 1). The count of test digits whose
   input gradient at the clean image is exactly zero shows the underflow.

Step time is the mean of epochs 2 and later (epoch 1 includes tracing and
compilation). Prints Markdown tables for BENCHMARKS.md.
"""

import argparse
import os
import platform
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from oat_tf import config as config_lib  # noqa: E402
from oat_tf import data  # noqa: E402
from oat_tf import models  # noqa: E402
from oat_tf.attacks import core  # noqa: E402
from oat_tf.attacks import losses  # noqa: E402
from oat_tf.evaluation import robust_eval  # noqa: E402
from oat_tf.models import precision as precision_lib  # noqa: E402
from oat_tf.training import determinism  # noqa: E402
from oat_tf.training import experiment  # noqa: E402

MNIST = os.path.join(os.path.dirname(REPO), "shared", "data", "mnist.npz")
EPSILON, STEP = 0.3, 0.075
PGD10 = config_lib.AttackConfig(name="pgd", epsilon=EPSILON, step_size=STEP, num_steps=10)
APGD = config_lib.AttackConfig(name="apgd_ce", epsilon=EPSILON, step_size=STEP, num_steps=100)


class EpochTimer(keras.callbacks.Callback):
    """Wall time and steps of every epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self._start)


def _config(root, precision, args):
    return config_lib.ExperimentConfig(
        name=precision,
        runs_dir=root,
        export_dir=None,
        data=config_lib.DataConfig(
            dataset="npz:" + MNIST, num_train_examples=args.num_train_examples,
            validation_size=0, num_eval_examples=64,
        ),
        model=config_lib.ModelConfig(architecture="small_cnn", variant="oat", filters=(16, 32), hidden_units=100),
        train_attack=config_lib.AttackConfig(epsilon=EPSILON, step_size=STEP, num_steps=7),
        optimizer=config_lib.OptimizerConfig(learning_rate=args.learning_rate),
        train=config_lib.TrainConfig(
            epochs=args.epochs, batch_size=128, seed=args.seed, jit_compile=True, mixed_precision=precision,
        ),
        evaluation=config_lib.EvalConfig(lambdas=(0.0, 1.0), attacks=(PGD10,), batch_size=64),
    )


def _evaluate(network, test, attacks, args):
    dataset = data.eval_dataset(test, batch_size=250)
    return robust_eval.evaluate_lambda_grid(
        network, dataset, (0.0, 1.0), attacks, seed=args.seed, jit_compile=True
    )


def _zero_gradients(network, test):
    """Test digits whose CE input gradient at the clean image (λ = 0) is exactly zero."""
    images = tf.constant(test.images[:1000].astype("float32") / (255.0 if test.images.dtype == np.uint8 else 1.0))
    labels = tf.constant(test.labels[:1000].astype("int32"))
    lambdas = tf.zeros([images.shape[0]])
    objective = core.loss_objective(
        lambda x: network({"image": x, "lambda": lambdas}, training=False),
        losses.sparse_cross_entropy, labels, False,
    )
    grad, _ = core.input_gradient(objective, images)
    return int(np.sum(np.all(grad.numpy() == 0.0, axis=(1, 2, 3))))


def _pct(value):
    return f"{100.0 * value:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--num_train_examples", type=int, default=10000)
    parser.add_argument("--num_eval_examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precisions", default=",".join(config_lib.PRECISIONS),
        help="comma-separated dtype policies to train under; float32 must be among them",
    )
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    if "float32" not in precisions:
        parser.error(f"--precisions must include float32. Received: --precisions={args.precisions}")
    # XLA has no deterministic max-pool gradient: op determinism stays off.
    determinism.configure(False)
    test = data.load_splits(
        config_lib.DataConfig(dataset="npz:" + MNIST, num_eval_examples=args.num_eval_examples), seed=args.seed
    ).test
    rows = [
        f"Training precision: MNIST {args.num_train_examples} train / {args.num_eval_examples} test, "
        f"SmallCNN 16/32/100 OAT, PGD-7 training, {args.epochs} epochs, lr {args.learning_rate}, XLA, "
        f"seed {args.seed}; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {platform.machine()}",
        "",
        "| trained as | s/step (epochs ≥ 2) | ratio to float32 | λ | SA (%) | RA PGD-10 (%) | RA APGD-CE (%) | "
        "RA worst (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    networks = {}
    step_times = {}
    with tempfile.TemporaryDirectory() as root:
        for precision in precisions:
            timer = EpochTimer()
            config = _config(root, precision, args)
            summary = experiment.run_experiment(config, extra_callbacks=[timer])
            steps = data.steps_per_epoch(args.num_train_examples, 128)
            later = timer.epochs[1:] or timer.epochs
            step_times[precision] = sum(later) / len(later) / steps
            networks[precision] = summary["network"]
            results = _evaluate(summary["network"], test, (PGD10, APGD), args)
            for key in ("0.0", "1.0"):
                rows.append(
                    f"| {precision} | {step_times[precision]:.3f} | "
                    f"{step_times[precision] / step_times['float32']:.2f} | {key} | "
                    f"{_pct(results['clean_accuracy'][key])} | "
                    f"{_pct(results['robust_accuracy'][PGD10.describe()][key])} | "
                    f"{_pct(results['robust_accuracy'][APGD.describe()][key])} | "
                    f"{_pct(results['worst_case_accuracy'][key])} |"
                )
            print(rows[-2], rows[-1], sep="\n", flush=True)

    rows += [
        "",
        "Attack precision: the float32 run's weights, built under each policy, PGD-10 (XLA)",
        "",
        "| network computes in | attack loss scale | λ | RA PGD-10 (%) | zero input gradients (of "
        f"{min(1000, args.num_eval_examples)}) |",
        "|---|---:|---:|---:|---:|",
    ]
    reference = networks["float32"]
    model_config = _config("/tmp", "float32", args).model
    model_config = config_lib.ModelConfig(**{
        **{f: getattr(model_config, f) for f in ("architecture", "variant", "filters", "hidden_units")},
        "input_shape": tuple(test.images.shape[1:]), "num_classes": 10,
    })
    settings = [("float32", 2.0**12), ("mixed_bfloat16", 2.0**12), ("mixed_float16", 2.0**12), ("mixed_float16", 1.0)]
    for precision, scale in settings:
        network = models.build_model(model_config, precision=precision)
        network.set_weights(reference.get_weights())
        core.GRADIENT_LOSS_SCALE = scale
        try:
            zeros = _zero_gradients(network, test)
            results = _evaluate(network, test, (PGD10,), args)
        finally:
            core.GRADIENT_LOSS_SCALE = 2.0**12
        for key in ("0.0", "1.0"):
            rows.append(
                f"| {precision_lib.compute_dtype(network)} | 2^{int(np.log2(scale))} | {key} | "
                f"{_pct(results['robust_accuracy'][PGD10.describe()][key])} | {zeros} |"
            )
        print(rows[-2], rows[-1], sep="\n", flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
