"""The two macros every BUILD of oat_tf/ and tests/ calls: one per package.

scripts/generate_build.py writes those calls from the imports; this file says
what they make. A package is one target (TensorFlow's one-BUILD-per-folder, with
the package, not the file, as the unit of dependency), so a BUILD names only the
other packages its modules import.
"""

load("//bazel:pytest.bzl", "pytest_test")

# Every target may be used by any package, as package(default_visibility) would say.
_PUBLIC = ["//visibility:public"]

def _name():
    return native.package_name().rpartition("/")[2]

def _build_inputs():
    # Read by tests/build_test.py and tests/pyproject_test.py (the generator's --check).
    native.filegroup(name = "build_inputs", srcs = ["BUILD"] + native.glob(["*.py"]), visibility = _PUBLIC)

def py_package(deps = [], binaries = {}, command_deps = []):
    """The library of one oat_tf package, its commands and their console scripts.

    Makes `:<folder>` (e.g. //oat_tf/attacks), a py_library of every module of
    the folder except its commands; `:commands`, a py_library of the modules
    that are console scripts and of __main__.py, when there are any; one
    py_binary per console script, e.g. //oat_tf:oat-train; and `:build_inputs`.

    Args:
      deps: the other packages' targets the library's modules import.
      binaries: {console script: its module's file}, from pyproject.toml.
      command_deps: the targets the commands import, or run in a subprocess
        (`python -m oat_tf.train`), besides the library.
    """
    commands = sorted(binaries.values()) + native.glob(["__main__.py"])
    native.py_library(name = _name(), srcs = native.glob(["*.py"], exclude = commands), deps = deps, visibility = _PUBLIC)
    if commands:
        native.py_library(name = "commands", srcs = commands, deps = [":" + _name()] + command_deps, visibility = _PUBLIC)
    for script, main in binaries.items():
        native.py_binary(name = script, srcs = [main], main = main, deps = [":commands"], visibility = _PUBLIC)
    _build_inputs()

def pytest_package(deps = [], data = []):
    """The tests of one tests/ package: a pytest_test per *_test.py file.

    Makes `:<folder>`, a py_library of every module of the folder (__init__.py,
    helpers, and the test files, which other tests import for their fixtures);
    one pytest_test per test file, named after it (e.g. //tests/attacks:pgd_test);
    and `:build_inputs`.

    Args:
      deps: the targets the folder's modules import, or run in a subprocess.
      data: files the tests read at run time (the folder's testdata/ is added).
    """
    tests = native.glob(["*_test.py"])
    data = data + native.glob(["testdata/**"])
    native.py_library(name = _name(), srcs = native.glob(["*.py"]), deps = deps, visibility = _PUBLIC)
    for test in tests:
        pytest_test(name = test[:-len(".py")], srcs = [test], deps = [":" + _name()] + deps, data = data)
    _build_inputs()
