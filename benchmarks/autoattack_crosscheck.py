"""One-off cross-check of oat_tf's AutoAttack against the PyTorch reference.

Builds the same small MNIST CNN in Keras 3 and in PyTorch, copies the weights
across, runs both AutoAttack implementations (standard version, L∞, ε = 0.3)
on the same 500 test digits and reports the robust accuracy after each attack
side by side in `docs/results/autoattack_crosscheck.md`. The acceptance rule:
the TF numbers must be within 1 point of the reference numbers, or lower.

The reference is torchattacks' AutoAttack, which wraps APGD, APGD-T, FAB-T and
Square the way fra31/auto-attack does. Its `AutoAttack(version="standard")`
builds its members with torchattacks' defaults, 10 steps for APGD, APGD-T and
FAB-T instead of AutoAttack's 100, so the reference numbers here come from
torchattacks' own sub-attacks run one after another on the samples still
robust, with the hyperparameters of fra31/auto-attack's standard version
(100 steps, 1 restart, 9 target classes, Square with 5,000 queries,
p_init = 0.8 and fra31's unrescaled p schedule). The shipped
`torchattacks.AutoAttack` is run as well and reported in a second table.

TensorFlow and PyTorch live in different virtual environments, so the script
has three subcommands:

* `train` (project venv): trains the CNN briefly with PGD adversarial training
  at ε = 0.3, saves its weights, the 500 digits, their labels and the TF
  logits to `WORK_DIR/model.npz`, then runs `oat_tf.attacks.autoattack` on
  the digits and writes `WORK_DIR/tf_results.json`. `tf` reruns only the
  attack on the saved model.
* `torch` (a separate venv with torch and torchattacks; imports neither
  TensorFlow nor oat_tf): rebuilds the CNN, copies the weights, checks that the
  logits match the TF logits within 1e-4, runs the reference and writes
  `WORK_DIR/torch_results.json`.
* `report` (either venv, standard library only): writes the Markdown page.

Commands (from the repository root; the data is read in place, never copied):

```bash
python3 -m venv /work/xcheck-venv
/work/xcheck-venv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl numpy
/work/xcheck-venv/bin/pip install --no-deps torchattacks==3.5.1
/work/xcheck-venv/bin/pip install scipy tqdm requests

. .venv/bin/activate
PYTHONPATH=. python benchmarks/autoattack_crosscheck.py train \
    --data=/work/shared/data/mnist.npz --work_dir=/tmp/autoattack_crosscheck
/work/xcheck-venv/bin/python benchmarks/autoattack_crosscheck.py torch \
    --work_dir=/tmp/autoattack_crosscheck
python benchmarks/autoattack_crosscheck.py report \
    --work_dir=/tmp/autoattack_crosscheck --out=docs/results/autoattack_crosscheck.md
```

This check stays out of CI: nothing in `oat_tf/` or `tests/` imports torch or
torchattacks, and neither is in the requirements files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# === Shared settings ===

EPSILON = 0.3
NUM_DIGITS = 500
NUM_CLASSES = 10
# Conv(16, 5x5) - ReLU - MaxPool(2) - Conv(32, 5x5) - ReLU - MaxPool(2) -
# Dense(100) - ReLU - Dense(10), "valid" padding: 28 -> 24 -> 12 -> 8 -> 4.
CONV1_FILTERS, CONV2_FILTERS, HIDDEN_UNITS, KERNEL = 16, 32, 100, 5
FEATURE_SIDE = 4  # side of the last feature map, before the flatten
# The stages of standard AutoAttack, in order, with oat_tf's result keys.
STAGES = (
    ("apgd_ce", "APGD-CE", "AutoAttack: APGD-CE-100"),
    ("apgd_t", "APGD-T", "AutoAttack: APGD-T-100/9"),
    ("fab_t", "FAB-T", "AutoAttack: FAB-T-100/9"),
    ("square", "Square", "AutoAttack: Square-5000"),
)
LOGITS_TOLERANCE = 1e-4
# The acceptance rule: TF robust accuracy <= reference + 1 point.
MAX_POINTS_ABOVE_REFERENCE = 1.0
DEFAULT_WORK_DIR = os.path.join(tempfile.gettempdir(), "autoattack_crosscheck")
DEFAULT_DATA = "/work/shared/data/mnist.npz"
DEFAULT_OUT = os.path.join("docs", "results", "autoattack_crosscheck.md")


# === Small helpers (standard library only) ===


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary sibling file and os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp_path, 0o644)  # mkstemp creates 0600
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def write_json_atomic(path: str, data: Dict[str, Any]) -> None:
    """Writes `data` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def cpu_description() -> Dict[str, Any]:
    """The CPU model (from /proc/cpuinfo) and the number of cores visible."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_count": os.cpu_count()}


def command_line() -> str:
    """The command that runs this process, for the results files."""
    return " ".join([sys.executable] + sys.argv)


class StageTimer:
    """Wall-clock times of consecutive stages."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last = self.start
        self.times: List[float] = []

    def lap(self) -> float:
        """Ends the current stage; returns its duration in seconds."""
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now
        return self.times[-1]


# === TensorFlow half (project venv) ===


