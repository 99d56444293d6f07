"""An organization's own images: owners and admins create, change and delete them; the
built-in ones are nobody's to change; an image live clusters use keeps what it runs and
cannot be deleted; clusters that ended keep naming theirs; every change is audited. And
the console pages that do all that."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clusters.choices import ClusterState, DesiredState
from clusters.forms import parse_amis
from clusters.models import Cluster, ContainerImage
from clusters.services import lifecycle
from clusters.services.images import image_create, image_delete, image_update
from tests.conftest import Tenant, activate, client_for
from tests.factories import (
    AMI,
    CONTAINER_IMAGE,
    ClusterFactory,
    ContainerImageFactory,
    remove_workloads,
)

pytestmark = pytest.mark.django_db


def create(tenant: Tenant, role: str = OrgRole.ADMIN, **fields: Any) -> ContainerImage:
    return image_create(
        organization=tenant.org, actor=tenant.users[role], **{**CONTAINER_IMAGE, **fields}
    )


def messages(caught: pytest.ExceptionInfo[ValidationError]) -> str:
    return " ".join(caught.value.messages)


# --- Services --------------------------------------------------------------------------


@pytest.mark.parametrize("role", [OrgRole.OWNER, OrgRole.ADMIN])
def test_owners_and_admins_create_change_and_delete_images(tenant_a: Tenant, role: str) -> None:
    image = create(tenant_a, role)
    assert (image.organization, image.aws_amis, image.built_in) == (
        tenant_a.org,
        {"us-east-1": AMI},
        False,
    )
    image = image_update(
        image=image, actor=tenant_a.users[role], name="acme ray 2", aws_amis={"eu-west-1": AMI}
    )
    image.refresh_from_db()
    assert (image.name, image.aws_amis) == ("acme ray 2", {"eu-west-1": AMI})
    image_delete(image=image, actor=tenant_a.users[role])
    assert not ContainerImage.objects.filter(pk=image.pk).exists()  # never used: gone


@pytest.mark.parametrize("role", [OrgRole.MEMBER, OrgRole.VIEWER])
def test_members_and_viewers_may_not(tenant_a: Tenant, role: str) -> None:
    with pytest.raises(PermissionDenied, match=r"image\.manage"):
        create(tenant_a, role)
    with pytest.raises(PermissionDenied):
        image_update(image=tenant_a.image, actor=tenant_a.users[role], name="x")
    with pytest.raises(PermissionDenied):
        image_delete(image=tenant_a.image, actor=tenant_a.users[role])
    assert ContainerImage.objects.filter(pk=tenant_a.image.pk, name="alpha python").exists()


def test_another_organizations_owner_may_not(tenant_a: Tenant, tenant_b: Tenant) -> None:
    with pytest.raises(PermissionDenied):
        image_update(image=tenant_a.image, actor=tenant_b.owner, name="pwned")
    with pytest.raises(PermissionDenied):
        image_delete(image=tenant_a.image, actor=tenant_b.owner)


def test_built_in_images_are_nobodys_to_change(tenant_a: Tenant) -> None:
    built_in = ContainerImageFactory(name="Ray 2.40.0", image_uri="rayproject/ray:2.40.0")
    for call in (
        lambda: image_update(image=built_in, actor=tenant_a.owner, name="mine"),
        lambda: image_delete(image=built_in, actor=tenant_a.owner),
    ):
        with pytest.raises(PermissionDenied, match="built-in images cannot be changed"):
            call()
    built_in.refresh_from_db()
    assert built_in.name == "Ray 2.40.0"


def test_a_name_is_unique_in_the_organization_only(tenant_a: Tenant, tenant_b: Tenant) -> None:
    create(tenant_a)
    with pytest.raises(ValidationError) as caught:
        create(tenant_a, name=" acme ray ")
    assert caught.value.message_dict == {
        "name": ["An image named acme ray already exists in this organization."]
    }
    other = create(tenant_a, name="other")
    with pytest.raises(ValidationError, match="already exists"):
        image_update(image=other, actor=tenant_a.admin, name="acme ray")
    assert create(tenant_b).name == "acme ray"  # another organization's is no clash


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"image_uri": "", "aws_amis": {}, "gcp_image": ""},
            "__all__",
            "Give an image URI (a container image, for AWS and GCP clusters) or a Python "
            "executable",
        ),
        ({"python_executable": "/usr/bin/python3"}, "python_executable", "Clear one of the two"),
        ({"image_uri": "", "gcp_image": ""}, "aws_amis", "AMIs are for container images"),
        (
            {"image_uri": "", "aws_amis": {}, "python_executable": "/usr/bin/python3"},
            "gcp_image",
            "A GCP boot image is for container images",
        ),
        ({"aws_amis": {"us-east-1": "ubuntu"}}, "aws_amis", "Give one AMI per region"),
        ({"aws_amis": {"Virginia": AMI}}, "aws_amis", "Give one AMI per region"),
        ({"ray_version": "latest"}, "ray_version", "Give a Ray version such as 2.40.0."),
        ({"image_uri": "acme/ray 2"}, "image_uri", "no spaces"),
        (
            {"image_uri": "", "aws_amis": {}, "gcp_image": "", "python_executable": "python3"},
            "python_executable",
            "absolute path",
        ),
        ({"name": "  "}, "name", "This field cannot be blank."),
    ],
)
def test_what_is_refused_says_why(
    tenant_a: Tenant, fields: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        create(tenant_a, **fields)
    assert words in " ".join(caught.value.message_dict[field])
    assert not ContainerImage.objects.filter(organization=tenant_a.org, name="acme ray").exists()


def test_a_python_environment_for_the_local_cloud(tenant_a: Tenant) -> None:
    image = create(
        tenant_a, image_uri="", aws_amis={}, gcp_image="", python_executable="/opt/ray/bin/python3"
    )
    assert image.python_executable == "/opt/ray/bin/python3"


def test_every_change_is_audited(tenant_a: Tenant) -> None:
    image = create(tenant_a)
    image_update(image=image, actor=tenant_a.admin, ray_version="2.41.0")
    image_update(image=image, actor=tenant_a.admin, ray_version="2.41.0")  # no change
    image_delete(image=image, actor=tenant_a.owner)
    events = list(AuditEvent.objects.filter(verb__startswith="image.").order_by("created_at"))
    assert [e.verb for e in events] == ["image.create", "image.update", "image.delete"]
    created, updated, deleted = events
    assert created.changes["name"] == [None, "acme ray"]
    assert created.changes["aws_amis"] == [None, {"us-east-1": AMI}]
    assert updated.changes == {"ray_version": ["2.40.0", "2.41.0"]}
    assert deleted.changes == {"name": ["acme ray", None]}
    assert {e.organization_id for e in events} == {tenant_a.org.pk}
    assert (created.actor, deleted.actor) == (tenant_a.admin, tenant_a.owner)


def live_cluster(tenant: Tenant, image: ContainerImage, **fields: Any) -> Any:
    return ClusterFactory(
        project=tenant.project,
        cloud=tenant.cloud,
        image=image,
        state=ClusterState.RUNNING,
        **fields,
    )


def test_an_image_live_clusters_use_keeps_what_it_runs(tenant_a: Tenant) -> None:
    image = create(tenant_a)
    live_cluster(tenant_a, image)
    with pytest.raises(ValidationError) as caught:
        image_update(image=image, actor=tenant_a.admin, ray_version="2.41.0")
    assert "1 cluster(s) that are not terminated use acme ray" in messages(caught)
    assert "Ray version" in messages(caught)
    with pytest.raises(ValidationError) as caught:
        image_delete(image=image, actor=tenant_a.admin)
    assert messages(caught) == (
        "1 cluster(s) that are not terminated use acme ray. Terminate them first; then "
        "the image can be deleted."
    )
    image = image_update(image=image, actor=tenant_a.admin, name="renamed")  # names may change
    image.refresh_from_db()
    assert (image.name, image.ray_version, image.deleted_at) == ("renamed", "2.40.0", None)


def test_clusters_that_ended_keep_their_image(tenant_a: Tenant) -> None:
    image = create(tenant_a)
    activate(tenant_a.cloud)
    ended = ClusterFactory(
        project=tenant_a.project,
        cloud=tenant_a.cloud,
        image=image,
        state=ClusterState.TERMINATED,
        desired_state=DesiredState.TERMINATED,
    )
    image_delete(image=image, actor=tenant_a.admin)
    ended.refresh_from_db()
    assert ended.image.name == "acme ray"  # its page still says what it ran
    assert ended.image.deleted_at is not None
    assert not ContainerImage.objects.visible_to(tenant_a.owner, tenant_a.org).filter(pk=image.pk)
    assert create(tenant_a).pk != image.pk  # the name is free again
    with pytest.raises(ValidationError, match="was deleted"):
        lifecycle.cluster_restart(cluster=ended, actor=tenant_a.owner)
    with pytest.raises(ValidationError, match="was deleted"):
        lifecycle.cluster_create(
            project=tenant_a.project,
            actor=tenant_a.owner,
            name="new",
            cloud=tenant_a.cloud,
            image=ended.image,
        )


def test_the_cluster_form_offers_the_organizations_own_and_not_deleted_ones(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    from clusters.selectors import images_for_cluster_create

    gone = create(tenant_a, name="gone")
    ClusterFactory(
        project=tenant_a.project, cloud=tenant_a.cloud, image=gone, state=ClusterState.FAILED
    )
    image_delete(image=gone, actor=tenant_a.admin)
    mine = create(tenant_a)
    create(tenant_b, name="theirs")
    offered = set(images_for_cluster_create(organization=tenant_a.org))
    assert mine in offered and tenant_a.image in offered
    assert {i.name for i in offered} & {"gone", "theirs"} == set()


def test_typed_ami_lines_are_parsed() -> None:
    text = f"us-east-1: {AMI}\n\n eu-west-1 = ami-0fedcba987654321f \nus-west-2 ami-01234567"
    assert parse_amis(text) == {
        "us-east-1": AMI,
        "eu-west-1": "ami-0fedcba987654321f",
        "us-west-2": "ami-01234567",
    }
    with pytest.raises(ValidationError, match="Line 1: write one region and its AMI"):
        parse_amis("us-east-1")
    with pytest.raises(ValidationError, match="Line 2: us-east-1 has an AMI already"):
        parse_amis(f"us-east-1: {AMI}\nus-east-1: {AMI}")


# --- Pages -----------------------------------------------------------------------------


def url(tenant: Tenant, name: str, *args: Any) -> str:
    return reverse(name, args=[tenant.org.slug, *args])


def test_the_list_marks_built_in_ones_and_offers_edits_to_admins(tenant_a: Tenant) -> None:
    ContainerImageFactory(name="Ray 2.40.0", image_uri="rayproject/ray:2.40.0")
    page = client_for(tenant_a.admin).get(url(tenant_a, "image_list")).content.decode()
    assert "alpha python" in page and "Ray 2.40.0" in page and "Built in" in page
    assert "/usr/bin/python3" in page and "New image" in page
    assert f"/images/{tenant_a.image.pk}/edit/" in page
    assert f"/images/{tenant_a.image.pk}/delete/" in page
    assert page.count("/edit/") == 1  # none for the built-in one
    assert 'href="' + url(tenant_a, "image_list") + '"' in page  # the navigation link


@pytest.mark.parametrize("role", [OrgRole.MEMBER, OrgRole.VIEWER])
def test_members_and_viewers_see_the_list_but_cannot_change_it(tenant_a: Tenant, role: str) -> None:
    client = client_for(tenant_a.users[role])
    page = client.get(url(tenant_a, "image_list")).content.decode()
    assert "alpha python" in page
    assert "New image" not in page and "/edit/" not in page and "/delete/" not in page
    assert client.get(url(tenant_a, "image_create")).status_code == 403
    assert (
        client.post(url(tenant_a, "image_create"), {**CONTAINER_IMAGE, "aws_amis": ""}).status_code
        == 403
    )
    assert client.get(url(tenant_a, "image_edit", tenant_a.image.pk)).status_code == 403
    assert client.post(url(tenant_a, "image_delete", tenant_a.image.pk)).status_code == 403
    assert ContainerImage.objects.filter(pk=tenant_a.image.pk).exists()


def test_an_empty_list_says_what_to_do(tenant_a: Tenant) -> None:
    remove_workloads()
    Cluster.objects.all().delete()
    ContainerImage.objects.all().delete()
    page = client_for(tenant_a.owner).get(url(tenant_a, "image_list")).content.decode()
    assert "No images yet" in page and "New image" in page
    page = client_for(tenant_a.viewer).get(url(tenant_a, "image_list")).content.decode()
    assert "Ask an owner or admin" in page


def test_creating_one_with_ami_lines(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.admin)
    form = {**CONTAINER_IMAGE, "aws_amis": f"us-east-1: {AMI}\neu-west-1: {AMI}"}
    response = client.post(url(tenant_a, "image_create"), form)
    assert response.status_code == 302 and response["Location"] == url(tenant_a, "image_list")
    image = ContainerImage.objects.get(organization=tenant_a.org, name="acme ray")
    assert image.aws_amis == {"us-east-1": AMI, "eu-west-1": AMI}
    page = client.get(response["Location"]).content.decode()
    assert "Image acme ray created." in page and "eu-west-1" in page


def test_mistakes_are_shown_on_the_form(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.admin)
    form = {**CONTAINER_IMAGE, "name": "alpha python", "aws_amis": "us-east-1: ubuntu"}
    page = client.post(url(tenant_a, "image_create"), form).content.decode()
    assert "Give one AMI per region" in page
    page = client.post(
        url(tenant_a, "image_create"), {**form, "aws_amis": "virginia"}
    ).content.decode()
    assert "Line 1: write one region and its AMI" in page
    page = client.post(url(tenant_a, "image_create"), {**form, "aws_amis": ""}).content.decode()
    assert "An image named alpha python already exists in this organization." in page
    assert ContainerImage.objects.filter(organization=tenant_a.org).count() == 1


def test_editing_one(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.owner)
    edit = url(tenant_a, "image_edit", tenant_a.image.pk)
    page = client.get(edit).content.decode()
    assert 'value="alpha python"' in page and "/usr/bin/python3" in page
    form = {
        "name": "alpha venv",
        "python_executable": "/opt/venv/bin/python",
        "ray_version": "2.41.0",
    }
    response = client.post(edit, form)
    assert response.status_code == 302
    tenant_a.image.refresh_from_db()
    assert (tenant_a.image.name, tenant_a.image.python_executable) == (
        "alpha venv",
        "/opt/venv/bin/python",
    )


def test_an_image_in_use_says_so_on_its_pages(tenant_a: Tenant) -> None:
    live_cluster(tenant_a, tenant_a.image)
    client = client_for(tenant_a.owner)
    edit = client.get(url(tenant_a, "image_edit", tenant_a.image.pk)).content.decode()
    assert "1 cluster that is not terminated uses this image, so only its name can change" in edit
    delete = url(tenant_a, "image_delete", tenant_a.image.pk)
    assert "Terminate it first" in client.get(delete).content.decode()
    response = client.post(delete)
    assert response.status_code == 409
    assert "Terminate them first" in response.content.decode()
    assert ContainerImage.objects.get(pk=tenant_a.image.pk).deleted_at is None


def test_deleting_one(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.admin)
    delete = url(tenant_a, "image_delete", tenant_a.image.pk)
    assert "Delete the image alpha python?" in client.get(delete).content.decode()
    response = client.post(delete, headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == url(tenant_a, "image_list")
    assert not ContainerImage.objects.filter(pk=tenant_a.image.pk).exists()
    page = client.get(url(tenant_a, "image_list")).content.decode()
    assert "Image alpha python deleted." in page and "/usr/bin/python3" not in page


def test_built_in_and_other_organizations_images_are_404(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    built_in = ContainerImageFactory(name="Ray 2.40.0", image_uri="rayproject/ray:2.40.0")
    client = client_for(tenant_a.owner)
    for image in (built_in, tenant_b.image):
        for name in ("image_edit", "image_delete"):
            assert client.get(url(tenant_a, name, image.pk)).status_code == 404
            assert client.post(url(tenant_a, name, image.pk), {"name": "pwned"}).status_code == 404
    assert "bravo python" not in client.get(url(tenant_a, "image_list")).content.decode()
    assert client.get(url(tenant_b, "image_list")).status_code == 404
    assert ContainerImage.objects.get(pk=tenant_b.image.pk).name == "bravo python"


def test_an_image_a_job_schedule_names_is_hidden_not_a_server_error(tenant_a: Tenant) -> None:
    """No cluster ever used it, but a schedule would submit jobs with it: deleting it
    hides it (as for ended clusters) instead of failing on the schedule's reference."""
    from workloads.jobs.models import JobSchedule

    image = create(tenant_a, OrgRole.OWNER)
    JobSchedule.objects.filter(pk=tenant_a.job_schedule.pk).update(image=image)
    image_delete(image=image, actor=tenant_a.owner)
    image.refresh_from_db()
    assert image.deleted_at is not None
    assert AuditEvent.objects.filter(verb="image.delete", target_id=str(image.pk)).exists()
