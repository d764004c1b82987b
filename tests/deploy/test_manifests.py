"""Static checks of deploy/ (Docker and Kubernetes cannot run on the CI machine): compose, the
Kubernetes manifests, the Dockerfile and the Grafana dashboard are consistent with each other
and with the code: real settings, real routes, pinned images, matching selectors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from ragline.api.app import build_app
from ragline.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"

# Served by the metrics endpoint, which is not part of the OpenAPI schema.
EXTRA_ROUTES = {"/metrics"}

INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
PROBE_URL = re.compile(r"https?://[\w.\-]+(?::\d+)?(/[\w/\-.]*)")


# --------------------------------------------------------------------------- helpers ---------


def setting_names(model: type[BaseModel] = Settings, prefix: str = "RAGLINE_") -> set[str]:
    """Every environment variable Settings reads: nested sections joined with `__`."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_names(annotation, f"{prefix}{field_name.upper()}__")
        else:
            names.add(f"{prefix}{field_name.upper()}")
    return names


@cache
def app_routes() -> frozenset[str]:
    """Paths of the FastAPI app (built without starting it: no models, no database)."""
    paths = build_app(Settings()).openapi()["paths"]
    return frozenset(paths) | EXTRA_ROUTES


def with_defaults(value: str) -> str:
    """Compose interpolation as the file's defaults resolve it (`${X:?}` becomes `<X>`)."""
    return INTERPOLATION.sub(
        lambda m: m.group(3) if m.group(2) in (":-", "-") else f"<{m.group(1)}>", value
    )


def image_is_pinned(image: str) -> bool:
    """A digest, or a tag that is not `latest` (a registry port is not a tag)."""
    if "@sha256:" in image:
        return True
    _, _, last = image.rpartition("/")
    _, colon, tag = last.partition(":")
    return bool(colon and tag and tag != "latest")


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def env_mapping(env: dict[str, Any] | list[str] | None) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, list):
        return {key: value for key, _, value in (item.partition("=") for item in env)}
    return {key: str(value) for key, value in env.items()}


