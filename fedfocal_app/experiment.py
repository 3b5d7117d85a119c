"""Run the app with ``flwr run`` from Python and read back its ``results.json``.

For notebooks and benchmark scripts. In Flower 1.42 ``run_simulation`` hands the
ServerApp an empty run config, so the only way to vary the config from Python is the
CLI: this module builds the ``flwr run`` command (``--run-config`` with TOML-quoted
values, ``--federation-config`` with the number of simulated SuperNodes), runs it,
and returns the run's ``results.json`` as a dict.

The SuperLink is whichever connection ``superlink`` names in ``$FLWR_HOME/config.toml``
(default ``~/.flwr``); ``None`` uses that file's default, which for a fresh install is
``local``: a simulation SuperLink that ``flwr`` starts in the background on
127.0.0.1:39091 and leaves running.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import parse_run_config
from .outputs import RESULTS_FILE, load_results

# The repository root (pyproject.toml with [tool.flwr.app]) when the package is used
# from a checkout or an editable install.
APP_DIR = Path(__file__).resolve().parents[1]
OUTPUT_TAIL_CHARS = 4000
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_RUN_ID = re.compile(r"Successfully started run (\d+)")


class FlwrRunError(RuntimeError):
    """``flwr run`` failed or the run did not finish; the message ends with its output."""


def toml_value(value: Any) -> str:
    """One run-config value as a TOML literal that ``flwr run --run-config`` accepts.

    Flower splits ``--run-config`` into ``key=value`` pairs with a regular expression
    that allows ``'...'`` (TOML literal string), ``"..."`` (basic string, no inner
    double quote) or an unquoted token. Strings use single quotes (no escaping needed,
    spaces and backslashes kept as they are), or double quotes when they contain a
    single quote.

    Raises
    ------
    ValueError
        For a string holding both quote characters or a line break, and for types
        a run config cannot hold (lists, dicts, None).
    """
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-trip form: 0.05, 1e-05, 2.0
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            raise ValueError(f"run config strings cannot hold line breaks: {value!r}")
        if "'" not in value:
            return f"'{value}'"
        if '"' not in value:
            escaped = value.replace("\\", "\\\\")
            return f'"{escaped}"'
        raise ValueError(
            f"run config string {value!r} holds both ' and \"; flwr run cannot pass it"
        )
    raise ValueError(
        f"run config values must be bool, int, float or str, got {type(value).__name__}"
    )


def run_config_arg(run_config: Mapping[str, Any]) -> str:
    """``{"num-server-rounds": 3, "loss": "ce"}`` -> ``"num-server-rounds=3 loss='ce'"``."""
    pairs = []
    for key, value in run_config.items():
        if not _BARE_KEY.fullmatch(key):
            raise ValueError(f"run config key {key!r} must match [A-Za-z0-9_-]+")
        pairs.append(f"{key}={toml_value(value)}")
    return " ".join(pairs)


def app_defaults(app_dir: str | Path = APP_DIR) -> dict[str, Any]:
    """The app's run config defaults, ``[tool.flwr.app.config]`` of its pyproject.toml."""
    pyproject = Path(app_dir) / "pyproject.toml"
    if not pyproject.is_file():
        raise FileNotFoundError(
            f"{pyproject} not found: pass app_dir=<folder of the app's pyproject.toml> "
            "(the package alone, installed from a wheel, is not a Flower app)"
        )
    with open(pyproject, "rb") as fh:
        return dict(tomllib.load(fh)["tool"]["flwr"]["app"]["config"])


def _flwr_executable() -> str:
    beside = Path(sys.executable).parent / "flwr"
    if beside.is_file():
        return str(beside)
    found = shutil.which("flwr")
    if found is None:
        raise FileNotFoundError("the `flwr` command was not found: pip install flwr")
    return found


def flwr_run_command(
    run_config: Mapping[str, Any],
    superlink: str | None = None,
    num_supernodes: int = 10,
    cpus_per_supernode: float = 1,
    gpus_per_supernode: float = 0,
    app_dir: str | Path = APP_DIR,
) -> list[str]:
    """The ``flwr run APP [SUPERLINK] --stream --run-config ... --federation-config ...``
    command line (a list, no shell)."""
    if num_supernodes < 1:
        raise ValueError(f"num_supernodes must be >= 1, got {num_supernodes}")
    cmd = [_flwr_executable(), "run", str(app_dir)]
    if superlink:
        cmd.append(superlink)
    cmd.append("--stream")
    if run_config:
        cmd += ["--run-config", run_config_arg(run_config)]
    federation = (
        f"num-supernodes={int(num_supernodes)} "
        f"client-resources-num-cpus={toml_value(cpus_per_supernode)}"
    )
    if gpus_per_supernode:
        federation += f" client-resources-num-gpus={toml_value(gpus_per_supernode)}"
    return cmd + ["--federation-config", federation]


