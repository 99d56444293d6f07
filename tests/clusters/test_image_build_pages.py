"""The image build pages: the form (New image → Build) with errors on their fields,
the builds list with its empty state, a build's live page (HTMX polling that stops when
the build is final; the failed step and the last lines), and cancel behind a
confirmation."""

from __future__ import annotations

import pytest
from django.urls import reverse

from clusters.choices import BuildState
from clusters.models import ImageBuild
from tests.conftest import Tenant, activate, client_for

pytestmark = pytest.mark.django_db


def url(tenant: Tenant, name: str, *args: object) -> str:
    return reverse(name, args=[tenant.org.slug, *args])


def test_the_form_shows_errors_on_their_fields_and_builds_nothing(tenant_a: Tenant) -> None:
    activate(tenant_a.cloud)
    client = client_for(tenant_a.admin)
    page = client.get(url(tenant_a, "image_build_create"))
    assert page.status_code == 200
    assert tenant_a.cloud.name in page.text
    before = ImageBuild.objects.count()
    answer = client.post(
        url(tenant_a, "image_build_create"),
        {"name": "ml", "cloud": tenant_a.cloud.pk, "base": "nonsense", "requirements": "humanize"},
    )
    assert answer.status_code == 200
    assert "Unknown base" in answer.text
    assert ImageBuild.objects.count() == before
    containerfile = client.post(
        url(tenant_a, "image_build_create"),
        {
            "name": "ml",
            "cloud": tenant_a.cloud.pk,
            "base": "ray",
            "containerfile": "FROM ray\nCOPY . /x",
        },
    )
    assert "COPY is not allowed" in containerfile.text
    assert ImageBuild.objects.count() == before


def test_a_build_started_from_the_form_has_a_live_page(tenant_a: Tenant) -> None:
    activate(tenant_a.cloud)
    client = client_for(tenant_a.admin)
    answer = client.post(
        url(tenant_a, "image_build_create"),
        {
            "name": "ml",
            "cloud": tenant_a.cloud.pk,
            "base": "ray",
            "requirements": "humanize\ntoolz",
            "env": "MODE=fast",
            "post_build": "python -c 'import humanize'",
        },
    )
    build = ImageBuild.objects.get(name="ml")
    assert answer.status_code == 302
    assert answer["Location"] == url(tenant_a, "image_build_detail", build.pk)
    assert build.spec["requirements"] == ["humanize", "toolz"]
    assert build.spec["env"] == {"MODE": "fast"}
    page = client.get(answer["Location"])
    assert "Queued" in page.text and 'hx-trigger="every 2s"' in page.text
    assert url(tenant_a, "image_build_cancel", build.pk) in page.text
    # The live part, by itself, while the build runs; once final, polling stops.
    ImageBuild.objects.filter(pk=build.pk).update(
        state=BuildState.BUILDING, step="environment: pip install", log_tail="Collecting humanize"
    )
    live = client.get(answer["Location"], headers={"HX-Request": "true", "HX-Target": "build-live"})
    assert live.status_code == 200
    assert "Collecting humanize" in live.text and "<html" not in live.text
    ImageBuild.objects.filter(pk=build.pk).update(state=BuildState.SUCCEEDED)
    done = client.get(answer["Location"], headers={"HX-Request": "true", "HX-Target": "build-live"})
    assert done.status_code == 286  # HTMX: stop polling


def test_a_failed_build_shows_its_step_and_last_lines(tenant_a: Tenant) -> None:
    ImageBuild.objects.filter(pk=tenant_a.build.pk).update(
        error="environment: pip install failed: pip exited with code 1"
    )
    page = client_for(tenant_a.viewer).get(url(tenant_a, "image_build_detail", tenant_a.build.pk))
    assert page.status_code == 200
    assert "failed at" in page.text and "environment: pip install" in page.text
    assert "alpha build log" in page.text and "pip exited with code 1" in page.text
    assert "every 2s" not in page.text
    assert "Cancel build" not in page.text


def test_members_read_builds_but_only_managers_build_and_cancel(tenant_a: Tenant) -> None:
    member = client_for(tenant_a.member)
    assert member.get(url(tenant_a, "image_build_list")).status_code == 200
    assert member.get(url(tenant_a, "image_build_create")).status_code == 403
    assert member.post(url(tenant_a, "image_build_cancel", tenant_a.build.pk)).status_code == 403


def test_cancel_asks_first_and_then_stops_the_build(tenant_a: Tenant) -> None:
    ImageBuild.objects.filter(pk=tenant_a.build.pk).update(state=BuildState.BUILDING)
    client = client_for(tenant_a.admin)
    confirm = client.get(url(tenant_a, "image_build_cancel", tenant_a.build.pk))
    assert "Cancel the build of alpha build?" in confirm.text
    assert ImageBuild.objects.get(pk=tenant_a.build.pk).state == BuildState.BUILDING
    client.post(url(tenant_a, "image_build_cancel", tenant_a.build.pk))
    assert ImageBuild.objects.get(pk=tenant_a.build.pk).state == BuildState.CANCELLED


def test_the_list_has_an_empty_state_and_links_from_images(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.admin)
    assert url(tenant_a, "image_build_create") in client.get(url(tenant_a, "image_list")).text
    assert "alpha build" in client.get(url(tenant_a, "image_build_list")).text
    ImageBuild.objects.all().delete()
    empty = client.get(url(tenant_a, "image_build_list"))
    assert "No builds yet" in empty.text
