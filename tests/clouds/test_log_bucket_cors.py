"""Verifying an AWS cloud end to end (moto stands in for AWS, in-process decorator mode)
lets the console's log page read stored logs from the log bucket: the bucket's CORS
rule names the origin of RAYDECK_BASE_URL, the change is in the verification's audit
event, and a second verification changes nothing. The drivers' own cases (the
customer's rules kept, missing permissions) are in test_aws_driver.py and
test_gcp_driver.py."""

from __future__ import annotations

import boto3
import pytest

from accounts.models import AuditEvent
from clouds import services
from clouds.choices import CloudState
from clouds.models import Cloud
from clouds.providers.registry import console_origin
from tests.clouds.moto_account import CONSOLE_REGION as REGION
from tests.clouds.moto_account import add_aws_cloud, moto_aws
from tests.conftest import Tenant

pytestmark = pytest.mark.django_db
__all__ = ["moto_aws"]  # the fixture
BUCKET = "acme-logs"


@pytest.mark.parametrize(
    ("base_url", "origin"),
    [
        ("https://Console.Acme.example:443/raydeck/", "https://console.acme.example"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:80/", "http://[::1]"),
    ],
)
def test_the_console_origin_is_what_a_browser_sends(settings, base_url: str, origin: str) -> None:
    settings.RAYDECK_BASE_URL = base_url
    assert console_origin() == origin


def _verify(cloud: Cloud, actor) -> Cloud:
    verification = services.cloud_verify_request(cloud=cloud, actor=actor)
    services.cloud_verify_run(verification_id=verification.pk)
    cloud.refresh_from_db()
    return cloud


def test_verification_lets_the_console_read_logs_from_the_bucket_and_audits_it(
    tenant_a: Tenant, moto_aws, settings
) -> None:
    settings.RAYDECK_BASE_URL = "https://console.acme.example/"
    cloud = add_aws_cloud(tenant_a, BUCKET)
    s3 = boto3.client("s3", region_name=REGION)
    services.cloud_verify_run(verification_id=cloud.verifications.get().pk)

    cloud.refresh_from_db()
    assert cloud.state == CloudState.ACTIVE, cloud.state_reason
    [rule] = s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"]
    assert rule["ID"] == "raydeck-console"
    assert rule["AllowedOrigins"] == ["https://console.acme.example"]
    check = cloud.verifications.get().checks.get(name="Log bucket CORS")
    assert check.passed and "added the CORS rule raydeck-console" in check.message
    event = AuditEvent.objects.get(verb="cloud.verified", target_id=str(cloud.pk))
    assert event.organization == tenant_a.org
    assert event.changes["Log bucket CORS"] == [
        None,
        f"CORS rule raydeck-console of s3://{BUCKET} allows https://console.acme.example",
    ]

    _verify(cloud, tenant_a.owner)  # the rule is there: nothing to change or record

    assert cloud.state == CloudState.ACTIVE, cloud.state_reason
    assert s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"] == [rule]
    again = AuditEvent.objects.filter(verb="cloud.verified", target_id=str(cloud.pk))
    assert set(again.exclude(pk=event.pk).get().changes) == {"state"}
