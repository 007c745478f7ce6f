"""The BUILD files match the imports: scripts/generate_build.py and its --check."""

import os
import subprocess
import sys

from tests import testing

_GENERATOR = os.path.join(testing.REPO_ROOT, "scripts", "generate_build.py")


def _generate(root, *flags):
    return subprocess.run(
        [sys.executable, _GENERATOR, f"--root={root}", *flags], capture_output=True, text=True, check=False
    )


def _write(root, files):
    for path, content in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), "w") as f:
            f.write(content)


def _toy_repository(root):
    """oat_tf with a subpackage, a console script and a test, as in the real tree."""
    _write(root, {
        "pyproject.toml": '[project.scripts]\ntoy-tool = "oat_tf.tool:run"\n',
        "oat_tf/__init__.py": "",
        "oat_tf/base.py": "import numpy as np\n",
        "oat_tf/tool.py": (
            "from oat_tf.sub import leaf\n\n\ndef run():\n    pass\n\n\n"
            'if __name__ == "__main__":\n    run()\n'
        ),
        "oat_tf/sub/__init__.py": "from oat_tf.sub import leaf\n",
        "oat_tf/sub/leaf.py": "def f():\n    from oat_tf import base\n",
        "oat_tf/other/__init__.py": "",
        "tests/__init__.py": "",
        "tests/conftest.py": "import oat_tf\n",
        "tests/sub/__init__.py": "",
        "tests/sub/leaf_test.py": (
            "import subprocess\nfrom oat_tf.sub import leaf\n\n\n"
            'def test_tool():\n    subprocess.run(["python", "-m", "oat_tf.tool"])\n'
        ),
    })


def _read(root, path):
    with open(os.path.join(root, path)) as f:
        return f.read()


def test_committed_build_files_are_up_to_date():
    completed = _generate(testing.REPO_ROOT, "--check")
    assert completed.returncode == 0, completed.stderr


def test_targets_and_deps(tmp_path):
    _toy_repository(tmp_path)
    assert _generate(tmp_path).returncode == 0
    top = _read(tmp_path, "oat_tf/BUILD")
    assert 'load("//bazel:packages.bzl", "py_package")' in top
    # base.py imports only numpy (from the venv): the library needs no other package. The
    # console script's module is a command; it imports sub's leaf, so needs sub's library.
    assert (
        'py_package(\n    deps = [],\n    binaries = {"toy-tool": "tool.py"},\n'
        '    command_deps = ["//oat_tf/sub"],\n)\n'
    ) in top
    sub = _read(tmp_path, "oat_tf/sub/BUILD")
    # A function-local import of the top package's base module.
    assert sub.endswith('py_package(deps = ["//oat_tf"])\n')
    test = _read(tmp_path, "tests/sub/BUILD")
    assert 'load("//bazel:packages.bzl", "pytest_package")' in test
    # The test's imports with every package above them, the conftest's package, and the
    # command it runs with `python -m`.
    assert test.endswith('pytest_package(deps = ["//oat_tf", "//oat_tf:commands", "//oat_tf/sub", "//tests"])\n')
    assert _generate(tmp_path, "--check").returncode == 0


def test_check_fails_on_an_import_missing_from_deps(tmp_path):
    _toy_repository(tmp_path)
    _generate(tmp_path)
    with open(tmp_path / "oat_tf" / "sub" / "leaf.py", "a") as f:
        f.write("from oat_tf import other\n")
    completed = _generate(tmp_path, "--check")
    assert completed.returncode == 1
    assert "oat_tf/sub/BUILD: out of date" in completed.stderr


def test_new_module_needs_no_change_but_new_package_needs_a_build_file(tmp_path):
    _toy_repository(tmp_path)
    _generate(tmp_path)
    _write(tmp_path, {"oat_tf/extra.py": "import numpy\n"})  # globbed into //oat_tf
    assert _generate(tmp_path, "--check").returncode == 0
    _write(tmp_path, {"oat_tf/new_package/__init__.py": ""})
    completed = _generate(tmp_path, "--check")
    assert completed.returncode == 1
    assert completed.stderr.startswith("oat_tf/new_package/BUILD: missing\n")


def test_check_fails_on_a_stale_build_file(tmp_path):
    _toy_repository(tmp_path)
    _generate(tmp_path)
    os.remove(tmp_path / "oat_tf" / "sub" / "leaf.py")
    os.remove(tmp_path / "oat_tf" / "sub" / "__init__.py")
    completed = _generate(tmp_path, "--check")
    assert completed.returncode == 1
    assert "oat_tf/sub/BUILD: stale" in completed.stderr
    assert _generate(tmp_path).returncode == 0
    assert not os.path.exists(tmp_path / "oat_tf" / "sub" / "BUILD")


def test_import_cycle_is_an_error(tmp_path):
    _toy_repository(tmp_path)
    with open(tmp_path / "oat_tf" / "base.py", "a") as f:
        f.write("from oat_tf import tool\n")
    completed = _generate(tmp_path)
    assert completed.returncode != 0
    cycle = "//oat_tf -> //oat_tf:commands -> //oat_tf"
    assert f"dependency cycle: {cycle}" in completed.stderr
