"""Shared fixtures. Every test world has two organizations, A and B, each with one
person of every role, a project, an invitation, a cloud, an image of its own, a
(terminated) cluster with one node, a service account and an API token of the member,
and a (switched-off) SSO connection with a group mapping, so isolation is always tested."""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from accounts.choices import OrgRole, ProjectRole
from accounts.models import (
    ApiToken,
    DomainClaim,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMembership,
    ServiceAccount,
    SsoConnection,
    SsoGroupMapping,
    User,
)
from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.choices import BuildState, ClusterState, DesiredState, NodeState
from clusters.models import Cluster, ContainerImage, ImageBuild, Node
from workloads.jobs.choices import JobState
from workloads.jobs.models import Job, JobAttempt, JobSchedule
from workloads.serve.choices import ServiceState, VersionState
from workloads.serve.models import Service, ServiceVersion
from workloads.workspaces.models import SshKey, Workspace

from .factories import (
    ApiTokenFactory,
    CloudFactory,
    ClusterFactory,
    InvitationFactory,
    MembershipFactory,
    NodeFactory,
    OrganizationFactory,
    ProjectFactory,
    ProjectMembershipFactory,
    ServiceAccountFactory,
    SsoGroupMappingFactory,
    UserFactory,
)


@dataclass
class Tenant:
    """One organization with a user of every role and a project the member is in."""

    org: Organization
    users: dict[str, User] = field(default_factory=dict)
    memberships: dict[str, Membership] = field(default_factory=dict)
    project: Project | None = None
    project_membership: ProjectMembership | None = None
    invitation: Invitation | None = None
    cloud: Cloud | None = None
    image: ContainerImage | None = None
    build: ImageBuild | None = None
    cluster: Cluster | None = None
    node: Node | None = None
    service_account: ServiceAccount | None = None
    token: ApiToken | None = None
    domain_claim: DomainClaim | None = None
    sso_connection: SsoConnection | None = None
    sso_mapping: SsoGroupMapping | None = None
    workspace: Workspace | None = None
    ssh_key: SshKey | None = None
    service: Service | None = None
    job: Job | None = None
    job_schedule: JobSchedule | None = None

    @property
    def owner(self) -> User:
        return self.users[OrgRole.OWNER]

    @property
    def admin(self) -> User:
        return self.users[OrgRole.ADMIN]

    @property
    def member(self) -> User:
        return self.users[OrgRole.MEMBER]

    @property
    def viewer(self) -> User:
        return self.users[OrgRole.VIEWER]


