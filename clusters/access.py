"""Reaching a cluster: the tokens its access gateway accepts, and the links that use them.

Users reach a cluster's Ray Dashboard, job API, Jupyter and Grafana directly at the
gateway on its head node (agent/raydeck_agent/gateway.py), never through Raydeck.
Raydeck only signs short-lived tokens for them, here and nowhere else:

- one Ed25519 key pair per cluster (ClusterAccessKey), made when the cluster is created
  or, for older clusters, on first use; the private key is kept encrypted
  (kit/crypto.py), the public key goes to the head agent when it registers;
- a token is a JWT signed with EdDSA: aud "raydeck-cluster:<cluster uuid>", sub the
  user's id, iat (with milliseconds, so a revocation and a new token in the same second
  are told apart), exp (5 minutes for console links, at most an hour for tools) and jti;
- revocations reach the gateway in the head's heartbeat answers (`heartbeat_access`):
  per user, from accounts/revocations.py, and for the whole cluster (`not_before`); so
  does a new certificate (clusters/certificates.py) when the served one ends soon or
  lacks one of the head's names.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.models import User
from accounts.permissions import require
from accounts.revocations import recent_revocations
from kit import crypto

from .certificates import cluster_host_name, heads_lacking_names, renewal_for
from .choices import NodeRole, NodeState
from .models import Cluster, ClusterAccessKey, Node

ALGORITHM = "EdDSA"
LINK_LIFETIME = timedelta(minutes=5)  # console links: used at once, then a gateway session
TOOL_LIFETIME = timedelta(hours=1)  # `ray job submit` and other tools; the most we sign
CACHE_SECONDS = 300  # written on change, filled when empty (as in accounts/revocations.py)


@dataclass(frozen=True)
class App:
    label: str
    path: str  # where the gateway serves it (gateway.py APP_PREFIXES)


# What the gateway can put in front of, in the order the cluster page lists them. The
# dashboard is always there; the others only when the head reported a port for them.
APPS: dict[str, App] = {
    "dashboard": App("Ray Dashboard", "/"),
    "jupyter": App("Jupyter", "/jupyter/lab"),
    "grafana": App("Grafana", "/grafana/"),
    "prometheus": App("Prometheus", "/prometheus/graph"),
}
# Prometheus's range queries on the gateway (apps.py on the head): the cluster page's
# charts read them straight from the browser.
METRICS_QUERY_PATH = "/prometheus/api/v1/query_range"


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: datetime
    jti: str


def audience(cluster: Cluster) -> str:
    return f"raydeck-cluster:{cluster.uuid}"


def subject(user: User) -> str:
    return str(user.pk)


# --- Keys --------------------------------------------------------------------------------


def _new_key_pair() -> tuple[str, str]:
    private = Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return public_pem.decode(), crypto.encrypt(private_pem.decode())


def access_key(cluster: Cluster) -> ClusterAccessKey:
    """The cluster's key pair, made now if it has none. Two callers racing both try to
    insert; the one-to-one constraint keeps the first and the other reads it."""
    found = ClusterAccessKey.objects.filter(cluster=cluster).first()
    if found is not None:
        return found
    public_key, private_key = _new_key_pair()
    try:
        with transaction.atomic():
            return ClusterAccessKey.objects.create(
                organization_id=cluster.organization_id,
                cluster=cluster,
                public_key=public_key,
                private_key_encrypted=private_key,
            )
    except IntegrityError:
        return ClusterAccessKey.objects.get(cluster=cluster)


def ray_token(cluster: Cluster) -> str:
    """The cluster's secret for Ray's token authentication (RAY_AUTH_MODE=token), made on
    first use. Only the cluster's agents get it, in their registration answers; it is
    never shown to a user, put in a URL or logged."""
    key = access_key(cluster)
    if not key.ray_token_encrypted:
        # Racing callers: the first write wins, everyone reads it back.
        ClusterAccessKey.objects.filter(pk=key.pk, ray_token_encrypted="").update(
            ray_token_encrypted=crypto.encrypt(secrets.token_hex(32))
        )
        key.refresh_from_db(fields=["ray_token_encrypted"])
    return crypto.decrypt(key.ray_token_encrypted)


def _sign(key: ClusterAccessKey, claims: dict[str, Any]) -> str:
    private = serialization.load_pem_private_key(
        crypto.decrypt(key.private_key_encrypted).encode(), password=None
    )
    return jwt.encode(claims, private, algorithm=ALGORITHM)  # type: ignore[arg-type]


def mint_token(*, user: User, cluster: Cluster, lifetime: timedelta) -> AccessToken:
    """A token for `user` on `cluster`. Callers check "cluster.access" and audit."""
    if lifetime > TOOL_LIFETIME:
        raise ValueError(f"Access tokens live at most {TOOL_LIFETIME}.")
    now = time.time()
    expires = now + lifetime.total_seconds()
    jti = uuid.uuid4().hex
    claims = {
        "aud": audience(cluster),
        "sub": subject(user),
        "iat": round(now, 3),
        "exp": int(expires),
        "jti": jti,
    }
    token = _sign(access_key(cluster), claims)
    return AccessToken(
        token=token, expires_at=datetime.fromtimestamp(int(expires), tz=UTC), jti=jti
    )


# --- Where the gateway is ------------------------------------------------------------------


def _head(cluster: Cluster) -> Node | None:
    return (
        Node.objects.filter(cluster=cluster, role=NodeRole.HEAD, state=NodeState.READY)
        .only("private_address", "public_address", "ray_ports")
        .order_by("-created_at")
        .first()
    )


def gateway_address(cluster: Cluster, head: Node | None = None) -> str | None:
    """https://host:port of the cluster's gateway (its host name when the installation
    has a cluster domain, else the head's public address when its cloud gives one, else
    its private one), or None until a head with one is up. Also the address of Ray's job
    API for `ray job submit --address`."""
    head = head or _head(cluster)
    if head is None or not head.ray_ports.get("gateway") or not head.private_address:
        return None
    host = cluster_host_name(cluster) or head.public_address or head.private_address
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"https://{host}:{head.ray_ports['gateway']}"


def available_apps(cluster: Cluster, head: Node | None = None) -> list[str]:
    """The apps of APPS the gateway serves on this cluster (the dashboard, plus the
    ones the head agent found installed and reported a port for)."""
    head = head or _head(cluster)
    if head is None or gateway_address(cluster, head) is None:
        return []
    return [name for name in APPS if name == "dashboard" or head.ray_ports.get(name)]


# --- What users ask for ----------------------------------------------------------------


@transaction.atomic(durable=True)
def open_app(*, user: User, cluster: Cluster, app: str) -> str:
    """The gateway URL that opens `app` with a fresh 5-minute token (the gateway swaps
    it for a session cookie). Every opening is audited."""
    require(user, "cluster.access", cluster)
    head = _head(cluster)
    address = gateway_address(cluster, head)
    if address is None or app not in available_apps(cluster, head):
        raise ValidationError(
            f"{APPS[app].label if app in APPS else app} is not available on this cluster now."
        )
    token = mint_token(user=user, cluster=cluster, lifetime=LINK_LIFETIME)
    audit(
        actor=user,
        verb="cluster.open",
        target=cluster,
        changes={"app": [None, app], "token_id": [None, token.jti]},
    )
    return f"{address}{APPS[app].path}?{urlencode({'token': token.token})}"


@transaction.atomic(durable=True)
def cluster_address(user: User, cluster: Cluster) -> dict[str, Any]:
    """What a laptop needs to use the cluster with standard Ray tools: the job address
    (for `ray job submit --address`), the dashboard's URL and a token of at most an hour
    (sent as `Authorization: Bearer <token>`). Audited, like every token handed out."""
    require(user, "cluster.access", cluster)
    address = gateway_address(cluster)
    if address is None:
        raise ValidationError("The cluster has no address yet: wait until it is running.")
    token = mint_token(user=user, cluster=cluster, lifetime=TOOL_LIFETIME)
    audit(actor=user, verb="cluster.token", target=cluster, changes={"token_id": [None, token.jti]})
    return {
        "job_address": address,
        "dashboard_url": f"{address}/",
        "token": token.token,
        "expires_at": token.expires_at,
    }


def metrics_unavailable(cluster: Cluster, head: Node | None = None) -> str | None:
    """Why the cluster page can draw no charts of this cluster, or None when it can."""
    if cluster.is_final:
        return f"the cluster is {cluster.get_state_display().lower()}"
    head = head or _head(cluster)
    if head is None or gateway_address(cluster, head) is None:
        return "the head node is not ready yet"
    if not head.ray_ports.get("prometheus"):
        return "Prometheus is not in this cluster's image"
    return None


@transaction.atomic(durable=True)
def metrics_access(*, user: User, cluster: Cluster) -> dict[str, Any]:
    """What the cluster page's charts need: the URL of Prometheus's range queries on the
    cluster's gateway and a 5-minute token for it (the browser fetches the data itself;
    Raydeck only vends the token). Audited, like every token handed out."""
    require(user, "cluster.access", cluster)
    head = _head(cluster)
    reason = metrics_unavailable(cluster, head)
    address = gateway_address(cluster, head)
    if reason is not None or address is None:
        raise ValidationError(f"metrics unavailable: {reason}")
    token = mint_token(user=user, cluster=cluster, lifetime=LINK_LIFETIME)
    audit(
        actor=user,
        verb="cluster.token",
        target=cluster,
        changes={"app": [None, "metrics"], "token_id": [None, token.jti]},
    )
    return {
        "query_url": f"{address}{METRICS_QUERY_PATH}",
        "token": token.token,
        "expires_at": token.expires_at.isoformat(),
    }


def submit_command(job_address: str, token: str) -> str:
    """The exact `ray job submit` command for this address and token."""
    headers = '{"Authorization": "Bearer ' + token + '"}'
    return (
        f"ray job submit --address {job_address} --headers '{headers}' "
        '-- python -c "import ray; ray.init(); print(ray.cluster_resources())"'
    )


@transaction.atomic(durable=True)
def cluster_access_revoke_all(*, cluster: Cluster, actor: User) -> None:
    """Refuse every token and browser session of this cluster issued until now."""
    require(actor, "cluster.update", cluster)
    key = access_key(cluster)
    ClusterAccessKey.objects.filter(pk=key.pk).update(not_before=timezone.now())
    audit(actor=actor, verb="cluster.revoke_access", target=cluster)
    gateway_changed(cluster.pk)


# --- What the head agent is told -------------------------------------------------------


def registration_access(cluster: Cluster) -> dict[str, Any]:
    """For the head's registration answer: the key its gateway checks tokens with."""
    return {"public_key": access_key(cluster).public_key, "audience": audience(cluster)}


