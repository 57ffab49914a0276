"""The Helm chart `deploy/helm/dkron-nats`, checked without a helm binary or a cluster.

- `helm lint`'s checks: Chart.yaml's fields, values.yaml against values.schema.json, and bad values
  refused by the schema.
- `helm template`'s stand-in, `deploy/helm/render/main.go` (Go's text/template with Debian's sprig, the
  engine and function library Helm uses), built once per session: every rendered document must pass
  kubernetes_validate (strict) for the newest Kubernetes it knows, and carry what users rely on (routes,
  node names, probes, NATS URLs, disruption budgets, Secret wiring, Ingress, external NATS).
- The servers' and agents' rendered arguments are run through `dkron-nats agent --print-config`, so a
  flag the CLI does not know or a bad combination fails here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from dkron_nats.cli import LOG_LEVELS
from tests.gobuild import build, gopath_holding

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "dkron-nats"
RENDER_SRC = ROOT / "deploy" / "helm" / "render" / "main.go"
CLI = Path(sys.executable).with_name("dkron-nats")
SPRIG = Path("src", "github.com", "Masterminds", "sprig")
YAML_V3 = Path("src", "gopkg.in", "yaml.v3")
INSTALL = (
    "install Debian's golang-go, golang-github-masterminds-sprig-dev and golang-gopkg-yaml.v3-dev "
    "(CI's .ci/run installs them when missing)"
)

RELEASE, NAMESPACE = "dk", "jobs"
FULLNAME = "dk-dkron-nats"
HEADLESS = f"{FULLNAME}-server-headless"
SERVER_PODS = [f"{FULLNAME}-server-{i}" for i in range(3)]
SERVER_HOSTS = [f"{pod}.{HEADLESS}.{NAMESPACE}.svc" for pod in SERVER_PODS]

Doc = dict[str, Any]


# --- building and running the renderer ---------------------------------------------------------------


@pytest.fixture(scope="session")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/helm/render/main.go, built offline in GOPATH mode against Debian's Go libraries."""
    gopath = gopath_holding(SPRIG, "golang-github-masterminds-sprig-dev", INSTALL)
    if not (gopath / YAML_V3).is_dir():
        pytest.fail(f"gopkg.in/yaml.v3 is missing from {gopath}: {INSTALL}")
    return build(RENDER_SRC, tmp_path_factory.mktemp("helm-render") / "render", gopath, INSTALL)


def _run(renderer: Path, tmp_path: Path, values: Doc | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(renderer), "--name", RELEASE, "--namespace", NAMESPACE]
    if values is not None:
        file = tmp_path / "values.yaml"
        file.write_text(yaml.safe_dump(values))
        command += ["-f", str(file)]
    return subprocess.run([*command, str(CHART)], capture_output=True, text=True, timeout=60, check=False)


class Rendered:
    """The documents of one render, validated, with look-ups by kind and name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.docs: list[Doc] = [d for d in yaml.safe_load_all(text) if d is not None]
        version = kubernetes_validate.latest_version()
        for doc in self.docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:  # its str() holds the whole schema
                where = ".".join(map(str, exc.absolute_path))
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} is invalid at {where}: {exc.message}")

    def all(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Doc:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name}"
        return found[0]

    def container(self, kind: str) -> Doc:
        containers: list[Doc] = self.one(kind)["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def server(self) -> Doc:
        return self.container("StatefulSet")

    @property
    def agent(self) -> Doc:
        return self.container("Deployment")


def _merge(base: Doc, override: Doc) -> Doc:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _defaults() -> Doc:
    values: Doc = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def _schema_errors(values: Doc) -> list[str]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def render(renderer: Path, tmp_path: Path, values: Doc | None = None) -> Rendered:
    """Renders the chart with `values` over its defaults, after checking them against the schema."""
    errors = _schema_errors(_merge(_defaults(), values or {}))
    assert not errors, errors
    result = _run(renderer, tmp_path, values)
    assert result.returncode == 0, result.stderr
    return Rendered(result.stdout)


def flags(args: list[str]) -> dict[str, list[str]]:
    """`--flag value` and bare `--flag` pairs of a container's args (positionals dropped)."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                out.setdefault(arg, []).append(args[i + 1])
                i += 2
                continue
            out.setdefault(arg, []).append("")
        i += 1
    return out


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def ports_of(container: Doc) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def secret_ref(container: Doc, var: str) -> tuple[str, str]:
    ref = env_of(container)[var]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


