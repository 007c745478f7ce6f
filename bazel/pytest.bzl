"""`pytest_test`: a py_test that runs one pytest file through bazel/pytest_main.py."""

def pytest_test(name, srcs, deps = [], data = [], **kwargs):
    """A py_test whose main runs pytest on `srcs[0]`, as `pytest <file>` would.

    Tests marked `large` are skipped unless `--test_arg=--run_large` is given,
    as with pytest itself (tests/conftest.py). pytest and its plugins come from
    the venv that runs the test (bazel/repositories.bzl).

    Args:
      name: the target's name (the test file's name without `.py`).
      srcs: the test file, first, and any other sources of the target.
      deps: py_library targets the test file imports.
      data: files the test reads at run time.
      **kwargs: passed on to py_test (size, timeout, tags, ...); `timeout`
        defaults to "long" (15 minutes: the slowest files take minutes on two
        busy cores).
    """
    kwargs.setdefault("timeout", "long")
    native.py_test(
        name = name,
        srcs = srcs + ["//bazel:pytest_main.py"],
        main = "//bazel:pytest_main.py",
        args = ["$(location %s)" % srcs[0]],
        deps = deps,
        data = data + ["//:pytest.ini"],
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