def make_tenant(slug: str) -> Tenant:
    org = OrganizationFactory(slug=slug, name=f"Org {slug.upper()}")
    tenant = Tenant(org=org)
    for role in OrgRole.values:
        user = UserFactory(email=f"{role}@{slug}.example.com")
        tenant.users[role] = user
        tenant.memberships[role] = MembershipFactory(organization=org, user=user, role=role)
    tenant.project = ProjectFactory(organization=org, slug=f"{slug}-project")
    tenant.project_membership = ProjectMembershipFactory(
        project=tenant.project, user=tenant.member, role=ProjectRole.WRITER
    )
    ProjectMembershipFactory(project=tenant.project, user=tenant.viewer, role=ProjectRole.READER)
    tenant.invitation = InvitationFactory(organization=org, email=f"new@{slug}.example.com")
    tenant.cloud = CloudFactory(organization=org, name=f"{slug} local")
    # A Python environment of its own (the cluster below runs a built-in image).
    tenant.image = ContainerImage.objects.create(
        organization=org,
        name=f"{slug} python",
        ray_version="2.40.0",
        python_executable="/usr/bin/python3",
    )
    # A failed image build: its pages and API exist, and nothing was built.
    tenant.build = ImageBuild.objects.create(
        organization=org,
        cloud=tenant.cloud,
        name=f"{slug} build",
        spec={"base": "ray", "requirements": ["humanize"]},
        spec_hash="0" * 64,
        ray_version="2.40.0",
        state=BuildState.FAILED,
        step="environment: pip install",
        log_tail=f"{slug} build log",
    )
    # Terminated, so it counts as nothing live on the cloud; its pages still all work.
    tenant.cluster = ClusterFactory(
        project=tenant.project,
        cloud=tenant.cloud,
        name=f"{slug}-cluster",
        state=ClusterState.TERMINATED,
        desired_state=DesiredState.TERMINATED,
    )
    tenant.node = NodeFactory(
        cluster=tenant.cluster, state=NodeState.TERMINATED, log_tail=f"{slug} node log"
    )
    tenant.service_account = ServiceAccountFactory(organization=org, name=f"{slug}-ci")
    tenant.token = ApiTokenFactory(organization=org, user=tenant.member, name=f"{slug} laptop")
    # Claimed, not verified: it routes nobody and links no account.
    tenant.domain_claim = DomainClaim.objects.create(organization=org, domain=f"{slug}-claim.test")
    # Switched off: it changes nothing for other tests, and its pages exist.
    tenant.sso_mapping = SsoGroupMappingFactory(
        connection__organization=org, idp_group=f"{slug}-engineers"
    )
    tenant.sso_connection = tenant.sso_mapping.connection
    # Stopped: no cluster of its own; its pages all work.
    tenant.workspace = Workspace.objects.create(
        organization=org,
        project=tenant.project,
        name=f"{slug}-workspace",
        cloud=tenant.cloud,
        compute_config=tenant.cluster.compute_config,
        image=tenant.cluster.image,
        files_location=f"/nonexistent/{slug}/files",
        created_by=tenant.member,
    )
    tenant.ssh_key = SshKey.objects.create(
        user=tenant.member,
        name=f"{slug} laptop",
        public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKb5dSnBqvIGmSIHMFmtTpGRqqhyDQh2"
        "hlmuR0V3CF7H",
        fingerprint=f"SHA256:{slug}-fixture",
    )
    # A job that ended: its one attempt ran on the terminated cluster above.
    tenant.job = Job.objects.create(
        organization=org,
        project=tenant.project,
        name=f"{slug}-job",
        entrypoint="python train.py",
        cloud=tenant.cloud,
        state=JobState.SUCCEEDED,
        created_by=tenant.member,
    )
    JobAttempt.objects.create(
        organization=org,
        job=tenant.job,
        number=1,
        cluster=tenant.cluster,
        submission_id=f"raydeck-{slug}-1",
        state=JobState.SUCCEEDED,
        exit_code=0,
    )
    # A paused schedule of that job (paused: no test's beat submits it).
    tenant.job_schedule = JobSchedule.objects.create(
        organization=org,
        project=tenant.project,
        name=f"{slug}-schedule",
        cron="0 3 * * *",
        entrypoint="python train.py",
        cloud=tenant.cloud,
        paused=True,
        created_by=tenant.member,
    )
    # A terminated service whose one (stopped) version ran on the terminated cluster above:
    # final, so no orchestrator (a test's Celery beat) starts a router for it.
    tenant.service = Service.objects.create(
        organization=org,
        project=tenant.project,
        name=f"{slug}-svc",
        cloud=tenant.cloud,
        state=ServiceState.TERMINATED,
        endpoint_url="http://127.0.0.1:9",
    )
    ServiceVersion.objects.create(
        organization=org,
        service=tenant.service,
        number=1,
        serve_config={"applications": [{"name": "default", "import_path": "app:app"}]},
        config_hash="0" * 64,
        compute_config=tenant.cluster.compute_config,
        image=tenant.cluster.image,
        cluster=tenant.cluster,
        state=VersionState.STOPPED,
    )
    return tenant


@pytest.fixture
def tenant_a(db: None) -> Tenant:
    return make_tenant("alpha")


@pytest.fixture
def tenant_b(db: None) -> Tenant:
    return make_tenant("bravo")


@pytest.fixture(autouse=True)
def _no_cache_left_from_another_test() -> None:
    """SQLite gives a rolled-back test's ids to the next test, so entries it left in the
    in-memory cache (a cluster's head report, a node's heartbeat) would belong to the
    next test's rows. PostgreSQL never reuses ids, and its runs share Redis with the
    processes the fault tests start, so that cache is left alone."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    if isinstance(caches["default"], LocMemCache):
        caches["default"].clear()


def activate(cloud: Cloud) -> Cloud:
    """The cloud, verified (clusters may be created on it)."""
    Cloud.objects.filter(pk=cloud.pk).update(state=CloudState.ACTIVE)
    cloud.refresh_from_db()
    return cloud


def client_for(user: User, **kwargs: object) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def fail_for_one(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, *, key: str, pk: int
) -> None:
    """A fault injected in-process: `owner.name` raises when its `key` argument is `pk`
    (a bug one row's data trips) and works for every other row."""
    real = getattr(owner, name)

    def failing(**kwargs: Any) -> Any:
        if kwargs[key] == pk:
            raise RuntimeError("a row this code cannot read")
        return real(**kwargs)

    monkeypatch.setattr(owner, name, failing)


@pytest.fixture(scope="session", autouse=True)
def _no_node_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A last guard: node processes started by this test session (their folders live
    under its temporary directory, or the tests' own local-cloud folder, where nodes of a
    cloud without a folder of its own go) are killed when it ends, even after a crash."""
    ours = tuple(
        f"RAYDECK_NODE_DIR={root}/".encode()
        for root in (tmp_path_factory.getbasetemp(), settings.TEST_LOCAL_CLOUD_ROOT)
    )
    yield
    import os
    import signal
    from pathlib import Path

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(ours) for v in environ):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


# The console's own CSS and scripts, inside every page as bare <style>/<script> elements
# (kit/inline_assets.py); a page's other scripts carry attributes.
INLINE_ASSETS = re.compile(r"<(style|script)>.*?</\1>", re.S)


def page_text(response: Any) -> str:
    """A page's HTML, unescaped, without the console's inlined CSS and scripts: what a
    test looks for (or must not find) is the page's content, not htmx's source."""
    return html.unescape(INLINE_ASSETS.sub("", response.content.decode()))
