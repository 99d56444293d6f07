"""moto (in-process `mock_aws()`) as the AWS account behind Raydeck's own AWS driver:
fake credentials, no shared config, and the driver's session and credential cache reset,
so what the driver does lands in moto. `moto_aws` is the fixture of the tests that add
an AWS cloud as a person does (import it into the test module)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from clouds import services
from clouds.choices import CloudKind
from clouds.providers import aws as aws_driver

if TYPE_CHECKING:
    from clouds.models import Cloud
    from tests.conftest import Tenant

CONSOLE_REGION = "eu-west-1"  # the region of moto_aws's account


@contextlib.contextmanager
def moto_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, region: str) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(aws_driver, "_DEFAULT_SESSION", None)
    aws_driver.clear_credentials_cache()
    try:
        with mock_aws():
            yield
    finally:
        aws_driver.clear_credentials_cache()


@pytest.fixture
def moto_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Any) -> Iterator[None]:
    """The account in CONSOLE_REGION, and Raydeck's own principal set (without one, an
    installation cannot add AWS clouds)."""
    settings.RAYDECK_AWS_PRINCIPAL_ARN = "arn:aws:iam::111122223333:role/raydeck"
    with moto_account(monkeypatch, tmp_path, CONSOLE_REGION):
        yield


def add_aws_cloud(tenant: Tenant, bucket: str) -> Cloud:
    """An AWS cloud its owner adds (verification requested, not run), with its role and
    the log bucket `bucket` made in moto_aws's account."""
    iam = boto3.client("iam", region_name=CONSOLE_REGION)
    role = iam.create_role(RoleName="raydeck-control-plane", AssumeRolePolicyDocument="{}")
    boto3.client("s3", region_name=CONSOLE_REGION).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": CONSOLE_REGION}
    )
    return services.cloud_create(
        organization=tenant.org,
        actor=tenant.owner,
        kind=CloudKind.AWS,
        name="AWS",
        region=CONSOLE_REGION,
        log_location=f"s3://{bucket}/raydeck",
        aws_role_arn=role["Role"]["Arn"],
    )
