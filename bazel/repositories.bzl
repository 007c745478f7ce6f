"""Offline external repositories for Bazel 4 (Debian's bazel-bootstrap).

Non-hermetic by design: Python and every third-party package come from the
project's virtual environment, `.venv` (or `$OAT_TF_PYTHON`), not from Bazel.

Bazel 4 itself asks for three repositories it would download: @rules_cc and
@rules_java (loaded by @bazel_tools' C++ and Java toolchain packages, which
every test's toolchain resolution reads) and @remote_coverage_tools (an implicit
dependency of every test rule, used only by `bazel coverage`). Nothing can be
downloaded here, so they are replaced by the small stand-ins below, which
forward to Bazel's native rules; `bazel coverage` is not supported.
"""

_PYTHON_BUILD = """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "python3",
    interpreter_path = "{python}",
    python_version = "PY3",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":python3",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _venv_python_impl(ctx):
    python = ctx.os.environ.get("OAT_TF_PYTHON", "")
    if not python:
        python = str(ctx.path(Label("//:WORKSPACE")).dirname) + "/.venv/bin/python"
    if not python.startswith("/"):
        fail("OAT_TF_PYTHON must be an absolute path. Received: OAT_TF_PYTHON=%s" % python)
    if not ctx.path(python).exists:
        fail("No Python at %s: create the venv first (see README, \"Bazel\"), or set OAT_TF_PYTHON." % python)
    ctx.file("BUILD", _PYTHON_BUILD.format(python = python))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    environ = ["OAT_TF_PYTHON"],
    local = True,
    doc = "A Python toolchain whose interpreter is the project's venv (absolute path, not hermetic).",
)

def _stub_repository_impl(ctx):
    ctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % ctx.name)
    for path, content in ctx.attr.files.items():
        ctx.file(path, content)

_stub_repository = repository_rule(
    implementation = _stub_repository_impl,
    attrs = {"files": attr.string_dict(doc = "{path: content} of the files to write.")},
)

def _forwarding_defs(rule_names):
    """A defs.bzl whose rules call the native rules of the same names.

    Args:
      rule_names: the names of the rules to define.

    Returns:
      The file's content.
    """
    return "\n".join([
        "def %s(**attrs):\n    native.%s(**attrs)\n" % (name, name)
        for name in rule_names
    ])

def oat_tf_repositories():
    """Declares the venv's Python toolchain and the offline stand-ins (call from WORKSPACE)."""
    venv_python(name = "venv_python")
    _stub_repository(
        name = "rules_cc",
        files = {
            "BUILD": "",
            "cc/BUILD": "\n".join([
                "package(default_visibility = [\"//visibility:public\"])",
                "",
                "alias(",
                "    name = \"toolchain_type\",",
                "    actual = \"@bazel_tools//tools/cpp:toolchain_type\",",
                ")",
                "",
            ]),
            "cc/defs.bzl": _forwarding_defs([
                "cc_binary",
                "cc_import",
                "cc_library",
                "cc_proto_library",
                "cc_test",
                "cc_toolchain",
                "cc_toolchain_suite",
                "objc_library",
            ]),
        },
    )
    _stub_repository(
        name = "rules_java",
        files = {
            "BUILD": "",
            "java/BUILD": "",
            "java/defs.bzl": _forwarding_defs([
                "java_binary",
                "java_import",
                "java_library",
                "java_proto_library",
                "java_runtime",
                "java_toolchain",
            ]),
        },
    )
    _stub_repository(
        name = "remote_coverage_tools",
        files = {
            "BUILD": "\n".join([
                "package(default_visibility = [\"//visibility:public\"])",
                "",
                "filegroup(name = \"coverage_report_generator\")",
                "",
                "filegroup(name = \"lcov_merger\")",
                "",
            ]),
        },
    )
