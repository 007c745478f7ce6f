"""Op categories of the step profile, and one profiled oat_tf step (no timing is asserted)."""

import os
import subprocess
import sys

import pytest

from oat_tf.bench import step_profile


@pytest.mark.parametrize(
    "op_type, op_name, kind",
    [
        ("_MklNativeConv2D", "resnet34_oat_1/stem_conv_1/convolution", "convolution forward"),
        ("Conv2D", "small_cnn_oat_1/block1_conv1_1/convolution", "convolution forward"),
        ("_MklNativeFusedConv2D", "small_cnn_1/block1_conv1_1/Relu", "convolution forward"),
        ("_MklNativeConv2DBackpropInput",
         "gradient_tape/resnet34_oat_1/stage1_block1_conv2_1/convolution/Conv2DBackpropInput",
         "convolution backward-data"),
        ("Conv2DBackpropFilter", "gradient_tape/x/block2_conv2_1/convolution/Conv2DBackpropFilter",
         "convolution backward-filter"),
        ("Mul", "gradient_tape/resnet34_oat_1/stage1_block1_bn1_1/mul_2/Mul", "BN and FiLM"),
        ("Mul", "resnet34_oat_1/stem_film_1/mul", "BN and FiLM"),
        ("_MklMatMul", "small_cnn_oat_1/fc1_film_1/MatMul", "BN and FiLM"),
        ("Sub", "resnet34_oat_1/stage2_block1_shortcut_bn_1/sub", "BN and FiLM"),
        ("_MklMatMul", "gradient_tape/small_cnn_oat_1/fc2_1/MatMul/MatMul_1", "dense"),
        ("ReluGrad", "gradient_tape/resnet34_oat_1/stage1_block1_relu1_1/ReluGrad",
         "element-wise and other"),
        ("AddV2", "resnet34_oat_1/stage1_block1_add_1/Add", "element-wise and other"),
        ("ResourceApplyKerasMomentum", "SGD/update/ResourceApply", "optimizer update"),
        ("AssignVariableOp", "SGD/AssignVariableOp", "optimizer update"),
    ],
)
def test_tensorflow_ops_fall_in_their_kind(op_type, op_name, kind):
    assert step_profile.kind_of(op_type, op_name) == kind


def test_the_attack_loop_is_its_own_pass():
    attack = step_profile.tensorflow_category(
        "Conv2D", "while/body/_1/while/small_cnn_oat_1/block1_conv2_1/convolution")
    training = step_profile.tensorflow_category(
        "Conv2D", "small_cnn_oat_1/block1_conv2_1/convolution")
    assert attack == ("attack (input gradients)", "convolution forward")
    assert training == ("training pass", "convolution forward")


@pytest.mark.parametrize(
    "op_name, in_norm, kind",
    [
        ("aten::mkldnn_convolution", False, "convolution forward"),
        ("aten::convolution_backward", False, "convolution backward (data + filter)"),
        ("aten::native_batch_norm_backward", False, "BN and FiLM"),
        ("aten::mul", True, "BN and FiLM"),
        ("aten::addmm", False, "dense"),
        ("aten::threshold_backward", False, "element-wise and other"),
    ],
)
def test_torch_ops_fall_in_their_kind(op_name, in_norm, kind):
    assert step_profile.torch_kind(op_name, in_norm) == kind


def test_summarize_sums_per_category_and_shares_add_up():
    entries = [("training pass", "dense", 0.1), ("training pass", "dense", 0.3),
               ("attack (input gradients)", "convolution forward", 0.6)]
    summary = step_profile.summarize(entries, wall_seconds=1.5)
    assert summary["op_seconds"] == pytest.approx(1.0)
    assert summary["uncovered_seconds"] == pytest.approx(0.5)
    by_kind = {(p, k): (s, share) for p, k, s, share in summary["rows"]}
    assert by_kind[("training pass", "dense")] == pytest.approx((0.4, 0.4))
    assert by_kind[("attack (input gradients)", "convolution forward")] == pytest.approx((0.6, 0.6))
    # The attack pass comes first in the table.
    assert summary["rows"][0][0] == "attack (input gradients)"
    table = step_profile.markdown(summary, "title")
    assert "| training pass | dense | 400 | 40.0% |" in table


def test_one_profiled_oat_tf_step_covers_both_passes_and_every_convolution_kind():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    completed = subprocess.run(
        [sys.executable, "-m", "oat_tf.bench.step_profile", "--framework=oat_tf",
         "--model=small_cnn", "--batch_size=8", "--attack_steps=2"],
        capture_output=True, text=True, cwd=repo, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = [line.split(" | ") for line in completed.stdout.splitlines() if line.startswith("| attack")
            or line.startswith("| training")]
    kinds = {(row[0].strip("| "), row[1]) for row in rows}
    assert ("attack (input gradients)", "convolution forward") in kinds
    assert ("attack (input gradients)", "convolution backward-data") in kinds
    # The attack needs no filter gradients; the training pass does.
    assert ("attack (input gradients)", "convolution backward-filter") not in kinds
    assert ("training pass", "convolution backward-filter") in kinds
    shares = [float(row[3].rstrip("% |")) for row in rows]
    assert sum(shares) == pytest.approx(100.0, abs=0.5)
