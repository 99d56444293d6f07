"""Working directories through the API, stored in the local cloud's folder (the real
local driver; its storage is served by the control plane through signed URLs)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from tests.api.conftest import as_role, assert_error
from tests.conftest import Tenant
from workloads.models import WorkingDir

pytestmark = pytest.mark.django_db

ZIP = b"PK\x05\x06" + b"\0" * 18  # an empty zip archive


@pytest.fixture(autouse=True)
def _local_root(settings: Any, tmp_path: Path) -> None:
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path


def ask(tenant: Tenant, body: bytes = ZIP, role: str = OrgRole.MEMBER, **extra: Any) -> Any:
    payload = {
        "project": tenant.project.slug,
        "sha256": hashlib.sha256(body).hexdigest(),
        "size": len(body),
        **extra,
    }
    return as_role(tenant, role).post(f"/orgs/{tenant.org.slug}/working-dirs", payload)


def put(url: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    parts = urlsplit(url)
    return Client().put(
        f"{parts.path}?{parts.query}", body, content_type="application/zip", headers=headers
    )


def test_the_same_tree_is_uploaded_once(alpha: Tenant, tmp_path: Path) -> None:
    first = ask(alpha)
    assert first.status == 200, first.body
    assert first.body["uploaded"] is False
    upload = first.body["upload"]
    assert upload["method"] == "PUT"
    assert put(upload["url"], ZIP).status_code == 200
    stored = list(tmp_path.rglob("*.zip"))
    assert [p.read_bytes() for p in stored] == [ZIP]

    again = ask(alpha)
    assert again.status == 200
    assert again.body == {**first.body, "uploaded": True, "upload": None}
    assert WorkingDir.objects.get().uploaded_at is not None
    assert AuditEvent.objects.filter(verb="working_dir.create").count() == 1


def test_an_over_size_tree_is_refused_before_upload_with_the_limit(
    alpha: Tenant, settings: Any
) -> None:
    settings.RAYDECK_WORKDIR_MAX_BYTES = 10
    answer = ask(alpha)
    assert_error(answer, 422, "validation_error")
    assert "the limit is 10 bytes" in answer.body["error"]["details"]["size"][0]
    assert WorkingDir.objects.count() == 0


def test_an_upload_url_is_for_one_object_of_one_cloud(alpha: Tenant, bravo: Tenant) -> None:
    url = ask(alpha).body["upload"]["url"]
    parts = urlsplit(url)
    other_key = parts.path.replace(".zip", "0.zip")
    assert Client().put(f"{other_key}?{parts.query}", ZIP).status_code == 403
    assert bravo.cloud is not None and alpha.cloud is not None
    other_cloud = parts.path.replace(str(alpha.cloud.uuid), str(bravo.cloud.uuid))
    assert Client().put(f"{other_cloud}?{parts.query}", ZIP).status_code == 403
    # A download link is not an upload link, nor the other way round.
    assert Client().get(f"{parts.path}?{parts.query}").status_code == 403
    # A body other than the one signed for is refused and stores nothing.
    assert put(url, ZIP[:-1] + b"x").status_code == 400
    assert ask(alpha).body["uploaded"] is False


def test_an_upload_url_expires(alpha: Tenant, time_machine: Any) -> None:
    time_machine.move_to(time.time(), tick=True)
    url = ask(alpha).body["upload"]["url"]
    time_machine.shift(16 * 60)
    answer = put(url, ZIP)
    assert answer.status_code == 403
    assert "expired" in answer.json()["error"]["message"]


def test_bad_input_names_its_field_and_creates_nothing(alpha: Tenant, bravo: Tenant) -> None:
    assert bravo.cloud is not None
    cases = [
        ({"sha256": "nothex"}, "sha256"),
        ({"size": 0}, "size"),
        ({"project": "nope"}, "project"),
        ({"cloud": str(bravo.cloud.pk)}, "cloud"),
    ]
    for extra, field in cases:
        answer = ask(alpha, **extra)
        assert_error(answer, 422, "validation_error")
        assert field in answer.body["error"]["details"], (extra, answer.body)
    assert WorkingDir.objects.count() == 0


def test_viewers_may_not_upload(alpha: Tenant) -> None:
    assert_error(ask(alpha, role=OrgRole.VIEWER), 403, "permission_denied")
    assert WorkingDir.objects.count() == 0
