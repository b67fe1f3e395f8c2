"""Running the ``xraylab`` command as a user does, for tests: a subprocess of this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys


def xraylab(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``xraylab ARGS`` with the test's environment plus ``env``; output captured as text."""
    return subprocess.run([sys.executable, "-m", "xraylab_cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
