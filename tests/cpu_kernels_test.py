"""The CPU-kernel choice: CPU flags read from /proc/cpuinfo, oneDNN on where it helps, overrides."""

import os
import subprocess
import sys

import pytest

from oat_tf import cpu_kernels
from tests import testing

AVX2 = frozenset({"fpu", "sse2", "avx", "avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512bw"}


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return str(path)


def test_cpu_description_names_the_model_and_vector_extensions(tmp_path):
    assert cpu_kernels.cpu_description(_cpuinfo(tmp_path, "fpu sse2 avx avx2 fma")) == {
        "cpu": "AMD EPYC", "cpu_vector_extensions": "avx2"}
    assert cpu_kernels.cpu_description(_cpuinfo(tmp_path, "avx2 avx512f avx512bw"))["cpu_vector_extensions"] == "avx512"
    assert cpu_kernels.cpu_description(_cpuinfo(tmp_path, "fpu sse2"))["cpu_vector_extensions"] == "other"
    assert cpu_kernels.cpu_description(str(tmp_path / "missing")) == {
        "cpu": "unknown", "cpu_vector_extensions": "unknown"}
    assert cpu_kernels.read_cpuinfo(_cpuinfo(tmp_path, "avx avx2"))["flags"] == frozenset({"avx", "avx2"})


@pytest.mark.parametrize(
    "mode, machine, flags, user, value",
    [
        ("auto", "x86_64", AVX2, None, "1"),      # The AVX2-only machines: oneDNN on.
        ("auto", "x86_64", AVX512, None, "1"),
        ("auto", "x86_64", frozenset({"sse2", "avx"}), None, None),  # No AVX2: TensorFlow decides.
        ("auto", "aarch64", frozenset({"asimd"}), None, None),
        ("auto", "x86_64", AVX2, "0", "0"),       # The user's environment wins over auto.
        ("on", "aarch64", frozenset(), "0", "1"),  # A forced mode wins over the environment.
        ("off", "x86_64", AVX2, None, "0"),
    ],
)
def test_choice_follows_the_cpu_and_the_overrides(mode, machine, flags, user, value):
    chosen, reason = cpu_kernels.choose_onednn(mode, machine, flags, user)
    assert chosen == value and reason


def test_unknown_mode_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match=r"`onednn` must be one of .*Received: onednn='fast'"):
        cpu_kernels.choose_onednn("fast", "x86_64", AVX2, None)


def _import_in_fresh_process(env, code="import oat_tf, os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"):
    env = {k: v for k, v in env.items() if v is not None}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_importing_oat_tf_sets_the_choice_before_tensorflow_and_respects_the_user():
    base = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "OAT_TF_ONEDNN_REASON")}
    base["PYTHONPATH"] = testing.REPO_ROOT
    flags = cpu_kernels.read_cpuinfo()["flags"]
    expected, _ = cpu_kernels.choose_onednn("auto", os.uname().machine, flags, None)
    assert _import_in_fresh_process(base) == [str(expected)]
    assert _import_in_fresh_process({**base, "TF_ENABLE_ONEDNN_OPTS": "0"}) == ["0"]
    # After TensorFlow, importing oat_tf changes nothing (TF has read the variable already).
    late = "import tensorflow, os; import oat_tf; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    assert _import_in_fresh_process(base, late) == ["None"]


def test_a_forced_mode_after_tensorflow_loaded_is_refused(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setenv("OAT_TF_ONEDNN_REASON", "test")
    assert "tensorflow" in sys.modules  # conftest imports it.
    with pytest.raises(ValueError, match="before TensorFlow is imported"):
        cpu_kernels.configure("off")
    # Asking for what is in effect is fine.
    assert cpu_kernels.configure("on") == "1"
    assert cpu_kernels.describe()["onednn"] == "on"


def test_kernels_text_names_the_choice_and_is_empty_for_old_records():
    assert cpu_kernels.kernels_text({"cpu": "AMD EPYC"}) == ""
    assert cpu_kernels.kernels_text({"onednn": "on"}) == " CPU kernels: oneDNN."
    assert "Eigen" in cpu_kernels.kernels_text({"onednn": "off"})


@pytest.mark.parametrize("flags, precision, expected_units", [
    (frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}), "float32", "amx_bf16, avx512_bf16"),
    (frozenset({"avx2", "avx512f", "avx512_bf16"}), "float32", "avx512_bf16"),
    (frozenset({"avx2", "avx512f", "amx_bf16"}), "mixed_bfloat16", None),
    (frozenset({"avx2", "fma"}), "float32", None),
    (frozenset(), "float32", None),
])
def test_bfloat16_hint_names_the_units_only_for_float32_runs_on_cpus_that_have_them(
    flags, precision, expected_units
):
    hint = cpu_kernels.bfloat16_hint(precision, flags)
    if expected_units is None:
        assert hint is None
    else:
        assert f"({expected_units})" in hint and "--mixed_precision=mixed_bfloat16" in hint


def test_cpu_text_names_the_model_and_extensions_or_says_unknown():
    assert cpu_kernels.cpu_text({"cpu": "AMD EPYC", "cpu_vector_extensions": "avx2"}) == "AMD EPYC (avx2)"
    assert cpu_kernels.cpu_text({}) == "unknown CPU (?)"
