"""Which CPU kernels TensorFlow uses: oneDNN on or off, chosen from the CPU before TF loads.

TensorFlow's Linux x86 wheel has two kernel families for convolutions, matrix
products and many element-wise ops:

- Eigen kernels, compiled into the wheel for AVX only (the start-up line "To
  enable the following instructions: AVX2 FMA, in other operations, rebuild
  TensorFlow" says so);
- oneDNN kernels, which pick AVX2/FMA or AVX-512 code at run time.

TensorFlow turns oneDNN on by default only on CPUs with AVX-512 "neural
network" features (AVX512_VNNI, AVX512_BF16, AMX: Intel Cascade Lake and
newer). Everywhere else, e.g. the AVX2-only AMD EPYC of the development
machines, it runs the AVX-only Eigen kernels: the OAT step measured 1.4–1.7×
slower there (BENCHMARKS.md, "CPU kernels").

`configure` decides before TensorFlow is imported, through TensorFlow's own
switch, the environment variable `TF_ENABLE_ONEDNN_OPTS` (read once, when TF
loads):

- "auto" (what `import oat_tf` applies): oneDNN on for x86-64 CPUs with AVX2,
  TensorFlow's own default otherwise, and never over a value the user set in
  the environment;
- "on" / "off": force it (`python -m oat_tf.train --onednn=off`, or
  `TF_ENABLE_ONEDNN_OPTS=0` for any command line).

oneDNN rounds differently from Eigen (the last bits of a float32 result), so
the setting is part of a run's record: `describe()` gives it with the CPU.
This module imports nothing from TensorFlow.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict, FrozenSet, Optional

from absl import logging

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_MODES = ("auto", "on", "off")
# Where `configure` leaves the reason for its choice (read by `describe`).
_REASON_ENV = "OAT_TF_ONEDNN_REASON"
_X86 = ("x86_64", "amd64", "i686", "i386")


def read_cpuinfo(cpuinfo_path: str = "/proc/cpuinfo") -> Dict[str, Any]:
    """The CPU model and its instruction-set flags, from /proc/cpuinfo.

    Args:
        cpuinfo_path: str, the file to read (Linux's /proc/cpuinfo).

    Returns:
        dict with `model` (str, "unknown" when unreadable) and `flags`
        (frozenset of str, empty when unreadable).
    """
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {"model": "unknown", "flags": frozenset()}
    model, flags_line = "unknown", ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags_line:
            flags_line = value
    return {"model": model, "flags": frozenset(flags_line.split())}


def vector_extensions(cpu_flags: FrozenSet[str]) -> str:
    """The widest vector instruction set: "avx512", "avx2", "other" or "unknown" (no flags)."""
    if "avx512f" in cpu_flags:
        return "avx512"
    if "avx2" in cpu_flags:
        return "avx2"
    return "other" if cpu_flags else "unknown"


def cpu_description(cpuinfo_path: str = "/proc/cpuinfo") -> Dict[str, Any]:
    """The CPU model and its widest vector instructions.

    Speed and the last bits of float results depend on them (AVX-512 and
    AVX2-only machines of the same kind round differently).

    Args:
        cpuinfo_path: str, the file to read (Linux's /proc/cpuinfo).

    Returns:
        dict with `cpu` (the model name, "unknown" when unreadable) and
        `cpu_vector_extensions` ("avx512", "avx2", "other" or "unknown").
    """
    info = read_cpuinfo(cpuinfo_path)
    return {"cpu": info["model"], "cpu_vector_extensions": vector_extensions(info["flags"])}


def choose_onednn(mode: str, machine: str, cpu_flags: FrozenSet[str], user_value: Optional[str]):
    """The value of `TF_ENABLE_ONEDNN_OPTS` to use, and why.

    Args:
        mode: str, one of `ONEDNN_MODES`.
        machine: str, `platform.machine()`.
        cpu_flags: frozenset of str, the CPU's instruction-set flags.
        user_value: str or None, the variable as the user set it (None: unset).

    Returns:
        (value, reason): value "1", "0" or None (leave TensorFlow's default),
        reason a short sentence for the log and the run's record.

    Raises:
        ValueError: naming `onednn`, if `mode` is not one of `ONEDNN_MODES`.
    """
    if mode not in ONEDNN_MODES:
        raise ValueError(f"`onednn` must be one of {ONEDNN_MODES}. Received: onednn={mode!r}")
    if mode == "on":
        return "1", "oneDNN forced on (--onednn=on)"
    if mode == "off":
        return "0", "oneDNN forced off (--onednn=off)"
    if user_value is not None:
        return user_value, f"{ONEDNN_ENV}={user_value} set in the environment"
    if machine.lower() in _X86 and "avx2" in cpu_flags:
        extensions = vector_extensions(cpu_flags)
        return "1", (
            f"oneDNN on: x86-64 CPU with {extensions.upper()} (TensorFlow's Eigen kernels are built "
            "for AVX only)"
        )
    return None, f"TensorFlow's default ({machine or 'unknown machine'} without AVX2)"


# Instruction sets with bfloat16 matrix arithmetic, which oneDNN's bfloat16 kernels use.
BFLOAT16_MATRIX_FLAGS = ("amx_bf16", "avx512_bf16")


def bfloat16_hint(precision: str, cpu_flags: FrozenSet[str]) -> Optional[str]:
    """A sentence for the log when a float32 run could use this CPU's bfloat16 units, else None.

    The precision is never chosen from the CPU: a default that depended on the
    machine would make one command train different networks on different
    machines. The hint says what the flag would buy where it would buy most.

    Args:
        precision: str, the run's dtype policy (`config.PRECISIONS`).
        cpu_flags: frozenset of str, the CPU's instruction-set flags.

    Returns:
        str, or None when the run is already mixed precision or the CPU has
        none of `BFLOAT16_MATRIX_FLAGS`.
    """
    units = [flag for flag in BFLOAT16_MATRIX_FLAGS if flag in cpu_flags]
    if precision != "float32" or not units:
        return None
    return (
        f"this CPU has bfloat16 matrix instructions ({', '.join(units)}): --mixed_precision="
        "mixed_bfloat16 ran the ResNet-34 OAT step 1.96x faster than float32 on an AMX Xeon "
        "(BENCHMARKS.md) and trains in bfloat16; float32 stays the default so that results do not "
        "depend on the CPU"
    )


def configure(mode: str = "auto", cpuinfo_path: str = "/proc/cpuinfo") -> Optional[str]:
    """Sets `TF_ENABLE_ONEDNN_OPTS` for this process (and its children) before TF loads.

    Args:
        mode: str, "auto", "on" or "off" (see the module docstring).
        cpuinfo_path: str, where the CPU flags are read.

    Returns:
        str or None, the value now in the environment (None: unset).

    Raises:
        ValueError: on an unknown `mode`, or if TensorFlow is already imported
            with another setting than the one asked for (it reads the
            variable once, when it loads).
    """
    user_value = os.environ.get(ONEDNN_ENV)
    inherited = os.environ.get(_REASON_ENV)
    if mode == "auto" and inherited:
        # A parent oat_tf process (a sweep starting its runs) chose already.
        value, reason = user_value, inherited
    else:
        value, reason = choose_onednn(mode, platform.machine(), read_cpuinfo(cpuinfo_path)["flags"], user_value)
    if "tensorflow" in sys.modules and value != os.environ.get(ONEDNN_ENV):
        raise ValueError(
            f"`onednn` must be chosen before TensorFlow is imported: it reads {ONEDNN_ENV} once. "
            f"Received: onednn={mode!r} (wanting {ONEDNN_ENV}={value}) after TensorFlow loaded with "
            f"{ONEDNN_ENV}={os.environ.get(ONEDNN_ENV)}"
        )
    if value is None:
        os.environ.pop(ONEDNN_ENV, None)
    else:
        os.environ[ONEDNN_ENV] = value
    os.environ[_REASON_ENV] = reason
    logging.debug("CPU kernels: %s", reason)
    return value


def configure_on_import() -> None:
    """`configure("auto")` unless TensorFlow is already loaded (then its setting stays, logged)."""
    if "tensorflow" in sys.modules:
        logging.debug("CPU kernels: TensorFlow was imported before oat_tf; %s left as it is.", ONEDNN_ENV)
        return
    configure("auto")


def describe() -> Dict[str, Any]:
    """The CPU and the kernel choice in effect, for logs and run records.

    Returns:
        dict with `cpu`, `cpu_vector_extensions`, `onednn` ("on", "off" or
        "default") and `onednn_reason`.
    """
    value = os.environ.get(ONEDNN_ENV)
    state = "default" if value is None else ("off" if value.strip().lower() in ("0", "false", "off") else "on")
    return {
        **cpu_description(),
        "onednn": state,
        "onednn_reason": os.environ.get(_REASON_ENV, "not configured by oat_tf"),
    }


def cpu_text(machine: Dict[str, Any]) -> str:
    """"MODEL (extensions)" for a page's machine line, from a record with `cpu_description()`'s keys.

    Args:
        machine: dict, a run's machine record.

    Returns:
        str, e.g. "AMD EPYC (avx2)"; "unknown CPU (?)" for a record without them.
    """
    return f"{machine.get('cpu', 'unknown CPU')} ({machine.get('cpu_vector_extensions', '?')})"


def kernels_text(machine: Dict[str, Any]) -> str:
    """" CPU kernels: …." for a page's machine line, from a record with `describe()`'s keys.

    Args:
        machine: dict, a run's machine record (sweep results); records made
            before the choice was recorded lack `onednn`.

    Returns:
        str, "" for such an old record, else the sentence with a leading space.
    """
    state = machine.get("onednn")
    if state is None:
        return ""
    names = {"on": "oneDNN", "off": "TensorFlow's Eigen kernels (oneDNN off)", "default": "TensorFlow's default"}
    return f" CPU kernels: {names.get(state, state)}."
