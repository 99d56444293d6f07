"""/api/v1/orgs/{org}/images: an organization's own images made, read, changed and
deleted through the API, with the same rules as the console (clusters/services/images.py)."""

from __future__ import annotations

import pytest

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clusters.choices import ClusterState
from clusters.models import ContainerImage
from tests.conftest import Tenant
from tests.factories import CONTAINER_IMAGE, ClusterFactory, ContainerImageFactory

from .conftest import as_role, assert_error

pytestmark = pytest.mark.django_db


def images(tenant: Tenant, rest: str = "") -> str:
    return f"/orgs/{tenant.org.slug}/images{rest}"


def test_create_get_change_and_delete(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.ADMIN)
    created = client.post(images(alpha), CONTAINER_IMAGE)
    assert created.status == 201, created.body
    image = created.body
    assert {k: image[k] for k in CONTAINER_IMAGE} == CONTAINER_IMAGE
    assert (image["built_in"], image["python_executable"]) == (False, "")
    assert image["created_at"].endswith("Z")
    one = images(alpha, f"/{image['id']}")
    assert client.get(one).body == image
    listed = client.get(images(alpha)).body["items"]
    assert image in listed and any(i["name"] == "alpha python" for i in listed)

    changed = client.patch(one, {"name": "acme ray 2", "aws_amis": {}})
    assert changed.status == 200, changed.body
    assert (changed.body["name"], changed.body["aws_amis"]) == ("acme ray 2", {})
    assert changed.body["image_uri"] == CONTAINER_IMAGE["image_uri"]  # what was not sent stays

    deleted = client.delete(one)
    assert (deleted.status, deleted.body) == (204, None)
    assert_error(client.get(one), 404, "not_found")
    verbs = AuditEvent.objects.filter(verb__startswith="image.").values_list("verb", flat=True)
    assert sorted(verbs) == ["image.create", "image.delete", "image.update"]


def test_ray_version_defaults_to_the_built_in_ones(alpha: Tenant) -> None:
    from clusters.services.defaults import ray_version

    body = {"name": "local", "python_executable": "/opt/ray/bin/python3"}
    answer = as_role(alpha, OrgRole.OWNER).post(images(alpha), body)
    assert answer.status == 201, answer.body
    assert answer.body["ray_version"] == ray_version()


def test_built_in_images_are_listed_and_read_only(alpha: Tenant) -> None:
    built_in = ContainerImageFactory(name="Ray 2.40.0", image_uri="rayproject/ray:2.40.0")
    client = as_role(alpha, OrgRole.OWNER)
    one = images(alpha, f"/{built_in.pk}")
    answer = client.get(one)
    assert answer.status == 200 and answer.body["built_in"] is True
    for refused in (client.patch(one, {"name": "mine"}), client.delete(one)):
        assert_error(refused, 403, "permission_denied")
        assert "built-in images cannot be changed" in refused.body["error"]["message"]
    built_in.refresh_from_db()
    assert built_in.name == "Ray 2.40.0"


@pytest.mark.parametrize("role", [OrgRole.MEMBER, OrgRole.VIEWER])
def test_members_and_viewers_tokens_read_but_may_not_change(alpha: Tenant, role: str) -> None:
    client = as_role(alpha, role)
    one = images(alpha, f"/{alpha.image.pk}")
    assert client.get(one).status == 200
    for refused in (
        client.post(images(alpha), CONTAINER_IMAGE),
        client.patch(one, {"name": "x"}),
        client.delete(one),
    ):
        assert_error(refused, 403, "permission_denied")
    assert ContainerImage.objects.filter(organization=alpha.org).count() == 1
    assert ContainerImage.objects.get(pk=alpha.image.pk).name == "alpha python"


def test_a_read_only_admin_token_may_not_change(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.ADMIN, read_only=True)
    assert_error(client.post(images(alpha), CONTAINER_IMAGE), 403, "permission_denied")
    assert_error(client.delete(images(alpha, f"/{alpha.image.pk}")), 403, "permission_denied")


def test_another_organizations_images_are_404(alpha: Tenant, bravo: Tenant) -> None:
    client = as_role(bravo, OrgRole.OWNER)
    for path in (images(alpha, f"/{alpha.image.pk}"), images(bravo, f"/{alpha.image.pk}")):
        assert_error(client.get(path), 404, "not_found")
        assert_error(client.patch(path, {"name": "pwned"}), 404, "not_found")
        assert_error(client.delete(path), 404, "not_found")
    assert_error(client.post(images(alpha), CONTAINER_IMAGE), 404, "not_found")
    assert_error(client.get(images(bravo, "/not-a-number")), 404, "not_found")
    listed = client.get(images(bravo)).body["items"]
    assert "alpha python" not in {i["name"] for i in listed}
    assert ContainerImage.objects.get(pk=alpha.image.pk).name == "alpha python"


def test_mistakes_are_validation_errors_on_their_field(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.ADMIN)
    answer = client.post(images(alpha), {**CONTAINER_IMAGE, "aws_amis": {"us-east-1": "ubuntu"}})
    assert_error(answer, 422, "validation_error")
    assert "Give one AMI per region" in answer.body["error"]["details"]["aws_amis"][0]
    answer = client.post(images(alpha), {**CONTAINER_IMAGE, "name": "alpha python"})
    assert_error(answer, 422, "validation_error")
    assert answer.body["error"]["details"] == {
        "name": ["An image named alpha python already exists in this organization."]
    }
    answer = client.post(images(alpha), {"name": "nothing"})
    assert_error(answer, 422, "validation_error")
    assert "Give an image URI" in answer.body["error"]["details"]["__all__"][0]
    answer = client.post(images(alpha), {"image_uri": "x"})
    assert_error(answer, 422, "validation_error")
    assert "name" in answer.body["error"]["details"]
    one = images(alpha, f"/{alpha.image.pk}")
    answer = client.patch(one, {"name": None})
    assert_error(answer, 422, "validation_error")
    assert "name" in answer.body["error"]["details"]
    answer = client.patch(one, {"ray_version": "latest"})
    assert answer.body["error"]["details"] == {
        "ray_version": ["Give a Ray version such as 2.40.0."]
    }
    assert ContainerImage.objects.filter(organization=alpha.org).count() == 1


def test_an_image_live_clusters_use_is_a_conflict_to_delete(alpha: Tenant) -> None:
    ClusterFactory(
        project=alpha.project, cloud=alpha.cloud, image=alpha.image, state=ClusterState.RUNNING
    )
    client = as_role(alpha, OrgRole.OWNER)
    one = images(alpha, f"/{alpha.image.pk}")
    answer = client.delete(one)
    assert_error(answer, 409, "conflict")
    assert "Terminate them first" in answer.body["error"]["message"]
    answer = client.patch(one, {"python_executable": "/opt/other/python"})
    assert_error(answer, 422, "validation_error")
    assert "cannot change" in answer.body["error"]["details"]["__all__"][0]
    assert client.patch(one, {"name": "renamed"}).status == 200


def test_an_idempotency_key_makes_one_image(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.ADMIN)
    first = client.post(images(alpha), CONTAINER_IMAGE, **{"Idempotency-Key": "image-1"})
    again = client.post(images(alpha), CONTAINER_IMAGE, **{"Idempotency-Key": "image-1"})
    assert first.status == again.status == 201
    assert first.body == again.body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert ContainerImage.objects.filter(organization=alpha.org, name="acme ray").count() == 1
