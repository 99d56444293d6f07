"""Services' pages without Ray: the list and its empty state, deploy (the token shown
once, bad input on its field), the service page, the charts' JSON, and the confirmations
of rollback and terminate. Isolation and CSRF are the URL walk's (tests/console)."""

from __future__ import annotations

import pytest

from accounts.choices import OrgRole
from tests.conftest import Tenant, client_for
from tests.serve.conftest import note_traffic
from workloads.serve.choices import ServiceState
from workloads.serve.models import Service, ServiceVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def alpha(tenant_a: Tenant) -> Tenant:
    tenant_a.cloud.state = "active"
    tenant_a.cloud.save(update_fields=["state"])
    return tenant_a


def test_empty_list_says_how_to_deploy(alpha: Tenant) -> None:
    page = client_for(alpha.member).get(f"/o/{alpha.org.slug}/services/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "No services running" in text and "raydeck services deploy -f" in text
    assert "Deploy a service" in text
    viewer = client_for(alpha.viewer).get(f"/o/{alpha.org.slug}/services/").content.decode()
    assert "Ask a writer" in viewer


def test_deploy_shows_the_token_once_and_refuses_bad_input(alpha: Tenant) -> None:
    client = client_for(alpha.member)
    url = f"/o/{alpha.org.slug}/services/deploy/"
    form = {
        "name": "web",
        "project": alpha.project.pk,
        "cloud": alpha.cloud.pk,
        "serve_config": "import_path: not a path\n",
        "canary_steps": "10, 50, 100",
        "step_seconds": 30,
    }
    before = Service.objects.count()
    refused = client.post(url, form)
    assert refused.status_code == 200
    assert "is not a Python import path" in refused.content.decode()
    assert Service.objects.count() == before
    refused = client.post(
        url, {**form, "serve_config": "import_path: app:app", "canary_steps": "50, 10"}
    )
    assert "Steps must rise" in refused.content.decode()

    made = client.post(url, {**form, "serve_config": "import_path: app:app\nargs: {a: 1}\n"})
    assert made.status_code == 200
    text = made.content.decode()
    service = Service.objects.get(name="web")
    assert "shown only now" in text and "rds_" in text
    token = text.split('id="service-token" class="token-once">')[1].split("<")[0]
    assert service.tokens.get().token_hash != token
    # The service page never shows it again.
    detail = client.get(f"/o/{alpha.org.slug}/services/{service.pk}/").content.decode()
    assert token not in detail and "v1" in detail and "Deploying" in detail


def test_service_page_charts_and_confirmations(alpha: Tenant) -> None:
    client = client_for(alpha.member)
    Service.objects.filter(pk=alpha.service.pk).update(state=ServiceState.RUNNING)
    service = alpha.service
    service.refresh_from_db()
    version = service.versions.get()
    base = f"/o/{alpha.org.slug}/services/{service.pk}/"
    note_traffic(version)
    series = client.get(base + "metrics/").json()["versions"]
    assert series[0]["version"] == 1
    point = series[0]["points"][-1]
    assert point["rate"] == 10.0 and point["error_rate"] == 10.0 and point["p99"] <= 10
    page = client.get(base).content.decode()
    assert 'data-metrics-url="' in page and "uPlot.iife.min.js" in page
    assert "Copy" in page and service.endpoint_url in page
    confirm = client.get(base + "terminate/").content.decode()
    assert "Terminate alpha-svc?" in confirm and "Terminate service" in confirm
    assert Service.objects.get(pk=service.pk).state == ServiceState.RUNNING  # GET changed nothing
    client.post(base + "terminate/")
    assert Service.objects.get(pk=service.pk).state == ServiceState.TERMINATING
    viewer = client_for(alpha.viewer)
    assert viewer.get(base).status_code == 200
    assert viewer.post(base + "rollback/").status_code == 403
    assert ServiceVersion.objects.filter(service=service).count() == 1


def test_another_organizations_service_is_404(alpha: Tenant, tenant_b: Tenant) -> None:
    client = client_for(tenant_b.users[OrgRole.OWNER])
    assert client.get(f"/o/{alpha.org.slug}/services/{alpha.service.pk}/").status_code == 404
    assert client.get(f"/o/{tenant_b.org.slug}/services/{alpha.service.pk}/").status_code == 404


def test_the_live_panel_brings_the_endpoint_once_it_exists(alpha: Tenant) -> None:
    client = client_for(alpha.member)
    service = alpha.service
    base = f"/o/{alpha.org.slug}/services/{service.pk}/"
    Service.objects.filter(pk=service.pk).update(state=ServiceState.DEPLOYING, endpoint_url="")
    assert "being created" in client.get(base).content.decode()
    # The page was loaded before the endpoint existed; its next poll brings it along.
    Service.objects.filter(pk=service.pk).update(
        state=ServiceState.RUNNING, endpoint_url="http://127.0.0.1:10999"
    )
    poll = client.get(base, headers={"HX-Request": "true", "HX-Target": "service-live"})
    text = poll.content.decode()
    assert 'id="service-live"' in text
    assert 'id="endpoint-card" hx-swap-oob="true"' in text
    assert 'id="service-endpoint">http://127.0.0.1:10999/<' in text
