"""deploy/k8s and deploy/compose: valid (Kubernetes API schemas, strict; the compose
file's structure), and in agreement with each other and with the gateway itself:
flags and variables that exist, selectors that select, probes on the right port and
service, a shutdown that fits the grace period, a metric the gateway exports."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError

from infergate.gateway.server import INFERENCE_SERVICE
from infergate.settings import SETTING_SPECS
from infergate.telemetry import Metrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
# The oldest Kubernetes the manifests are meant for (grpc probes, preStop sleep) and
# the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
SERVE_FLAGS = {spec.flag for spec in SETTING_SPECS if spec.flag} | {"--port-file"}
ENV_NAMES = {spec.env for spec in SETTING_SPECS}


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def gateway_container() -> dict[str, Any]:
    (container,) = one("Deployment", "infergate")["spec"]["template"]["spec"]["containers"]
    return container


def flag_values(args: list[str]) -> dict[str, str]:
    values = {}
    for arg in args:
        if arg.startswith("--"):
            flag, _, value = arg.partition("=")
            values[flag] = value
    return values


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid_kubernetes(version: str) -> None:
    docs = manifests()
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validation_bites() -> None:
    deployment = copy.deepcopy(one("Deployment", "infergate"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_selectors_select_the_gateway_pods() -> None:
    labels = one("Deployment", "infergate")["spec"]["template"]["metadata"]["labels"]
    for doc in manifests():
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
        elif doc["kind"] in ("PodDisruptionBudget", "Deployment"):
            selector = doc["spec"]["selector"]["matchLabels"]
        else:
            continue
        if selector.get("app.kubernetes.io/component") == "gateway":
            assert selector.items() <= labels.items(), doc["metadata"]["name"]
    target = one("HorizontalPodAutoscaler", "infergate")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "infergate")


def test_the_gateway_is_started_with_real_flags_and_variables() -> None:
    container = gateway_container()
    assert container["args"][0] == "serve"
    assert set(flag_values(container["args"])) <= SERVE_FLAGS
    assert {e["name"] for e in container["env"]} <= ENV_NAMES


def test_probes_ask_the_grpc_port_and_the_inference_service() -> None:
    container = gateway_container()
    port = int(flag_values(container["args"])["--port"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == port
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": INFERENCE_SERVICE}
    assert container["startupProbe"]["grpc"]["port"] == port
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model loads
    assert "grpc" not in container["livenessProbe"]  # NOT_SERVING is not "restart me"


def test_the_shutdown_fits_in_the_grace_period() -> None:
    pod = one("Deployment", "infergate")["spec"]["template"]["spec"]
    container = gateway_container()
    flags = flag_values(container["args"])
    pre_stop_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The gateway's own drain on SIGTERM, where it has one (--drain-s).
    drain = [spec for spec in SETTING_SPECS if spec.name == "drain_s"]
    drain_s = float(flags.get("--drain-s", str(drain[0].default) if drain else "0"))
    grace_s = float(flags["--shutdown-grace-s"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + drain_s + grace_s + 5


def test_the_repository_and_redis_are_the_ones_defined_here() -> None:
    pod = one("Deployment", "infergate")["spec"]["template"]["spec"]
    (models,) = [v for v in pod["volumes"] if v["name"] == "models"]
    claim = one("PersistentVolumeClaim", models["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {m["name"]: m["mountPath"] for m in gateway_container()["volumeMounts"]}
    assert flag_values(gateway_container()["args"])["--model-repository"] == mounts["models"]
    env = {e["name"]: e["value"] for e in gateway_container()["env"]}
    found = re.fullmatch(r"redis://([^:/]+):(\d+)/\d+", env["INFERGATE_CACHE_REDIS_URL"])
    assert found is not None
    # The registry's events go through the same Redis (docs/scale-out.md).
    assert env["INFERGATE_REGISTRY_REDIS_URL"] == env["INFERGATE_CACHE_REDIS_URL"]
    host, port = found.groups()
    assert int(port) in [p["port"] for p in one("Service", host)["spec"]["ports"]]


def test_the_autoscaling_metric_comes_from_a_histogram_the_gateway_exports() -> None:
    hpa = one("HorizontalPodAutoscaler", "infergate")
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    readme = (K8S / "README.md").read_text()
    assert f'as: "{name}"' in readme
    sources = set(re.findall(r"(infergate_\w+?)_(?:sum|count)\b", readme))
    assert sources == {"infergate_queue_latency_seconds"}
    exported = {m.name for m in Metrics().registry.collect()}
    assert sources <= exported


# ---- compose ----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_compose_file_has_what_scale_out_needs() -> None:
    services = compose()["services"]
    assert {
        "gateway-1",
        "gateway-2",
        "haproxy",
        "redis",
        "otel-collector",
        "jaeger",
        "prometheus",
    } <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for needed in service.get("depends_on", []):
            assert needed in services, f"{name} depends on unknown {needed}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
    ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports)), "a host port published twice"


def test_compose_gateways_are_started_with_real_flags_and_share_redis_and_models() -> None:
    services = compose()["services"]
    gateways = [services["gateway-1"], services["gateway-2"]]
    assert gateways[0]["command"] == gateways[1]["command"]
    assert gateways[0]["command"][0] == "serve"
    assert set(flag_values(gateways[0]["command"])) <= SERVE_FLAGS
    for gateway in gateways:
        infergate_env = {k for k in gateway["environment"] if k.startswith("INFERGATE_")}
        assert infergate_env <= ENV_NAMES
        url = gateway["environment"]["INFERGATE_CACHE_REDIS_URL"]
        assert re.fullmatch(r"redis://redis:6379/0", url)
        assert gateway["environment"]["INFERGATE_REGISTRY_REDIS_URL"] == url
        assert any(v.endswith(":/models") for v in gateway["volumes"])
    check = gateways[0]["healthcheck"]["test"]
    compile(check[-1], "healthcheck", "exec")  # the python -c program parses


def test_compose_haproxy_points_at_the_replicas_with_the_shipped_config() -> None:
    services = compose()["services"]
    haproxy = services["haproxy"]
    used = set(re.findall(r"\$\{(\w+)-", HAPROXY_CONFIG.read_text()))
    assert set(haproxy["environment"]) == used
    for key in ("INFERGATE_GATEWAY_1", "INFERGATE_GATEWAY_2"):
        host, port = haproxy["environment"][key].split(":")
        assert host in services and port == "8001"
    assert any("haproxy.cfg" in v for v in haproxy["volumes"])
    scrape = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    targets = {
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert targets == {"gateway-1:8002", "gateway-2:8002", "haproxy:8404"}
