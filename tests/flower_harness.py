"""Real Flower processes for tests: a simulation SuperLink on loopback, `flwr run`.

Every process is started here and stopped here by its own PID (process group),
pass or fail. Ports are free ports chosen at run time; FLWR_HOME is a temp folder.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop ``proc`` and every process it spawned (some detach into their own
    sessions, e.g. the SuperLink's simulation runtime): SIGTERM, then SIGKILL."""
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 2xx, failing fast if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=0.5, verify=False).is_success:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@dataclass
class SimulationSuperLink:
    """A running `flower-superlink --simulation` and the env to reach it with `flwr`."""

    name: str
    env: dict[str, str]
    log: Path
    pid: int

    def flwr_run(
        self,
        run_config: str | None = None,
        num_supernodes: int = 3,
        timeout: float = 300.0,
        app: Path = PROJECT_ROOT,
    ) -> subprocess.CompletedProcess:
        """`flwr run APP <name> --stream` with run and federation config overrides."""
        cmd = [str(BIN / "flwr"), "run", str(app), self.name, "--stream"]
        if run_config:
            cmd += ["--run-config", run_config]
        cmd += [
            "--federation-config",
            f"num-supernodes={num_supernodes} client-resources-num-cpus=1",
        ]
        return subprocess.run(
            cmd,
            env=self.env,
            cwd=app,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )


@contextlib.contextmanager
def simulation_superlink(tmp_path: Path) -> Iterator[SimulationSuperLink]:
    """Start a simulation SuperLink on a free loopback port; stop it by PID after."""
    home = tmp_path / "flwr_home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    name = "test"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n'
        f'[superlink.{name}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_DISABLE_USAGE_STATS": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = tmp_path / "superlink.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--simulation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--control-api-address",
                f"127.0.0.1:{free_port()}",
                "--database",
                str(tmp_path / "state.db"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop all it spawns
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, log)
        yield SimulationSuperLink(name=name, env=env, log=log, pid=proc.pid)
    finally:
        stop_process(proc)
