"""The Python examples of README.md (the repository's) and of this
binding's README run as written, and the first one checks before it forks:
a missing library gives one traceback, not two."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from conftest import WATCHDOG

HERE = Path(__file__).resolve().parent
READMES = [HERE.parent / "README.md", HERE.parent.parent.parent / "README.md"]


def _examples() -> List[Tuple[str, int, str]]:
    found = []
    for readme in READMES:
        if not readme.is_file():
            continue
        text = readme.read_text(encoding="utf-8")
        for i, m in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            found.append((f"{readme.parent.name or 'repo'}/{readme.name}#{i}", i, m.group(1)))
    return found


EXAMPLES = _examples()


def _run(code: str, env_changes: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WATCHDOG)


def test_readmes_have_python_examples() -> None:
    assert len(EXAMPLES) >= 3, f"found {[e[0] for e in EXAMPLES]} in {READMES}"


@pytest.mark.parametrize("name,index,code", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_readme_example_runs(name: str, index: int, code: str, per_wait_mode: Optional[str]) -> None:
    if per_wait_mode and "wait_any_async" in code:
        pytest.skip(f"{per_wait_mode}: the example awaits a vector wait, ENOSYS there by design")
    r = _run(code, {})
    assert r.returncode == 0 and not r.stderr, f"{name}:\n{r.stdout}{r.stderr}"
    assert r.stdout.strip(), f"{name} printed nothing"
    if "futex.store(42)" in code:
        assert r.stdout.strip() == "got 42"


def test_readme_example_checks_before_it_forks(tmp_path: Path) -> None:
    first = [code for _, _, code in EXAMPLES if "futex.store(42)" in code]
    assert first, "the README's first Python example is gone"
    for code in first:
        r = _run(code, {"ASYNCFUTEX_LIB": str(tmp_path / "missing.so")})
        assert r.returncode != 0
        assert r.stderr.count("Traceback") == 1, r.stderr
        assert "LibraryNotFoundError" in r.stderr, r.stderr