def build_keras_model():
    """The CNN in Keras 3 (NHWC inputs in [0, 1], logits out)."""
    import keras  # pylint: disable=import-outside-toplevel

    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(CONV1_FILTERS, KERNEL, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(CONV2_FILTERS, KERNEL, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(HIDDEN_UNITS, activation="relu", name="dense1"),
            keras.layers.Dense(NUM_CLASSES, name="dense2"),
        ],
        name="crosscheck_cnn",
    )


KERAS_LAYERS = ("conv1", "conv2", "dense1", "dense2")


def load_mnist(path: str):
    """(x_train, y_train, x_test, y_test): float32 NHWC in [0, 1], int64 labels."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    to_float = lambda x: (x.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return (
        to_float(arrays["x_train"]),
        arrays["y_train"].astype(np.int64),
        to_float(arrays["x_test"]),
        arrays["y_test"].astype(np.int64),
    )


def train_model(args: argparse.Namespace):
    """Trains the CNN with PGD adversarial training; returns (model, info)."""
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from oat_tf.attacks import pgd  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(args.train_seed)
    x_train, y_train, _, _ = load_mnist(args.data)
    x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    model = build_keras_model()
    optimizer = keras.optimizers.Adam(args.learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    step_size = args.pgd_step_factor * args.epsilon / args.pgd_steps

    def logits_fn(x):
        return model(x, training=False)

    # `epsilon` is a Python float (one trace per value of the ramp).
    @tf.function
    def train_step(x, y, epsilon: float, seed):
        x_adv = pgd.pgd_linf(
            logits_fn, x, y, epsilon=epsilon, step_size=step_size * epsilon / args.epsilon,
            num_steps=args.pgd_steps, random_start=True, seed=seed,
        )
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x_adv, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    rng = np.random.default_rng(args.train_seed)
    num_batches = len(x_train) // args.batch_size
    history = []
    started = time.perf_counter()
    for epoch in range(args.epochs):
        # ε ramps linearly up to ε over the first `ramp_epochs` epochs.
        fraction = min(1.0, (epoch + 1) / max(args.ramp_epochs, 1))
        epsilon = args.epsilon * fraction
        order = rng.permutation(len(x_train))
        losses = []
        for b in range(num_batches):
            index = order[b * args.batch_size:(b + 1) * args.batch_size]
            loss = train_step(
                tf.constant(x_train[index]), tf.constant(y_train[index], tf.int32),
                float(epsilon), tf.constant([epoch, b], tf.int64),
            )
            losses.append(float(loss))
        history.append({"epoch": epoch + 1, "epsilon": epsilon, "loss": float(np.mean(losses))})
        print(f"epoch {epoch + 1}/{args.epochs}: epsilon={epsilon:.3f} "
              f"adv loss={np.mean(losses):.4f} ({time.perf_counter() - started:.0f} s)",
              flush=True)
    info = {
        "train_size": int(len(x_train)),
        "epochs": args.epochs,
        "ramp_epochs": args.ramp_epochs,
        "batch_size": args.batch_size,
        "optimizer": f"Adam(learning_rate={args.learning_rate})",
        "pgd": f"PGD-{args.pgd_steps}, step {step_size:.4f} at eps {args.epsilon}, random start",
        "train_seed": args.train_seed,
        "history": history,
        "train_seconds": time.perf_counter() - started,
    }
    return model, info


def keras_weights(model) -> Dict[str, Any]:
    """{'<layer>/kernel', '<layer>/bias': numpy array} of the CNN."""
    weights = {}
    for name in KERAS_LAYERS:
        kernel, bias = model.get_layer(name).get_weights()
        weights[f"{name}/kernel"] = kernel
        weights[f"{name}/bias"] = bias
    return weights


def run_tf_autoattack(model, images, labels, seed: Sequence[int]) -> Dict[str, Any]:
    """Runs `oat_tf.attacks.autoattack` and times each member.

    The per-member times come from the member lines that `autoattack` logs
    (absl INFO) when a member finishes.
    """
    import logging as std_logging  # pylint: disable=import-outside-toplevel

    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from absl import logging  # pylint: disable=import-outside-toplevel

    from oat_tf.attacks import autoattack  # pylint: disable=import-outside-toplevel

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
    def logits_fn(x):
        return model(x, training=False)

    stamps: List[float] = []

    class _Stamp(std_logging.Handler):
        def emit(self, record: std_logging.LogRecord) -> None:
            if "robust accuracy" in record.getMessage():
                stamps.append(time.perf_counter())

    handler = _Stamp()
    logging.set_verbosity(logging.INFO)
    std_logging.getLogger("absl").addHandler(handler)
    images = tf.constant(images)
    labels = tf.constant(labels, tf.int32)
    clean = np.asarray(tf.argmax(logits_fn(images), axis=1, output_type=tf.int32) == labels)
    started = time.perf_counter()
    try:
        x_adv, robust = autoattack.autoattack(
            logits_fn, images, labels, epsilon=EPSILON, version="standard", seed=list(seed)
        )
    finally:
        std_logging.getLogger("absl").removeHandler(handler)
    total = time.perf_counter() - started
    expected = [key for _, _, key in STAGES]
    if list(robust) != expected:
        raise RuntimeError(f"Unexpected AutoAttack members {list(robust)}; expected {expected}")
    times = (
        list(np.diff([started] + stamps)) if len(stamps) == len(STAGES) else [None] * len(STAGES)
    )
    linf = float(np.max(np.abs(x_adv.numpy() - images.numpy())))
    final_pred = np.asarray(tf.argmax(logits_fn(x_adv), axis=1, output_type=tf.int32))
    final_robust = final_pred == labels.numpy()
    if not np.array_equal(final_robust, robust[STAGES[-1][2]]):
        raise RuntimeError("The returned x_adv does not reproduce the final robust flags.")
    stages = []
    for (stage, name, key), seconds in zip(STAGES, times):
        stages.append({
            "stage": stage,
            "name": name,
            "key": key,
            "robust_count": int(robust[key].sum()),
            "robust_accuracy": 100.0 * float(robust[key].mean()),
            "seconds": None if seconds is None else float(seconds),
        })
    return {
        "clean_count": int(clean.sum()),
        "clean_accuracy": 100.0 * float(clean.mean()),
        "stages": stages,
        "robust_flags": {key: robust[key].astype(int).tolist() for _, _, key in STAGES},
        "total_seconds": total,
        "max_linf": linf,
    }


ATTACK_SOURCES = ("autoattack.py", "apgd.py", "fab.py", "square.py", "pgd.py")


def attack_source_hashes() -> Dict[str, str]:
    """sha256 (first 12 hex digits) of oat_tf's attack modules, as run."""
    import hashlib  # pylint: disable=import-outside-toplevel

    from oat_tf import attacks  # pylint: disable=import-outside-toplevel

    folder = os.path.dirname(attacks.__file__)
    hashes = {}
    for name in ATTACK_SOURCES:
        with open(os.path.join(folder, name), "rb") as f:
            hashes[f"oat_tf/attacks/{name}"] = hashlib.sha256(f.read()).hexdigest()[:12]
    return hashes


