"""pyproject.toml installs every oat_tf package and one console script per command-line tool."""

import ast
import os
import tomllib

import setuptools

from tests import testing

_PACKAGE_DIR = os.path.join(testing.REPO_ROOT, "oat_tf")


def _pyproject():
    with open(os.path.join(testing.REPO_ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _modules():
    """{dotted name: parsed source} of every module of oat_tf."""
    modules = {}
    for parent, dirs, files in os.walk(_PACKAGE_DIR):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(parent, name)
                module = os.path.relpath(path, testing.REPO_ROOT)[:-3].replace(os.sep, ".")
                with open(path) as f:
                    modules[module] = ast.parse(f.read(), path)
    return modules


def _main_block(tree):
    """The body of `if __name__ == "__main__":`, or None."""
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
            and [c.value for c in node.test.comparators if isinstance(c, ast.Constant)] == ["__main__"]
        ):
            return node.body
    return None


def _called_run(module, tree):
    """`module:run` if the __main__ block is just `run()` or `<imported module>.run()`."""
    body = _main_block(tree)
    if body is None or len(body) != 1 or not isinstance(body[0], ast.Expr):
        return None
    call = body[0].value
    if not isinstance(call, ast.Call) or call.args or call.keywords:
        return None
    if isinstance(call.func, ast.Name) and call.func.id == "run":
        return f"{module}:run"
    if isinstance(call.func, ast.Attribute) and call.func.attr == "run" and isinstance(call.func.value, ast.Name):
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == call.func.value.id:
                        return f"{node.module}.{alias.name}:run"
    return None


def test_every_package_is_installed():
    find = _pyproject()["tool"]["setuptools"]["packages"]["find"]
    found = set(setuptools.find_packages(testing.REPO_ROOT, **find))
    expected = {
        os.path.relpath(parent, testing.REPO_ROOT).replace(os.sep, ".")
        for parent, _, files in os.walk(_PACKAGE_DIR)
        if any(f.endswith(".py") for f in files) and "__pycache__" not in parent
    }
    assert found == expected


def test_console_scripts_name_zero_argument_run_functions():
    modules = _modules()
    for script, target in _pyproject()["project"]["scripts"].items():
        module, _, function = target.partition(":")
        assert module in modules, script
        defs = [n for n in modules[module].body if isinstance(n, ast.FunctionDef) and n.name == function]
        assert len(defs) == 1, f"{script}: no {target}"
        arguments = defs[0].args
        takes = arguments.args or arguments.posonlyargs or arguments.kwonlyargs
        assert not takes, f"{script}: {target} takes arguments"
        assert ast.get_docstring(defs[0]), f"{script}: {target} has no docstring"


def test_every_command_line_tool_has_a_console_script():
    scripts = set(_pyproject()["project"]["scripts"].values())
    for module, tree in _modules().items():
        if _main_block(tree) is not None:
            called = _called_run(module, tree)
            assert called, f'{module}: its `if __name__ == "__main__":` block should only call run()'
            assert called in scripts, f"{module}: no console script for {called} in pyproject.toml"
