"""The README's examples run as written: every ```python block, and every engine command of the
```console blocks (the ones that need no files of the user's)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
COMMANDS = [line[2:].split("#")[0].strip() for block in re.findall(r"```console\n(.*?)```", README, flags=re.S)
            for line in block.splitlines() if line.startswith("$ groupcalc ")]
ENGINE_COMMANDS = [c for c in COMMANDS if c.split()[1] in ("group", "table", "list", "check")]


def test_readme_has_examples():
    assert len(PYTHON_BLOCKS) >= 2 and len(ENGINE_COMMANDS) >= 5


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs(index):
    code = "import torch\ntorch.set_num_threads(1)\n" if "torch" in PYTHON_BLOCKS[index] else ""
    done = subprocess.run([sys.executable, "-c", code + PYTHON_BLOCKS[index]], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("command", ENGINE_COMMANDS)
def test_engine_command_runs(command):
    argv = shlex.split(command)
    done = subprocess.run([sys.executable, "-m", "groupcalc.cli", *argv[1:]], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
    if argv[1] == "group" and "--json" not in argv:
        assert done.stdout.splitlines()[0].startswith("status: ")