def tf_versions() -> Dict[str, str]:
    """Versions of the TF stack."""
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def command_train(args: argparse.Namespace) -> None:
    """`train`: train, save the model and digits, run the TF AutoAttack."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    os.makedirs(args.work_dir, exist_ok=True)
    model, info = train_model(args)
    _, _, x_test, y_test = load_mnist(args.data)
    images, labels = x_test[:args.num_digits], y_test[:args.num_digits]
    logits = model.predict(images, batch_size=500, verbose=0)
    arrays = {key.replace("/", "__"): value for key, value in keras_weights(model).items()}
    path = os.path.join(args.work_dir, "model.npz")
    np.savez(
        path, images=images, labels=labels, tf_logits=logits,
        train_info=np.array(json.dumps(info)), data=np.array(os.path.abspath(args.data)),
        **arrays,
    )
    print(f"saved {path}; clean accuracy on the {len(labels)} digits: "
          f"{100 * np.mean(logits.argmax(1) == labels):.1f}%", flush=True)
    command_tf(args)


def load_keras_model(work_dir: str):
    """Rebuilds the CNN from WORK_DIR/model.npz; returns (model, npz contents)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    with np.load(os.path.join(work_dir, "model.npz"), allow_pickle=False) as f:
        saved = {k: f[k] for k in f.files}
    model = build_keras_model()
    for name in KERAS_LAYERS:
        model.get_layer(name).set_weights([saved[f"{name}__kernel"], saved[f"{name}__bias"]])
    return model, saved


