"""Deploy fedfocal_app on a real SuperLink and SuperNodes: TLS + SuperNode authentication.

One script, one subcommand per step, the same on one machine (loopback) and on many::

    python deploy/federation.py certs   deploy/work/certs --san superlink.example.org
    python deploy/federation.py keys    deploy/work/keys --nodes 3
    python deploy/federation.py superlink --certs deploy/work/certs --host 0.0.0.0
    python deploy/federation.py connect fedfocal --address superlink.example.org:8000 \
        --root-certificates deploy/work/certs/ca.crt
    python deploy/federation.py register fedfocal deploy/work/keys/node-*.pub
    python deploy/federation.py supernode --superlink superlink.example.org:8000 \
        --root-certificates ca.crt --key node-0 --partition-id 0 --num-partitions 3
    flwr run . fedfocal --stream

or everything on 127.0.0.1 at once: ``python deploy/federation.py local --nodes 3``.

Checked against flwr 1.42.0: the SuperLink serves Fleet, Control and Runtime APIs over
HTTPS on one port (``--host``/``--port``, default 8000); ``--enable-supernode-auth``
is refused with ``--insecure``; SuperNode keys are NIST-curve EC keys in OpenSSH format
(``flwr supernode register`` reads the public key, ``flower-supernode
--auth-supernode-private-key`` the private one). The script needs only the standard
library, ``cryptography`` and the Flower CLIs; it does not import the app.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_PORT = 8000  # flower-superlink's own default (--port)
CLIENTAPP_PORT = 9094  # flower-supernode's default ClientApp API port (--port)
# Names the SuperLink certificate always covers: the Flower CLI and SuperNodes on the
# SuperLink's host, and the SuperLink's own SuperExec, which reaches the Runtime API on
# 127.0.0.1 when the SuperLink binds 0.0.0.0.
LOOPBACK_SANS = ("localhost", "127.0.0.1", "::1")
CERT_DAYS = 365
# The app's dependencies are installed where the SuperLink/SuperNodes run; without
# this Flower 1.42 runs `uv sync` for every run (and downloads torch again).
FLWR_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
}
INSECURE_WARNING = (
    "INSECURE MODE: no TLS and no SuperNode authentication. Traffic (model weights, "
    "metrics) is readable on the network and any SuperNode may join. Use only on a "
    "trusted, isolated network for debugging."
)


def default_cache_dir() -> Path:
    """Where SuperNodes keep decoded shards by default: ``$XDG_CACHE_HOME/fedfocal``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedfocal"


def flwr_bin(name: str) -> str:
    """A Flower CLI: next to this Python first (a venv not on PATH), else from PATH."""
    sibling = Path(sys.executable).parent / name
    if sibling.exists():
        return str(sibling)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"'{name}' not found: install the app (pip install -e .) first")
    return found


def flwr_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every Flower process started from here."""
    env = dict(os.environ if base is None else base)
    env.update(FLWR_ENV)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# --------------------------------------------------------------------------- certs


@dataclass(frozen=True)
class CertPaths:
    """The SuperLink's TLS files: CA certificate (give to every client) + server pair."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_private(path: Path, data: bytes) -> None:
    # Private keys are created 0600 from the start, never world-readable for a moment.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def make_certificates(
    out_dir: Path, sans: Iterable[str] = (), days: int = CERT_DAYS, force: bool = False
) -> CertPaths:
    """Create a CA and a SuperLink server certificate signed by it.

    Parameters
    ----------
    out_dir
        Folder for ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key``.
    sans
        Extra DNS names / IP addresses SuperNodes and the CLI use to reach the
        SuperLink (``localhost``, ``127.0.0.1`` and ``::1`` are always included).
    days
        Validity of both certificates.
    force
        Overwrite existing files (otherwise refuse: a new CA invalidates every
        SuperNode's copy of ``ca.crt``).
    """
    paths = CertPaths(
        out_dir / "ca.crt", out_dir / "ca.key", out_dir / "server.pem", out_dir / "server.key"
    )
    existing = [p for p in vars(paths).values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists; pass --force to replace the CA")
    names = list(dict.fromkeys([*LOOPBACK_SANS, *sans]))
    now = dt.datetime.now(dt.timezone.utc)
    # Backdated a little: a SuperNode whose clock lags must not see "not yet valid".
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedfocal SuperLink CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san_entry(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=False, crl_sign=False,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA384())
    )

    pem = serialization.Encoding.PEM
    no_pw = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8
    out_dir.mkdir(parents=True, exist_ok=True)
    paths.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    _write_private(paths.ca_key, ca_key.private_bytes(pem, pkcs8, no_pw))
    paths.server_cert.write_bytes(server_cert.public_bytes(pem))
    _write_private(paths.server_key, server_key.private_bytes(pem, pkcs8, no_pw))
    return paths


