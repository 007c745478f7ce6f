"""The side-by-side benchmark's schedule, ratios and argument checks (no timing is asserted)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from oat_tf.bench import versus_torch
from tests import testing

_HAS_AVX2 = versus_torch.cpu_kernels.cpu_description()["cpu_vector_extensions"] in ("avx2", "avx512")
_COUNTS = {"rounds": 2, "steps": 2, "attack_steps": 7, "apgd_steps": 100, "warmup": 1,
           "apgd_warmup": 1, "threads": 0}


def _check(**overrides):
    arguments = dict(models=["small_cnn"], batch_sizes=["32", "128"], measures=["train"],
                     variants=["oat"], counts=dict(_COUNTS), output=None, torch_installed=True)
    arguments.update(overrides)
    return versus_torch.check_arguments(**arguments)


def test_schedule_alternates_which_framework_goes_first_every_round():
    jobs = versus_torch.schedule(["small_cnn"], [32], ["train"], ["oat", "plain"], rounds=3)
    assert len(jobs) == 3 * 2 * 2
    firsts = [[j for j in jobs if j["round"] == r][0]["framework"] for r in range(3)]
    assert firsts == ["oat_tf", "torch", "oat_tf"]
    # Every round times both frameworks on both variants.
    for r in range(3):
        pairs = {(j["framework"], j["variant"]) for j in jobs if j["round"] == r}
        assert pairs == {(f, v) for f in versus_torch.FRAMEWORKS for v in ("oat", "plain")}


def test_ratio_rows_pair_the_frameworks_round_by_round():
    results = []
    for round_index, (ours, theirs) in enumerate([(2.0, 3.0), (4.0, 4.0), (1.0, 5.0)]):
        base = {"model": "resnet34", "batch_size": 32, "measure": "train", "variant": "oat",
                "round": round_index}
        results += [{**base, "framework": "oat_tf", "seconds": ours},
                    {**base, "framework": "torch", "seconds": theirs}]
    (row,) = versus_torch.ratio_rows(results)
    assert row["ratios"] == pytest.approx([1.5, 1.0, 5.0])
    assert row["median_ratio"] == pytest.approx(1.5)
    assert row["oat_tf_images_per_second"] == pytest.approx(32 / 2.0)
    assert row["torch_images_per_second"] == pytest.approx(32 / 4.0)
    table = versus_torch.markdown([row], "header")
    assert table.startswith("header\n")
    assert "| resnet34 | 32 | train | oat | 2.00 / 4.00 / 1.00 | 3.00 / 4.00 / 5.00 |" in table
    assert "**1.50×** (1.50 / 1.00 / 5.00)" in table


def test_a_round_timed_by_one_framework_only_gives_no_ratio():
    base = {"model": "small_cnn", "batch_size": 8, "measure": "apgd_ce", "variant": "plain"}
    results = [{**base, "framework": "oat_tf", "round": 0, "seconds": 1.0},
               {**base, "framework": "torch", "round": 1, "seconds": 1.0}]
    assert versus_torch.ratio_rows(results) == []


def test_arguments_are_checked_before_any_work(tmp_path):
    assert _check() == [32, 128]
    with pytest.raises(ValueError, match=r"--models.*Received: --models=vgg16"):
        _check(models=["vgg16"])
    with pytest.raises(ValueError, match=r"--measures"):
        _check(measures=[])
    with pytest.raises(ValueError, match=r"--batch_sizes.*Received: --batch_sizes=32,0"):
        _check(batch_sizes=["32", "0"])
    with pytest.raises(ValueError, match=r"--batch_sizes"):
        _check(batch_sizes=["big"])
    with pytest.raises(ValueError, match=r"--rounds must|`--rounds` must be >= 1. Received: --rounds=0"):
        _check(counts={**_COUNTS, "rounds": 0})
    with pytest.raises(ValueError, match=r"`--threads` must be >= 0"):
        _check(counts={**_COUNTS, "threads": -1})
    existing = tmp_path / "results.json"
    existing.write_text("mine")
    with pytest.raises(ValueError, match="--output.*not overwritten"):
        _check(output=str(existing))
    assert existing.read_text() == "mine"
    with pytest.raises(ValueError, match="writable directory"):
        _check(output=str(tmp_path / "missing" / "results.json"))
    with pytest.raises(ImportError, match="requirements-bench.txt"):
        _check(torch_installed=False)
    assert _check(max_cpu_isa="avx2", cpu_vector_extensions="avx512") == [32, 128]
    with pytest.raises(ValueError, match=r"needs a CPU with AVX2.*'other'.*Received: --max_cpu_isa=avx2"):
        _check(max_cpu_isa="avx2", cpu_vector_extensions="other")
    with pytest.raises(ValueError, match=r"--max_cpu_isa.*Received: --max_cpu_isa=avx1024"):
        _check(max_cpu_isa="avx1024")


def test_worker_environment_caps_every_kernel_library_only_when_asked():
    parent = {"PATH": "/bin", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    assert versus_torch.worker_environment("native", parent) == parent
    capped = versus_torch.worker_environment("avx2", parent)
    assert capped == {"PATH": "/bin", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                      "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert parent["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"  # the parent's is left alone


_ONEDNN_ISA_PROBE = """
import oat_tf  # oneDNN on for CPUs with AVX2, as in the benchmark's workers
import tensorflow as tf
tf.nn.conv2d(tf.ones([1, 8, 8, 4]), tf.ones([3, 3, 4, 4]), 1, "SAME").numpy()
"""


@pytest.mark.skipif(not _HAS_AVX2, reason="the AVX2 cap needs a CPU with AVX2")
def test_the_avx2_cap_reaches_tensorflows_onednn_kernels():
    env = dict(versus_torch.worker_environment("avx2", os.environ), ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run([sys.executable, "-c", _ONEDNN_ISA_PROBE], capture_output=True, text=True,
                               env=env, check=False, cwd=testing.REPO_ROOT)
    assert completed.returncode == 0, completed.stderr[-2000:]
    isa_lines = [line for line in completed.stdout.splitlines() if ",info,cpu,isa:" in line]
    assert isa_lines and all(line.endswith("isa:Intel AVX2") for line in isa_lines), completed.stdout[-2000:]


@pytest.mark.skipif(not _HAS_AVX2 or importlib.util.find_spec("torch") is None,
                    reason="needs PyTorch (an optional extra) and a CPU with AVX2")
def test_the_avx2_cap_reaches_pytorchs_kernels():
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                               env=versus_torch.worker_environment("avx2", os.environ), check=False)
    assert completed.stdout.strip() == "AVX2", completed.stderr[-2000:]


@pytest.mark.parametrize("flag, value", [
    ("models", "vgg16"),
    ("precision", "mixed_float16"),  # PyTorch's CPU autocast here is bfloat16 only.
])
def test_the_command_line_refuses_bad_flags_with_the_flag_named(flag, value):
    completed = subprocess.run(
        [sys.executable, "-m", "oat_tf.bench.versus_torch", f"--{flag}={value}"],
        capture_output=True, text=True, cwd=testing.REPO_ROOT, check=False,
    )
    assert completed.returncode != 0
    assert f"--{flag}" in completed.stderr and value in completed.stderr