@cache
def k8s_documents() -> tuple[dict[str, Any], ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return tuple(docs)


def k8s(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in k8s_documents() if doc["kind"] == kind]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in k8s("Deployment") + k8s("Job"):
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs():
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{name}/{container['name']}", container


def probes() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, container in containers():
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if kind in container:
                yield name, kind, container[kind]


def is_ragline(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("ragline:")


# --------------------------------------------------------------------------- compose ---------


def test_setting_names_come_from_the_settings_model() -> None:
    """The walker finds top-level and nested settings (a guard for the checks below)."""
    names = setting_names()
    assert {
        "RAGLINE_DATABASE_URL",
        "RAGLINE_LLM__BASE_URL",
        "RAGLINE_SERVER__EMBEDDED_WORKER",
    } <= names
    assert "RAGLINE_LLM" not in names


def test_compose_dependencies_exist_and_share_profiles() -> None:
    """depends_on names services that exist and run whenever the dependant runs."""
    for name, service in services().items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services(), f"{name} depends on unknown {dependency}"
            needed = services()[dependency].get("profiles")
            assert not needed or set(service.get("profiles", [])) <= set(needed), (
                f"{name} depends on {dependency}, which only runs in profiles {needed}"
            )


def test_compose_ragline_variables_are_real_settings() -> None:
    """Every RAGLINE_* variable given to a container is a setting ragline reads."""
    valid = setting_names()
    for name, service in services().items():
        unknown = {
            k for k in env_mapping(service.get("environment")) if k.startswith("RAGLINE_")
        } - valid
        assert not unknown, f"{name}: not ragline settings: {unknown}"


def test_compose_api_and_worker_are_set_up_for_scale_out() -> None:
    """Two api replicas without embedded workers, a worker service, and shared backends."""
    api, worker = services()["ragline-api"], services()["ragline-worker"]
    assert api["deploy"]["replicas"] == 2
    assert api["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert env_mapping(api["environment"])["RAGLINE_SERVER__EMBEDDED_WORKER"] == "false"
    assert worker["command"][0] == "worker"
    env = env_mapping(api["environment"])
    assert env["RAGLINE_INDEX__URL"] == "http://qdrant:6333"
    assert env["RAGLINE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["RAGLINE_CACHE__REDIS_URL"].startswith("redis://")
    assert env["RAGLINE_LLM__BASE_URL"] == "http://llm:8000/v1"


def test_compose_llm_profiles_both_answer_as_llm() -> None:
    """gpu runs vLLM, cpu runs Ollama, both under the alias and port ragline is given."""
    for name, profile in (("vllm", "gpu"), ("ollama", "cpu")):
        service = services()[name]
        assert service["profiles"] == [profile]
        assert "llm" in service["networks"]["default"]["aliases"]
    assert "--port=8000" in services()["vllm"]["command"]
    assert services()["ollama"]["environment"]["OLLAMA_HOST"].endswith(":8000")


def test_compose_images_are_pinned() -> None:
    """Every image names a version (no `latest`, no bare name)."""
    for name, service in services().items():
        image = with_defaults(service["image"])
        assert image_is_pinned(image), f"{name}: {service['image']} is not pinned"


def test_compose_services_have_health_checks_and_limits() -> None:
    """Long-running services have a health check; one-shots disable it explicitly. All have
    CPU and memory limits."""
    for name, service in services().items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if check.get("disable"):
            assert service.get("restart") == "no", f"{name}: only one-shots may skip it"
        else:
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        limits = service["deploy"]["resources"]["limits"]
        assert {"cpus", "memory"} <= set(limits), f"{name} has no cpu/memory limits"


def test_compose_ragline_health_checks_hit_real_routes() -> None:
    """The ragline containers probe routes the FastAPI app (or the metrics endpoint) serves."""
    checked = 0
    for name, service in services().items():
        if not is_ragline(service) or service["healthcheck"].get("disable"):
            continue
        paths = PROBE_URL.findall(" ".join(service["healthcheck"]["test"]))
        assert paths, f"{name}: health check names no URL"
        assert set(paths) <= app_routes(), f"{name}: {paths} not served"
        checked += 1
    assert checked == 2  # api and worker


def test_compose_secrets_come_from_the_environment() -> None:
    """Secret-looking values are `${VAR:?}` interpolations (or optional and empty by default),
    never literals in the file."""
    secret = re.compile(
        r"PASSWORD|SECRET|REDIS\w*_AUTH$|ENCRYPTION_KEY|SALT|DATABASE_URL|REDIS_URL"
    )
    for name, service in services().items():
        for key, value in env_mapping(service.get("environment")).items():
            if not secret.search(key):
                continue
            found = INTERPOLATION.findall(value)
            assert found, f"{name}: {key} is a literal"
            for _, operator, default in found:
                assert operator == ":?" or default == "", f"{name}: {key} has a default secret"


def test_compose_files_and_volumes_it_mounts_exist() -> None:
    """Bind mounts point at files in deploy/, named volumes are declared, the build finds its
    Dockerfile."""
    declared = set(compose()["volumes"])
    for name, service in services().items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name


def test_compose_prometheus_and_grafana_are_provisioned() -> None:
    """Prometheus loads deploy/prometheus (config + alerts); Grafana gets the datasource and
    the dashboard folder its provider reads."""
    assert "./prometheus:/etc/prometheus:ro" in services()["prometheus"]["volumes"]
    provider_file = DEPLOY / "compose/grafana/provisioning/dashboards/ragline.yml"
    provider = yaml.safe_load(provider_file.read_text())["providers"][0]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in services()["grafana"]["volumes"]}
    assert mounts["./grafana"] == provider["options"]["path"]
    datasource_file = DEPLOY / "compose/grafana/provisioning/datasources/prometheus.yml"
    datasource = yaml.safe_load(datasource_file.read_text())["datasources"][0]
    assert datasource["isDefault"] and datasource["url"] == "http://prometheus:9090"


# --------------------------------------------------------------------------- kubernetes ------


def test_k8s_objects_are_well_formed() -> None:
    """Every object has apiVersion, kind and metadata.name, all in one namespace."""
    assert k8s_documents()
    for doc in k8s_documents():
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "ragline", doc["metadata"]["name"]


def test_k8s_selectors_match_pod_labels() -> None:
    """Deployment, Service and PodDisruptionBudget selectors select the pods they mean to."""
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in k8s("Deployment")
    }

    def selects(selector: dict[str, str]) -> set[str]:
        return {name for name, labels in pods.items() if selector.items() <= labels.items()}

    for deployment in k8s("Deployment"):
        name = deployment["metadata"]["name"]
        assert selects(deployment["spec"]["selector"]["matchLabels"]) == {name}
    for service in k8s("Service"):
        assert selects(service["spec"]["selector"]) == {"ragline-api"}
    for budget in k8s("PodDisruptionBudget"):
        assert selects(budget["spec"]["selector"]["matchLabels"]) == {budget["metadata"]["name"]}


def test_k8s_hpa_scales_the_api_on_cpu() -> None:
    """The autoscaler targets the api Deployment, on CPU, from at least 2 replicas."""
    (hpa,) = k8s("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    names = {d["metadata"]["name"] for d in k8s("Deployment")}
    assert (target["kind"], target["name"]) == ("Deployment", "ragline-api") and target[
        "name"
    ] in names
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_k8s_api_probes_use_healthz_and_readyz() -> None:
    """api: liveness on /healthz, readiness on /readyz; every probe hits a real route."""
    found = {(name, kind): probe["httpGet"]["path"] for name, kind, probe in probes()}
    assert found[("ragline-api/api", "livenessProbe")] == "/healthz"
    assert found[("ragline-api/api", "readinessProbe")] == "/readyz"
    assert set(found.values()) <= app_routes(), found


def test_k8s_pods_run_as_non_root_with_resources() -> None:
    """Pods refuse root, containers cannot escalate, and each has requests and limits."""
    for name, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
    for name, container in containers():
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
        assert image_is_pinned(container["image"]), f"{name}: {container['image']}"


def test_k8s_ragline_variables_are_real_settings() -> None:
    """ConfigMap and Secret keys and container env names are settings ragline reads."""
    valid = setting_names()
    names = {key for cm in k8s("ConfigMap") for key in cm["data"]}
    names |= {key for secret in k8s("Secret") for key in secret["stringData"]}
    names |= {env["name"] for _, container in containers() for env in container.get("env", [])}
    assert names - valid == set()
    assert all(name.startswith("RAGLINE_") for name in names)


def test_k8s_env_sources_exist_and_secrets_are_placeholders() -> None:
    """envFrom names objects in the manifests; the Secret only holds CHANGE_ME placeholders."""
    config_maps = {cm["metadata"]["name"] for cm in k8s("ConfigMap")}
    secrets = {s["metadata"]["name"] for s in k8s("Secret")}
    for name, container in containers():
        for source in container["envFrom"]:
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps, name
            else:
                assert source["secretRef"]["name"] in secrets, name
    for secret in k8s("Secret"):
        for key, value in secret["stringData"].items():
            assert "CHANGE_ME" in value, f"{key} looks like a real secret"


# --------------------------------------------------------------------------- image, dashboard


def dockerfile_stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([])
        if line and not line.startswith("#"):
            stages[-1].append(line)
    return stages


def test_dockerfile_runs_the_ragline_script_as_non_root() -> None:
    """Final stage: python:3.11-slim, a non-root USER, ENTRYPOINT the `ragline` script, and
    only real settings in ENV."""
    final = dockerfile_stages()[-1]
    assert final[0] == "FROM python:3.11-slim"
    assert any(
        line.startswith("RUN") and "pip install ." in line for line in dockerfile_stages()[0]
    )
    (user,) = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user.split(":")[0] not in ("0", "root")
    (entrypoint,) = [
        json.loads(line.split(None, 1)[1]) for line in final if line.startswith("ENTRYPOINT")
    ]
    assert entrypoint == ["ragline"]
    env = " ".join(line for line in final if line.startswith("ENV "))
    assert set(re.findall(r"\bRAGLINE_\w+(?==)", env)) <= setting_names()


def test_dockerfile_health_check_hits_a_real_route() -> None:
    """The image's own HEALTHCHECK probes a route the app serves."""
    (check,) = [line for line in dockerfile_stages()[-1] if line.startswith("HEALTHCHECK")]
    assert set(PROBE_URL.findall(check)) <= app_routes() and PROBE_URL.findall(check)


def test_dashboard_is_provisioning_ready() -> None:
    """Valid JSON, a stable uid, every panel on the DS_PROMETHEUS variable (also an import
    input), no two panels with the same id."""
    dashboard = json.loads((DEPLOY / "grafana" / "ragline.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", sorted(p.name for p in K8S.glob("*.yaml")))
def test_k8s_files_parse(path: str) -> None:
    """Each manifest file is valid YAML with at least one object."""
    assert [doc for doc in yaml.safe_load_all((K8S / path).read_text()) if doc]