# --- helm lint's checks -------------------------------------------------------------------------------


def test_chart_metadata_and_default_values_pass_lint_checks() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "appVersion (the default image tag) lags the package"
    assert _schema_errors(_defaults()) == []
    jsonschema.Draft7Validator.check_schema(json.loads((CHART / "values.schema.json").read_text()))
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["logLevel"]["enum"] == LOG_LEVELS  # what `--log-level` accepts
    for template in (CHART / "templates").iterdir():
        assert template.suffix in {".yaml", ".tpl", ".txt"}, template


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"servers": {"replicas": "three"}}, "servers.replicas"),
        ({"servers": {"replicas": 0}}, "servers.replicas"),
        ({"replicaCount": 3}, ""),  # unknown at top level
        ({"servers": {"persistance": {}}}, "servers"),  # misspelt
        ({"logLevel": "loud"}, "logLevel"),
        ({"agents": {"tags": {"role": ["a", "b"]}}}, "agents.tags.role"),
        ({"nats": {"external": {"urls": ["http://nats:4222"]}}}, "nats.external.urls.0"),
        ({"servers": {"persistence": {"enabled": "yes"}}}, "servers.persistence.enabled"),
        ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
    ],
)
def test_schema_refuses_bad_values(values: Doc, where: str) -> None:
    errors = _schema_errors(_merge(_defaults(), values))
    assert errors, f"{values} was accepted"
    assert any(e.startswith(f"{where}:") for e in errors), errors


# --- helm template ------------------------------------------------------------------------------------


