"""Where the time of one OAT training step goes, by category, in oat_tf or PyTorch.

    python -m oat_tf.bench.step_profile --framework=oat_tf --model=resnet34 --batch_size=32
    python -m oat_tf.bench.step_profile --framework=torch --model=resnet34 --batch_size=32

runs `warmup` untimed steps, then profiles one step: oat_tf's
`OATTrainer.train_step` in a `tf.function` with the TensorFlow profiler
(the trace's per-op self times, from the profiler's `framework_op_stats`), or
`oat_tf.bench.torch_reference.OATStep` with `torch.profiler` (per-op self CPU
times; PyTorch is an optional extra, `pip install -r requirements-bench.txt`).
Every op goes to one category (`categorize`): its pass (the attack's
input-gradient passes, or the training pass: forward, backward and update)
and its kind:

- convolution forward, backward-data, backward-filter (PyTorch's
  `convolution_backward` computes both of the training pass at once, so
  there it is one "backward (data + filter)" line);
- dense (matrix products), BN and FiLM (ops of the normalisation and FiLM
  layers), element-wise and the rest (ReLU, additions, pooling, the loss);
- the optimizer update.

The table gives each category's self time and share, the step's wall time,
and the wall time the ops do not cover (host-side overhead: dispatch, graph
executor, Python; negative when ops ran in parallel on the inter-op pool).
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import sys
import tempfile
import time
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from absl import flags

from oat_tf.bench import step_flags
from oat_tf import cli
from oat_tf import cpu_kernels

FLAGS = flags.FLAGS

FRAMEWORKS = ("oat_tf", "torch")
KINDS = (
    "convolution forward",
    "convolution backward-data",
    "convolution backward-filter",
    "convolution backward (data + filter)",
    "dense",
    "BN and FiLM",
    "element-wise and other",
    "optimizer update",
)
PASSES = ("attack (input gradients)", "training pass")

_NORM_SCOPE = re.compile(r"(^|/|_)(bn\d*|film\d*|shortcut_bn|stem_bn|stem_film)(_\d+)?(/|$)")
_TORCH_ATTACK_SCOPE = "attack"
_TORCH_UPDATE_SCOPE = "update"


def define_flags() -> None:
    """Defines the profiler's flags."""
    flags.DEFINE_enum("framework", "oat_tf", list(FRAMEWORKS), "Whose step to profile.")
    flags.DEFINE_enum("model", "resnet34", ["small_cnn", "resnet34"], "Network.")
    flags.DEFINE_enum("variant", "oat", ["oat", "plain"], "Network variant.")
    flags.DEFINE_integer("batch_size", 32, "Batch size.")
    step_flags.define_step_flags(timed_steps=False)


def kind_of(op_type: str, op_name: str) -> str:
    """The kind of one oat_tf (TensorFlow) op, from its type and scoped name.

    Args:
        op_type: str, the op's type as the trace names it (e.g. "Conv2D",
            "_MklNativeConv2DBackpropInput", "Mul").
        op_name: str, the op's scoped name (e.g.
            "gradient_tape/resnet34_oat_1/stage1_block1_bn1_1/mul_2/Mul").

    Returns:
        one of `KINDS`.
    """
    base = op_type.replace("_MklNative", "").replace("_Mkl", "").replace("_Fused", "")
    if "Conv2DBackpropInput" in base:
        return "convolution backward-data"
    if "Conv2DBackpropFilter" in base:
        return "convolution backward-filter"
    if base.startswith("Conv2D") or base.startswith("FusedConv2D") or base == "DepthwiseConv2dNative":
        return "convolution forward"
    if base.startswith("ResourceApply") or base.startswith("AssignVariable") or base.startswith(
        "AssignAddVariable"
    ) or base.startswith("AssignSubVariable"):
        return "optimizer update"
    if "MatMul" in base and "film" not in op_name:
        return "dense"
    if _NORM_SCOPE.search(op_name):
        return "BN and FiLM"
    return "element-wise and other"


