"""The compute config pages: the list, create, the config with its versions, and edit
(a new version); roles, isolation between organizations, and errors shown per row.
Forms are submitted as a browser would: every field the page rendered, as rendered."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.choices import OrgRole, ProjectRole
from accounts.models import AuditEvent
from clusters.models import Cluster, ComputeConfig
from tests.conftest import Tenant, client_for, page_text
from tests.factories import (
    CloudFactory,
    ComputeConfigFactory,
    ComputeConfigVersionFactory,
    MembershipFactory,
    OrganizationFactory,
    ProjectFactory,
    ProjectMembershipFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

# How the pages print a range of workers and the machine it is made of ("0 to 2 times local").
DASH, TIMES = "\u2013", "\u00d7"


def visible(response) -> str:
    """The page's text as a reader sees it: no tags, runs of blanks as one space."""
    words = re.sub(r"<[^>]+>", " ", response.content.decode())
    return " ".join(html.unescape(words).split())


def list_url(tenant: Tenant) -> str:
    return reverse("compute_config_list", args=[tenant.org.slug])


def create_url(tenant: Tenant) -> str:
    return reverse("compute_config_create", args=[tenant.org.slug])


def detail_url(config: ComputeConfig, org_slug: str | None = None) -> str:
    return reverse("compute_config_detail", args=[org_slug or config.organization.slug, config.pk])


def edit_url(config: ComputeConfig, org_slug: str | None = None) -> str:
    return reverse("compute_config_edit", args=[org_slug or config.organization.slug, config.pk])


class _FormValues(HTMLParser):
    """What a browser would submit from the page's form: inputs as rendered, checked
    boxes only, each select's selected option."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and name != "csrfmiddlewaretoken":
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.values[name] = "on"
            else:
                self.values[name] = a.get("value") or ""
        elif tag == "select" and name:
            self._select = name
            self.values.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def form_values(response) -> dict[str, str]:
    assert response.status_code == 200
    parser = _FormValues()
    parser.feed(response.content.decode())
    return parser.values


def submit(client: Client, url: str, **changes: Any) -> Any:
    """Open the form at `url`, change some fields (None unticks a box), and post it."""
    values: dict[str, Any] = form_values(client.get(url))
    for name, value in changes.items():
        name = name.replace("__", "-")  # groups__0__name -> groups-0-name
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return client.post(url, values)


def group_row(number: int, **fields: Any) -> dict[str, Any]:
    """Fields of the worker group table's row `number` (from 0) for `submit`."""
    return {f"groups__{number}__{key}": value for key, value in fields.items()}


# --- Create ----------------------------------------------------------------------------