def make_node_key(out_dir: Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """An EC (P-384) key pair for SuperNode authentication, OpenSSH format.

    Returns ``(private, public)``: ``out_dir/name`` (stays on the SuperNode) and
    ``out_dir/name.pub`` (goes to whoever runs ``flwr supernode register``).
    """
    private, public = out_dir / name, out_dir / f"{name}.pub"
    if private.exists() and not force:
        raise FileExistsError(f"{private} exists; pass --force to replace it")
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + f" fedfocal-{name}\n".encode()
    )
    return private, public


# --------------------------------------------------------------------------- commands


def superlink_command(
    certs: CertPaths | None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    database: Path | None = None,
) -> list[str]:
    """``flower-superlink`` with TLS + SuperNode auth, or insecure when ``certs`` is None.

    ``database`` keeps runs and registered SuperNodes across SuperLink restarts
    (without it the state is in memory and every key must be registered again).
    """
    cmd = [flwr_bin("flower-superlink"), "--host", host, "--port", str(port)]
    if certs is None:
        # Flower refuses --enable-supernode-auth without TLS, so insecure means open.
        cmd += ["--insecure"]
    else:
        cmd += [
            "--ssl-ca-certfile", str(certs.ca_cert),
            "--ssl-certfile", str(certs.server_cert),
            "--ssl-keyfile", str(certs.server_key),
            "--enable-supernode-auth",
        ]  # fmt: skip
    if database is not None:
        cmd += ["--database", str(database)]
    cmd += ["--disable-runtime-dependency-installation"]
    return cmd


def node_config(
    partition_id: int | None = None,
    num_partitions: int | None = None,
    cache_dir: Path | str | None = None,
    data_dir: Path | str | None = None,
) -> str:
    """The ``--node-config`` string the app reads (see fedfocal_app/node_data.py).

    Either ``data_dir`` (the node's own ``train-*.parquet`` folder) or
    ``partition_id``/``num_partitions`` (a Dirichlet shard of the run's dataset).
    """
    items = []
    if data_dir is not None:
        items.append(f"data-dir={_toml_str(str(Path(data_dir).expanduser().resolve()))}")
    else:
        if partition_id is None or num_partitions is None:
            raise ValueError("give partition_id and num_partitions, or data_dir")
        if not 0 <= partition_id < num_partitions:
            raise ValueError(f"partition id {partition_id} not in [0, {num_partitions})")
        items += [f"partition-id={partition_id}", f"num-partitions={num_partitions}"]
    if cache_dir is not None:
        items.append(f"cache-dir={_toml_str(str(Path(cache_dir).expanduser().resolve()))}")
    return " ".join(items)