def tensorflow_category(op_type: str, op_name: str) -> Tuple[str, str]:
    """(pass, kind) of one op of `OATTrainer.train_step`.

    The PGD attack runs in a `tf.while_loop`, so its ops are named `while/…`.

    Args:
        op_type: str, the op's type.
        op_name: str, the op's scoped name.

    Returns:
        (one of `PASSES`, one of `KINDS`).
    """
    step_pass = PASSES[0] if op_name.startswith("while/") else PASSES[1]
    return step_pass, kind_of(op_type, op_name)


def torch_kind(op_name: str, in_norm: bool) -> str:
    """The kind of one PyTorch op (`aten::…`), given whether it ran in a BN / FiLM module.

    Args:
        op_name: str, e.g. "aten::mkldnn_convolution", "aten::convolution_backward".
        in_norm: bool, the op ran inside the forward of a normalisation or
            FiLM module. Backward ops run outside those modules: BN's own
            backward ops are recognised by name, FiLM's backward (products and
            sums) counts as element-wise.

    Returns:
        one of `KINDS`.
    """
    if "batch_norm" in op_name:
        return "BN and FiLM"
    if "convolution_backward" in op_name:
        return "convolution backward (data + filter)"
    if "convolution" in op_name or op_name in ("aten::conv2d", "aten::_convolution"):
        return "convolution forward"
    if in_norm:
        return "BN and FiLM"
    if op_name in ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul"):
        return "dense"
    return "element-wise and other"


def summarize(entries: Iterable[Tuple[str, str, float]], wall_seconds: float) -> Dict[str, Any]:
    """Sums self times per (pass, kind).

    Args:
        entries: (pass, kind, self seconds) per op execution or op.
        wall_seconds: float, the step's wall time.

    Returns:
        dict with `rows` (list of (pass, kind, seconds, share of the ops'
        total)), `op_seconds`, `wall_seconds` and `uncovered_seconds`
        (wall − ops).
    """
    totals: Dict[Tuple[str, str], float] = collections.defaultdict(float)
    for step_pass, kind, seconds in entries:
        totals[(step_pass, kind)] += seconds
    op_seconds = sum(totals.values())
    rows = []
    for step_pass in PASSES:
        for kind in KINDS:
            seconds = totals.get((step_pass, kind), 0.0)
            if seconds > 0:
                rows.append((step_pass, kind, seconds, seconds / op_seconds if op_seconds else 0.0))
    return {
        "rows": rows,
        "op_seconds": op_seconds,
        "wall_seconds": wall_seconds,
        "uncovered_seconds": wall_seconds - op_seconds,
    }


def markdown(summary: Dict[str, Any], title: str) -> str:
    """The summary as a Markdown table."""
    lines = [title, "", "| pass | kind | self time (ms) | share of op time |", "|---|---|---:|---:|"]
    for step_pass, kind, seconds, share in summary["rows"]:
        lines.append(f"| {step_pass} | {kind} | {1000 * seconds:.0f} | {100 * share:.1f}% |")
    lines.append(f"| all ops | | {1000 * summary['op_seconds']:.0f} | 100% |")
    lines.append(
        f"| step wall time (ops not covering it: {1000 * summary['uncovered_seconds']:.0f} ms) | | "
        f"{1000 * summary['wall_seconds']:.0f} | |"
    )
    return "\n".join(lines) + "\n"