def command_tf(args: argparse.Namespace) -> None:
    """`tf`: run oat_tf's AutoAttack on the saved model and digits."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    model, saved = load_keras_model(args.work_dir)
    images, labels = saved["images"], saved["labels"]
    logits = model.predict(images, batch_size=500, verbose=0)
    if not np.allclose(logits, saved["tf_logits"], atol=1e-5):
        raise RuntimeError("The reloaded Keras model does not reproduce the saved logits.")
    print(f"TF AutoAttack (standard, eps={EPSILON}) on {len(labels)} digits ...", flush=True)
    sources = attack_source_hashes()
    result = run_tf_autoattack(model, images, labels, seed=args.tf_seed)
    if attack_source_hashes() != sources:
        raise RuntimeError("oat_tf's attack modules changed on disk during the run.")
    result.update({
        "attack_sources": sources,
        "implementation": "oat_tf.attacks.autoattack.autoattack(version='standard')",
        "seed": list(args.tf_seed),
        "epsilon": EPSILON,
        "num_digits": int(len(labels)),
        "train_info": json.loads(str(saved["train_info"])),
        "data": str(saved["data"]),
        "versions": tf_versions(),
        "machine": cpu_description(),
        "command": command_line(),
        "date": datetime.date.today().isoformat(),
    })
    path = os.path.join(args.work_dir, "tf_results.json")
    write_json_atomic(path, result)
    for stage in result["stages"]:
        print(f"  {stage['name']:8s} robust {stage['robust_accuracy']:5.1f}%  "
              f"({stage['seconds'] or float('nan'):.1f} s)")
    print(f"wrote {path} ({result['total_seconds']:.0f} s)", flush=True)


# === PyTorch half (xcheck venv; no TensorFlow, no oat_tf) ===


def build_torch_model(saved: Dict[str, Any]):
    """The CNN in PyTorch (NCHW), with the Keras weights copied in."""
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    model = nn.Sequential(
        nn.Conv2d(1, CONV1_FILTERS, KERNEL),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(CONV1_FILTERS, CONV2_FILTERS, KERNEL),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(CONV2_FILTERS * FEATURE_SIDE * FEATURE_SIDE, HIDDEN_UNITS),
        nn.ReLU(),
        nn.Linear(HIDDEN_UNITS, NUM_CLASSES),
    )
    tensor = lambda a: torch.from_numpy(a.copy()).float()
    # Conv kernels: Keras HWIO -> torch OIHW.
    conv_kernel = lambda k: tensor(k.transpose(3, 2, 0, 1))
    # Dense after the flatten: Keras flattens (h, w, c), torch (c, h, w).
    dense1 = saved["dense1__kernel"].reshape(
        FEATURE_SIDE, FEATURE_SIDE, CONV2_FILTERS, HIDDEN_UNITS
    ).transpose(2, 0, 1, 3).reshape(-1, HIDDEN_UNITS)
    with torch.no_grad():
        model[0].weight.copy_(conv_kernel(saved["conv1__kernel"]))
        model[0].bias.copy_(tensor(saved["conv1__bias"]))
        model[3].weight.copy_(conv_kernel(saved["conv2__kernel"]))
        model[3].bias.copy_(tensor(saved["conv2__bias"]))
        model[7].weight.copy_(tensor(dense1.T))
        model[7].bias.copy_(tensor(saved["dense1__bias"]))
        model[9].weight.copy_(tensor(saved["dense2__kernel"].T))
        model[9].bias.copy_(tensor(saved["dense2__bias"]))
    return model.eval()


def reference_attacks(model, variant: str) -> List[Tuple[str, Any]]:
    """The four members of standard AutoAttack from torchattacks.

    Args:
        model: the torch model.
        variant: "fra31" (torchattacks' sub-attacks with fra31/auto-attack's
            standard hyperparameters) or "shipped" (the members that
            `torchattacks.AutoAttack(version="standard")` builds itself).
    """
    import torchattacks  # pylint: disable=import-outside-toplevel

    if variant == "shipped":
        shipped = torchattacks.AutoAttack(
            model, norm="Linf", eps=EPSILON, version="standard", n_classes=NUM_CLASSES, seed=0
        )
        return list(zip([stage for stage, _, _ in STAGES], shipped._autoattack.attacks))
    # fra31/auto-attack `AutoAttack(norm='Linf', version='standard')`:
    # APGD-CE 100 steps 1 restart, APGD-T 100 steps 9 targets 1 restart,
    # FAB-T 100 steps 9 targets 1 restart, Square 5000 queries p_init 0.8
    # with resc_schedule=False; one seed for all four.
    seed = 0
    return [
        ("apgd_ce", torchattacks.APGD(
            model, norm="Linf", eps=EPSILON, steps=100, n_restarts=1, seed=seed, loss="ce",
            eot_iter=1, rho=0.75)),
        ("apgd_t", torchattacks.APGDT(
            model, norm="Linf", eps=EPSILON, steps=100, n_restarts=1, seed=seed, eot_iter=1,
            rho=0.75, n_classes=NUM_CLASSES)),
        ("fab_t", torchattacks.FAB(
            model, norm="Linf", eps=EPSILON, steps=100, n_restarts=1, alpha_max=0.1, eta=1.05,
            beta=0.9, seed=seed, multi_targeted=True, n_classes=NUM_CLASSES)),
        ("square", torchattacks.Square(
            model, norm="Linf", eps=EPSILON, n_queries=5000, n_restarts=1, p_init=0.8,
            loss="margin", resc_schedule=False, seed=seed)),
    ]


def describe_attack(attack) -> Dict[str, Any]:
    """The hyperparameters of a torchattacks attack, as run."""
    fields = ("steps", "n_restarts", "n_target_classes", "multi_targeted", "n_queries",
              "p_init", "rescale_schedule", "loss", "thr_decr", "alpha_max", "eta", "beta",
              "seed", "eps", "norm")
    out = {"class": type(attack).__name__}
    for field in fields:
        if hasattr(attack, field):
            value = getattr(attack, field)
            out[field] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def run_reference_sequence(model, attacks, images, labels) -> Dict[str, Any]:
    """Runs the attacks in order, each on the samples still robust (as fra31).

    Returns per-stage cumulative robust accuracy, counts, times and flags.
    """
    import torch  # pylint: disable=import-outside-toplevel

    with torch.no_grad():
        robust = model(images).argmax(1) == labels
    clean = robust.clone()
    stages = []
    total = StageTimer()
    for (stage, attack), (_, name, _) in zip(attacks, STAGES):
        remaining = robust.nonzero().flatten()
        attacked = int(remaining.numel())
        timer = StageTimer()
        if attacked:
            x, y = images[remaining], labels[remaining]
            adv = attack(x, y).detach()
            with torch.no_grad():
                still = model(adv).argmax(1) == y
            linf = (adv - x).abs().flatten(1).max(1)[0]
            if float(linf.max()) > EPSILON + 1e-5:
                raise RuntimeError(f"{name}: perturbation {float(linf.max())} exceeds eps")
            robust[remaining[~still]] = False
        seconds = timer.lap()
        total.lap()
        stages.append({
            "stage": stage,
            "name": name,
            "attacked": attacked,
            "robust_count": int(robust.sum()),
            "robust_accuracy": 100.0 * float(robust.float().mean()),
            "seconds": seconds,
            "flags": robust.int().tolist(),
            "hyperparameters": describe_attack(attack),
        })
        print(f"  {name:8s} robust {stages[-1]['robust_accuracy']:5.1f}% "
              f"({attacked} attacked, {seconds:.1f} s)", flush=True)
    return {
        "clean_count": int(clean.sum()),
        "clean_accuracy": 100.0 * float(clean.float().mean()),
        "stages": stages,
        "total_seconds": sum(total.times),
    }


def command_torch(args: argparse.Namespace) -> None:
    """`torch`: rebuild the CNN in torch, check logits, run the reference."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
    import torchattacks  # pylint: disable=import-outside-toplevel

    if "tensorflow" in sys.modules:
        raise RuntimeError("The torch half must not import TensorFlow.")
    torch.set_num_threads(args.torch_threads or torch.get_num_threads())
    with np.load(os.path.join(args.work_dir, "model.npz"), allow_pickle=False) as f:
        saved = {k: f[k] for k in f.files}
    model = build_torch_model(saved)
    images = torch.from_numpy(saved["images"].transpose(0, 3, 1, 2).copy()).float()
    labels = torch.from_numpy(saved["labels"]).long()
    with torch.no_grad():
        logits = model(images).numpy()
    max_diff = float(np.max(np.abs(logits - saved["tf_logits"])))
    print(f"max |torch - TF| logit difference on {len(labels)} digits: {max_diff:.2e}")
    if max_diff > LOGITS_TOLERANCE:
        raise RuntimeError(f"Logits differ by {max_diff} > {LOGITS_TOLERANCE}")
    if not np.array_equal(logits.argmax(1), saved["tf_logits"].argmax(1)):
        raise RuntimeError("Torch and TF predict different classes.")

    result: Dict[str, Any] = {
        "max_logit_difference": max_diff,
        "epsilon": EPSILON,
        "num_digits": int(len(labels)),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchattacks": torchattacks.__version__,
            "numpy": np.__version__,
        },
        "torch_threads": torch.get_num_threads(),
        "machine": cpu_description(),
        "command": command_line(),
        "date": datetime.date.today().isoformat(),
        "runs": {},
    }
    for variant in args.variants:
        print(f"reference AutoAttack ({variant}) on {len(labels)} digits ...", flush=True)
        run = run_reference_sequence(model, reference_attacks(model, variant), images, labels)
        if variant == "shipped" and args.check_multiattack:
            # The same run through torchattacks' own MultiAttack: the final
            # robust flags must agree with the stage-by-stage run.
            shipped = torchattacks.AutoAttack(
                model, norm="Linf", eps=EPSILON, version="standard", n_classes=NUM_CLASSES,
                seed=0,
            )
            started = time.perf_counter()
            adv = shipped(images, labels)
            with torch.no_grad():
                flags = (model(adv).argmax(1) == labels).int().tolist()
            run["multiattack_seconds"] = time.perf_counter() - started
            run["multiattack_robust_count"] = int(sum(flags))
            run["multiattack_agrees"] = flags == run["stages"][-1]["flags"]
            print(f"  MultiAttack: robust {sum(flags)} / {len(flags)} "
                  f"(agrees: {run['multiattack_agrees']})", flush=True)
        result["runs"][variant] = run
        # Written after each variant, so a long run keeps what it finished.
        path = os.path.join(args.work_dir, "torch_results.json")
        write_json_atomic(path, result)
        print(f"wrote {path}", flush=True)