def _toml_str(value: str) -> str:
    # Flower parses each value as TOML; a basic string escapes \ and ".
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def supernode_command(
    superlink: str,
    node_config_str: str,
    root_certificates: Path | None,
    private_key: Path | None,
    clientapp_port: int = CLIENTAPP_PORT,
    max_wait_time: float | None = None,
) -> list[str]:
    """``flower-supernode`` for one institution; insecure when both paths are None.

    ``clientapp_port`` is the node's local ClientApp API port (127.0.0.1): distinct
    per SuperNode on one host. ``max_wait_time`` (s) makes the node give up when the
    SuperLink stays unreachable; None retries forever.
    """
    cmd = [
        flwr_bin("flower-supernode"),
        "--superlink", superlink,
        "--host", "127.0.0.1",
        "--port", str(clientapp_port),
        "--node-config", node_config_str,
    ]  # fmt: skip
    if root_certificates is None and private_key is None:
        cmd += ["--insecure"]
    else:
        if root_certificates is None or private_key is None:
            raise ValueError("TLS mode needs both root_certificates and private_key")
        cmd += [
            "--root-certificates", str(root_certificates),
            "--auth-supernode-private-key", str(private_key),
        ]  # fmt: skip
    if max_wait_time is not None:
        cmd += ["--max-wait-time", str(max_wait_time)]
    return cmd


def register_command(public_key: Path, connection: str) -> list[str]:
    """``flwr supernode register KEY.pub CONNECTION`` (prints the new node id)."""
    return [flwr_bin("flwr"), "supernode", "register", str(public_key), connection]


# --------------------------------------------------------------------------- CLI config


def flwr_home(env: dict[str, str] | None = None) -> Path:
    """``$FLWR_HOME`` or ``~/.flwr``, as Flower resolves it."""
    value = (os.environ if env is None else env).get("FLWR_HOME")
    return Path(value) if value else Path.home() / ".flwr"


def write_connection(
    home: Path,
    name: str,
    address: str,
    root_certificates: Path | None,
    make_default: bool = False,
) -> Path:
    """Add/replace ``[superlink.<name>]`` in ``home/config.toml`` for the Flower CLI.

    ``root_certificates`` None writes ``insecure = true``. Other connections are kept;
    a missing file is seeded with Flower's own default (its ``local`` simulation
    connection stays the default unless ``make_default``).
    """
    import tomli_w  # a dependency of flwr; imported here so `--help` works without it

    path = home / "config.toml"
    if path.exists():
        config = tomllib.loads(path.read_text())
    else:
        try:
            from flwr.cli.constant import DEFAULT_FLOWER_CONFIG_TOML

            config = tomllib.loads(DEFAULT_FLOWER_CONFIG_TOML)
        except ImportError:
            config = {}
    links = config.setdefault("superlink", {})
    entry: dict[str, object] = {"address": address}
    if root_certificates is None:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(Path(root_certificates).expanduser().resolve())
    links[name] = entry
    if make_default or "default" not in links:
        links["default"] = name
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(config))
    os.replace(tmp, path)  # never a half-written config for a concurrent `flwr` call
    return path


# --------------------------------------------------------------------------- processes


def start(cmd: Sequence[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so it and all it spawns can be stopped)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_tree(proc: subprocess.Popen, timeout: float = 10.0, graceful: bool = True) -> None:
    """SIGTERM ``proc`` and its descendants (by PID), SIGKILL what is left.

    ``graceful=False`` sends SIGKILL to all at once: a machine that loses power.
    """
    try:
        import psutil
    except ImportError:  # best effort without psutil: the session's process group
        first = signal.SIGTERM if graceful else signal.SIGKILL
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, first)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        return
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    alive = tree
    if graceful:
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


