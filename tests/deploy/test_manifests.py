"""The compose file and the Kubernetes manifests configure the real service.

Every YAML document under ``deploy/`` is parsed; the environment each one
gives the consumer must consist of settings that ``consumer.settings`` reads
and must load; probes must hit paths the health server answers, on the port
it listens on.
"""

from __future__ import annotations

import http.client
import inspect
import ipaddress
import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from consumer.cli import build_parser
from consumer.health import Health, HealthServer
from consumer.relay import Relay
from consumer.settings import ENVIRONMENT, Settings
from tests.deploy.files import (
    DOCKERFILE,
    K8S,
    REPO,
    compose,
    compose_environment,
    container_environment,
    dockerfile_stages,
    is_project_image,
    k8s_object,
    k8s_objects,
    unknown_variables,
    yaml_documents,
    yaml_files,
)

#: Time a drain may take beyond the relay's round: commit, close, flush.
DRAIN_ALLOWANCE_S = 15


def image_environment() -> dict[str, str]:
    """Return the variables the image sets, which a deployment overrides."""
    return dockerfile_stages(DOCKERFILE)[-1].environment()


def effective_settings(env: dict[str, str]) -> Settings:
    """Return the settings a container with this environment would run with."""
    return Settings.from_env({**image_environment(), **env})


def consumer_containers() -> list[dict[str, Any]]:
    """Return the containers of the project's image in every workload."""
    containers = []
    for obj in k8s_objects():
        if obj["kind"] not in {"Deployment", "StatefulSet", "Job", "CronJob"}:
            continue
        spec = obj["spec"]["template"]["spec"]
        containers += [c for c in spec["containers"] if is_project_image(c["image"])]
    return containers


def project_services() -> dict[str, dict[str, Any]]:
    """Return the compose services that run the project's image."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if is_project_image(service.get("image"))
    }


def served_status(server: HealthServer, path: str) -> int:
    """Return the status the health server answers for a path."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def seconds(duration: str | int) -> int:
    """Convert a compose duration such as ``1m30s`` or ``60s`` to seconds."""
    if isinstance(duration, int):
        return duration
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"unsupported duration {duration!r}"
    counts = zip(parts.groups(), "hms", strict=True)
    return sum(int(n) * units[unit] for n, unit in counts if n)


def test_every_yaml_under_deploy_parses_into_the_expected_objects() -> None:
    """compose and k8s files parse; kustomization lists every manifest once.

    Also proves the object set the issue asks for: a Deployment, ConfigMaps
    for settings and plan, a Secret and a PodDisruptionBudget.
    """
    files = yaml_files()
    assert REPO / "deploy" / "compose.yaml" in files
    for path in files:
        documents = yaml_documents(path)
        assert documents, f"{path} holds no document"
        assert all(isinstance(doc, dict) for doc in documents), path

    kinds = sorted(obj["kind"] for obj in k8s_objects())
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
    ]
    for obj in k8s_objects():
        assert obj["apiVersion"] and obj["metadata"]["name"], obj
    (kustomization,) = yaml_documents(K8S / "kustomization.yaml")
    manifests = sorted(p.name for p in K8S.glob("*.yaml") if p.stem != "kustomization")
    assert sorted(kustomization["resources"]) == manifests


def test_every_variable_the_deployments_set_is_a_setting_that_loads() -> None:
    """No typo survives: each variable is read by consumer/settings.py.

    Covers the compose services of the project's image and every container
    of it in the manifests, including what envFrom pulls from ConfigMaps
    and Secrets; then the whole environment must pass Settings.from_env.
    """
    environments = {
        f"compose:{name}": compose_environment(service)
        for name, service in project_services().items()
    }
    environments.update(
        {f"k8s:{c['name']}": container_environment(c) for c in consumer_containers()}
    )
    assert "compose:consumer" in environments
    assert "k8s:consumer" in environments
    for where, env in environments.items():
        assert unknown_variables(env) == [], f"{where} sets unknown variables"
        settings = effective_settings(env)
        assert settings.plan.startswith("/app/plans/"), where