def _cache_key(cluster_pk: int) -> str:
    return f"raydeck:access:v2:{cluster_pk}"  # v2: _load's value gained the heads to re-issue


def _load(cluster_pk: int) -> tuple[int | None, float, list[int]]:
    row = (
        Cluster.objects.filter(pk=cluster_pk)
        .values_list("organization_id", "access_key__not_before")
        .first()
    )
    org_id, not_before = row if row else (None, None)
    reissue = heads_lacking_names(cluster_pk) if row else []
    return org_id, not_before.timestamp() if not_before else 0.0, reissue


def _refresh(cluster_pk: int) -> None:
    cache.set(_cache_key(cluster_pk), _load(cluster_pk), CACHE_SECONDS)


def gateway_changed(cluster_pk: int) -> None:
    """What a cluster's gateway is told changed (its not-before time, a head's names):
    heartbeats read it anew once the change commits."""
    transaction.on_commit(lambda: _refresh(cluster_pk))


def heartbeat_access(
    cluster_pk: int, node_pk: int | None = None, certificate_expires: object = None
) -> dict[str, Any]:
    """For every head heartbeat answer: the revocations the gateway applies, and for the
    head `node_pk` a new certificate when the one it serves (ending at
    `certificate_expires`) ends soon or lacks one of its names. Read from the cache:
    steady heartbeats cost no SQL."""
    cached = cache.get(_cache_key(cluster_pk))
    if cached is None:
        cached = _load(cluster_pk)
        cache.add(_cache_key(cluster_pk), cached, CACHE_SECONDS)
    org_id, not_before, reissue = cached
    answer: dict[str, Any] = {
        "revoked": recent_revocations(org_id) if org_id is not None else {},
        "not_before": not_before,
    }
    if node_pk is not None:
        due = node_pk in reissue
        certificate = renewal_for(node_pk, certificate_expires, reissue=due)
        if certificate is not None:
            answer["certificate"] = certificate
        if due:
            _refresh(cluster_pk)  # re-issued just now: due no more
    return answer
