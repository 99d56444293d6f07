"""Jobs through the JSON API and the console pages (no Ray: the attempts' life is in
test_job_services.py and test_jobs_ray.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from accounts.choices import OrgRole
from clusters.choices import ClusterState
from tests.api.conftest import as_role, assert_error
from tests.conftest import Tenant, client_for
from tests.factories import ClusterFactory, ProjectFactory
from tests.workloads.test_job_queues import shared_cluster
from workloads.jobs.choices import JobState
from workloads.jobs.models import Job

pytestmark = pytest.mark.django_db


def post_job(tenant: Tenant, role: str = OrgRole.MEMBER, **body: Any) -> Any:
    payload = {"project": tenant.project.slug, "entrypoint": "python train.py", **body}
    return as_role(tenant, role).post(f"/orgs/{tenant.org.slug}/jobs", payload)


def test_submit_get_list_stop_and_attempts(alpha: Tenant) -> None:
    answer = post_job(alpha, name="train", env_vars={"SEED": "1"}, max_retries=2)
    assert answer.status == 201, answer.body
    job = answer.body
    assert (job["name"], job["state"], job["max_retries"]) == ("train", "pending", 2)
    client = as_role(alpha)
    assert client.get(f"/orgs/alpha/jobs/{job['id']}").body["id"] == job["id"]
    listed = client.get("/orgs/alpha/jobs", {"state": "pending"}).body
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    stopped = client.post(f"/orgs/alpha/jobs/{job['id']}/stop")
    assert stopped.status == 202
    attempts = client.get(f"/orgs/alpha/jobs/{alpha.job.uuid}/attempts").body["items"]
    assert [(a["number"], a["state"], a["exit_code"]) for a in attempts] == [(1, "succeeded", 0)]
    events = client.get(f"/orgs/alpha/jobs/{job['id']}/events").body["items"]
    assert [e["step"] for e in events] == ["submitted", "stop requested"]


def test_the_same_idempotency_key_submits_once(alpha: Tenant) -> None:
    client = as_role(alpha)
    body = {"project": alpha.project.slug, "entrypoint": "python a.py"}
    first = client.post("/orgs/alpha/jobs", body, **{"Idempotency-Key": "k1"})
    again = client.post("/orgs/alpha/jobs", body, **{"Idempotency-Key": "k1"})
    assert first.status == again.status == 201
    assert first.body["id"] == again.body["id"]
    assert Job.objects.filter(entrypoint="python a.py").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"entrypoint": ""}, "entrypoint"),
        ({"max_retries": -1}, "max_retries"),
        ({"compute_config": "999999"}, "compute_config"),
        ({"working_dir": "999999"}, "working_dir"),
    ],
)
def test_bad_input_names_its_field_and_creates_nothing(
    alpha: Tenant, body: dict[str, Any], field: str
) -> None:
    before = Job.objects.count()
    answer = post_job(alpha, **body)
    assert_error(answer, 422, "validation_error")
    assert field in answer.body["error"]["details"], answer.body
    assert Job.objects.count() == before


def test_another_organizations_cluster_is_refused(alpha: Tenant, bravo: Tenant) -> None:
    answer = post_job(alpha, cluster=str(bravo.cluster.uuid))
    assert_error(answer, 422, "validation_error")
    assert "cluster" in answer.body["error"]["details"]


def test_viewers_read_and_may_not_submit_or_stop(alpha: Tenant) -> None:
    assert_error(post_job(alpha, role=OrgRole.VIEWER), 403, "permission_denied")
    viewer = as_role(alpha, OrgRole.VIEWER)
    assert viewer.get(f"/orgs/alpha/jobs/{alpha.job.uuid}").status == 200
    assert_error(viewer.post(f"/orgs/alpha/jobs/{alpha.job.uuid}/stop"), 403, "permission_denied")


def test_pages_list_filter_show_and_submit(
    alpha: Tenant, django_assert_max_num_queries: Any
) -> None:
    client = client_for(alpha.member)
    org = alpha.org.slug
    for n in range(3):
        post_job(alpha, name=f"extra-{n}")
    with django_assert_max_num_queries(20):
        page = client.get(reverse("job_list", args=[org]))
    assert page.status_code == 200
    assert b"alpha-job" in page.content and b"extra-2" in page.content
    filtered = client.get(reverse("job_list", args=[org]), {"state": "succeeded"})
    assert b"alpha-job" in filtered.content and b"extra-2" not in filtered.content
    detail = client.get(reverse("job_detail", args=[org, alpha.job.pk]))
    assert b"python train.py" in detail.content and b"Attempts" in detail.content

    created = client.post(
        reverse("job_create", args=[org]),
        {
            "project": alpha.project.pk,
            "cloud": alpha.cloud.pk,
            "entrypoint": "python console.py",
            "env_vars": "SEED=1",
            "max_retries": 0,
        },
    )
    job = Job.objects.get(entrypoint="python console.py")
    assert created.status_code == 302, created.content.decode()[:2000]
    assert created["Location"] == reverse("job_detail", args=[org, job.pk])
    assert job.runtime_env == {"env_vars": {"SEED": "1"}}

    confirm = client.get(reverse("job_stop", args=[org, job.pk]))
    assert b"Stop job" in confirm.content
    client.post(reverse("job_stop", args=[org, job.pk]))
    job.refresh_from_db()
    assert job.stop_requested_by == alpha.member

    again = client.post(reverse("job_again", args=[org, alpha.job.pk]))
    assert again.status_code == 302
    assert Job.objects.filter(name="alpha-job", state=JobState.PENDING).count() == 1


def test_the_new_job_form_queues_on_a_running_cluster_of_the_project(
    alpha: Tenant, bravo: Tenant
) -> None:
    shared = shared_cluster(alpha)
    elsewhere = ProjectFactory(organization=alpha.org, slug="alpha-elsewhere")
    other_project = ClusterFactory(
        project=elsewhere, cloud=alpha.cloud, name="elsewhere-cluster", state=ClusterState.RUNNING
    )
    client = client_for(alpha.owner)
    url = reverse("job_create", args=[alpha.org.slug])
    form = client.get(url).content.decode()
    # Offered: running clusters only (the fixture's terminated one is not).
    assert ">shared (" in form and "alpha-cluster" not in form
    fields = {"project": alpha.project.pk, "entrypoint": "python queued.py", "max_retries": 1}

    created = client.post(url, {**fields, "target_cluster": shared.pk, "priority": 7})
    assert created.status_code == 302, created.content.decode()[:2000]
    job = Job.objects.get(entrypoint="python queued.py")
    assert (job.target_cluster, job.priority, job.cloud) == (shared, 7, shared.cloud)

    refusals = [
        ({"target_cluster": other_project.pk}, f"Choose a cluster of {alpha.project.name}."),
        ({"target_cluster": bravo.cluster.pk}, "No such cluster here"),
        ({"target_cluster": shared.pk, "priority": 5000}, "Give a priority from -1000 to 1000."),
        ({}, "Choose a cloud, or a cluster to run on."),
    ]
    for extra, message in refusals:
        answer = client.post(url, {**fields, "entrypoint": "python refused.py", **extra})
        assert answer.status_code == 200 and message in answer.content.decode(), extra
    assert not Job.objects.filter(entrypoint="python refused.py").exists()


def test_the_empty_list_says_what_to_do(alpha: Tenant) -> None:
    Job.objects.all().delete()
    page = client_for(alpha.member).get(reverse("job_list", args=[alpha.org.slug]))
    assert b"raydeck jobs submit --working-dir ." in page.content