def test_k8s_probes_hit_served_paths_on_the_health_port(
    health_server: tuple[Health, HealthServer],
) -> None:
    """Readiness asks /readyz, liveness /healthz, both on LIFECYCLE_HEALTH_PORT.

    The paths are checked against a running health server (anything but
    404), the port against the settings the pod's environment yields, and
    the health host must not be loopback or the kubelet cannot reach it.
    """
    _, server = health_server
    (container,) = consumer_containers()
    settings = effective_settings(container_environment(container))
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    probes = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe_name, wanted in probes.items():
        http_get = container[probe_name]["httpGet"]
        assert http_get["path"] == wanted, probe_name
        assert served_status(server, http_get["path"]) != 404, probe_name
        port = http_get["port"]
        port = ports[port] if isinstance(port, str) else port
        assert port == settings.health_port, probe_name
    assert not ipaddress.ip_address(settings.health_host).is_loopback

    pod = k8s_object("Deployment")["spec"]["template"]["metadata"]
    annotations = pod["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.health_port)
    assert served_status(server, annotations["prometheus.io/path"]) == 200


def test_compose_publishes_the_health_port_and_wires_its_own_services() -> None:
    """The consumer's addresses name services of the same compose file.

    Kafka, the registry, Redis and the Crisp sandbox must be reachable by
    the names the consumer uses; the sandbox binds beyond loopback on the
    port CRISP_BASE_URL names; the health port is the one published.
    """
    services = compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["registry"]["image"].startswith("apicurio/apicurio-registry:3.0.")
    assert services["redis"]["image"].startswith("redis:")

    env = compose_environment(services["consumer"])
    settings = effective_settings(env)
    hosts = {
        "bootstrap": settings.bootstrap.rsplit(":", 1)[0],
        "schema_registry": urlsplit(settings.schema_registry).hostname,
        "redis_url": urlsplit(settings.redis_url).hostname,
        "crisp_base_url": urlsplit(settings.crisp_base_url).hostname,
    }
    for setting, host in hosts.items():
        assert host in services, f"{setting} points at {host}, not a service"

    sandbox = services[hosts["crisp_base_url"]]
    command = sandbox["command"]
    assert command[:3] == ["sandbox", "--host", "0.0.0.0"]
    sandbox_port = int(command[command.index("--port") + 1])
    assert urlsplit(settings.crisp_base_url).port == sandbox_port
    assert settings.crisp_configured, "the consumer must talk to the sandbox"

    published = [str(p).rsplit(":", 1)[-1] for p in services["consumer"]["ports"]]
    assert str(settings.health_port) in published
    assert not ipaddress.ip_address(settings.health_host).is_loopback
    assert services["consumer"]["command"] == ["run"]


def test_plan_configmap_is_the_repository_plan_mounted_where_the_plan_is_read() -> None:
    """The plan ConfigMap equals plans/default.yaml and sits at LIFECYCLE_PLAN.

    Regenerate deploy/k8s/plan.yaml (see kustomization.yaml) when the plan
    changes; this test is what notices that someone forgot.
    """
    (container,) = consumer_containers()
    plan_path = PurePosixPath(effective_settings(container_environment(container)).plan)
    pod = k8s_object("Deployment")["spec"]["template"]["spec"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/app/plans"]
    assert PurePosixPath(mount["mountPath"]) == plan_path.parent
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = k8s_object("ConfigMap", volume["configMap"]["name"])
    shipped = (REPO / "plans" / "default.yaml").read_text()
    assert plan_path.name in configmap["data"], "the mounted plan has another name"
    assert configmap["data"][plan_path.name] == shipped, (
        "deploy/k8s/plan.yaml differs from plans/default.yaml; regenerate it"
    )


def test_grace_period_covers_the_drain_in_both_deployments() -> None:
    """Kubernetes and compose give SIGTERM the same time, enough to drain.

    The drain finishes the batch, waits for the relay's round (Relay.stop's
    timeout, each request bounded by CRISP_TIMEOUT_S), then commits and
    closes; the grace period must cover that sum.
    """
    pod = k8s_object("Deployment")["spec"]["template"]["spec"]
    grace_s = pod["terminationGracePeriodSeconds"]
    compose_grace_s = seconds(compose()["services"]["consumer"]["stop_grace_period"])
    assert grace_s == compose_grace_s
    relay_stop_s = inspect.signature(Relay.stop).parameters["timeout_s"].default
    crisp_timeout_s = float(ENVIRONMENT["crisp_timeout_s"][1])
    assert grace_s >= relay_stop_s + crisp_timeout_s + DRAIN_ALLOWANCE_S


def test_replicas_stay_within_the_partitions_and_the_budget_selects_them() -> None:
    """Replicas never exceed the partitions the topics are created with.

    Both the default of `topics create` and the count compose passes to it
    bound the Deployment; rollouts do not surge past it; the disruption
    budget selects exactly the Deployment's pods.
    """
    deployment = k8s_object("Deployment")
    create = build_parser().parse_args(["topics", "create"])
    topics_command = compose()["services"]["topics"]["command"]
    compose_partitions = int(topics_command[topics_command.index("--partitions") + 1])
    replicas = deployment["spec"]["replicas"]
    assert 1 <= replicas <= min(create.partitions, compose_partitions)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = k8s_object("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert (
        deployment["spec"]["selector"]["matchLabels"]
        == budget["selector"]["matchLabels"]
    )
    assert budget.get("maxUnavailable") == 1
