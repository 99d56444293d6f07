"""The JSON API's test world: the two organizations of tests/conftest.py, each with an
API token for every role (the secrets kept, so requests can send them)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from accounts import services
from accounts.choices import OrgRole
from clouds.choices import CloudState
from tests.conftest import Tenant

API = "/api/v1"


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any


class ApiClient:
    """Requests with `Authorization: Bearer <secret>`, answers parsed as JSON."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.client = Client()

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> Answer:
        if self.secret is not None:
            headers.setdefault("Authorization", f"Bearer {self.secret}")
        kwargs: dict[str, Any] = {"headers": headers}
        if method == "get":
            kwargs["data"] = body
        elif body is not None:
            kwargs["data"] = json.dumps(body) if not isinstance(body, (str, bytes)) else body
            kwargs["content_type"] = "application/json"
        response = getattr(self.client, method)(API + path, **kwargs)
        content = response.content
        return Answer(response.status_code, json.loads(content) if content else None, response)

    def get(self, path: str, params: Any = None, **headers: str) -> Answer:
        return self.call("get", path, params, **headers)

    def post(self, path: str, body: Any = None, **headers: str) -> Answer:
        return self.call("post", path, body, **headers)

    def patch(self, path: str, body: Any = None, **headers: str) -> Answer:
        return self.call("patch", path, body, **headers)

    def put(self, path: str, body: Any = None, **headers: str) -> Answer:
        return self.call("put", path, body, **headers)

    def delete(self, path: str, **headers: str) -> Answer:
        return self.call("delete", path, None, **headers)


def token_secret(tenant: Tenant, role: str, **kwargs: Any) -> str:
    options = {"name": f"api {role}", "days": 30, "read_only": False, **kwargs}
    _, secret = services.token_create(organization=tenant.org, actor=tenant.users[role], **options)
    return secret


def as_role(tenant: Tenant, role: str = OrgRole.MEMBER, **kwargs: Any) -> ApiClient:
    return ApiClient(token_secret(tenant, role, **kwargs))


def verified(tenant: Tenant) -> Tenant:
    """The tenant's local cloud marked verified, so clusters can be created on it."""
    assert tenant.cloud is not None
    tenant.cloud.state = CloudState.ACTIVE
    tenant.cloud.save(update_fields=["state"])
    return tenant


def assert_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, (answer.status, answer.body)
    assert set(answer.body) == {"error"}, answer.body
    error = answer.body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)


@pytest.fixture
def alpha(tenant_a: Tenant) -> Tenant:
    return verified(tenant_a)


@pytest.fixture
def bravo(tenant_b: Tenant) -> Tenant:
    return verified(tenant_b)
