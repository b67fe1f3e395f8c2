"""cluster/local/lib.sh, which every local-stack script sources, keeps the state private: umask 077 for the
scripts and the services they start (Kafka's logs, MariaDB's and Prometheus' data, ...: files 0600, folders
0700), and $STATE and $RUN 0700 even when they were made open before. Sourcing it starts nothing."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = 'source cluster/local/lib.sh; umask; touch "$STATE/file"; mkdir "$STATE/folder"; echo x > "$RUN/svc.log"'


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("existing", [False, True])
def test_lib_sh_makes_the_state_private(tmp_path: Path, existing: bool) -> None:
    state = tmp_path / "state"
    if existing:  # as the stack left it before: 0755 folders
        (state / "run").mkdir(parents=True)
        os.chmod(state, 0o755)
        os.chmod(state / "run", 0o755)
    env = {**os.environ, "XRAYLAB_STATE_DIR": str(state), "XRAYLAB_ENV_FILE": str(state / "local.env")}
    done = subprocess.run(["bash", "-c", PROBE], cwd=ROOT, env={k: v for k, v in env.items() if k != "BASH_ENV"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0077"
    assert {p: mode(state / p) for p in ("", "run", "folder")} == dict.fromkeys(("", "run", "folder"), 0o700)
    assert mode(state / "file") == mode(state / "run" / "svc.log") == 0o600


def test_apt_runs_with_its_usual_umask() -> None:
    """A package's maintainer scripts make files outside $STATE: under umask 077 the system could not read them."""
    lib = (ROOT / "cluster" / "local" / "lib.sh").read_text()
    [apt] = [line for line in lib.splitlines() if "apt-get update" in line]
    assert "umask 022;" in apt
