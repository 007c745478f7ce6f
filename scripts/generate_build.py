"""Writes the BUILD file from the imports of oat_tf/ and tests/.

Usage: python scripts/generate_build.py [OUTPUT] (default: BUILD at the repo
root). tests/build_test.py checks that the committed BUILD is up to date.
"""
import ast
import glob
import os
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
output = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "BUILD")
mods = {}
for path in sorted(glob.glob(f"{root}/oat_tf/**/*.py", recursive=True)):
    rel = os.path.relpath(path, root)
    mod = rel[:-3].replace("/", ".")
    if mod.endswith(".__init__"): mod = mod[: -len(".__init__")]
    mods[mod] = rel
def target(mod):
    return "//:" + mod.replace(".", "_")
def deps_of(path):
    tree = ast.parse(open(os.path.join(root, path)).read())
    out = set(); third = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = []
            for a in node.names:
                full = f"{node.module}.{a.name}"
                names.append(full if full in mods else node.module)
        for n in names:
            if n in mods: out.add(n)
            top = n.split(".")[0]
            if top in ("tensorflow", "keras", "numpy", "absl", "matplotlib", "tensorflow_datasets", "mlxtend", "tqdm", "pytest", "tensorflow_serving"):
                third.add(top)
    return out, third
req = {"tensorflow": "requirement(\"tensorflow\")", "keras": "requirement(\"keras\")", "numpy": "requirement(\"numpy\")",
       "absl": "requirement(\"absl-py\")", "matplotlib": "requirement(\"matplotlib\")", "tensorflow_datasets": "requirement(\"tensorflow-datasets\")",
       "mlxtend": "requirement(\"mlxtend\")", "tqdm": "requirement(\"tqdm\")", "pytest": "requirement(\"pytest\")",
       "tensorflow_serving": "requirement(\"tensorflow-serving-api\")"}
lines = ['# Bazel targets: one py_library per module of oat_tf, one py_test per test file.',
         '# Third-party packages come from requirements.txt through rules_python\'s pip_parse.',
         'load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")',
         'load("@pypi//:requirements.bzl", "requirement")', '',
         'package(default_visibility = ["//visibility:public"])', '']
for mod, path in mods.items():
    d, t = deps_of(path)
    d.discard(mod)
    deps = sorted(target(x) for x in d) + sorted(req[x] for x in t)
    lines += ['py_library(', f'    name = "{mod.replace(".", "_")}",', f'    srcs = ["{path}"],']
    if deps:
        lines.append('    deps = [')
        lines += [f'        "{x}",' if x.startswith("//") else f'        {x},' for x in deps]
        lines.append('    ],')
    lines += [')', '']
lines += ['py_binary(', '    name = "train",', '    srcs = ["oat_tf/train.py"],', '    main = "oat_tf/train.py",', '    deps = [":oat_tf_train"],', ')', '']
lines += ['py_library(', '    name = "tests_testing",', '    srcs = ["tests/__init__.py", "tests/testing.py", "tests/conftest.py", "tests/models/model_testing.py"],',
          '    deps = [requirement("keras"), requirement("numpy"), requirement("pytest"), requirement("tensorflow"), "//:oat_tf_models"],', ')', '']
for path in sorted(glob.glob(f"{root}/tests/**/*_test.py", recursive=True)):
    rel = os.path.relpath(path, root)
    d, t = deps_of(rel)
    deps = sorted(target(x) for x in d) + ['//:tests_testing'] + sorted(req[x] for x in t)
    name = rel[:-3].replace("/", "_")
    big = any(k in rel for k in ("experiment_test", "train_test", "oat_model_test"))
    lines += ['py_test(', f'    name = "{name}",', f'    srcs = ["{rel}"],', f'    main = "{rel}",', f'    size = "{"large" if big else "medium"}",']
    if big: lines.append('    shard_count = 2,')
    lines.append('    deps = [')
    lines += [f'        "{x}",' if x.startswith("//") else f'        {x},' for x in sorted(set(deps))]
    lines += ['    ],', ')', '']
with open(output, "w") as f:
    f.write("\n".join(lines) + "\n")
