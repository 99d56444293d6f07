"""End to end through the console for an AWS cloud (moto stands in for AWS, in-process
decorator mode): verification assumes the role and records its checks, and no
credential AWS handed out appears in any database row, page, or log line."""

from __future__ import annotations

import json
import logging

import pytest
from botocore.session import Session as BotocoreSession
from django.apps import apps
from django.urls import reverse

from clouds import services
from clouds.choices import CloudState
from tests.clouds.moto_account import add_aws_cloud, moto_aws
from tests.conftest import Tenant, client_for

pytestmark = pytest.mark.django_db
__all__ = ["moto_aws"]  # the fixture


def test_verification_stores_checks_but_never_a_credential(
    tenant_a: Tenant, moto_aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = add_aws_cloud(tenant_a, "acme-logs")
    handed_out: list[str] = []
    real_assume = BotocoreSession.create_client

    def spy(self, *args, **kwargs):  # remember every credential STS returns
        client = real_assume(self, *args, **kwargs)

        def keep(parsed, **_):
            creds = parsed.get("Credentials") or {}
            handed_out.extend(
                v for k, v in creds.items() if k in ("SecretAccessKey", "SessionToken")
            )

        client.meta.events.register("after-call.sts.AssumeRole", keep)
        return client

    monkeypatch.setattr(BotocoreSession, "create_client", spy)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        services.cloud_verify_run(verification_id=cloud.verifications.get().pk)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    cloud.refresh_from_db()
    assert cloud.state == CloudState.ACTIVE, cloud.state_reason
    assert handed_out, "the test must have seen AWS hand out credentials"
    dump = json.dumps([list(m.objects.values_list()) for m in apps.get_models()], default=str)
    page = (
        client_for(tenant_a.owner)
        .get(reverse("cloud_detail", args=[tenant_a.org.slug, cloud.pk]))
        .content.decode()
    )
    for secret in handed_out:
        assert secret not in dump
        assert secret not in page
        assert not any(secret in line for line in records)
