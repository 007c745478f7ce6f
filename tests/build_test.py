"""The committed BUILD file matches the package's imports."""

import os
import subprocess
import sys

from tests import testing


def test_build_file_is_up_to_date(tmp_path):
    generated = tmp_path / "BUILD"
    subprocess.run(
        [sys.executable, os.path.join(testing.REPO_ROOT, "scripts", "generate_build.py"), str(generated)],
        check=True,
    )
    with open(os.path.join(testing.REPO_ROOT, "BUILD")) as f:
        committed = f.read()
    assert generated.read_text() == committed, "run: python scripts/generate_build.py"
