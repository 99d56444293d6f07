"""The access gateway on a real local cluster: real Ray, the real agent and its gateway,
tokens signed by clusters/access.py, the Ray CLI as a user runs it.

Each test starts a one-node cluster (like test_end_to_end.py) and talks to the gateway
over HTTPS on its loopback port, trusting the installation's CA
(clusters/certificates.py), exactly as a browser or `ray job submit` would. Ray's own
ports, reached around the gateway, require the cluster's Ray token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.urls import reverse

from accounts.models import AuditEvent, User
from accounts.services import membership_remove
from clouds.choices import CloudState
from clouds.models import Cloud
from clusters import access, certificates
from clusters.choices import ClusterState
from clusters.models import Cluster
from clusters.services import lifecycle
from tests.clusters.test_end_to_end import drive
from tests.conftest import Tenant, client_for, make_tenant
from tests.factories import ClusterFactory

pytestmark = [
    pytest.mark.ray,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("bash") is None, reason="the local cloud runs bash"),
]
START_SECONDS = 150
REVOKED_WITHIN = 10.0  # the promise
RAY_CLI = str(Path(sys.executable).with_name("ray"))


@contextmanager
def running_cluster(
    live_server: Any, settings: Any, tmp_path: Path, slug: str
) -> Iterator[tuple[Tenant, Cluster, str]]:
    """A one-node cluster of a new tenant, running; (tenant, cluster, gateway address)."""
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant(slug)
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    cluster = lifecycle.cluster_create(
        project=tenant.project, actor=tenant.member, name="gw", cloud=tenant.cloud
    )
    try:
        cluster = drive(
            cluster, {ClusterState.RUNNING, ClusterState.FAILED}, time.monotonic() + START_SECONDS
        )
        assert cluster.state == ClusterState.RUNNING, cluster.state_reason
        address = access.gateway_address(cluster)
        assert address is not None and address.startswith("https://127.0.0.1:")
        trust_ca(tmp_path)
        yield tenant, cluster, address
    finally:
        lifecycle.cluster_terminate(cluster=cluster, actor=None)
        drive(cluster, {ClusterState.TERMINATED}, time.monotonic() + 60)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def trust_ca(tmp_path: Path) -> Path:
    """Trust the installation's CA from now on (as the CLI's pinned copy does)."""
    global _opener
    bundle = tmp_path / "raydeck-ca.pem"
    bundle.write_text(certificates.trust_bundle_pem())
    context = ssl.create_default_context(cafile=str(bundle))
    _opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    return bundle


def call(
    url: str,
    *,
    token: str | None = None,
    cookie: str | None = None,
    method: str = "GET",
    body: dict | None = None,
) -> tuple[int, Any, str]:
    """(status, headers, body) of one request to the gateway, redirects not followed."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        headers["Cookie"] = cookie
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with _opener.open(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read().decode("utf-8", "replace")


def wait_for(condition: Any, seconds: float, every: float = 0.2) -> float | None:
    """Seconds until condition() held, or None if it never did within `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(every)
    return None


# --- Tokens that must not pass ---------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def claims_for(cluster: Cluster, user_id: int, **overrides: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "aud": access.audience(cluster),
        "sub": str(user_id),
        "iat": now,
        "exp": int(now + 300),
        "jti": "test",
        **overrides,
    }


def bad_tokens(cluster: Cluster, other: Cluster, user: User) -> dict[str, str]:
    """Every way a token can be wrong, each otherwise made out for `user` on `cluster`."""
    key = access.access_key(cluster)
    now = time.time()
    user_id = user.pk
    valid = access.mint_token(user=user, cluster=cluster, lifetime=access.LINK_LIFETIME).token
    head, payload, signature = valid.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "==="))
    forged["sub"] = str(user_id + 1000)
    claims = claims_for(cluster, user_id)
    unsigned = (
        _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    hs_body = hs_header + "." + _b64(json.dumps(claims).encode())
    hs_sig = hmac.new(key.public_key.encode(), hs_body.encode(), hashlib.sha256).digest()
    return {
        "expired": access._sign(
            key, claims_for(cluster, user_id, iat=now - 4000, exp=int(now - 3000))
        ),
        "tampered": f"{head}.{_b64(json.dumps(forged).encode())}.{signature}",
        "another cluster's": access.mint_token(
            user=user, cluster=other, lifetime=access.LINK_LIFETIME
        ).token,
        "alg none": unsigned + ".",
        "wrong key": jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA"),
        "HS256 with the public key": f"{hs_body}.{_b64(hs_sig)}",
        "too long-lived": access._sign(key, claims_for(cluster, user_id, exp=int(now + 86400))),
        "garbage": "not-a-token",
    }


def test_only_this_clusters_valid_tokens_reach_the_dashboard_and_job_api(
    live_server, settings, tmp_path
) -> None:
    with running_cluster(live_server, settings, tmp_path, "gwa") as (tenant, cluster, address):
        other = ClusterFactory(project=tenant.project, cloud=tenant.cloud, name="other")
        refused: dict[str, list[str]] = {}
        bad = bad_tokens(cluster, other, tenant.member)
        attempts = [(None, "none"), *((token, name) for name, token in bad.items())]
        for token, name in attempts:
            for method, path, body in [
                ("GET", "/", None),
                ("GET", "/api/version", None),
                ("GET", "/api/jobs/", None),
                ("POST", "/api/jobs/", {"entrypoint": "echo must-not-run"}),
            ]:
                status, headers, text = call(address + path, token=token, method=method, body=body)
                assert status == 401, (name, method, path, status, text[:200])
                assert "Raydeck gateway" in text and "Ray" + " Dashboard" not in text
                assert headers["WWW-Authenticate"].startswith("Bearer")
                refused.setdefault(name, []).append(path)
            # Nor as a browser link.
            if token is not None:
                status, _, _ = call(f"{address}/?token={token}")
                assert status == 401, name
        assert len(refused) == 9

        valid = access.cluster_address(tenant.member, cluster)
        assert valid["job_address"] == address
        token = valid["token"]
        status, _, text = call(address + "/api/version", token=token)
        assert status == 200 and json.loads(text)["ray_version"]
        status, _, text = call(address + "/", token=token)
        assert status == 200 and "<html" in text.lower()
        # Nothing got through before: no job was ever submitted.
        status, _, text = call(address + "/api/jobs/", token=token)
        assert status == 200 and json.loads(text) == []
        assert AuditEvent.objects.filter(verb="cluster.token", actor=tenant.member).exists()

        # The Ray CLI, as a user runs it from a laptop, through the gateway, verifying its
        # certificate with the installation's CA (what `raydeck clusters address --env` sets).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYDECK_"))}
        bundle = str(tmp_path / "raydeck-ca.pem")
        env.update(REQUESTS_CA_BUNDLE=bundle, SSL_CERT_FILE=bundle)
        entry = ["--", "python", "-c", "print('hello through the gateway', 6 * 7)"]
        command = [RAY_CLI, "job", "submit", "--address", address]
        without = subprocess.run(
            command + entry, env=env, capture_output=True, text=True, timeout=120
        )
        assert without.returncode != 0
        headers = json.dumps({"Authorization": f"Bearer {token}"})
        result = subprocess.run(
            [*command, "--headers", headers, *entry],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "hello through the gateway 42" in output  # the job's own output, tailed
        assert "succeeded" in output
        status, _, text = call(address + "/api/jobs/", token=token)
        assert [job["status"] for job in json.loads(text)] == ["SUCCEEDED"]

        # Around the gateway, Ray's own ports want the cluster's Ray token, which only
        # its agents hold: the dashboard and its job API (as `curl` would ask them) ...
        ports = cluster.nodes.get(role="head").ray_ports
        direct = f"http://127.0.0.1:{ports['dashboard']}"
        for method, path, body in [
            ("GET", "/api/version", None),
            ("GET", "/api/jobs/", None),
            ("POST", "/api/jobs/", {"entrypoint": "echo must-not-run"}),
        ]:
            assert call(direct + path, method=method, body=body)[0] == 401, path
        assert call(direct + "/api/jobs/", token=token)[0] == 403  # a Raydeck token is not it
        # ... and the GCS, for a driver in another process.
        driver = (
            f"import ray; ray.init(address='127.0.0.1:{ports['gcs']}'); "
            "print('CPUs', ray.cluster_resources().get('CPU'))"
        )
        outside = subprocess.run(
            [sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=120
        )
        assert outside.returncode != 0, outside.stdout
        assert "authentication" in (outside.stdout + outside.stderr).lower()
        # The same driver with the cluster's token connects: the token is what was missing.
        agent_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": access.ray_token(cluster)}
        inside = subprocess.run(
            [sys.executable, "-c", driver],
            env=agent_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert inside.returncode == 0 and "CPUs" in inside.stdout, inside.stderr[-2000:]
        # Nothing submitted around the gateway ran: one submission, the gateway's.
        status, _, text = call(address + "/api/jobs/", token=token)
        submissions = [job for job in json.loads(text) if job["type"] == "SUBMISSION"]
        assert len(submissions) == 1 and "must-not-run" not in submissions[0]["entrypoint"]


def test_console_link_audits_redirects_and_revocation_applies_within_seconds(
    live_server, settings, tmp_path
) -> None:
    with running_cluster(live_server, settings, tmp_path, "gwb") as (tenant, cluster, address):
        member = client_for(tenant.member)
        page = member.get(reverse("cluster_detail", args=[tenant.org.slug, cluster.pk]))
        assert b"Ray Dashboard" in page.content and address.encode() in page.content
        # The local cloud's built-in image (this project's Python) has JupyterLab.
        assert b"Jupyter" in page.content

        open_url = reverse("cluster_open", args=[tenant.org.slug, cluster.pk, "dashboard"])
        assert member.get(open_url).status_code == 405  # a POST only: it writes the audit
        response = member.post(open_url)
        assert response.status_code == 200 and response["Referrer-Policy"] == "no-referrer"
        # The page moves on at once to the gateway with a fresh link token.
        found = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', response.text)
        assert found is not None
        link = html.unescape(found.group(1))
        assert link.startswith(f"{address}/?token=")
        event = AuditEvent.objects.get(verb="cluster.open", actor=tenant.member)
        assert event.target_id == str(cluster.pk) and event.changes["app"] == [None, "dashboard"]
        link_token = parse_qs(urlsplit(link).query)["token"][0]
        claims = jwt.decode(link_token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] <= 300 and claims["aud"].endswith(str(cluster.uuid))

        # The gateway swaps the link for a cookie of this cluster and a clean URL.
        status, headers, _ = call(link)
        assert status == 303 and headers["Location"] == "/"
        set_cookie = headers["Set-Cookie"]
        name = f"raydeck_gw_{cluster.uuid.hex}"
        assert set_cookie.startswith(name + "=")
        for attribute in ("HttpOnly", "SameSite=Lax", "Path=/"):
            assert attribute.lower() in set_cookie.lower()
        cookie = set_cookie.split(";")[0]
        status, _, text = call(address + "/", cookie=cookie)
        assert status == 200 and "<html" in text.lower()
        assert call(link)[0] == 401  # a link works once
        assert call(address + "/", cookie=cookie.replace("=", "=x", 1))[0] == 401

        # An outsider (another org's owner) gets no link at all: 404.
        outsider = make_tenant("gwc").owner
        assert client_for(outsider).post(open_url).status_code == 404

        # The member is removed: the tool token and the browser session stop within 10 s;
        # the admin's token, unaffected, keeps working.
        tool = access.cluster_address(tenant.member, cluster)["token"]
        admin_token = access.cluster_address(tenant.admin, cluster)["token"]
        assert call(address + "/api/version", token=tool)[0] == 200
        membership_remove(membership=tenant.memberships["member"], actor=tenant.owner)
        took = wait_for(
            lambda: (
                call(address + "/api/version", token=tool)[0] == 401
                and call(address + "/", cookie=cookie)[0] == 401
            ),
            REVOKED_WITHIN,
        )
        assert took is not None, "the removed member still got through after 10 s"
        print(f"revocation applied after {took:.1f} s")
        assert call(address + "/api/version", token=admin_token)[0] == 200

        # "Revoke all access" on the cluster: every token so far, then new ones work.
        access.cluster_access_revoke_all(cluster=cluster, actor=tenant.owner)
        took = wait_for(
            lambda: call(address + "/api/version", token=admin_token)[0] == 401, REVOKED_WITHIN
        )
        assert took is not None, "revoking all access did not apply within 10 s"
        fresh = access.cluster_address(tenant.admin, cluster)["token"]
        assert call(address + "/api/version", token=fresh)[0] == 200
