"""/api/v1/orgs/{org}/image-builds: a build started, read, listed and cancelled through
the API, with the rules of clusters/services/builds.py (the builds themselves run in
tests/clusters/test_image_build_local.py)."""

from __future__ import annotations

import pytest

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clusters.choices import BuildState
from tests.conftest import Tenant

from .conftest import as_role, assert_error

pytestmark = pytest.mark.django_db
SPEC = {"requirements": ["humanize"], "post_build": ["python -c 'import humanize'"]}


def builds(tenant: Tenant, rest: str = "") -> str:
    return f"/orgs/{tenant.org.slug}/image-builds{rest}"


def test_start_read_list_and_cancel(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.ADMIN)
    created = client.post(builds(alpha), {"name": "ml", "cloud": str(alpha.cloud.pk), "spec": SPEC})
    assert created.status == 201, created.body
    build = created.body
    assert (build["state"], build["name"], build["image"]) == ("queued", "ml", None)
    assert build["spec"]["requirements"] == ["humanize"]
    one = builds(alpha, f"/{build['id']}")
    assert client.get(one).body["spec_hash"] == build["spec_hash"]
    listed = [b["id"] for b in client.get(builds(alpha)).body["items"]]
    assert listed == [build["id"], str(alpha.build.pk)]  # newest first
    assert client.get(one + "/log").body["state"] == "queued"
    cancelled = client.post(one + "/cancel")
    assert cancelled.status == 200, cancelled.body
    assert cancelled.body["state"] == BuildState.CANCELLED
    assert_error(client.post(one + "/cancel"), 422, "validation_error")
    verbs = set(AuditEvent.objects.values_list("verb", flat=True))
    assert {"image.build", "image.build.cancel"} <= verbs


def test_bad_specs_are_422_on_their_field(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.OWNER)
    cases = {
        "base": {"base": "nonsense"},
        "requirements": {"requirements": [f"p{i}" for i in range(5000)]},
        "containerfile": {"containerfile": "FROM ray\nCOPY . /app\n"},
    }
    for field, spec in cases.items():
        answer = client.post(
            builds(alpha), {"name": "x", "cloud": str(alpha.cloud.pk), "spec": spec}
        )
        assert_error(answer, 422, "validation_error")
        assert field in answer.body["error"]["details"], answer.body
    assert [b["name"] for b in client.get(builds(alpha)).body["items"]] == ["alpha build"]


def test_members_may_read_but_not_build(alpha: Tenant) -> None:
    body = {"name": "ml", "cloud": str(alpha.cloud.pk), "spec": SPEC}
    assert_error(as_role(alpha, OrgRole.MEMBER).post(builds(alpha), body), 403, "permission_denied")
    assert as_role(alpha, OrgRole.MEMBER).get(builds(alpha)).status == 200


def test_another_organizations_builds_and_clouds_are_not_found(
    alpha: Tenant, bravo: Tenant
) -> None:
    theirs = as_role(bravo, OrgRole.OWNER).post(
        builds(bravo), {"name": "ml", "cloud": str(bravo.cloud.pk), "spec": SPEC}
    )
    assert theirs.status == 201
    mine = as_role(alpha, OrgRole.OWNER)
    other = f"/{theirs.body['id']}"
    assert_error(mine.get(builds(alpha, other)), 404, "not_found")
    assert_error(mine.post(builds(alpha, other + "/cancel")), 404, "not_found")
    assert_error(mine.get(builds(bravo, other)), 404, "not_found")
    answer = mine.post(builds(alpha), {"name": "ml", "cloud": str(bravo.cloud.pk), "spec": SPEC})
    assert_error(answer, 422, "validation_error")
    assert "cloud" in answer.body["error"]["details"]
