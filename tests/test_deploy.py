"""Deployment end to end: SuperLink with TLS + SuperNode auth, real SuperNodes, `flwr run`.

One federation (SuperLink + 3 registered SuperNodes, all on 127.0.0.1, free ports,
FLWR_HOME in tmp) serves the module; every process is stopped by its PID tree at the
end, pass or fail (tests/flower_harness.py).
"""

import json
import time
import tomllib

import pytest
from flower_harness import deployed_federation, kill_tree, load_deploy_script, wait_for_text
from flwr.app import ArrayRecord, ConfigRecord

from fedfocal_app.config import parse_run_config
from fedfocal_app.server_app import make_strategy

NODES = 3
# Seconds the server waits for a round's replies. Generous: on a loaded 2-core machine
# a fresh ClientApp process needs up to ~50 s just to import torch; a dead node's reply
# is given up earlier anyway, when the SuperLink marks it offline (2 missed heartbeats).
ROUND_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    with deployed_federation(tmp_path_factory.mktemp("deploy"), NODES) as fed:
        yield fed


# --------------------------------------------------------------------------- no processes


def test_certificates_cover_loopback_and_given_names(tmp_path):
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    script = load_deploy_script()
    paths = script.make_certificates(tmp_path, ["superlink.example.org", "10.0.0.5"])
    cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "superlink.example.org"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1", "::1", "10.0.0.5",
    }  # fmt: skip
    # A TLS server can load the pair and a client trusts it through ca.crt alone.
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        paths.server_cert, paths.server_key
    )
    ssl.create_default_context(cafile=str(paths.ca_cert))
    assert oct(paths.server_key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        script.make_certificates(tmp_path)  # never silently replace a CA
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_node_keys_load_with_flowers_own_loaders(tmp_path):
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key

    script = load_deploy_script()
    private, public = script.make_node_key(tmp_path, "node-0")
    assert try_load_public_key(public)  # what `flwr supernode register` does
    load_ssh_private_key(private.read_bytes(), None)  # what flower-supernode does
    assert oct(private.stat().st_mode & 0o777) == "0o600"


def test_commands_and_connection_entry(tmp_path):
    script = load_deploy_script()
    certs = script.make_certificates(tmp_path / "certs")
    secure = script.superlink_command(certs, "0.0.0.0", 8000)
    assert "--enable-supernode-auth" in secure and "--insecure" not in secure
    assert secure[secure.index("--ssl-certfile") + 1] == str(certs.server_cert)
    insecure = script.superlink_command(None)
    # Flower refuses --enable-supernode-auth with --insecure.
    assert "--insecure" in insecure and "--enable-supernode-auth" not in insecure
    node = script.supernode_command(
        "127.0.0.1:8000", script.node_config(1, 3, tmp_path / "c"), certs.ca_cert,
        tmp_path / "k", clientapp_port=9095,
    )  # fmt: skip
    assert node[node.index("--port") + 1] == "9095"
    assert node[node.index("--node-config") + 1] == (
        f'partition-id=1 num-partitions=3 cache-dir="{tmp_path / "c"}"'
    )
    with pytest.raises(ValueError):
        script.node_config(3, 3)
    assert script.node_config(data_dir=tmp_path) == f'data-dir="{tmp_path}"'

    home = tmp_path / "home"
    script.write_connection(home, "a", "127.0.0.1:8000", certs.ca_cert)
    script.write_connection(home, "b", "10.0.0.5:8000", None)
    with open(home / "config.toml", "rb") as fh:
        links = tomllib.load(fh)["superlink"]
    assert links["a"] == {"address": "127.0.0.1:8000", "root-certificates": str(certs.ca_cert)}
    assert links["b"] == {"address": "10.0.0.5:8000", "insecure": True}
    assert links["default"] == "local"  # Flower's own default kept: `flwr run .` simulates


class _RejoiningGrid:
    """A Grid whose third node connects while the strategy waits for it."""

    def __init__(self):
        self.calls = 0

    def get_node_ids(self):
        self.calls += 1
        return [1, 2] if self.calls == 1 else [1, 2, 3]


@pytest.mark.parametrize("strategy", ["fedfocal", "fedavg"])
def test_a_round_that_waited_for_nodes_trains_all_of_them(run_config, strategy, monkeypatch):
    # Flower's FedAvg alone would size this sample from the 2 nodes seen first.
    cfg = parse_run_config({**run_config, "strategy": strategy, "min-available-nodes": 3})
    strat = make_strategy(cfg)
    # Messages need a running Flower task; the sampled node ids are what matters here.
    monkeypatch.setattr(strat, "_construct_messages", lambda _record, nodes, _kind: nodes)
    sampled = strat.configure_train(2, ArrayRecord(), ConfigRecord(), _RejoiningGrid())
    assert sorted(sampled) == [1, 2, 3]


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.timeout(420)
def test_tls_authenticated_federation_trains_two_rounds(federation, tmp_path):
    log = tmp_path / "run.log"
    run = federation.start_run(
        f"num-server-rounds=2 round-timeout={ROUND_TIMEOUT} "
        f"output-dir='{tmp_path}' run-name='tls'",
        log,
    )
    assert run.wait(timeout=400) == 0, log.read_text()[-4000:]
    res = _results(tmp_path / "tls")
    assert res["status"] == "finished"
    assert [r["round"] for r in res["rounds"]] == [0, 1, 2]
    assert [len(r["clients"]) for r in res["rounds"][1:]] == [NODES, NODES]
    assert sum(c["num-examples"] for c in res["rounds"][-1]["clients"]) == 1437  # all of digits
    assert res["rounds"][-1]["eval"]["accuracy"] > 0.1  # learnt something (chance is 0.1)
    # Each node decoded its shard once, into its own on-disk cache.
    for i in range(NODES):
        cached = list((federation.workdir / "cache" / f"node-{i}").glob("digits-p*.pt"))
        assert [p.name.split("-")[1] for p in cached] == [f"p{i}of{NODES}"]
        # Round 2's fresh ClientApp process read it instead of decoding again.
        assert "fedfocal: shard from cache" in federation.node_log(i).read_text()
    # The CLI reached the SuperLink over TLS with the CA from config.toml.
    config = (federation.workdir / "flwr_home" / "config.toml").read_text()
    assert f'root-certificates = "{federation.ca_cert}"' in config


@pytest.mark.timeout(480)
def test_killed_supernode_run_completes_and_node_rejoins(federation, tmp_path):
    victim = 0
    victim_log = federation.node_log(victim)
    offset = victim_log.stat().st_size
    log = tmp_path / "run.log"
    # min-available-nodes = NODES: round 2 waits until the restarted node is back.
    run = federation.start_run(
        f"num-server-rounds=2 min-available-nodes={NODES} round-timeout={ROUND_TIMEOUT} "
        f"output-dir='{tmp_path}' run-name='kill'",
        log,
    )
    # Round 1 has reached the victim once its SuperNode pulled the train message.
    wait_for_text(victim_log, "Receiving: train message", run, timeout=300, offset=offset)
    killed_at = time.monotonic()
    kill_tree(federation.nodes[victim])  # SuperNode, SuperExec, ClientApp: SIGKILL
    federation.restart_node(victim, NODES, federation.workdir / "keys" / f"node-{victim}")
    rejoined_after = time.monotonic() - killed_at

    assert run.wait(timeout=400) == 0, log.read_text()[-4000:]
    res = _results(tmp_path / "kill")
    assert res["status"] == "finished"
    assert [r["round"] for r in res["rounds"]] == [0, 1, 2]
    round1, round2 = (len(r["clients"]) for r in res["rounds"][1:])
    assert round1 == NODES - 1, f"round 1 went on with the survivors ({round1} replies)"
    assert round2 == NODES, f"the restarted node trained in round 2 ({round2} replies)"
    assert res["rounds"][1]["wall_time_s"] < ROUND_TIMEOUT + 30
    assert rejoined_after < 150
    # Its new process pulled a round-2 message after the restart.
    assert victim_log.read_text().count("Receiving: train message") >= 2


@pytest.mark.timeout(120)
def test_unregistered_supernode_is_refused(federation):
    script = federation.script
    key, _ = script.make_node_key(federation.workdir / "keys", "intruder")  # never registered
    proc, active = federation.start_node(NODES, NODES, key, timeout=90, partition_id=0)
    assert not active
    assert proc.wait(timeout=30) != 0
    log = federation.node_log(NODES).read_text()
    # Flower's exit code 305 (logged; the process itself exits with 1).
    assert "Exit Code: 305" in log and "Failed to activate SuperNode" in log
    listed = federation.flwr("supernode", "list", federation.name, "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    nodes = json.loads(listed.stdout[listed.stdout.index("{") :])["nodes"]
    assert len(nodes) == NODES  # the intruder never became a node