def _profile_tensorflow() -> Tuple[List[Tuple[str, str, float]], float, str]:
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

    from oat_tf.bench import train_step

    trainer, images, labels = train_step.benchmark_trainer(
        FLAGS.model, variant=FLAGS.variant, batch_size=FLAGS.batch_size,
        attack_steps=FLAGS.attack_steps, seed=FLAGS.seed,
    )
    for _ in range(max(1, FLAGS.warmup)):
        trainer.train_on_batch(images, labels)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        float(trainer.train_on_batch(images, labels, return_dict=True)["loss"])
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(paths, "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"The TensorFlow profiler gave no op statistics: {data[:500]!r}")
    table = json.loads(data)
    table = table[0] if isinstance(table, list) else table
    columns = [column["id"] for column in table["cols"]]
    entries = []
    for row in table["rows"]:
        values = dict(zip(columns, [cell.get("v") for cell in row["c"]]))
        if values["type"] == "IDLE":
            continue
        step_pass, kind = tensorflow_category(values["type"], values["operation"])
        entries.append((step_pass, kind, float(values["total_self_time"]) / 1e6))
    settings = f"TensorFlow {tf.__version__}, oneDNN {cpu_kernels.describe()['onednn']}"
    return entries, wall, settings


def _profile_torch() -> Tuple[List[Tuple[str, str, float]], float, str]:
    import torch
    from torch import profiler as torch_profiler

    from oat_tf.bench import random_batch
    from oat_tf.bench import torch_reference

    torch.manual_seed(FLAGS.seed)
    model = torch_reference.build(FLAGS.model, FLAGS.variant)
    norm_modules = [m for m in model.modules() if isinstance(
        m, (torch_reference.Normalization, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    for module in norm_modules:
        # Marks the ops of every BN / FiLM module (forward; autograd runs their
        # backward ops under the same record in the same thread's stack).
        module.register_forward_pre_hook(
            lambda m, args: setattr(m, "_record", torch_profiler.record_function("norm").__enter__())
        )
        module.register_forward_hook(lambda m, args, out: m._record.__exit__(None, None, None))
    images, labels = torch_reference.from_nhwc(
        *random_batch.random_batch(FLAGS.model, FLAGS.batch_size, FLAGS.seed)
    )
    step = torch_reference.OATStep(model, attack_steps=FLAGS.attack_steps, seed=FLAGS.seed)
    for _ in range(max(1, FLAGS.warmup)):
        step(images, labels)
    with torch_profiler.profile(activities=[torch_profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step(images, labels)
        wall = time.perf_counter() - start
    entries = []
    for event in prof.events():
        if not event.name.startswith("aten::") or event.self_cpu_time_total <= 0:
            continue
        scopes = _enclosing_scopes(event)
        step_pass = PASSES[0] if _TORCH_ATTACK_SCOPE in scopes else PASSES[1]
        if _TORCH_UPDATE_SCOPE in scopes:
            kind = "optimizer update"
        else:
            kind = torch_kind(event.name, "norm" in scopes)
            if step_pass == PASSES[0] and kind == "convolution backward (data + filter)":
                # `autograd.grad` with respect to the images: no filter gradients.
                kind = "convolution backward-data"
        entries.append((step_pass, kind, event.self_cpu_time_total / 1e6))
    settings = f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"
    return entries, wall, settings


def _enclosing_scopes(event) -> set:
    scopes = set()
    parent = event.cpu_parent
    while parent is not None:
        scopes.add(parent.name)
        parent = parent.cpu_parent
    return scopes


def main(argv: Sequence[str]) -> None:
    del argv
    if FLAGS.batch_size < 1 or FLAGS.attack_steps < 1 or FLAGS.warmup < 0:
        raise ValueError(
            "`--batch_size` and `--attack_steps` must be >= 1 and `--warmup` >= 0. Received: "
            f"--batch_size={FLAGS.batch_size} --attack_steps={FLAGS.attack_steps} --warmup={FLAGS.warmup}"
        )
    if FLAGS.framework == "torch":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ImportError(
                "--framework=torch needs PyTorch, an optional extra: "
                "`pip install -r requirements-bench.txt`."
            )
        entries, wall, settings = _profile_torch()
    else:
        entries, wall, settings = _profile_tensorflow()
    machine = cpu_kernels.cpu_description()
    title = (
        f"{FLAGS.framework}: one {FLAGS.variant} step of {FLAGS.model}, batch {FLAGS.batch_size}, "
        f"PGD-{FLAGS.attack_steps}; {settings}; {machine['cpu']} ({machine['cpu_vector_extensions']})."
    )
    sys.stdout.write(markdown(summarize(entries, wall), title))


def run() -> None:
    """The `oat-step-profile` console script; `python -m oat_tf.bench.step_profile` runs it too."""
    cli.run_main(main, __name__, define_flags)


if __name__ == "__main__":
    run()
