"""Image builds, the rules a person meets before anything is built: what a spec may
say, who may build, on which cloud, cancelling, and the sweep that keeps no build
stuck. The builds themselves run in test_image_build_local.py (real Buildah)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from accounts.models import AuditEvent
from clusters.choices import BuildState
from clusters.image_specs import normalize_spec, spec_hash
from clusters.models import ContainerImage, ImageBuild
from clusters.services import builds
from tests.conftest import Tenant, activate

pytestmark = pytest.mark.django_db


def start(tenant: Tenant, spec: object, name: str = "ml", **kwargs: object) -> ImageBuild:
    return builds.image_build_start(
        organization=tenant.org,
        actor=kwargs.pop("actor", tenant.admin),  # type: ignore[arg-type]
        cloud=kwargs.pop("cloud", activate(tenant.cloud)),  # type: ignore[arg-type]
        name=name,
        spec=spec,
    )


def error_of(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, list[str]]:
    return exc.value.message_dict


def test_unknown_base_is_refused_on_its_field(tenant_a: Tenant) -> None:
    with pytest.raises(ValidationError) as exc:
        start(tenant_a, {"base": "ubuntu-latest", "requirements": ["humanize"]})
    assert "Unknown base 'ubuntu-latest'" in error_of(exc)["base"][0]
    assert not ImageBuild.objects.exclude(name__endswith=" build").exists()


def test_five_thousand_requirements_are_refused(tenant_a: Tenant) -> None:
    with pytest.raises(ValidationError) as exc:
        start(tenant_a, {"requirements": [f"package{i}" for i in range(5000)]})
    assert "At most 500 pip requirements (5000 given)" in error_of(exc)["requirements"][0]
    assert not ImageBuild.objects.exclude(name__endswith=" build").exists()


@pytest.mark.parametrize(
    ("line", "keyword"),
    [("COPY . /app", "COPY"), ("ADD https://example.com/x /x", "ADD"), ("CMD python", "CMD")],
)
def test_a_containerfile_with_a_disallowed_instruction_is_refused(line: str, keyword: str) -> None:
    with pytest.raises(ValidationError) as exc:
        normalize_spec({"containerfile": f"FROM ray\nRUN pip install humanize\n{line}\n"})
    assert f"Line 3: {keyword} is not allowed" in error_of(exc)["containerfile"][0]


def test_bad_requirements_packages_and_variables_name_their_field() -> None:
    cases = {
        "requirements": {"requirements": ["humanize==="]},
        "debian_packages": {"debian_packages": ["Not A Package"]},
        "env": {"env": {"RAYDECK_URL": "x"}},
        "spec": {"dockerfile": "FROM ray"},
    }
    for field, spec in cases.items():
        with pytest.raises(ValidationError) as exc:
            normalize_spec(spec)
        assert field in error_of(exc), (field, error_of(exc))
    with pytest.raises(ValidationError) as exc:
        normalize_spec({"requirements": ["--index-url=https://evil.example/simple"]})
    assert "pip options are not allowed" in error_of(exc)["requirements"][0]


def test_the_normal_form_ignores_order_and_spacing_but_not_commands() -> None:
    one = normalize_spec(
        {"requirements": ["b", " A==1 ", "b"], "env": {"Y": "2", "X": 1}, "post_build": ["x", "y"]}
    )
    two = normalize_spec(
        {"requirements": ["A==1", "b"], "env": {"X": "1", "Y": "2"}, "post_build": ["x", "y"]}
    )
    swapped = normalize_spec({"requirements": ["A==1", "b"], "post_build": ["y", "x"]})
    assert spec_hash(one, ray_version="2.60.0") == spec_hash(two, ray_version="2.60.0")
    assert spec_hash(one, ray_version="2.60.0") != spec_hash(one, ray_version="2.61.0")
    assert spec_hash(swapped, ray_version="2.60.0") != spec_hash(
        normalize_spec({"requirements": ["A==1", "b"], "post_build": ["x", "y"]}),
        ray_version="2.60.0",
    )


def test_the_local_cloud_says_what_it_cannot_build(tenant_a: Tenant) -> None:
    with pytest.raises(ValidationError) as exc:
        start(tenant_a, {"base": "registry.example.com/team/ray:1", "debian_packages": ["curl"]})
    errors = error_of(exc)
    assert "built-in base only" in errors["base"][0]
    assert "no Debian package manager" in errors["debian_packages"][0]


def test_only_image_managers_build(tenant_a: Tenant) -> None:
    for user in (tenant_a.member, tenant_a.viewer):
        with pytest.raises(PermissionDenied):
            start(tenant_a, {"requirements": ["humanize"]}, actor=user)
    assert not ImageBuild.objects.exclude(name__endswith=" build").exists()


def test_another_organizations_cloud_is_refused(tenant_a: Tenant, tenant_b: Tenant) -> None:
    with pytest.raises(ValidationError) as exc:
        start(tenant_a, {"requirements": ["humanize"]}, cloud=activate(tenant_b.cloud))
    assert "cloud" in error_of(exc)


def test_a_name_taken_by_an_image_not_built_there_is_refused(tenant_a: Tenant) -> None:
    with pytest.raises(ValidationError) as exc:
        start(tenant_a, {"requirements": ["humanize"]}, name=tenant_a.image.name)
    assert "already exists" in error_of(exc)["name"][0]


def test_a_build_is_queued_audited_and_sent_to_a_worker(
    tenant_a: Tenant, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        build = start(tenant_a, {"requirements": ["humanize"], "post_build": ["true"]})
    assert build.state == BuildState.QUEUED
    assert build.spec["requirements"] == ["humanize"]
    assert len(callbacks) == 1
    assert AuditEvent.objects.filter(verb="image.build", organization=tenant_a.org).exists()
    # Nothing is offered to clusters before the build succeeds.
    assert not ContainerImage.objects.filter(name="ml").exists()


def test_cancel_makes_it_final_and_a_second_cancel_is_refused(
    tenant_a: Tenant, django_capture_on_commit_callbacks
) -> None:
    build = start(tenant_a, {"requirements": ["humanize"]})
    with pytest.raises(PermissionDenied):
        builds.image_build_cancel(build=build, actor=tenant_a.member)
    with django_capture_on_commit_callbacks(execute=True):
        build = builds.image_build_cancel(build=build, actor=tenant_a.admin)
    assert build.state == BuildState.CANCELLED and build.finished_at is not None
    # A late pass of its task starts nothing.
    assert builds.image_build_advance(build_id=build.pk).requeue_in is None
    build.refresh_from_db()
    assert build.state == BuildState.CANCELLED and build.external_id == ""
    with pytest.raises(ValidationError, match="already cancelled"):
        builds.image_build_cancel(build=build, actor=tenant_a.admin)


def test_the_sweep_finds_builds_nobody_polled(tenant_a: Tenant) -> None:
    fresh = start(tenant_a, {"requirements": ["humanize"]})
    lost = start(tenant_a, {"requirements": ["toolz"]}, name="other")
    done = start(tenant_a, {"requirements": ["emoji"]}, name="third")
    long_ago = timezone.now() - timedelta(minutes=5)
    ImageBuild.objects.filter(pk=lost.pk).update(state=BuildState.BUILDING, updated_at=long_ago)
    ImageBuild.objects.filter(pk=done.pk).update(state=BuildState.FAILED, updated_at=long_ago)
    assert builds.builds_needing_advance() == [lost.pk]
    assert fresh.pk not in builds.builds_needing_advance()


def test_builds_are_visible_to_their_organization_only(tenant_a: Tenant, tenant_b: Tenant) -> None:
    build = start(tenant_a, {"requirements": ["humanize"]})
    assert list(ImageBuild.objects.visible_to(tenant_a.viewer, tenant_a.org)) == [
        build,
        tenant_a.build,
    ]
    assert not ImageBuild.objects.visible_to(tenant_b.owner, tenant_a.org).exists()
    assert list(ImageBuild.objects.visible_to(tenant_b.owner, tenant_b.org)) == [tenant_b.build]
