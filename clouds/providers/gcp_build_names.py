"""The names of what a GCP cloud's image builds use (gcp_builds.py), apart from the
Google clients, so the setup commands (clouds/policies.py) name them without loading
them."""

from __future__ import annotations

import uuid


def repository_id(cloud_id: uuid.UUID) -> str:
    return f"raydeck-{cloud_id}"


def build_service_account(project_id: str, cloud_id: uuid.UUID) -> str:
    return f"raydeck-builds-{str(cloud_id)[:8]}@{project_id}.iam.gserviceaccount.com"


def log_folder(log_location: str, cloud_id: uuid.UUID) -> str:
    """The folder of the cloud's bucket its build logs go to (under its log location)."""
    prefix = log_location[5:].partition("/")[2].strip("/")
    return "/".join(p for p in (prefix, "raydeck-builds", str(cloud_id)) if p)


def build_tag(build_id: uuid.UUID) -> str:
    return f"raydeck-build-{build_id.hex}"
