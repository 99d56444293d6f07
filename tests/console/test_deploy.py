"""Production settings: the deployment checklist passes, and missing secrets stop
the process instead of starting insecurely."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "console.settings.production",
    "DJANGO_SECRET_KEY": "ci-only-" + "k3y-" * 16,
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/raydeck_unused",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "ALLOWED_HOSTS": "raydeck.example.com",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_passes_with_production_settings() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "missing", ["DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"]
)
def test_production_refuses_to_start_without(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert f"{missing} must be set" in result.stderr


def test_production_cookies_are_host_prefixed_and_secure() -> None:
    result = manage(
        "shell",
        "-c",
        (
            "from django.conf import settings as s;"
            "print(s.SESSION_COOKIE_NAME, s.CSRF_COOKIE_NAME, s.SESSION_COOKIE_SECURE,"
            " s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY)"
        ),
        env=PRODUCTION_ENV,
    )
    assert result.stdout.strip().splitlines()[-1].split() == [
        "__Host-sessionid",
        "__Host-csrftoken",
        "True",
        "True",
        "True",
    ]


@pytest.mark.django_db
def test_csp_forbids_inline_code_on_every_kind_of_response() -> None:
    for url, headers in [
        ("/accounts/login/", {}),
        ("/healthz", {}),
        ("/accounts/login/", {"HX-Request": "true"}),
        ("/no-such-page", {}),
    ]:
        policy = Client().get(url, headers=headers)["Content-Security-Policy"]
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "script-src 'self'" in policy and "object-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy


@pytest.mark.django_db
def test_probes() -> None:
    assert Client().get("/healthz").json() == {"status": "ok"}
    ready = Client().get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({"RAYDECK_AGENT_URL": "http://10.0.0.5:8000"}, True),
        ({"RAYDECK_BASE_URL": "http://raydeck.example.com"}, True),  # the agents' default
        ({"RAYDECK_AGENT_URL": "http://10.0.0.5:8000", "RAYDECK_AGENT_ALLOW_HTTP": "1"}, False),
        ({"RAYDECK_AGENT_URL": "https://raydeck.internal"}, False),
    ],
)
def test_production_refuses_an_http_agent_url_without_the_override(
    extra: dict[str, str], refused: bool
) -> None:
    result = manage("check", env={**PRODUCTION_ENV, **extra})
    assert (result.returncode != 0) == refused, result.stderr[-2000:]
    if refused:
        assert "RAYDECK_AGENT_URL must be an https:// URL" in result.stderr
        assert "RAYDECK_AGENT_ALLOW_HTTP=1" in result.stderr