def test_default_render_is_a_three_server_cluster_with_two_agents(renderer: Path, tmp_path: Path) -> None:
    out = render(renderer, tmp_path)
    kinds = sorted(d["kind"] for d in out.docs)
    assert kinds == [
        "Deployment",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "Service",
        "StatefulSet",
    ]  # no Ingress by default; the Secret holds the generated bootstrap token and NATS cluster secret

    sts = out.one("StatefulSet", f"{FULLNAME}-server")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == HEADLESS
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    server = out.server
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    assert mounts["data"] == "/var/lib/dkron-nats"

    # The pods' DNS names, built from the rendered objects, are the ones the routes name.
    headless = out.one("Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    sts_name, service_name = sts["metadata"]["name"], headless["metadata"]["name"]
    hosts = [f"{sts_name}-{i}.{service_name}.{NAMESPACE}.svc" for i in range(3)]
    assert hosts == SERVER_HOSTS

    f = flags(server["args"])
    assert server["args"][0] == "agent"
    assert "--server" in f
    assert f["--nats-routes"] == [f"nats-route://{h}:6222" for h in SERVER_HOSTS]
    assert f["--nats-listen"] == ["0.0.0.0:4222"]
    assert f["--nats-cluster-listen"] == ["0.0.0.0:6222"]
    assert f["--http-addr"] == ["0.0.0.0:8080"]
    assert f["--replicas"] == ["3"]
    assert f["--node-name"] == ["$(POD_NAME)"]
    assert env_of(server)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "--auth" in f
    ports = ports_of(server)
    assert ports == {"http": 8080, "nats": 4222, "cluster": 6222}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = server[probe]["httpGet"]
        assert get["path"] == "/health"
        assert ports[get["port"]] == 8080, probe
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    pod_security = sts["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0

    api = out.one("Service", FULLNAME)
    assert api["spec"]["type"] == "ClusterIP"
    assert api["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["port"], p["targetPort"]) for p in api["spec"]["ports"]] == [(8080, "http")]

    deployment = out.one("Deployment", f"{FULLNAME}-agent")
    assert deployment["spec"]["replicas"] == 2
    agent = out.agent
    f = flags(agent["args"])
    assert "--server" not in f
    assert f["--nats-url"] == [f"nats://{h}:4222" for h in SERVER_HOSTS]
    assert f["--node-name"] == ["$(POD_NAME)"]
    assert env_of(agent)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "--tag" not in f
    # An agent's own listener (/health, /metrics, /debug/vars): probed, and never behind the API Service.
    assert f["--http-addr"] == ["0.0.0.0:8080"]
    assert ports_of(agent) == {"http": 8080}
    probes = {probe: agent[probe]["httpGet"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {probe: (get["path"], get["port"]) for probe, get in probes.items()} == {
        "startupProbe": ("/health", "http"),
        "readinessProbe": ("/health", "http"),
        "livenessProbe": ("/metrics", "http"),  # a NATS outage must not restart agents
    }
    agent_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not (deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items())
    assert not (api["spec"]["selector"].items() <= agent_labels.items())  # agents serve no API

    budgets = {d["metadata"]["name"]: d["spec"] for d in out.all("PodDisruptionBudget")}
    assert budgets[f"{FULLNAME}-server"]["maxUnavailable"] == 1
    assert budgets[f"{FULLNAME}-server"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budgets[f"{FULLNAME}-agent"]["maxUnavailable"] == 1
    assert budgets[f"{FULLNAME}-agent"]["selector"]["matchLabels"].items() <= agent_labels.items()


def test_ingress_auth_token_nats_token_and_agent_tags(renderer: Path, tmp_path: Path) -> None:
    out = render(
        renderer,
        tmp_path,
        {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "host": "dkron.example.com",
                "tls": {"enabled": True},
            },
            "auth": {"enabled": True, "bootstrapToken": "admin-s3cret"},
            "nats": {"token": "nats-s3cret"},
            "agents": {"tags": {"role": "worker", "zone": "a"}},
        },
    )
    ingress = out.one("Ingress", FULLNAME)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "dkron.example.com"
    [path] = rule["http"]["paths"]
    backend = path["backend"]["service"]
    api = out.one("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in api["spec"]["ports"]}
    assert ingress["spec"]["tls"] == [{"secretName": f"{FULLNAME}-tls", "hosts": ["dkron.example.com"]}]

    secret = out.one("Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert "admin-s3cret" not in out.text  # only base64, in the Secret
    assert "nats-s3cret" not in out.text
    server, agent = out.server, out.agent
    assert "--auth" in flags(server["args"])
    name, key = secret_ref(server, "DKRON_NATS_BOOTSTRAP_TOKEN")
    assert (name, data[key]) == (secret["metadata"]["name"], "admin-s3cret")
    assert "DKRON_NATS_BOOTSTRAP_TOKEN" not in env_of(agent)  # agents serve no API
    for container in (server, agent):
        name, key = secret_ref(container, "DKRON_NATS_NATS_TOKEN")
        assert (name, data[key]) == (secret["metadata"]["name"], "nats-s3cret")
        assert "DKRON_NATS_NATS_USER" not in env_of(container)
    assert flags(agent["args"])["--tag"] == ["role=worker", "zone=a"]
    # A changed Secret rolls the pods.
    checksum = out.one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
    default = render(renderer, tmp_path).one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert checksum != default["checksum/secret"]


def test_external_nats_runs_no_embedded_server(renderer: Path, tmp_path: Path) -> None:
    urls = ["nats://nats-0.nats.messaging.svc:4222", "nats://nats-1.nats.messaging.svc:4222"]
    out = render(renderer, tmp_path, {"nats": {"external": {"urls": urls}}})
    server, agent = out.server, out.agent
    f = flags(server["args"])
    for flag in ("--nats-routes", "--nats-listen", "--nats-cluster-listen", "--replicas"):
        assert flag not in f, flag
    assert "nats-route://" not in out.text
    assert f["--nats-url"] == urls
    assert flags(agent["args"])["--nats-url"] == urls
    assert ports_of(server) == {"http": 8080}
    for service in out.all("Service"):
        assert {p["port"] for p in service["spec"]["ports"]} == {8080}
    sts = out.one("StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]  # no JetStream here: persistence is off by default
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}

    kept = render(
        renderer,
        tmp_path,
        {
            "nats": {"external": {"urls": urls}},
            "servers": {"persistence": {"enabled": True, "storageClass": "fast"}},
        },
    )
    [claim] = kept.one("StatefulSet")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert "data" not in {v["name"] for v in kept.one("StatefulSet")["spec"]["template"]["spec"]["volumes"]}


def test_nats_credentials_tls_and_admin_token_from_existing_secrets(renderer: Path, tmp_path: Path) -> None:
    out = render(
        renderer,
        tmp_path,
        {
            "auth": {"enabled": True, "existingSecret": "dkron-admin", "existingSecretKey": "token"},
            "nats": {
                "existingSecret": "nats-creds",
                "existingSecretKeys": {"user": "username", "password": "password"},
                "tls": {"enabled": True, "secretName": "nats-tls", "serverName": "nats.internal"},
            },
        },
    )
    assert out.all("Secret") == []  # everything comes from the user's Secrets
    server, agent = out.server, out.agent
    assert secret_ref(server, "DKRON_NATS_BOOTSTRAP_TOKEN") == ("dkron-admin", "token")
    for kind, container in (("StatefulSet", server), ("Deployment", agent)):
        assert secret_ref(container, "DKRON_NATS_NATS_USER") == ("nats-creds", "username")
        assert secret_ref(container, "DKRON_NATS_NATS_PASSWORD") == ("nats-creds", "password")
        assert "DKRON_NATS_NATS_TOKEN" not in env_of(container)
        pod = out.one(kind)["spec"]["template"]["spec"]
        volume = {v["name"]: v for v in pod["volumes"]}["nats-tls"]
        assert volume["secret"]["secretName"] == "nats-tls"
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "nats-tls"]
        assert mount["readOnly"] is True
        f = flags(container["args"])
        directory = mount["mountPath"]
        assert f["--nats-tls-ca"] == [f"{directory}/ca.crt"]
        assert f["--nats-tls-cert"] == [f"{directory}/tls.crt"]
        assert f["--nats-tls-key"] == [f"{directory}/tls.key"]
        assert f["--nats-tls-server-name"] == ["nats.internal"]
    # The embedded servers serve TLS, so the agents connect with tls://.
    assert flags(agent["args"])["--nats-url"] == [f"tls://{h}:4222" for h in SERVER_HOSTS]


def test_replica_counts_scale_routes_urls_and_jetstream_replicas(renderer: Path, tmp_path: Path) -> None:
    five = render(renderer, tmp_path, {"servers": {"replicas": 5}, "agents": {"replicas": 1}})
    f = flags(five.server["args"])
    assert len(f["--nats-routes"]) == 5
    assert f["--replicas"] == ["3"]
    assert len(flags(five.agent["args"])["--nats-url"]) == 5
    assert [d["metadata"]["name"] for d in five.all("PodDisruptionBudget")] == [f"{FULLNAME}-server"]
    one = render(renderer, tmp_path, {"servers": {"replicas": 1}, "agents": {"enabled": False}})
    assert flags(one.server["args"])["--replicas"] == ["1"]
    assert one.all("Deployment") == []


def test_long_release_names_stay_valid(renderer: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(renderer), "--name", "a-very-long-release-name-for-a-scheduler-cluster", str(CHART)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = Rendered(result.stdout)
    host = flags(out.agent["args"])["--nats-url"][0].removeprefix("nats://").removesuffix(":4222")
    assert all(len(label) <= 63 for label in host.split("."))
    assert len(out.one("StatefulSet")["metadata"]["name"]) <= 52  # the controller-revision-hash label


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nats": {"tls": {"enabled": True}}}, "nats.tls.enabled needs nats.tls.secretName"),
        ({"nats": {"user": "server"}}, "nats.user needs nats.password"),
        ({"nats": {"user": "u", "password": "p", "token": "t"}}, "either a user and password or a token"),
        ({"nats": {"existingSecret": "creds"}}, "nats.existingSecret needs nats.existingSecretKeys"),
    ],
)
def test_missing_or_conflicting_values_fail_the_render(
    renderer: Path, tmp_path: Path, values: Doc, message: str
) -> None:
    result = _run(renderer, tmp_path, values)
    assert result.returncode != 0
    assert result.stdout == ""
    assert message in result.stderr, result.stderr


def test_template_errors_fail_the_render(renderer: Path, tmp_path: Path) -> None:
    broken = tmp_path / "chart"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("kind: {{ .Values.image.repository | nosuchfunc }}\n")
    result = subprocess.run([str(renderer), str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "broken.yaml" in result.stderr
    assert "nosuchfunc" in result.stderr
    (broken / "templates" / "broken.yaml").write_text("a: b\n  c: d\n")  # not YAML
    result = subprocess.run([str(renderer), str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "broken.yaml: the output is not valid YAML" in result.stderr


# --- the rendered arguments, through the real CLI -----------------------------------------------------


def _print_config(container: Doc, pod: str, tmp_path: Path) -> Doc:
    """What `dkron-nats` resolves from the container's args and environment (Secrets as placeholders)."""
    args = [a.replace("$(POD_NAME)", pod) for a in container["args"]]
    args = [str(tmp_path) if a == "/var/lib/dkron-nats" else a for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_NATS_")}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            env[var["name"]] = "from-a-secret"
    result = subprocess.run(
        [str(CLI), *args, "--print-config"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{container['name']}: {result.stderr}"
    resolved: Doc = json.loads(result.stdout)
    return resolved


def test_rendered_arguments_are_accepted_by_the_cli(renderer: Path, tmp_path: Path) -> None:
    out = render(
        renderer,
        tmp_path,
        {
            "auth": {"enabled": True, "bootstrapToken": "t"},
            "nats": {"user": "u", "password": "p"},
            "agents": {"tags": {"role": "worker"}},
        },
    )
    server = _print_config(out.server, SERVER_PODS[1], tmp_path / "s")
    assert server["server"] is True
    assert server["node_name"] == SERVER_PODS[1]
    assert server["auth"] is True
    assert server["replicas"] == 3
    assert len(server["nats_routes"]) == 3
    assert server["nats_urls"] == []  # the embedded nats-server
    agent = _print_config(out.agent, f"{FULLNAME}-agent-5d9c7-x2x4q", tmp_path / "a")
    assert not agent["server"]
    assert agent["node_name"] == f"{FULLNAME}-agent-5d9c7-x2x4q"
    assert len(agent["nats_urls"]) == 3
    assert agent["http_addr"] == "0.0.0.0:8080"  # its /health and /metrics
    assert "(set)" in json.dumps(agent)  # the NATS password, masked

    urls = ["nats://nats.messaging.svc:4222"]
    external = render(renderer, tmp_path, {"nats": {"external": {"urls": urls}}})
    server = _print_config(external.server, SERVER_PODS[0], tmp_path / "e")
    assert server["nats_urls"] == urls
    assert server["nats_routes"] == []
    assert server["replicas"] == 0  # decided by dkron-nats from the NATS cluster's size


def test_by_default_api_tokens_and_nats_credentials_are_on_with_generated_secrets(
    renderer: Path, tmp_path: Path
) -> None:
    """Secure by default: --auth with a generated bootstrap token, and NATS credentials made from a generated
    cluster secret (servers mount it; an agent's init container makes the agent's own credentials from it,
    and the agent's container mounts only those). No value is shared between installs."""
    out = render(renderer, tmp_path)
    secret = out.one("Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert len(data["bootstrap-token"]) == 48
    assert len(data["nats-cluster-secret"]) == 64
    again = render(renderer, tmp_path).one("Secret")["data"]
    assert again["bootstrap-token"] != secret["data"]["bootstrap-token"]
    assert again["nats-cluster-secret"] != secret["data"]["nats-cluster-secret"]
    assert "lookup" in (CHART / "templates" / "secret.yaml").read_text()  # kept across upgrades

    server, agent = out.server, out.agent
    assert secret_ref(server, "DKRON_NATS_BOOTSTRAP_TOKEN") == (secret["metadata"]["name"], "bootstrap-token")
    server_pod = out.one("StatefulSet")["spec"]["template"]["spec"]
    agent_pod = out.one("Deployment")["spec"]["template"]["spec"]
    for pod in (server_pod, agent_pod):
        volume = {v["name"]: v for v in pod["volumes"]}["cluster-secret"]["secret"]
        assert volume["secretName"] == secret["metadata"]["name"]
        assert volume["items"] == [{"key": "nats-cluster-secret", "path": "nats-secret"}]
    secret_file = flags(server["args"])["--nats-secret-file"][0]
    [mount] = [m for m in server["volumeMounts"] if m["name"] == "cluster-secret"]
    assert secret_file == f"{mount['mountPath']}/nats-secret"
    assert mount["readOnly"] is True

    [init] = agent_pod["initContainers"]
    f = flags(init["args"])
    assert init["args"][0] == "nats-credentials"
    assert (f["--role"], f["--node"], f["--nats-secret-file"]) == (["agent"], ["$(POD_NAME)"], [secret_file])
    assert "cluster-secret" not in {m["name"] for m in agent["volumeMounts"]}  # the agent never sees it
    creds = flags(agent["args"])["--nats-creds"]
    assert creds == f["--out"]
    [creds_mount] = [m for m in agent["volumeMounts"] if m["name"] == "nats-creds"]
    assert creds[0].startswith(creds_mount["mountPath"] + "/")

    # The servers' and agents' arguments, through the real CLI (the Secret's files as local files).
    secret_path = tmp_path / "nats-secret"
    secret_path.write_text(data["nats-cluster-secret"])
    secret_path.chmod(0o600)
    pod = f"{FULLNAME}-agent-x"
    made = subprocess.run(
        [
            str(CLI),
            "nats-credentials",
            "--role",
            "agent",
            "--node",
            pod,
            "--nats-secret-file",
            str(secret_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    (tmp_path / "agent.creds").write_text(made.stdout)
    files = {secret_file: str(secret_path), creds[0]: str(tmp_path / "agent.creds")}
    resolved = _print_config(_with_files(server, files), SERVER_PODS[0], tmp_path / "s")
    assert resolved["nats_secret_file"] == str(secret_path)
    assert resolved["auth"] is True
    resolved = _print_config(_with_files(agent, files), pod, tmp_path / "a")
    assert resolved["nats_creds"] == str(tmp_path / "agent.creds")


def _with_files(container: Doc, files: dict[str, str]) -> Doc:
    return {**container, "args": [files.get(a, a) for a in container["args"]]}


def test_given_nats_credentials_or_an_existing_cluster_secret_replace_the_generated_one(
    renderer: Path, tmp_path: Path
) -> None:
    out = render(renderer, tmp_path, {"nats": {"user": "u", "password": "p"}})
    assert "nats-cluster-secret" not in out.one("Secret")["data"]
    assert "--nats-secret-file" not in flags(out.server["args"])
    assert "initContainers" not in out.one("Deployment")["spec"]["template"]["spec"]

    mine = render(renderer, tmp_path, {"nats": {"clusterSecret": {"existingSecret": "mine", "key": "s"}}})
    assert "nats-cluster-secret" not in mine.one("Secret")["data"]
    volume = {v["name"]: v for v in mine.one("StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    assert volume["cluster-secret"]["secret"]["secretName"] == "mine"
    assert volume["cluster-secret"]["secret"]["items"] == [{"key": "s", "path": "nats-secret"}]
