"""Structural checks of deploy/: the compose file, the Helm chart's templates and the
Containerfile. Standard library and PyYAML; run by deploy/check.sh, prints one line per
failure and exits 1 if any.

What it can and cannot say: Helm is not installed here, so the chart is not rendered by
Helm. Each template is read as YAML with every `{{ ... }}` replaced by a placeholder
(the templates keep their expressions inside values so this is faithful), then checked
for what Kubernetes and this project require, and every `.Values.…` it reads must exist
in values.yaml. Neither file is checked against the full Kubernetes or Compose schemas.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
EXPRESSION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
IMAGE_COMMANDS = {"web", "worker", "beat", "migrate", "manage"}
SECRETS = {"DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "RAYDECK_ENCRYPTION_KEYS"}

failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")


def dig(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# --- compose ---------------------------------------------------------------------------


def check_compose() -> None:
    where = "deploy/compose.yaml"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose.get("services") or {}
    wanted = {"postgres", "redis", "migrate", "web", "worker", "beat"}
    if missing := wanted - set(services):
        fail(where, f"missing services {sorted(missing)}")
    for name, service in services.items():
        if not service.get("image"):
            fail(where, f"{name} has no image")
        for dependency in service.get("depends_on") or {}:
            if dependency not in services:
                fail(where, f"{name} depends on unknown service {dependency}")
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if "/" not in source and source not in (compose.get("volumes") or {}):
                fail(where, f"{name} uses undeclared volume {source}")
        if name in wanted - {"postgres", "redis"}:
            command = service.get("command") or []
            if not command or command[0] not in IMAGE_COMMANDS:
                fail(where, f"{name} runs {command}, not one of the image's commands")
            environment = service.get("environment") or {}
            if "DJANGO_SECRET_KEY" in environment:
                fail(where, f"{name} spells DJANGO_SECRET_KEY out instead of the env file")
    for name in ("web", "worker", "beat"):
        conditions = services.get(name, {}).get("depends_on") or {}
        if dig(conditions, "migrate", "condition") != "service_completed_successfully":
            fail(where, f"{name} does not wait for the migrations")
    if "/readyz" not in str(dig(services, "web", "healthcheck", "test")):
        fail(where, "web's healthcheck does not ask /readyz")


# --- Helm ------------------------------------------------------------------------------


def placeholders(text: str) -> str:
    return EXPRESSION.sub("placeholder", text)


def values_paths(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"\.Values\.([A-Za-z0-9_.]+)", text)}


def check_container(where: str, container: dict[str, Any]) -> None:
    if not container.get("name") or not container.get("image"):
        fail(where, "a container without a name or an image")
    args = container.get("args") or []
    if not args or args[0] not in IMAGE_COMMANDS:
        fail(where, f"container {container.get('name')} runs {args}, not an image command")
    for variable in container.get("env") or []:
        if variable.get("name") in SECRETS and "valueFrom" not in variable:
            fail(where, f"{variable['name']} is a literal, not from a Kubernetes Secret")
        ref = dig(variable, "valueFrom", "secretKeyRef")
        if variable.get("name") in SECRETS and not (ref and ref.get("name") and ref.get("key")):
            fail(where, f"{variable.get('name')} does not name a Secret and key")


def check_chart() -> None:
    chart = DEPLOY / "helm" / "raydeck"
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    if meta.get("apiVersion") != "v2" or not meta.get("name") or not meta.get("version"):
        fail("Chart.yaml", "needs apiVersion v2, a name and a version")
    values = yaml.safe_load((chart / "values.yaml").read_text())
    kinds: dict[str, list[dict[str, Any]]] = {}
    names: set[str] = set()
    for path in sorted((chart / "templates").glob("*.yaml")):
        where = f"templates/{path.name}"
        text = path.read_text()
        for dotted in values_paths(text):
            if dig(values, *dotted.split(".")) is None:
                fail(where, f".Values.{dotted} is not in values.yaml")
        try:
            manifest = yaml.safe_load(placeholders(text))
        except yaml.YAMLError as exc:
            fail(where, f"not YAML once its expressions are values: {exc}")
            continue
        for key in ("apiVersion", "kind"):
            if not manifest.get(key):
                fail(where, f"no {key}")
        if not dig(manifest, "metadata", "name"):
            fail(where, "no metadata.name")
        kinds.setdefault(manifest.get("kind", ""), []).append(manifest)
        names.add(path.stem)
        spec = manifest.get("spec") or {}
        pod = dig(spec, "template", "spec") or {}
        if manifest.get("kind") in ("Deployment", "Job"):
            if dig(pod, "securityContext", "runAsNonRoot") is not True:
                fail(where, "the pod may run as root")
            for container in pod.get("containers") or []:
                check_container(where, container)
        if manifest.get("kind") == "Deployment":
            selector = dig(spec, "selector", "matchLabels") or {}
            labels = dig(spec, "template", "metadata", "labels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                fail(where, "the selector does not match the pod's labels")
    deployments = {
        dig(d, "spec", "template", "metadata", "labels", "app.kubernetes.io/component"): d
        for d in kinds.get("Deployment", [])
    }
    for component in ("web", "worker", "beat"):
        if component not in deployments:
            fail("templates", f"no {component} Deployment")
    web = deployments.get("web")
    probe = (
        dig(
            (dig(web, "spec", "template", "spec", "containers") or [{}])[0],
            "readinessProbe",
            "httpGet",
            "path",
        )
        if web
        else None
    )
    if probe != "/readyz":
        fail("templates/web-deployment.yaml", "readiness is not probed on /readyz")
    if (beat := deployments.get("beat")) and dig(beat, "spec", "replicas") != 1:
        fail("templates/beat-deployment.yaml", "beat must be one replica")
    hooks = [str(dig(j, "metadata", "annotations", "helm.sh/hook")) for j in kinds.get("Job", [])]
    if not any("pre-upgrade" in h for h in hooks):
        fail("templates", "no migration Job on the pre-upgrade hook")
    targets = {
        dig(h, "spec", "scaleTargetRef", "name") for h in kinds.get("HorizontalPodAutoscaler", [])
    }
    for component in ("web", "worker"):
        if f"placeholder-{component}" not in targets:
            fail("templates", f"no HorizontalPodAutoscaler for the {component} Deployment")


# --- Containerfile ---------------------------------------------------------------------


def check_containerfile() -> None:
    where = "deploy/Containerfile"
    stages = re.split(r"(?m)^FROM ", (DEPLOY / "Containerfile").read_text())[1:]
    if len(stages) < 2:
        fail(where, "one stage: build tools would stay in the image")
        return
    final = stages[-1]
    users = re.findall(r"(?m)^USER\s+(\S+)", final)
    if not users or users[-1] in ("0", "root"):
        fail(where, "the final stage runs as root")
    for tool in ("build-essential", "gcc", "python3-dev", "-dev "):
        if tool in final:
            fail(where, f"the final stage installs {tool.strip()}")
    for command in IMAGE_COMMANDS:
        if f"  {command})" not in (DEPLOY / "entrypoint.sh").read_text():
            fail("deploy/entrypoint.sh", f"no {command} command")


if __name__ == "__main__":
    check_compose()
    check_chart()
    check_containerfile()
    for line in failures:
        print(f"FAIL {line}")
    print(f"deploy/: {len(failures)} problem(s)" if failures else "deploy/: structure OK")
    sys.exit(1 if failures else 0)
