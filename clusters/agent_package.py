"""The `raydeck-agent` wheel that AWS and GCP nodes install at boot from the control plane
(`pip install --index-url <RAYDECK_AGENT_URL>/agent/v1/simple/ raydeck-agent`).

Built once per process from the agent's sources (agent/pyproject.toml for the metadata,
agent/raydeck_agent/ for the code): a pure-Python wheel needs no build tool, only a zip
with the package, METADATA, WHEEL, entry_points.txt and a RECORD of hashes. The zip is
byte-for-byte the same in every process (sorted entries, fixed timestamps and modes), so
the hash one web process puts in the index matches the file another one serves.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import re
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

AGENT_SOURCE = "agent"  # below BASE_DIR
PROJECT_NAME = "raydeck-agent"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: no build time leaks in


@dataclass(frozen=True)
class Wheel:
    filename: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def normalize(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _metadata(project: dict, readme: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
    ]
    licence = project.get("license")  # an SPDX string, or the older {text = ...} table
    if isinstance(licence, dict):
        licence = licence.get("text")
    if licence:
        lines.append(f"License: {licence}")
    if requires := project.get("requires-python"):
        lines.append(f"Requires-Python: {requires}")
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    if readme:
        lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + readme


def build_wheel(source: Path) -> Wheel:
    """A py3-none-any wheel of the agent package in `source` (its pyproject.toml folder)."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    readme_path = source / project.get("readme", "README.md")
    readme = readme_path.read_text() if readme_path.is_file() else ""
    dist = project["name"].replace("-", "_")
    version = project["version"]
    info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {}
    package = source / "raydeck_agent"
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" not in path.parts:
            files[path.relative_to(source).as_posix()] = path.read_bytes()
    files[f"{info}/METADATA"] = _metadata(project, readme).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: raydeck\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    scripts = project.get("scripts", {})
    if scripts:
        entries = "".join(f"{name} = {target}\n" for name, target in sorted(scripts.items()))
        files[f"{info}/entry_points.txt"] = f"[console_scripts]\n{entries}".encode()
    files[f"{info}/top_level.txt"] = b"raydeck_agent\n"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data, compresslevel=9)
    return Wheel(filename=f"{dist}-{version}-py3-none-any.whl", data=buffer.getvalue())


@functools.cache
def agent_wheel() -> Wheel:
    """The agent's wheel, built on first use and kept for the life of the process."""
    return build_wheel(Path(settings.BASE_DIR) / AGENT_SOURCE)