def test_owner_creates_a_config_with_a_worker_group(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = client_for(tenant_a.owner)
    page = page_text(client.get(create_url(tenant_a)))
    assert "Organization-wide" in page and tenant_a.project.name in page
    assert tenant_a.cloud.name in page and tenant_b.cloud.name not in page

    response = submit(
        client,
        create_url(tenant_a),
        name="  gpu-training ",
        cloud=tenant_a.cloud.pk,
        head_cpus="2",
        head_memory_mb="4096",
        **group_row(
            0,
            name="gpu",
            instance_type="g5.xlarge",
            cpus="4",
            memory_mb="16384",
            gpus="1",
            min="1",
            max="3",
            spot="on",
            downscale_delay_seconds="600",
        ),
    )

    config = ComputeConfig.objects.get(name="gpu-training")
    assert response.status_code == 302 and response["Location"] == detail_url(config)
    assert config.project is None and config.organization == tenant_a.org
    version = config.latest
    assert version.number == 1 and version.cloud == tenant_a.cloud
    assert (version.head_cpus, version.head_memory_mb) == (2, 4096)
    # The three rows left as rendered are not groups.
    assert version.worker_groups == [
        {
            "name": "gpu",
            "instance_type": "g5.xlarge",
            "cpus": 4,
            "memory_mb": 16384,
            "gpus": 1,
            "min": 1,
            "max": 3,
            "spot": True,
            "downscale_delay_seconds": 600,
        }
    ]
    assert AuditEvent.objects.filter(
        verb="compute_config.create", target_id=str(config.pk), actor=tenant_a.owner
    ).exists()

    detail = page_text(client.get(response["Location"]))
    assert "Compute config gpu-training created (version 1)." in detail
    assert "g5.xlarge" in detail and f"1{DASH}3" in detail and "First version" in detail
    listing = visible(client.get(list_url(tenant_a)))
    assert "gpu-training" in listing and "Organization-wide" in listing
    assert f"gpu 1{DASH}3 {TIMES} g5.xlarge, 1 GPU, spot" in listing


def test_a_project_writer_creates_only_in_their_projects(tenant_a: Tenant) -> None:
    ProjectFactory(organization=tenant_a.org, name="Someone else's")
    client = client_for(tenant_a.member)  # a writer in tenant_a.project, nothing else
    page = page_text(client.get(create_url(tenant_a)))
    assert tenant_a.project.name in page
    assert "Someone else's" not in page and "Organization-wide" not in page

    refused = submit(client, create_url(tenant_a), name="mine", cloud=tenant_a.cloud.pk)
    assert "This field is required." in page_text(refused)  # a project must be chosen
    response = submit(
        client,
        create_url(tenant_a),
        name="mine",
        cloud=tenant_a.cloud.pk,
        project=tenant_a.project.pk,
    )
    assert response.status_code == 302
    assert ComputeConfig.objects.get(name="mine").project == tenant_a.project


def _error_row(page: str, message: str) -> int:
    """The number (from 0) of the worker group row the message is shown under."""
    at = page.index(message)
    rows = [int(n) for n in re.findall(r'name="groups-(\d+)-name"', page[:at])]
    return rows[-1]


@pytest.mark.parametrize(
    ("rows", "message", "row"),
    [
        (
            [{"name": "ok"}, {"name": "big", "min": "5", "max": "2"}],
            "Worker group big: needs 0 <= min <= max <= 1000.",
            1,
        ),
        ([{"name": "w"}, {"name": "w"}], "Two worker groups are named w.", 1),
        ([{"name": "", "max": "2"}], "Worker group 1 needs a name of 1 to 64 characters.", 0),
        ([{"name": "fast", "cpus": "0"}], "Worker group fast: cpus must be a number above 0.", 0),
        ([{"name": "x", "cpus": "lots"}], "CPUs: Enter a number.", 0),
    ],
    ids=["min-above-max", "duplicate-names", "no-name", "zero-cpus", "not-a-number"],
)
def test_bad_worker_groups_are_shown_on_their_row_and_save_nothing(
    tenant_a: Tenant, rows: list[dict[str, str]], message: str, row: int
) -> None:
    before = ComputeConfig.objects.count()
    groups = {k: v for i, fields in enumerate(rows) for k, v in group_row(i, **fields).items()}
    response = submit(
        client_for(tenant_a.owner),
        create_url(tenant_a),
        name="bad",
        cloud=tenant_a.cloud.pk,
        **groups,
    )
    assert response.status_code == 200
    page = page_text(response)
    assert message in page
    assert _error_row(page, message) == row
    assert 'value="bad"' in page  # what was typed is kept
    assert ComputeConfig.objects.count() == before
    assert not AuditEvent.objects.filter(verb="compute_config.create").exists()


def test_other_bad_input_is_shown_and_saves_nothing(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.owner)
    existing = tenant_a.cluster.compute_config.config.name
    before = ComputeConfig.objects.count()
    cases = [
        ({"name": "   "}, "This field is required."),
        ({"name": existing}, f"A compute config named {existing} already exists."),
        (
            {"name": "n", "idle_timeout_minutes": "0"},
            "Ensure this value is greater than or equal to 1.",
        ),
        ({"name": "n", "cloud": ""}, "This field is required."),
    ]
    for changes, message in cases:
        changes.setdefault("cloud", tenant_a.cloud.pk)
        response = submit(client, create_url(tenant_a), **changes)
        assert response.status_code == 200, changes
        assert message in page_text(response), changes
    assert ComputeConfig.objects.count() == before


def test_another_organizations_cloud_cannot_be_posted(tenant_a: Tenant, tenant_b: Tenant) -> None:
    response = submit(
        client_for(tenant_a.owner), create_url(tenant_a), name="sneaky", cloud=tenant_b.cloud.pk
    )
    assert response.status_code == 200
    assert "Select a valid choice." in page_text(response)
    assert not ComputeConfig.objects.filter(name="sneaky").exists()


# --- List and empty state ----------------------------------------------------------------


def test_the_list_shows_each_config_with_its_latest_version(
    tenant_a: Tenant, tenant_b: Tenant, settings, django_assert_max_num_queries
) -> None:
    settings.RAYDECK_PAGE_SIZE = 3
    for name in ("b-config", "c-config", "d-config"):
        ComputeConfigVersionFactory(
            cloud=tenant_a.cloud, config__name=name, head_cpus=3, head_memory_mb=6144
        )
    ComputeConfigVersionFactory(cloud=tenant_b.cloud, config__name="bravo-secret")
    client = client_for(tenant_a.viewer)
    with django_assert_max_num_queries(12):
        first = visible(client.get(list_url(tenant_a)))
    assert "Page 1 of 2 · 4 in all" in first
    assert "b-config" in first and "3 CPUs · 6 GB" in first
    assert f"workers 0{DASH}2 {TIMES} local" in first
    assert "bravo-secret" not in first
    second = page_text(client.get(list_url(tenant_a) + "?page=2"))
    assert "d-config" in second and "b-config" not in second
    # A viewer may look, not create.
    assert "New compute config" not in first


def _organization_with_nothing() -> tuple[str, dict[str, Any]]:
    org = OrganizationFactory(slug="empty", name="Empty")
    users = {}
    for role in (OrgRole.OWNER, OrgRole.VIEWER):
        users[role] = UserFactory(email=f"{role}@empty.example.com")
        MembershipFactory(organization=org, user=users[role], role=role)
    return org.slug, users


def test_empty_state_says_what_to_do(db: None) -> None:
    slug, users = _organization_with_nothing()
    url = reverse("compute_config_list", args=[slug])
    owner_page = page_text(client_for(users[OrgRole.OWNER]).get(url))
    assert "No compute configs yet" in owner_page
    assert reverse("compute_config_create", args=[slug]) in owner_page
    viewer_page = page_text(client_for(users[OrgRole.VIEWER]).get(url))
    assert "No compute configs yet" in viewer_page
    assert "Your role lets you look, not create." in viewer_page
    assert reverse("compute_config_create", args=[slug]) not in viewer_page


def test_the_navigation_links_to_compute_configs(tenant_a: Tenant) -> None:
    page = page_text(
        client_for(tenant_a.viewer).get(reverse("cluster_list", args=[tenant_a.org.slug]))
    )
    assert f'<a href="{list_url(tenant_a)}" >Compute configs</a>' in page


# --- Detail and edit ------------------------------------------------------------------------


def test_an_edit_is_version_2_and_earlier_clusters_keep_version_1(tenant_a: Tenant) -> None:
    cluster = tenant_a.cluster
    v1 = cluster.compute_config
    config = v1.config
    client = client_for(tenant_a.owner)
    form = page_text(client.get(edit_url(config)))
    assert 'value="workers"' in form and "Saving makes version 2." in form

    response = submit(
        client,
        edit_url(config),
        head_cpus="2",
        **group_row(0, max="5"),
        **group_row(1, name="gpu", gpus="1", max="2"),
    )
    assert response.status_code == 302 and response["Location"] == detail_url(config)
    v2 = config.latest
    assert v2.number == 2 and v2.head_cpus == 2
    assert [(g["name"], g["max"]) for g in v2.worker_groups] == [("workers", 5), ("gpu", 2)]
    cluster.refresh_from_db()
    v1.refresh_from_db()
    assert cluster.compute_config == v1 and v1.head_cpus == 1 and v1.worker_groups[0]["max"] == 2
    entry = AuditEvent.objects.get(verb="compute_config.update", target_id=str(config.pk))
    assert entry.actor == tenant_a.owner and entry.changes["version"] == [1, 2]

    detail = visible(client.get(response["Location"]))
    assert "Saved as version 2." in detail
    assert "Head CPUs: 1 → 2" in detail
    assert "Worker group workers: max 2 → 5" in detail
    assert "Worker group gpu added" in detail
    assert tenant_a.owner.display_name in detail
    # The cluster created earlier is listed, on version 1, with a link to it.
    cluster_url = reverse("cluster_detail", args=[tenant_a.org.slug, cluster.pk])
    assert f'href="{cluster_url}"' in page_text(client.get(response["Location"]))
    assert f"{cluster.name} {cluster.project.name} Terminated v1" in detail
    assert "v2" in page_text(client.get(list_url(tenant_a)))

    # Removing a group is a third version.
    response = submit(client, edit_url(config), groups__1__DELETE="on")
    assert [g["name"] for g in config.latest.worker_groups] == ["workers"]
    assert "Worker group gpu removed" in page_text(client.get(response["Location"]))


def test_saving_without_a_change_keeps_the_latest_version(tenant_a: Tenant) -> None:
    config = tenant_a.cluster.compute_config.config
    client = client_for(tenant_a.owner)
    response = submit(client, edit_url(config))
    assert response.status_code == 302
    assert config.versions.count() == 1
    assert "Nothing changed: still version 1." in page_text(client.get(response["Location"]))
    assert not AuditEvent.objects.filter(verb="compute_config.update").exists()


def test_a_bad_edit_is_shown_and_makes_no_version(tenant_a: Tenant) -> None:
    config = tenant_a.cluster.compute_config.config
    response = submit(client_for(tenant_a.owner), edit_url(config), **group_row(0, min="3"))
    assert response.status_code == 200
    page = page_text(response)
    assert _error_row(page, "Worker group workers: needs 0 <= min <= max <= 1000.") == 0
    assert config.versions.count() == 1


def test_a_viewer_sees_configs_but_cannot_change_them(tenant_a: Tenant) -> None:
    config = tenant_a.cluster.compute_config.config
    client = client_for(tenant_a.viewer)
    detail = client.get(detail_url(config))
    assert detail.status_code == 200
    assert config.name in page_text(detail) and edit_url(config) not in page_text(detail)
    assert client.get(create_url(tenant_a)).status_code == 403
    refused = client.post(create_url(tenant_a), {"name": "v", "cloud": tenant_a.cloud.pk})
    assert refused.status_code == 403
    assert client.get(edit_url(config)).status_code == 403
    assert client.post(edit_url(config), {"head_cpus": "8"}).status_code == 403
    assert config.versions.count() == 1 and ComputeConfig.objects.count() == 1


def test_a_project_writer_cannot_change_an_organization_wide_config(tenant_a: Tenant) -> None:
    config = tenant_a.cluster.compute_config.config  # organization-wide
    client = client_for(tenant_a.member)
    assert edit_url(config) not in page_text(client.get(detail_url(config)))
    assert client.get(edit_url(config)).status_code == 403


def test_a_project_config_is_hidden_from_those_outside_the_project(tenant_a: Tenant) -> None:
    secret_project = ProjectFactory(organization=tenant_a.org, name="Secret")
    version = ComputeConfigVersionFactory(
        cloud=tenant_a.cloud, config__name="secret-config", config__project=secret_project
    )
    client = client_for(tenant_a.member)
    assert "secret-config" not in page_text(client.get(list_url(tenant_a)))
    assert client.get(detail_url(version.config)).status_code == 404
    ProjectMembershipFactory(project=secret_project, user=tenant_a.member, role=ProjectRole.WRITER)
    assert client.get(detail_url(version.config)).status_code == 200
    assert client.get(edit_url(version.config)).status_code == 200


def test_another_organizations_config_is_404(tenant_a: Tenant, tenant_b: Tenant) -> None:
    config = tenant_a.cluster.compute_config.config
    client = client_for(tenant_b.owner)
    for slug in (tenant_a.org.slug, tenant_b.org.slug):
        for url in (detail_url(config, slug), edit_url(config, slug)):
            assert client.get(url).status_code == 404, url
            assert client.post(url, {"head_cpus": "8"}).status_code == 404, url
    assert config.versions.count() == 1


def test_the_clusters_list_is_capped_at_a_page(tenant_a: Tenant, settings) -> None:
    settings.RAYDECK_PAGE_SIZE = 2
    version = tenant_a.cluster.compute_config
    for name in ("second", "third"):
        Cluster.objects.create(
            organization=tenant_a.org,
            project=tenant_a.project,
            cloud=tenant_a.cloud,
            compute_config=version,
            image=tenant_a.cluster.image,
            name=name,
        )
    page = page_text(client_for(tenant_a.owner).get(detail_url(version.config)))
    assert "The newest 2 of 3 clusters." in page
    assert "third" in page and tenant_a.cluster.name not in page


def test_a_config_on_a_second_cloud_shows_the_change_of_cloud(tenant_a: Tenant) -> None:
    config = tenant_a.cluster.compute_config.config
    second = CloudFactory(organization=tenant_a.org, name="Second cloud")
    client = client_for(tenant_a.owner)
    response = submit(client, edit_url(config), cloud=second.pk)
    assert config.latest.cloud == second
    assert f"Cloud: {tenant_a.cloud.name} → Second cloud" in page_text(
        client.get(response["Location"])
    )


def test_every_problem_comes_back_at_once_and_an_impossible_head_is_refused(
    tenant_a: Tenant,
) -> None:
    ComputeConfigFactory(organization=tenant_a.org, name="taken")
    client = client_for(tenant_a.owner)
    response = submit(
        client,
        create_url(tenant_a),
        name="taken",
        cloud=tenant_a.cloud.pk,
        head_cpus="0",
        head_memory_mb="0",
        **group_row(0, name="workers", min="5", max="2"),
    )
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    summary = page[page.index("form-summary") : page.index("</div>", page.index("form-summary"))]
    assert "A compute config named taken already exists." in summary
    assert "A head needs more than 0 CPUs." in summary
    assert "A head needs at least 512 MB" in summary
    assert "Worker groups: 1 problem" in summary
    assert not ComputeConfig.objects.filter(name="taken").exclude(versions=None).exists()
    assert ComputeConfig.objects.filter(name="taken").count() == 1
