"""moto (in-process `mock_aws()`) as the AWS account behind Raydeck's own AWS driver:
fake credentials, no shared config, and the driver's session and credential cache reset,
so what the driver does lands in moto."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from clouds.providers import aws as aws_driver


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