# === Report (standard library only) ===


def _signed(points: float) -> str:
    """A difference in points, '+0.0' rather than '-0.0' for a tie."""
    return f"{round(points, 9) + 0.0:+.1f}"


def _percent(count: int, total: int) -> float:
    """An accuracy in %, from counts (exact ties compare equal)."""
    return 100.0 * count / total


def _seconds(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0f} s"


def _disagreements(tf_flags: Sequence[int], ref_flags: Sequence[int]) -> Tuple[int, int]:
    """(digits robust only for oat_tf, digits robust only for the reference)."""
    only_tf = sum(1 for a, b in zip(tf_flags, ref_flags) if a and not b)
    only_ref = sum(1 for a, b in zip(tf_flags, ref_flags) if b and not a)
    return only_tf, only_ref


def _reading(rows, disagreements, tf_result, reference, shipped, holds, worst) -> str:
    """A one-paragraph reading of the numbers, generated from them."""
    n = tf_result["num_digits"]
    final_tf, final_ref = rows[-1][1], rows[-1][2]
    differing = [(label, tf - ref) for label, tf, ref, _, _ in rows[1:] if abs(tf - ref) > 1e-9]
    parts = []
    if abs(final_tf - final_ref) < 1e-9:
        parts.append(
            f"Both implementations end at the same AutoAttack robust accuracy, "
            f"{final_tf:.1f}%"
        )
    else:
        parts.append(
            f"oat_tf ends at {final_tf:.1f}% and the reference at {final_ref:.1f}% "
            f"({_signed(final_tf - final_ref)} points)"
        )
    if differing:
        parts[-1] += (
            "; the intermediate rows differ by at most "
            f"{max(abs(d) for _, d in differing):.1f} points ("
            + ", ".join(f"{label} {_signed(d)}" for label, d in differing)
            + ")."
        )
    else:
        parts[-1] += ", and every intermediate row agrees as well."
    only_tf, only_ref = disagreements[-1]
    parts.append(
        f"Digit by digit, the final robust sets differ in {only_tf + only_ref} of {n} digits "
        f"({only_tf} robust only for oat_tf, {only_ref} only for the reference)."
    )
    first_tf, first_ref = rows[1][1], rows[1][2]
    clean = rows[0][1]
    parts.append(
        f"APGD-CE does almost all of the work ({clean:.1f}% clean to {first_tf:.1f}% / "
        f"{first_ref:.1f}%); APGD-T, FAB-T and Square together remove only "
        f"{first_tf - final_tf:.1f} (oat_tf) / {first_ref - final_ref:.1f} (reference) more "
        "points, as expected for a PGD-trained model without gradient masking."
    )
    first_only_tf, first_only_ref = disagreements[1]
    if first_tf < first_ref:
        parts.append(
            f"oat_tf's APGD-CE alone is the stronger of the two here ({first_only_ref} digits "
            f"that survive the reference's APGD-CE are broken by oat_tf's, against "
            f"{first_only_tf} the other way); the two differ in their random starts "
            "(oat_tf: uniform in the ε-ball; the reference: scaled so that the largest "
            "coordinate is ε) and in small details of the step-size checkpoints, so single digits "
            "near the boundary can fall either way."
        )
    if shipped is not None:
        shipped_final = _percent(shipped["stages"][-1]["robust_count"], n)
        parts.append(
            "torchattacks' `AutoAttack` as shipped (10-step members) is weaker: "
            f"{shipped_final:.1f}% ({_signed(shipped_final - final_ref)} points against the "
            "100-step reference), which is why it is not the yardstick here."
        )
    tf_total, ref_total = tf_result["total_seconds"], reference["total_seconds"]
    parts.append(
        f"Wall time on this shared 2-core CPU: {tf_total / 60:.0f} min for oat_tf against "
        f"{ref_total / 60:.0f} min for the reference (indicative only; other jobs shared the "
        "cores)."
    )
    verdict = "holds" if holds else "does not hold"
    parts.append(
        f"The acceptance rule \"TF within 1 point of the reference, or lower\" {verdict} "
        f"at every row (largest difference {_signed(worst)} points)."
    )
    return " ".join(parts)


