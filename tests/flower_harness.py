"""Real Flower processes for tests: a simulation SuperLink on loopback, `flwr run`.

Every process is started here and stopped here by its own PID (process group),
pass or fail. Ports are free ports chosen at run time; FLWR_HOME is a temp folder.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop ``proc`` and every process it spawned (some detach into their own
    sessions, e.g. the SuperLink's simulation runtime): SIGTERM, then SIGKILL.
    The deploy script's own ``stop_tree`` does it, so tests stop what users stop."""
    load_deploy_script().stop_tree(proc, timeout)


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


# --------------------------------------------------------------------------- deployment


@functools.cache
def load_deploy_script():
    """``deploy/federation.py`` as a module (it is a script, not part of the package)."""
    import importlib.util

    path = PROJECT_ROOT / "deploy" / "federation.py"
    spec = importlib.util.spec_from_file_location("fedfocal_deploy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fedfocal_deploy", module)
    spec.loader.exec_module(module)
    return module


def kill_tree(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL ``proc`` and every descendant at once: a machine that loses power."""
    load_deploy_script().stop_tree(proc, timeout, graceful=False)


def wait_for_text(
    log: Path, text: str, proc: subprocess.Popen | None, timeout: float, offset: int = 0
) -> bool:
    """Wait until ``text`` appears in ``log`` after byte ``offset``.

    Returns False if ``proc`` exits first; raises TimeoutError after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_bytes()[offset:].decode(errors="replace"):
            return True
        if proc is not None and proc.poll() is not None:
            # The process may have written the text just before exiting.
            return text in log.read_bytes()[offset:].decode(errors="replace")
        time.sleep(0.2)
    raise TimeoutError(f"{text!r} not in {log} after {timeout}s:\n{log.read_text()[-3000:]}")


@dataclass
class DeployedFederation:
    """A TLS + SuperNode-auth SuperLink and its SuperNodes, started by deploy/federation.py."""

    name: str
    env: dict[str, str]
    workdir: Path
    address: str
    ca_cert: Path
    script: object
    nodes: dict[int, subprocess.Popen]
    procs: list[subprocess.Popen]

    def node_log(self, i: int) -> Path:
        return self.workdir / "logs" / f"supernode-{i}.log"

    def start_node(
        self,
        i: int,
        num_partitions: int,
        key: Path,
        timeout: float = 90.0,
        partition_id: int | None = None,
    ) -> tuple[subprocess.Popen, bool]:
        """Start SuperNode ``i`` (shard ``partition_id``, default ``i``); return it and
        whether the SuperLink activated it."""
        log = self.node_log(i)
        offset = log.stat().st_size if log.exists() else 0
        cmd = self.script.supernode_command(
            self.address,
            self.script.node_config(
                i if partition_id is None else partition_id,
                num_partitions,
                self.workdir / "cache" / f"node-{i}"),
            self.ca_cert,
            key,
            clientapp_port=free_port(),
        )
        proc = self.script.start(cmd, log, self.env)
        self.procs.append(proc)
        self.nodes[i] = proc
        # "SuperNode ID" is logged once the SuperLink accepted (activated) the node.
        return proc, wait_for_text(log, "SuperNode ID:", proc, timeout, offset)

    def restart_node(self, i: int, num_partitions: int, key: Path, timeout: float = 150.0) -> None:
        """Start SuperNode ``i`` again, retrying while the SuperLink still holds the
        killed one as online (it refuses a second activation until 2 heartbeats are
        missed) — what a supervisor such as systemd's Restart= does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc, active = self.start_node(i, num_partitions, key, deadline - time.monotonic())
            if active:
                return
            stop_process(proc)
            time.sleep(2)
        raise TimeoutError(f"SuperNode {i} not re-activated after {timeout}s")

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """A Flower CLI command against this federation's FLWR_HOME."""
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            env=self.env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def start_run(self, run_config: str, log: Path) -> subprocess.Popen:
        """`flwr run . <name> --stream` in the background (output to ``log``)."""
        cmd = [str(BIN / "flwr"), "run", str(PROJECT_ROOT), self.name, "--stream"]
        cmd += ["--run-config", run_config]
        with open(log, "w") as out:
            proc = subprocess.Popen(
                cmd,
                env=self.env,
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc


@contextlib.contextmanager
def deployed_federation(tmp_path: Path, num_nodes: int = 3) -> Iterator[DeployedFederation]:
    """SuperLink (TLS, --enable-supernode-auth) on a free loopback port, ``num_nodes``
    registered SuperNodes; every process stopped by its PID tree afterwards."""
    script = load_deploy_script()
    home = tmp_path / "flwr_home"
    env = script.flwr_env(
        {
            **os.environ,
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    certs = script.make_certificates(tmp_path / "certs")
    port = free_port()
    address = f"127.0.0.1:{port}"
    fed = DeployedFederation(
        name="tls", env=env, workdir=tmp_path, address=address, ca_cert=certs.ca_cert,
        script=script, nodes={}, procs=[],
    )  # fmt: skip
    try:
        log = tmp_path / "logs" / "superlink.log"
        superlink = script.start(
            script.superlink_command(certs, "127.0.0.1", port, tmp_path / "superlink.db"),
            log,
            env,
        )
        fed.procs.append(superlink)
        wait_healthy_tls(f"https://{address}/health", certs.ca_cert, superlink, log)
        script.write_connection(home, fed.name, address, certs.ca_cert, make_default=True)
        for i in range(num_nodes):
            _, public = script.make_node_key(tmp_path / "keys", f"node-{i}")
            script.run_checked(script.register_command(public, fed.name), env)
        for i in range(num_nodes):
            _, active = fed.start_node(i, num_nodes, tmp_path / "keys" / f"node-{i}")
            assert active, fed.node_log(i).read_text()[-3000:]
        yield fed
    finally:
        for proc in reversed(fed.procs):
            stop_process(proc)


def wait_healthy_tls(
    url: str, ca_cert: Path, proc: subprocess.Popen, log: Path, timeout: float = 60.0
) -> None:
    """Like :func:`wait_healthy`, verifying the server certificate against ``ca_cert``."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca_cert))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=0.5, verify=ctx).is_success:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout}s:\n{log.read_text()[-3000:]}")