def flwr_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``flwr``: this one, ``env`` on top, and two fixes.

    - ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` unless set: a SuperLink that
      ``flwr`` starts would otherwise ``uv sync`` the app (and download torch) per run.
    - This interpreter's ``bin`` folder first on ``PATH``: ``flwr`` starts the local
      SuperLink as ``flower-superlink`` from ``PATH``, which in a notebook kernel of
      an unactivated virtual environment would not be found.
    """
    merged = {**os.environ, **(env or {})}
    merged.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    merged["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), merged.get("PATH", "")]
    )
    return merged


def _tail(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-OUTPUT_TAIL_CHARS:]


def run_app(
    run_config: Mapping[str, Any],
    superlink: str | None = None,
    num_supernodes: int = 10,
    env: Mapping[str, str] | None = None,
    *,
    cpus_per_supernode: float = 1,
    gpus_per_supernode: float = 0,
    app_dir: str | Path = APP_DIR,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run the app once with ``flwr run`` and return its ``results.json``.

    Parameters
    ----------
    run_config : mapping
        Overrides of the app's run config (kebab-case keys, as in pyproject.toml).
        ``output-dir`` defaults to ``./outputs`` and is made absolute here (the
        ServerApp would otherwise resolve it against its own working directory);
        ``run-name`` defaults to ``run-<random>``. A ``results.json`` already in
        ``output-dir/run-name`` is deleted first, so a stale file is never read.
    superlink : str, optional
        Name of a SuperLink connection in ``$FLWR_HOME/config.toml``; ``None`` uses the
        file's default (``local`` on a fresh install).
    num_supernodes : int
        Simulated SuperNodes, i.e. clients (``--federation-config num-supernodes``).
    env : mapping, optional
        Extra environment variables for ``flwr`` (e.g. ``FLWR_HOME``); see
        :func:`flwr_env`.
    cpus_per_supernode, gpus_per_supernode : float
        Simulation client resources.
    app_dir : path
        Folder of the app's pyproject.toml (default: this checkout).
    timeout : float, optional
        Seconds to wait for the run; on expiry the run is stopped (``flwr stop``).

    Returns
    -------
    dict
        The run's ``results.json`` (``config``, ``rounds``, ``run_dir``, ...).

    Raises
    ------
    ConfigError
        An invalid run config value, before anything is started.
    FlwrRunError
        ``flwr run`` failed, timed out, or the run did not finish; the message ends
        with the last lines of its output.
    """
    overrides = dict(run_config)
    defaults = app_defaults(app_dir)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"unknown run config keys {unknown}; known: {sorted(defaults)}")
    overrides["output-dir"] = str(
        Path(overrides.get("output-dir", "outputs")).expanduser().resolve()
    )
    if not overrides.get("run-name"):
        overrides["run-name"] = f"run-{uuid.uuid4().hex[:8]}"
    parse_run_config({**defaults, **overrides})  # fail here, not after Ray starts

    run_dir = Path(overrides["output-dir"]) / overrides["run-name"]
    (run_dir / RESULTS_FILE).unlink(missing_ok=True)
    cmd = flwr_run_command(
        overrides, superlink, num_supernodes, cpus_per_supernode, gpus_per_supernode, app_dir
    )
    full_env = flwr_env(env)
    try:
        proc = subprocess.run(
            cmd,
            env=full_env,
            cwd=app_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as err:
        output = _tail(err.stdout) + _tail(err.stderr)
        if match := _RUN_ID.search(output):  # the run goes on without us: stop it
            stop = [_flwr_executable(), "stop", match.group(1)] + ([superlink] if superlink else [])
            subprocess.run(stop, env=full_env, capture_output=True, timeout=60, check=False)
        raise FlwrRunError(
            f"flwr run timed out after {timeout} s; last output:\n{_tail(output)}"
        ) from None

    output = _tail(proc.stdout) + _tail(proc.stderr)
    results_path = run_dir / RESULTS_FILE
    if proc.returncode != 0 or not results_path.is_file():
        raise FlwrRunError(
            f"flwr run exited with {proc.returncode} and wrote no {results_path}; "
            f"last output:\n{output}"
        )
    results = load_results(run_dir)
    if results.get("status") != "finished":
        raise FlwrRunError(
            f"run {run_dir} ended with status {results.get('status')!r}; "
            f"last output:\n{output}"
        )
    return results