def render_report(
    tf_result: Dict[str, Any], torch_result: Dict[str, Any], work_dir: str = "WORK_DIR"
) -> str:
    """The Markdown page from the two result files (in `work_dir`)."""
    reference = torch_result["runs"]["fra31"]
    shipped = torch_result["runs"].get("shipped")
    n = tf_result["num_digits"]
    train = tf_result["train_info"]
    rows = [("Clean", _percent(tf_result["clean_count"], n),
             _percent(reference["clean_count"], n), None, None)]
    # Per-stage digit disagreements; the clean row agrees by construction of
    # the logit check (same predictions).
    disagreements: List[Tuple[int, int]] = [(0, 0)]
    for tf_stage, ref_stage in zip(tf_result["stages"], reference["stages"]):
        rows.append((f"after {tf_stage['name']}", _percent(tf_stage["robust_count"], n),
                     _percent(ref_stage["robust_count"], n), tf_stage["seconds"],
                     ref_stage["seconds"]))
        disagreements.append(
            _disagreements(tf_result["robust_flags"][tf_stage["key"]], ref_stage["flags"])
        )
    worst = max(tf - ref for _, tf, ref, _, _ in rows)
    holds = worst <= MAX_POINTS_ABOVE_REFERENCE + 1e-9

    lines = [
        "# AutoAttack cross-check: oat_tf against the PyTorch reference",
        "",
        "A one-off check, outside CI, of `oat_tf.attacks.autoattack` (standard version, L∞) "
        "against the reference PyTorch implementation: torchattacks "
        f"{torch_result['versions']['torchattacks']}, whose APGD, APGD-T, FAB and Square are "
        "ports of fra31/auto-attack's attacks. The same CNN runs in both frameworks (weights "
        f"copied from Keras to PyTorch; the largest logit difference on the {n} digits is "
        f"{torch_result['max_logit_difference']:.1e}), and both implementations attack the "
        f"same {n} digits. Generated by `benchmarks/autoattack_crosscheck.py report` from "
        "the two result files of the run below.",
        "",
        "## Result",
        "",
        f"Accuracy (%) on the first {n} MNIST test digits at ε = {tf_result['epsilon']}; each "
        "row is cumulative (robust to that attack and all earlier ones), so the last row is "
        "the AutoAttack robust accuracy. \"Digits only oat_tf / only ref.\" count the digits "
        "still robust after that row for one implementation and not for the other.",
        "",
        "| | oat_tf | reference | oat_tf − reference (points) | digits only oat_tf / "
        "only ref. | oat_tf time | reference time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (label, tf_value, ref_value, tf_seconds, ref_seconds), (only_tf, only_ref) in zip(
        rows, disagreements
    ):
        lines.append(
            f"| {label} | {tf_value:.1f} | {ref_value:.1f} | {_signed(tf_value - ref_value)} | "
            f"{only_tf} / {only_ref} | {_seconds(tf_seconds)} | {_seconds(ref_seconds)} |"
        )
    lines.append(
        f"| total | | | | | {_seconds(tf_result['total_seconds'])} | "
        f"{_seconds(reference['total_seconds'])} |"
    )
    verdict = "holds" if holds else "does NOT hold"
    lines += [
        "",
        f"**Acceptance: \"TF within 1 point of the reference, or lower\" {verdict}** (largest "
        f"oat_tf − reference over the rows: {_signed(worst)} points; 1 digit = {100 / n:.1f} "
        "points).",
        "",
        "## Reading",
        "",
        _reading(rows, disagreements, tf_result, reference, shipped, holds, worst),
        "",
    ]
    if shipped is not None:
        lines += [
            "### `torchattacks.AutoAttack(version=\"standard\")` as shipped",
            "",
            "torchattacks builds its standard AutoAttack with its own defaults, which are not "
            "AutoAttack's: 10 steps (not 100) for APGD-CE, APGD-T and FAB-T, and Square with "
            "its p schedule rescaled to the 5,000 queries (fra31 does not rescale it). For the "
            "record, that configuration on the same digits:",
            "",
            "| | torchattacks.AutoAttack (10 steps) | time |",
            "|---|---:|---:|",
            f"| Clean | {_percent(shipped['clean_count'], n):.1f} | |",
        ]
        for stage in shipped["stages"]:
            lines.append(
                f"| after {stage['name']} | {_percent(stage['robust_count'], n):.1f} | "
                f"{_seconds(stage['seconds'])} |"
            )
        if "multiattack_agrees" in shipped:
            lines += [
                "",
                "Run through torchattacks' own `MultiAttack` (`attack(images, labels)`), the "
                f"shipped AutoAttack leaves {shipped['multiattack_robust_count']} of {n} digits "
                "robust; the stage-by-stage run above "
                + ("agrees digit by digit." if shipped["multiattack_agrees"]
                   else "does NOT agree digit by digit."),
            ]
        lines.append("")

    ref_hp = {stage["stage"]: stage["hyperparameters"] for stage in reference["stages"]}
    history = ", ".join(
        f"{h['epoch']}: ε {h['epsilon']:.2f}, loss {h['loss']:.3f}" for h in train["history"]
    )
    tf_versions_ = tf_result["versions"]
    torch_versions = torch_result["versions"]
    lines += [
        "## Setting",
        "",
        f"- **Model**: Conv({CONV1_FILTERS}, {KERNEL}×{KERNEL}) – ReLU – MaxPool(2) – "
        f"Conv({CONV2_FILTERS}, {KERNEL}×{KERNEL}) – ReLU – MaxPool(2) – Dense({HIDDEN_UNITS}) – "
        f"ReLU – Dense({NUM_CLASSES}), valid padding, no normalisation layer (so inference "
        "and training mode agree). Built in Keras 3 and in PyTorch; the Keras weights are "
        "copied across (conv kernels HWIO → OIHW; the first dense kernel permuted from "
        "Keras' (h, w, c) flatten order to PyTorch's (c, h, w)).",
        f"- **Training** (Keras, `oat_tf.attacks.pgd.pgd_linf`): PGD adversarial training on "
        f"the first {train['train_size']:,} MNIST training images, {train['epochs']} epochs, "
        f"batch {train['batch_size']}, {train['optimizer']}, {train['pgd']}; ε ramped "
        f"linearly to {tf_result['epsilon']} over the first {train['ramp_epochs']} epochs "
        f"(per epoch: {history}); seed {train['train_seed']}; "
        f"{train['train_seconds'] / 60:.1f} min of CPU.",
        f"- **Data**: the first {n} digits of the official MNIST test set "
        f"(`{os.path.basename(tf_result['data'])}` of the shared data folder, read in place), "
        "pixels scaled to [0, 1].",
        f"- **oat_tf**: `{tf_result['implementation']}`, ε = {tf_result['epsilon']}, seed "
        f"{tf_result['seed']}: APGD-CE (100 steps, 1 restart), APGD-T (100 steps, 9 targets, "
        "1 restart), FAB-T (100 steps, 9 targets, 1 restart), Square (5,000 queries, "
        "p_init = 0.8), each on the digits still robust; `logits_fn` is the Keras model in a "
        "`tf.function`. Per-attack times are taken from the line `autoattack` logs after each "
        "member.",
        "- **Reference**: torchattacks' sub-attacks run one after another on the digits still "
        "robust, exactly as fra31/auto-attack's `run_standard_evaluation` does, with "
        "fra31's standard hyperparameters: "
        f"`APGD(steps={ref_hp['apgd_ce'].get('steps')}, n_restarts=1, loss='ce', rho=0.75)`, "
        f"`APGDT(steps={ref_hp['apgd_t'].get('steps')}, n_restarts=1, n_classes=10)` "
        f"(n_target_classes = {ref_hp['apgd_t'].get('n_target_classes')}), "
        f"`FAB(steps={ref_hp['fab_t'].get('steps')}, n_restarts=1, multi_targeted=True, "
        "n_classes=10, alpha_max=0.1, eta=1.05, beta=0.9)` "
        f"(n_target_classes = {ref_hp['fab_t'].get('n_target_classes')}), "
        f"`Square(n_queries={ref_hp['square'].get('n_queries')}, p_init="
        f"{ref_hp['square'].get('p_init')}, loss='margin', resc_schedule="
        f"{ref_hp['square'].get('rescale_schedule')})`, all with seed 0.",
        f"- **Machine**: {tf_result['machine']['cpu_model']}, "
        f"{tf_result['machine']['cpu_count']} cores (shared with other work; times are "
        f"indicative), no GPU; PyTorch with {torch_result['torch_threads']} threads.",
        f"- **Versions**: Python {tf_versions_['python']}, TensorFlow "
        f"{tf_versions_['tensorflow']}, Keras {tf_versions_['keras']}, NumPy "
        f"{tf_versions_['numpy']} (project venv); PyTorch {torch_versions['torch']} (CPU), "
        f"torchattacks {torch_versions['torchattacks']}, NumPy {torch_versions['numpy']} "
        "(separate venv).",
        f"- **Date**: {tf_result['date']}.",
    ]
    if tf_result.get("attack_sources"):
        sources = ", ".join(
            f"`{path}` {digest}" for path, digest in sorted(tf_result["attack_sources"].items())
        )
        note = tf_result.get("attack_sources_note")
        lines.append(
            "- **oat_tf sources** (sha256, first 12 hex digits, of the attack modules as run): "
            + sources + (f" ({note})" if note else "") + "."
        )
    lines += [
        "",
        "Commands (from the repository root; the script's docstring has the venv setup):",
        "",
        "```bash",
        "# project venv: train, save, oat_tf's AutoAttack",
        f"PYTHONPATH=. {tf_result['command']}",
        "# torch venv: the reference",
        torch_result["command"],
        "# either venv: this page",
        f"python benchmarks/autoattack_crosscheck.py report --work_dir={work_dir} "
        "--out=docs/results/autoattack_crosscheck.md",
        "```",
        "",
    ]
    return "\n".join(lines)


