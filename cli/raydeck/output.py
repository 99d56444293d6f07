"""How the CLI prints resources: `table` for people, `json` and `yaml` for scripts.

JSON and YAML print what the server sent (`raw`), every field; a list is printed as a
list even when it is empty, so `raydeck clusters list -o json | jq length` works. Tables
show the columns named here, one row per item, or one `key: value` line per field for
a single object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .models import Resource

FORMATS = ("table", "json", "yaml")
MAX_CELL = 60
_ISO_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]00:?00)?$")


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[dict[str, Any]], Any]


def col(header: str, key: str | None = None) -> Column:
    name = key or header.lower().replace(" ", "_")
    return Column(header, lambda raw: raw.get(name))


def _target(target: Any) -> Any:
    if isinstance(target, dict):
        return f"{target.get('type')} {target.get('repr') or target.get('id')}"
    return target


def _worker_summary(raw: dict[str, Any]) -> str:
    groups = raw.get("worker_groups") or []
    return ", ".join(f"{g.get('name')} {g.get('min')}-{g.get('max')}" for g in groups) or "-"


COLUMNS: dict[str, list[Column]] = {
    "orgs": [col("SLUG"), col("NAME"), col("ROLE")],
    "members": [
        Column("EMAIL", lambda r: (r.get("user") or {}).get("email")),
        col("ROLE"),
        col("JOINED", "joined_at"),
    ],
    "projects": [col("SLUG"), col("NAME"), col("DESCRIPTION"), col("CREATED", "created_at")],
    "clouds": [col("ID"), col("NAME"), col("KIND"), col("STATUS"), col("CREATED", "created_at")],
    "compute-configs": [
        col("ID"),
        col("NAME"),
        col("VERSION"),
        col("CLOUD"),
        col("PROJECT"),
        Column("WORKERS", _worker_summary),
    ],
    "images": [
        col("ID"),
        col("NAME"),
        col("RAY", "ray_version"),
        col("URI", "image_uri"),
        col("PYTHON", "python_executable"),
        col("BUILT IN"),
    ],
    "clusters": [
        col("ID"),
        col("NAME"),
        col("PROJECT"),
        col("STATE"),
        Column("CLOUD", lambda r: r.get("cloud_name") or r.get("cloud")),
        Column("CONFIG", lambda r: r.get("compute_config_name") or r.get("compute_config")),
        col("CREATED", "created_at"),
    ],
    "events": [
        col("AT"),
        col("LEVEL"),
        col("STEP"),
        col("MESSAGE"),
        Column("TOOK", lambda r: duration(r.get("duration_ms"))),
    ],
    "nodes": [
        col("ID"),
        col("ROLE"),
        col("GROUP"),
        col("STATE"),
        col("ADDRESS", "private_address"),
        col("PUBLIC", "public_address"),
        col("HEARTBEAT", "last_heartbeat_at"),
    ],
    "tokens": [
        col("ID"),
        col("NAME"),
        col("OWNER"),
        col("READ ONLY", "read_only"),
        col("EXPIRES", "expires_at"),
        col("LAST USED", "last_used_at"),
    ],
    "audit-events": [
        col("AT"),
        col("ACTOR"),
        col("ACTION"),
        Column("TARGET", lambda r: _target(r.get("target"))),
    ],
}


def duration(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def cell(value: Any) -> str:
    """One value as table text: times without the T and fraction, nothing as "-"."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        match = _ISO_TIME.match(value)
        if match:
            return f"{match.group(1)} {match.group(2)}"
        text = value
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    elif isinstance(value, list):
        text = ", ".join(cell(v) for v in value)
    else:
        text = str(value)
    text = " ".join(text.split())  # one line per row
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    cells = [[c.header for c in columns]] + [[cell(c.get(r)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def named(raw: dict[str, Any]) -> dict[str, Any]:
    """A reference and its name as one field for people: `cloud: prod (12)` rather
    than `cloud: 12` and a `cloud_name` line."""
    shown = {}
    for key, value in raw.items():
        name = raw.get(f"{key}_name")
        if key.endswith("_name") and key.removesuffix("_name") in raw:
            continue
        shown[key] = f"{name} ({value})" if name else value
    return shown


def fields(raw: dict[str, Any]) -> str:
    raw = named(raw)
    width = max((len(k) for k in raw), default=0)
    lines = []
    for key, value in raw.items():
        text = (
            json.dumps(value)
            if isinstance(value, dict | list) and value
            else cell(value)
            if not isinstance(value, str) or "\n" not in value
            else value
        )
        lines.append(f"{key.ljust(width)}  {text}")
    return "\n".join(lines)


def _plain(data: Any) -> Any:
    if isinstance(data, Resource):
        return data.raw
    if isinstance(data, list | tuple):
        return [_plain(item) for item in data]
    return data


def render(data: Any, fmt: str, kind: str | None = None) -> str:
    """`data` is a Resource, a list of them, or plain JSON-like data."""
    plain = _plain(data)
    if fmt == "json":
        return json.dumps(plain, indent=2, ensure_ascii=False)
    if fmt == "yaml":
        return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True).rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown output format {fmt!r}")
    if isinstance(plain, list):
        return table(plain, COLUMNS[kind] if kind else [])
    if isinstance(plain, dict):
        return fields(plain)
    return str(plain)
