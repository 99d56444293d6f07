"""What a Serve config may say, checked before anything is written: the rules and the
one normal form (`{"applications": [...]}`) every version stores and every head gets."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from django.core.exceptions import ValidationError

MAX_CONFIG_BYTES = 64 * 1024
MAX_APPLICATIONS = 20
MAX_CANARY_STEPS = 10
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH = re.compile(rf"^{_IDENT}(\.{_IDENT})*(:{_IDENT}(\.{_IDENT})*)?$")
APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
APP_KEYS = {"name", "import_path", "route_prefix", "runtime_env", "args", "deployments"}
FIELD = "serve_config"


def _refuse(message: str) -> ValidationError:
    return ValidationError({FIELD: message})


def _application(raw: Any, index: int, count: int) -> dict[str, Any]:
    where = f"Application {index + 1}" if count > 1 else "The application"
    if not isinstance(raw, dict):
        raise _refuse(f"{where} must be an object with an import_path.")
    unknown = sorted(set(raw) - APP_KEYS)
    if unknown:
        raise _refuse(
            f"{where} has unknown keys: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(APP_KEYS))})."
        )
    import_path = raw.get("import_path")
    if not isinstance(import_path, str) or not import_path.strip():
        raise _refuse(f"{where} needs an import_path, e.g. my_module:app.")
    import_path = import_path.strip()
    if not IMPORT_PATH.match(import_path) or ("." not in import_path and ":" not in import_path):
        raise _refuse(
            f"{where}'s import_path {import_path!r} is not a Python import path: give "
            "module:attribute (e.g. my_app.main:app) or module.attribute."
        )
    name = raw.get("name", "default" if count == 1 else "")
    if not isinstance(name, str) or not APP_NAME.match(name):
        raise _refuse(f"{where} needs a name of letters, digits, '.', '_' or '-'.")
    route_prefix = raw.get("route_prefix", "/")
    if not isinstance(route_prefix, str) or not route_prefix.startswith("/"):
        raise _refuse(f"{where}'s route_prefix must start with '/', e.g. /{name}.")
    app: dict[str, Any] = {"name": name, "import_path": import_path, "route_prefix": route_prefix}
    for key in ("runtime_env", "args"):
        if key in raw:
            if not isinstance(raw[key], dict):
                raise _refuse(f"{where}'s {key} must be an object.")
            app[key] = raw[key]
    if "deployments" in raw:
        if not isinstance(raw["deployments"], list) or not all(
            isinstance(d, dict) and isinstance(d.get("name"), str) for d in raw["deployments"]
        ):
            raise _refuse(f"{where}'s deployments must be a list of objects with a name.")
        app["deployments"] = raw["deployments"]
    return app


def normalize_serve_config(raw: Any) -> dict[str, Any]:
    """The config as `{"applications": [...]}`; a single application may be given bare
    (`{"import_path": ...}`). ValidationError on the `serve_config` field otherwise."""
    if not isinstance(raw, dict) or not raw:
        raise _refuse("Give a Serve config: an import_path, or a list of applications.")
    if len(json.dumps(raw)) > MAX_CONFIG_BYTES:
        raise _refuse(f"The Serve config is larger than {MAX_CONFIG_BYTES // 1024} KB.")
    if "applications" in raw:
        unknown = sorted(set(raw) - {"applications"})
        if unknown:
            raise _refuse(
                f"Unknown keys next to applications: {', '.join(unknown)}. HTTP options are "
                "Raydeck's (the router sends to the head's Serve proxy)."
            )
        apps = raw["applications"]
    else:
        apps = [raw]
    if not isinstance(apps, list) or not apps:
        raise _refuse("applications must be a non-empty list.")
    if len(apps) > MAX_APPLICATIONS:
        raise _refuse(f"A service runs at most {MAX_APPLICATIONS} applications.")
    normal = [_application(app, i, len(apps)) for i, app in enumerate(apps)]
    for key in ("name", "route_prefix"):
        values = [app[key] for app in normal]
        if len(set(values)) != len(values):
            raise _refuse(f"Each application needs a {key.replace('_', ' ')} of its own.")
    return {"applications": normal}


def replica_spread(config: dict[str, Any], worker_nodes: int) -> dict[str, dict[str, int]]:
    """The `max_replicas_per_node` Raydeck sets, {application: {deployment: cap}}: for each
    deployment of a normal config that names a fixed num_replicas of 2 or more and no cap
    of its own, when the version's cluster always has `worker_nodes` >= 2 workers. With
    the cap, Serve cannot put every replica on one node, so a lost node leaves the others
    serving while the reconciler replaces it. Autoscaled deployments are left alone."""
    if worker_nodes < 2:
        return {}
    spread: dict[str, dict[str, int]] = {}
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            replicas = deployment.get("num_replicas")
            if (
                isinstance(replicas, bool)
                or not isinstance(replicas, int)
                or replicas < 2
                or "max_replicas_per_node" in deployment  # the user's own choice stands
            ):
                continue
            cap = -(-replicas // min(worker_nodes, replicas))  # ceil: every replica fits
            spread.setdefault(app["name"], {})[deployment["name"]] = cap
    return spread


def spread_config(config: dict[str, Any], worker_nodes: int) -> dict[str, Any]:
    """The normal config with replica_spread's caps written in: what a head deploys."""
    spread = replica_spread(config, worker_nodes)
    if not spread:
        return config
    apps = []
    for app in config["applications"]:
        caps = spread.get(app["name"], {})
        deployments = [
            {**d, "max_replicas_per_node": caps[d["name"]]} if d["name"] in caps else d
            for d in app.get("deployments", [])
        ]
        apps.append({**app, "deployments": deployments} if caps else app)
    return {**config, "applications": apps}


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def canary_steps_errors(steps: Any) -> str | None:
    """Why `steps` is not a rollout plan (rising percentages ending at 100), or None."""
    if (
        not isinstance(steps, list)
        or not steps
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
    ):
        return "Give the traffic steps as a list of percentages, e.g. [10, 50, 100]."
    if len(steps) > MAX_CANARY_STEPS:
        return f"Give at most {MAX_CANARY_STEPS} steps."
    if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
        return "Steps must rise from 1 to 100 and end at 100, e.g. [10, 50, 100]."
    return None