def wait_for_port(host: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Wait until ``host:port`` accepts TCP connections; fail fast if ``proc`` exits."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.3)
    raise TimeoutError(f"{host}:{port} not reachable after {timeout}s; see {log}")


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def run_checked(cmd: Sequence[str], env: dict[str, str], timeout: float = 60.0) -> str:
    """Run a short CLI command; raise with its output when it fails."""
    proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _warn_insecure() -> None:
    print(f"WARNING: {INSECURE_WARNING}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- CLI


def _cmd_certs(args: argparse.Namespace) -> None:
    paths = make_certificates(Path(args.out), args.san, args.days, args.force)
    print(f"CA certificate (copy to every SuperNode and CLI machine): {paths.ca_cert}")
    print(f"SuperLink certificate / key: {paths.server_cert} / {paths.server_key}")
    print(f"Keep {paths.ca_key} offline: it signs certificates the federation trusts.")


def _cmd_keys(args: argparse.Namespace) -> None:
    names = args.name or [f"node-{i}" for i in range(args.nodes)]
    for name in names:
        private, public = make_node_key(Path(args.out), name, args.force)
        print(f"{name}: private {private} (stays on the SuperNode), public {public}")


def _exec(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    env = flwr_env()
    os.execvpe(cmd[0], cmd, env)  # replace this process: signals reach Flower directly


def _cmd_superlink(args: argparse.Namespace) -> None:
    if args.insecure:
        _warn_insecure()
        certs = None
    else:
        folder = Path(args.certs)
        certs = CertPaths(
            folder / "ca.crt", folder / "ca.key", folder / "server.pem", folder / "server.key"
        )
        for p in (certs.ca_cert, certs.server_cert, certs.server_key):
            if not p.exists():
                raise SystemExit(f"{p} missing: run `certs` first, or pass --insecure")
    database = Path(args.database) if args.database else None
    _exec(superlink_command(certs, args.host, args.port, database))


def _cmd_supernode(args: argparse.Namespace) -> None:
    if args.insecure:
        _warn_insecure()
    elif not (args.root_certificates and args.key):
        raise SystemExit("give --root-certificates and --key (or --insecure)")
    cache = None if args.no_cache else Path(args.cache_dir or default_cache_dir())
    try:
        cfg = node_config(args.partition_id, args.num_partitions, cache, args.data_dir)
    except ValueError as err:
        raise SystemExit(f"supernode: {err} (--partition-id/--num-partitions or --data-dir)")
    _exec(
        supernode_command(
            args.superlink,
            cfg,
            None if args.insecure else Path(args.root_certificates),
            None if args.insecure else Path(args.key),
            args.port,
        )
    )


def _cmd_connect(args: argparse.Namespace) -> None:
    if args.insecure:
        _warn_insecure()
    elif not args.root_certificates:
        raise SystemExit("give --root-certificates CA.crt (or --insecure)")
    root = None if args.insecure else Path(args.root_certificates)
    path = write_connection(flwr_home(), args.name, args.address, root, args.default)
    print(f"wrote [superlink.{args.name}] to {path}; run: flwr run . {args.name} --stream")


def _cmd_register(args: argparse.Namespace) -> None:
    env = flwr_env()
    for key in args.public_keys:
        print(run_checked(register_command(Path(key), args.name), env).strip())


def _cmd_local(args: argparse.Namespace) -> None:
    """Everything on 127.0.0.1; stop all with Ctrl-C."""
    work = Path(args.workdir).resolve()
    env = flwr_env()
    env["FLWR_HOME"] = str(work / "flwr_home") if args.flwr_home is None else args.flwr_home
    if args.insecure:
        _warn_insecure()
        certs = None
    else:
        certs = make_certificates(work / "certs", force=True)
    procs: list[subprocess.Popen] = []

    def _stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds into `finally`, which stops the children

    # `kill PID` (SIGTERM) or a closed terminal (SIGHUP) must stop everything too,
    # not only Ctrl-C: the children run in their own sessions and would outlive us.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    try:
        procs.append(
            start(
                superlink_command(certs, "127.0.0.1", args.port, work / "superlink.db"),
                work / "logs" / "superlink.log",
                env,
            )
        )
        wait_for_port("127.0.0.1", args.port, procs[0], work / "logs" / "superlink.log")
        write_connection(
            Path(env["FLWR_HOME"]), args.name, f"127.0.0.1:{args.port}",
            None if certs is None else certs.ca_cert, make_default=False,
        )  # fmt: skip
        for i in range(args.nodes):
            key = None
            if certs is not None:
                key, public = make_node_key(work / "keys", f"node-{i}", force=True)
                run_checked(register_command(public, args.name), env)
            cfg = node_config(i, args.nodes, work / "cache")
            cmd = supernode_command(
                f"127.0.0.1:{args.port}", cfg,
                None if certs is None else certs.ca_cert, key, args.clientapp_port + i,
            )  # fmt: skip
            procs.append(start(cmd, work / "logs" / f"supernode-{i}.log", env))
        print(f"SuperLink on 127.0.0.1:{args.port}, {args.nodes} SuperNodes; logs in {work / 'logs'}")
        print(f"In another shell:  FLWR_HOME={env['FLWR_HOME']} flwr run . {args.name} --stream")
        print("Ctrl-C stops everything.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        raise SystemExit(f"a process exited; see {work / 'logs'}")
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            stop_tree(p)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (one subcommand per deployment step)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certs", help="CA + SuperLink TLS certificate")
    p.add_argument("out", help="output folder (ca.crt, ca.key, server.pem, server.key)")
    p.add_argument("--san", action="append", default=[],
                   help="DNS name or IP SuperNodes use to reach the SuperLink (repeat); "
                   "localhost/127.0.0.1/::1 always included")  # fmt: skip
    p.add_argument("--days", type=int, default=CERT_DAYS)
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_certs)

    p = sub.add_parser("keys", help="EC key pair(s) for SuperNode authentication")
    p.add_argument("out", help="output folder (NAME and NAME.pub)")
    p.add_argument("--nodes", type=int, default=1, help="make node-0 .. node-(N-1)")
    p.add_argument("--name", action="append", help="explicit key name(s) instead")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_keys)

    p = sub.add_parser("superlink", help="run flower-superlink (TLS + SuperNode auth)")
    p.add_argument("--certs", default="deploy/work/certs", help="folder made by `certs`")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--database", help="SQLite file: keeps registered nodes across restarts")
    p.add_argument("--insecure", action="store_true", help="no TLS, no SuperNode auth")
    p.set_defaults(func=_cmd_superlink)

    p = sub.add_parser("connect", help="write a SuperLink connection for the Flower CLI")
    p.add_argument("name", help="connection name: `flwr run . NAME`")
    p.add_argument("--address", default=f"127.0.0.1:{DEFAULT_PORT}")
    p.add_argument("--root-certificates", help="the CA certificate (ca.crt)")
    p.add_argument("--default", action="store_true", help="make it the default connection")
    p.add_argument("--insecure", action="store_true")
    p.set_defaults(func=_cmd_connect)

    p = sub.add_parser("register", help="flwr supernode register, for each public key")
    p.add_argument("name", help="SuperLink connection name (see `connect`)")
    p.add_argument("public_keys", nargs="+")
    p.set_defaults(func=_cmd_register)

    p = sub.add_parser("supernode", help="run flower-supernode for one institution")
    p.add_argument("--superlink", default=f"127.0.0.1:{DEFAULT_PORT}", help="host:port")
    p.add_argument("--root-certificates", help="the CA certificate (ca.crt)")
    p.add_argument("--key", help="this node's private key (from `keys`)")
    p.add_argument("--port", type=int, default=CLIENTAPP_PORT,
                   help="local ClientApp API port; distinct per SuperNode on one host")  # fmt: skip
    p.add_argument("--partition-id", type=int)
    p.add_argument("--num-partitions", type=int)
    p.add_argument("--data-dir", help="this node's own train-*.parquet folder instead")
    p.add_argument("--cache-dir", help=f"decoded-shard cache (default {default_cache_dir()})")
    p.add_argument("--no-cache", action="store_true", help="decode the shard every round")
    p.add_argument("--insecure", action="store_true")
    p.set_defaults(func=_cmd_supernode)

    p = sub.add_parser("local", help="SuperLink + N SuperNodes on 127.0.0.1, until Ctrl-C")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--name", default="fedfocal-local", help="connection name")
    p.add_argument("--workdir", default="deploy/work/local")
    p.add_argument("--flwr-home", help="default: WORKDIR/flwr_home")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--clientapp-port", type=int, default=CLIENTAPP_PORT,
                   help="node i uses this + i")  # fmt: skip
    p.add_argument("--insecure", action="store_true")
    p.set_defaults(func=_cmd_local)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python deploy/federation.py SUBCOMMAND ...``."""
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