def command_report(args: argparse.Namespace) -> None:
    """`report`: write the Markdown page from the two JSON files."""
    with open(os.path.join(args.work_dir, "tf_results.json"), encoding="utf-8") as f:
        tf_result = json.load(f)
    with open(os.path.join(args.work_dir, "torch_results.json"), encoding="utf-8") as f:
        torch_result = json.load(f)
    write_text_atomic(args.out, render_report(tf_result, torch_result, args.work_dir))
    print(f"wrote {args.out}")


# === Command line ===


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses the subcommand and its flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add_common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--work_dir", default=DEFAULT_WORK_DIR,
                       help="folder for model.npz and the result JSONs (outside the repo)")

    def add_tf(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tf_seed", type=int, nargs=2, default=[0, 0],
                       help="stateless seed of oat_tf's AutoAttack")

    train = sub.add_parser("train", help="train, save, run oat_tf's AutoAttack (project venv)")
    add_common(train)
    add_tf(train)
    train.add_argument("--data", default=DEFAULT_DATA, help="MNIST npz (read in place)")
    train.add_argument("--num_digits", type=int, default=NUM_DIGITS)
    train.add_argument("--train_size", type=int, default=20000)
    train.add_argument("--epochs", type=int, default=6)
    train.add_argument("--ramp_epochs", type=int, default=3)
    train.add_argument("--batch_size", type=int, default=100)
    train.add_argument("--learning_rate", type=float, default=1e-3)
    train.add_argument("--epsilon", type=float, default=EPSILON)
    train.add_argument("--pgd_steps", type=int, default=10)
    train.add_argument("--pgd_step_factor", type=float, default=2.5,
                       help="PGD step size = factor * epsilon / steps")
    train.add_argument("--train_seed", type=int, default=0)

    tf_cmd = sub.add_parser("tf", help="rerun oat_tf's AutoAttack on the saved model")
    add_common(tf_cmd)
    add_tf(tf_cmd)

    torch_cmd = sub.add_parser("torch", help="run the reference (torch venv)")
    add_common(torch_cmd)
    torch_cmd.add_argument("--variants", nargs="+", default=["fra31", "shipped"],
                           choices=["fra31", "shipped"])
    torch_cmd.add_argument("--torch_threads", type=int, default=0,
                           help="torch.set_num_threads; 0: torch's default")
    torch_cmd.add_argument("--no_check_multiattack", dest="check_multiattack",
                           action="store_false",
                           help="skip rerunning the shipped AutoAttack through MultiAttack")

    report = sub.add_parser("report", help="write the Markdown page (stdlib only)")
    add_common(report)
    report.add_argument("--out", default=DEFAULT_OUT)
    return parser.parse_args(argv)


COMMANDS: Dict[str, Callable[[argparse.Namespace], None]] = {
    "train": command_train,
    "tf": command_tf,
    "torch": command_torch,
    "report": command_report,
}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Runs the subcommand."""
    args = parse_args(argv)
    COMMANDS[args.command](args)


if __name__ == "__main__":
    main()
