"""The Helm chart, rendered offline with realistic values: every object valid for
Kubernetes 1.30, and the operational invariants read from the rendered objects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs
import kubernetes_validate  # type: ignore[import-untyped]  # no stubs
import pytest
import yaml  # type: ignore[import-untyped]  # no stubs

from tests.helm.chart import CHART, KUBE_VERSION, RELEASE, VALUES, Rendered, render, run

FULLNAME = f"{RELEASE}-tlsfleet"
VALUE_FILES = sorted(p.name for p in VALUES.glob("*.yaml"))
#: Custom resources kubernetes-validate has no schema for, and the API groups they need.
CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}


def _values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((VALUES / name).read_text())
    return loaded


@pytest.fixture(scope="module", params=VALUE_FILES)
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], Rendered]:
    """(values, rendered chart) for each realistic values file."""
    name: str = request.param
    return _values(name), render(values=[VALUES / name])


# -- every values file: valid objects, and the invariants ------------------------------------


def test_the_values_files_cover_the_deployments_we_document() -> None:
    assert set(VALUE_FILES) >= {
        "minimal.yaml",
        "production.yaml",
        "existing-secret.yaml",
        "keda.yaml",
        "networkpolicy-servicemonitor.yaml",
    }


def test_every_object_is_valid_for_kubernetes(case: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = case
    assert rendered.documents
    for doc in rendered.documents:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] == CUSTOM_KINDS[doc["kind"]]
            continue
        # strict: unknown fields are errors too
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_every_object_carries_the_standard_labels(case: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = case
    for doc in rendered.documents:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "tlsfleet"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "tlsfleet-0.1.0"


def test_every_pod_is_restricted(case: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = case
    pods = list(rendered.pod_specs())
    assert len(pods) >= 4  # api, worker, scheduler, migrate
    for where, pod in pods:
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["runAsUser"] != 0, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        tmp = {v["name"]: v for v in pod["volumes"]}["tmp"]
        assert "emptyDir" in tmp, where
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            # The root file system is read-only: /tmp (HOME, temporary files) is writable
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where
            resources = container["resources"]
            assert resources["requests"]["cpu"], where
            assert resources["requests"]["memory"], where
            assert resources["limits"]["memory"], where


def test_the_api_is_probed_on_healthz_and_readyz(case: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = case
    api = rendered.one("Deployment", f"{FULLNAME}-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "api"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    service = rendered.one("Service", f"{FULLNAME}-api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]


def test_one_scheduler_and_workers_without_cron(case: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = case
    scheduler = rendered.one("Deployment", f"{FULLNAME}-scheduler")
    assert scheduler["spec"]["replicas"] == 1
    assert scheduler["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = scheduler["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["scheduler"]
    worker = rendered.one("Deployment", f"{FULLNAME}-worker")
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["worker", "--no-cron"]
    # No disruption budget could ever let the single scheduler be evicted
    assert f"{FULLNAME}-scheduler" not in rendered.names("PodDisruptionBudget")
    assert rendered.names("PodDisruptionBudget") == {f"{FULLNAME}-api", f"{FULLNAME}-worker"}


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(
    case: tuple[dict[str, Any], Rendered],
) -> None:
    values, rendered = case
    job = rendered.one("Job", f"{FULLNAME}-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    (url,) = [e for e in container["env"] if e["name"] == "TLSFLEET_DATABASE_URL"]
    reference = url["valueFrom"]["secretKeyRef"]
    existing = values["database"].get("existingSecret")
    if existing:
        assert reference == {
            "name": existing,
            "key": values["database"].get("existingSecretKey", "database-url"),
        }
        assert f"{FULLNAME}-migrate" not in rendered.names("Secret")
    else:
        # A hook Secret made before the Job (the release's own Secret does not exist yet)
        hook_secret = rendered.one("Secret", reference["name"])
        secret_annotations = hook_secret["metadata"]["annotations"]
        assert secret_annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(secret_annotations["helm.sh/hook-weight"]) < int(
            annotations["helm.sh/hook-weight"]
        )
        assert hook_secret["stringData"][reference["key"]] == values["database"]["url"]


def _secret_values(values: dict[str, Any]) -> list[str]:
    found = [values.get(k, {}).get("url", "") for k in ("database", "redis")]
    found.append(values.get("bootstrapApiKey", {}).get("value", ""))
    return [v for v in found if v]


def test_no_secret_ends_up_in_a_configmap(case: tuple[dict[str, Any], Rendered]) -> None:
    values, rendered = case
    secrets = _secret_values(values)
    for config_map in rendered.of_kind("ConfigMap"):
        text = json.dumps(config_map)
        for secret in secrets:
            assert secret not in text
        for key in config_map["data"]:
            assert key not in {
                "TLSFLEET_DATABASE_URL",
                "TLSFLEET_REDIS_URL",
                "TLSFLEET_BOOTSTRAP_API_KEY",
            }
    # … nor in a pod's plain environment
    for where, pod in rendered.pod_specs():
        for container in pod["containers"]:
            for variable in container.get("env", []):
                for secret in secrets:
                    assert secret not in str(variable.get("value", "")), where


def test_secret_references_resolve(case: tuple[dict[str, Any], Rendered]) -> None:
    values, rendered = case
    own = {s["metadata"]["name"]: set(s.get("stringData", {})) for s in rendered.of_kind("Secret")}
    existing = {
        values[item]["existingSecret"]: values[item].get("existingSecretKey")
        for item in ("database", "redis", "bootstrapApiKey")
        if values.get(item, {}).get("existingSecret")
    }
    references = 0
    for where, pod in rendered.pod_specs():
        for container in pod["containers"]:
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference is None:
                    continue
                references += 1
                if reference["name"] in own:
                    assert reference["key"] in own[reference["name"]], where
                else:
                    assert reference["name"] in existing, where
    assert references >= 7  # database and Redis in api, worker, scheduler; the migration


def test_the_settings_reach_every_long_running_pod(case: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = case
    config_map = rendered.one("ConfigMap", FULLNAME)
    assert config_map["data"]["TLSFLEET_ALLOW_PRIVATE_TARGETS"] in {"true", "false"}
    json.loads(config_map["data"]["TLSFLEET_RESOLVERS"])  # pydantic-settings reads JSON
    for component in ("api", "worker", "scheduler"):
        deployment = rendered.one("Deployment", f"{FULLNAME}-{component}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
        checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        assert len(checksum) == 64


# -- what particular values switch -----------------------------------------------------------


def test_existing_secrets_replace_the_charts_secret() -> None:
    rendered = render(values=[VALUES / "existing-secret.yaml"])
    # No Secret of the chart's at all: every reference points at the operator's Secrets
    assert rendered.of_kind("Secret") == []
    api = rendered.one("Deployment", f"{FULLNAME}-api")
    env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TLSFLEET_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "tlsfleet-postgres",
        "key": "uri",
    }
    assert env["TLSFLEET_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "tlsfleet-redis",
        "key": "url",
    }
    assert env["TLSFLEET_BOOTSTRAP_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "tlsfleet-bootstrap",
        "key": "api-key",
    }


def test_inline_values_go_to_the_charts_secret() -> None:
    values = _values("production.yaml")
    rendered = render(values=[VALUES / "production.yaml"])
    secret = rendered.one("Secret", FULLNAME)
    assert secret["stringData"] == {
        "database-url": values["database"]["url"],
        "redis-url": values["redis"]["url"],
        "bootstrap-api-key": values["bootstrapApiKey"]["value"],
    }
    # Only the API stores the bootstrap key
    for component, expected in (("api", True), ("worker", False), ("scheduler", False)):
        deployment = rendered.one("Deployment", f"{FULLNAME}-{component}")
        names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert ("TLSFLEET_BOOTSTRAP_API_KEY" in names) is expected, component


def test_production_ingress_and_hpa_on_the_queue_depth() -> None:
    rendered = render(values=[VALUES / "production.yaml"])
    (ingress,) = rendered.of_kind("Ingress")
    assert ingress["spec"]["tls"] == [
        {"secretName": "tlsfleet-example-net-tls", "hosts": ["tlsfleet.example.net"]}
    ]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": f"{FULLNAME}-api", "port": {"name": "http"}}}
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-worker"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 30)
    external = hpa["spec"]["metrics"][0]["external"]
    assert external["metric"]["name"] == "tlsfleet_queue_depth"
    assert external["target"] == {"type": "AverageValue", "averageValue": "400"}
    # The autoscaler owns the worker count
    assert "replicas" not in rendered.one("Deployment", f"{FULLNAME}-worker")["spec"]
    assert rendered.of_kind("ScaledObject") == []


def test_keda_scales_workers_on_the_prometheus_queue_depth() -> None:
    rendered = render(values=[VALUES / "keda.yaml"])
    (scaled,) = rendered.of_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"name": f"{FULLNAME}-worker"}
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == "max(tlsfleet_queue_depth)"
    assert trigger["metadata"]["threshold"] == "300"
    assert rendered.of_kind("HorizontalPodAutoscaler") == []


def test_network_policies_and_monitors() -> None:
    rendered = render(values=[VALUES / "networkpolicy-servicemonitor.yaml"])
    policies = {p["metadata"]["name"]: p for p in rendered.of_kind("NetworkPolicy")}
    assert set(policies) == {f"{FULLNAME}-{c}" for c in ("api", "worker", "internal")}
    api = policies[f"{FULLNAME}-api"]["spec"]
    assert api["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    worker_egress = policies[f"{FULLNAME}-worker"]["spec"]["egress"]
    scan_ports = {p["port"] for rule in worker_egress for p in rule.get("ports", [])}
    assert {25, 465, 587, 993, 995, 143, 110, 443, 53, 5432, 6379} <= scan_ports
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    (pod_monitor,) = rendered.of_kind("PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_monitoring_and_network_policies_are_off_by_default() -> None:
    rendered = render(values=[VALUES / "minimal.yaml"])
    for kind in ("NetworkPolicy", "ServiceMonitor", "PodMonitor", "Ingress"):
        assert rendered.of_kind(kind) == [], kind


def test_without_the_scheduler_every_worker_runs_the_schedule() -> None:
    rendered = render("--set", "scheduler.enabled=false", values=[VALUES / "minimal.yaml"])
    assert f"{FULLNAME}-scheduler" not in rendered.names("Deployment")
    worker = rendered.one("Deployment", f"{FULLNAME}-worker")
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]


# -- Grafana dashboards ----------------------------------------------------------------------


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """The chart in a temporary directory, its dashboards/ emptied."""
    copy = tmp_path / "tlsfleet"
    shutil.copytree(CHART, copy)
    shutil.rmtree(copy / "dashboards", ignore_errors=True)
    return copy


def test_no_dashboards_no_configmap(chart_copy: Path) -> None:
    rendered = render(chart=chart_copy, values=[VALUES / "minimal.yaml"])
    assert f"{FULLNAME}-dashboards" not in rendered.names("ConfigMap")


def test_dashboards_reach_grafanas_sidecar(chart_copy: Path) -> None:
    sample = {"title": "sample", "panels": [{"type": "stat", "title": "queue"}]}
    (chart_copy / "dashboards").mkdir()
    (chart_copy / "dashboards" / "sample.json").write_text(json.dumps(sample))
    (chart_copy / "dashboards" / "notes.txt").write_text("not a dashboard")
    rendered = render(chart=chart_copy, values=[VALUES / "minimal.yaml"])
    config_map = rendered.one("ConfigMap", f"{FULLNAME}-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(config_map["data"]) == {"sample.json"}
    assert json.loads(config_map["data"]["sample.json"]) == sample
    kubernetes_validate.validate(config_map, KUBE_VERSION, strict=True)
    off = render(
        "--set",
        "grafanaDashboards.enabled=false",
        chart=chart_copy,
        values=[VALUES / "minimal.yaml"],
    )
    assert f"{FULLNAME}-dashboards" not in off.names("ConfigMap")


# -- values that must be refused, and why ----------------------------------------------------


def test_the_values_schema_is_a_valid_schema_that_accepts_the_defaults() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)


def test_the_defaults_alone_ask_for_postgresql() -> None:
    result = run()
    assert result.returncode != 0
    assert "tlsfleet needs PostgreSQL: set database.url" in result.stderr
    redis_missing = run("--set", "database.existingSecret=pg")
    assert "tlsfleet needs Redis: set redis.url" in redis_missing.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "api.replicas=two"], "api.replicas: Invalid type. Expected: integer"),
        (
            ["--set", "worker.autoscaling.type=cpu"],
            'worker.autoscaling.type must be one of the following: "hpa", "keda"',
        ),
        (["--set", "replicaCount=3"], "Additional property replicaCount is not allowed"),
        (
            ["--set", "securityContext.readOnlyRootFilesystem=false"],
            "securityContext.readOnlyRootFilesystem does not match: true",
        ),
        (["--set", "podSecurityContext.runAsNonRoot=false"], "podSecurityContext.runAsNonRoot"),
        (["--set", "config.perIpLimit=0"], "config.perIpLimit: Must be greater than or equal to 1"),
        (["--set", "config.nightlyCron=nightly"], "config.nightlyCron: Does not match pattern"),
        (["--set", "database.url=mysql://db/tlsfleet"], "database.url: Does not match pattern"),
        (["--set", "bootstrapApiKey.value=letmein"], "bootstrapApiKey.value: Does not match"),
        (["--set", "api.resources.limits=null"], "api.resources: limits is required"),
        (["--set", "config.extra.DEBUG=1"], "config.extra"),
        (
            ["--set", "worker.autoscaling.enabled=true,worker.autoscaling.maxReplicas=1"],
            "maxReplicas must not be below worker.autoscaling.minReplicas",
        ),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(arguments: list[str], message: str) -> None:
    result = run(*arguments, values=[VALUES / "minimal.yaml"])
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
