"""The GCP driver: Compute Engine instances in a customer's project, reached through
Workload Identity Federation (no service-account keys anywhere).

This is the only module that imports google.cloud.compute / google.auth (tests aside),
so the rest of Raydeck sees only the `CloudProvider` interface and `CloudError`s.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import requests
from google.api_core import exceptions as gexc
from google.auth import aws, identity_pool
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.transport.requests import AuthorizedSession, Request
from google.cloud import artifactregistry_v1, compute_v1
from google.cloud.devtools import cloudbuild_v1

from . import gcp_builds, gcp_firewall, gcp_router
from .base import (
    CHECK_LOG_CORS,
    LOG_CORS_NOT_CHECKED,
    TAG_CLOUD,
    TAG_CLUSTER,
    TAG_NODE,
    BrowserRead,
    CheckResult,
    CloudError,
    FirewallSpec,
    Instance,
    InstanceState,
    NodeSpec,
    PermanentCloudError,
    PermanentErrorKind,
    ServiceRouter,
    SignedUrl,
    StoredObject,
    TransientCloudError,
    check_storage_key,
    instance_tags,
    no_storage_error,
    split_bucket_location,
    storage_root,
)
from .builds import BuildRequest, BuildStatus
from .kinds import GcpTraits

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
STS_TOKEN_URL = "https://sts.googleapis.com/v1/token"  # noqa: S105 - a URL, not a secret
IMPERSONATION_URL = (
    "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{}:generateAccessToken"
)
IAM_AUDIENCE_PREFIX = "//iam.googleapis.com/"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
AWS_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"  # noqa: S105
STORAGE_ENDPOINT = "https://storage.googleapis.com"
SIGN_BLOB_URL = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{}:signBlob"
V4_ALGORITHM = "GOOG4-RSA-SHA256"

# GCE instance statuses → ours. TERMINATED is GCE's word for "stopped" (the instance and
# its disk still exist); deleted instances simply disappear from list/get.
_STATES = {
    "PROVISIONING": InstanceState.PENDING,
    "STAGING": InstanceState.PENDING,
    "RUNNING": InstanceState.RUNNING,
    "REPAIRING": InstanceState.PENDING,  # GCE brings it back to RUNNING by itself
    "STOPPING": InstanceState.STOPPING,
    "PENDING_STOP": InstanceState.STOPPING,
    "SUSPENDING": InstanceState.STOPPING,
    "DEPROVISIONING": InstanceState.STOPPING,
    "STOPPED": InstanceState.STOPPED,
    "SUSPENDED": InstanceState.STOPPED,
    "TERMINATED": InstanceState.STOPPED,
}

_INSTANCE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]")


# --- Credentials.


def federated_credentials(*, workload_identity_provider: str, service_account: str) -> Credentials:
    """Short-lived credentials for `service_account`, obtained by exchanging Raydeck's own
    identity at Google STS through the customer's workload identity provider.

    Raydeck's identity is an OIDC token file (RAYDECK_GCP_SUBJECT_TOKEN_FILE, e.g. a
    projected Kubernetes token) or, when that is empty, the installation's AWS identity.
    Nothing is fetched or written here: the exchange happens on first use (refresh).
    """
    from django.conf import settings  # lazy: drivers stay usable without Django set up

    provider = workload_identity_provider.strip()
    if provider.startswith(IAM_AUDIENCE_PREFIX):
        audience = provider
    else:
        audience = IAM_AUDIENCE_PREFIX + provider.lstrip("/")
    common: dict[str, Any] = {
        "audience": audience,
        "token_url": STS_TOKEN_URL,
        "service_account_impersonation_url": IMPERSONATION_URL.format(service_account.strip()),
        "scopes": [CLOUD_PLATFORM_SCOPE],
    }
    token_file = getattr(settings, "RAYDECK_GCP_SUBJECT_TOKEN_FILE", "")
    if token_file:
        return identity_pool.Credentials(
            subject_token_type=JWT_TOKEN_TYPE,
            credential_source={"file": str(token_file)},
            **common,
        )
    # A boto3-backed supplier rather than google-auth's built-in EC2 metadata lookup, so
    # every AWS identity source works (env, ECS task role, EKS IRSA, instance profile).
    return aws.Credentials(
        subject_token_type=AWS_TOKEN_TYPE,
        aws_security_credentials_supplier=_Boto3AwsSupplier(),
        **common,
    )


class _Boto3AwsSupplier(aws.AwsSecurityCredentialsSupplier):
    """Feeds google-auth the installation's AWS credentials from boto3's default chain.
    google-auth signs a GetCallerIdentity request with them; they never leave the process."""

    def get_aws_security_credentials(
        self, context: Any, request: Any
    ) -> aws.AwsSecurityCredentials:
        import boto3  # lazy: only installations using their AWS identity need it

        found = boto3.Session().get_credentials()
        if found is None:
            raise auth_exc.RefreshError(
                "No AWS identity found for this Raydeck installation "
                "(and RAYDECK_GCP_SUBJECT_TOKEN_FILE is empty)."
            )
        frozen = found.get_frozen_credentials()
        return aws.AwsSecurityCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    def get_aws_region(self, context: Any, request: Any) -> str:
        import boto3

        return boto3.Session().region_name or "us-east-1"


# --- Errors.

# Secrets that could appear in library error text; never shown or logged.
_SECRET_PATTERNS = [
    re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*"),  # JWTs (OIDC subject tokens)
    re.compile(r"ya29\.[\w.-]+"),  # Google access tokens
    re.compile(r"(?i)bearer\s+\S+"),
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(
        r'(?i)"?(access_token|id_token|subject_token|private_key\w*|secret\w*|token)"?'
        r'\s*[:=]\s*"?[^",\s]+'
    ),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
    # Long opaque blobs (signatures, keys). No "/" in the class: URLs and resource paths
    # must stay readable, and UUID-based names are far shorter.
    re.compile(r"[A-Za-z0-9+_-]{48,}={0,2}"),
]


# What a Google client call raises when the cloud (not our code) is the problem; anything
# else is a bug and propagates as itself.
GOOGLE_ERRORS = (
    gexc.GoogleAPIError,
    auth_exc.GoogleAuthError,
    requests.exceptions.RequestException,
    OSError,
)


def redact(text: str, limit: int = 400) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _norm(code: str) -> str:
    return code.replace("_", "").replace("-", "").lower()


def _permission_from(message: str, default: str) -> str:
    match = re.search(r"Required '([a-zA-Z0-9_.]+)' permission", message)
    return match.group(1) if match else default


def classify(
    *,
    status: int | None,
    reasons: Iterable[str],
    message: str,
    action: str,
    permission: str,
    service_account: str,
    project_id: str,
    image: str = "",
) -> CloudError:
    """One mapping for HTTP errors and operation errors: reasons first (they are more
    specific than the status: GCE reports quota as 403), then the status."""
    found = {_norm(r) for r in reasons if r}
    text = redact(message)
    lowered = message.lower()
    who = service_account or "Raydeck's service account"
    if found & {"ratelimitexceeded", "userratelimitexceeded", "resourcenotready"}:
        return TransientCloudError(
            f"GCP is throttling or busy ({text}); Raydeck will retry.", detail=text
        )
    if found & {"quotaexceeded"} or re.search(r"quota '[^']+' exceeded", lowered):
        return PermanentCloudError(
            f"A GCP quota in project {project_id} is exhausted: {text} "
            "Request a quota increase, use a smaller machine type, or stop other instances.",
            kind=PermanentErrorKind.QUOTA,
            detail=text,
        )
    if any("resourcepoolexhausted" in r or "stockout" in r for r in found) or re.search(
        r"resources? (pool )?exhausted|does not have enough resources", lowered
    ):
        return PermanentCloudError(
            f"The zone has no capacity for this machine type right now ({text}). "
            "Try another zone or machine type, or try again later.",
            kind=PermanentErrorKind.CAPACITY,
            detail=text,
        )
    if (
        image
        and "image" in lowered
        and (status in (400, 404) or found & {"notfound", "resourcenotfound", "invalid"})
    ):
        return PermanentCloudError(
            f"The boot image {image} was not found or cannot be used: {text} "
            f"Check the image URL and that {who} may use it (compute.images.useReadOnly).",
            kind=PermanentErrorKind.INVALID_IMAGE,
            detail=text,
        )
    if status is not None and (status >= 500 or status in (408, 429)):
        return TransientCloudError(
            f"GCP returned a temporary error (HTTP {status}); Raydeck will retry.", detail=text
        )
    if status in (401, 403) or found & {
        "forbidden",
        "insufficientpermissions",
        "permissionsdenied",
        "permissionserror",  # operation error code PERMISSIONS_ERROR
    }:
        if found & {"accessnotconfigured", "servicedisabled"}:
            return PermanentCloudError(
                f"The Compute Engine API is not enabled in project {project_id}. "
                "Enable compute.googleapis.com in that project.",
                kind=PermanentErrorKind.PERMISSION,
                detail=text,
            )
        needed = _permission_from(message, permission)
        return PermanentCloudError(
            f"{who} is not allowed to {action} in project {project_id}: it needs the "
            f"{needed} permission. Grant it a role that includes {needed} "
            "(e.g. roles/compute.instanceAdmin.v1).",
            kind=PermanentErrorKind.PERMISSION,
            detail=text,
        )
    if status == 404 or found & {"notfound", "resourcenotfound"}:
        return PermanentCloudError(
            f"GCP could not find what Raydeck asked to {action}: {text}",
            kind=PermanentErrorKind.NOT_FOUND,
            detail=text,
        )
    return PermanentCloudError(
        f"GCP rejected the request to {action}: {text}",
        kind=PermanentErrorKind.INVALID_REQUEST,
        detail=text,
    )


def map_google_error(
    exc: BaseException,
    *,
    action: str,
    permission: str,
    service_account: str = "",
    project_id: str = "",
    image: str = "",
    workload_identity_provider: str = "",
) -> CloudError:
    """Any exception a Google client call can raise → a CloudError safe to show."""
    if isinstance(exc, CloudError):
        return exc
    unreachable = (
        gexc.RetryError,
        requests.exceptions.RequestException,
        auth_exc.TransportError,
        ConnectionError,
        TimeoutError,
    )
    if isinstance(exc, unreachable):
        return TransientCloudError(
            f"Could not reach GCP to {action} ({type(exc).__name__}); Raydeck will retry.",
            detail=redact(str(exc)),
        )
    if isinstance(exc, auth_exc.RefreshError):
        if getattr(exc, "retryable", False):
            return TransientCloudError(
                "Getting a GCP token failed temporarily; Raydeck will retry.",
                detail=redact(str(exc)),
            )
        return PermanentCloudError(
            _credentials_advice(service_account, workload_identity_provider),
            kind=PermanentErrorKind.PERMISSION,
            detail=redact(str(exc)),
        )
    if isinstance(exc, gexc.GoogleAPICallError):
        reasons = [e.get("reason", "") for e in exc.errors or [] if isinstance(e, dict)]
        if exc.reason:
            reasons.append(exc.reason)
        return classify(
            status=int(exc.code) if isinstance(exc.code, int) else None,
            reasons=reasons,
            message=exc.message or str(exc),
            action=action,
            permission=permission,
            service_account=service_account,
            project_id=project_id,
            image=image,
        )
    return PermanentCloudError(
        f"Unexpected error from GCP while trying to {action} ({type(exc).__name__}).",
        kind=PermanentErrorKind.INVALID_REQUEST,
        detail=redact(str(exc)),
    )


def v4_signed_url(
    *,
    method: str,
    endpoint: str,
    bucket: str,
    key: str,
    service_account: str,
    sign: Callable[[bytes], bytes],
    expires_in: int,
    headers: dict[str, str] | None = None,
    now: datetime | None = None,
) -> str:
    """A Cloud Storage V4 signed URL (path style): the canonical request (method, path,
    the X-Goog-* query, the signed headers, UNSIGNED-PAYLOAD) is hashed into the string
    to sign, which `sign` signs as `service_account` (RSA-SHA256)."""
    now = now or datetime.now(UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/auto/storage/goog4_request"
    host = urlsplit(endpoint).netloc
    base_path = urlsplit(endpoint).path.rstrip("/")
    path = f"{base_path}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"
    signed_headers = {"host": host, **{k.lower(): v for k, v in (headers or {}).items()}}
    names = ";".join(sorted(signed_headers))
    query = {
        "X-Goog-Algorithm": V4_ALGORITHM,
        "X-Goog-Credential": f"{service_account}/{scope}",
        "X-Goog-Date": stamp,
        "X-Goog-Expires": str(expires_in),
        "X-Goog-SignedHeaders": names,
    }
    canonical_query = "&".join(
        f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(query.items())
    )
    canonical_request = "\n".join(
        [
            method,
            path,
            canonical_query,
            "".join(f"{k}:{signed_headers[k].strip()}\n" for k in sorted(signed_headers)),
            names,
            "UNSIGNED-PAYLOAD",
        ]
    )
    to_sign = "\n".join(
        [V4_ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    signature = sign(to_sign.encode()).hex()
    origin = endpoint.rstrip("/")[: len(endpoint.rstrip("/")) - len(base_path)]
    return f"{origin}{path}?{canonical_query}&X-Goog-Signature={signature}"


def _credentials_advice(service_account: str, provider: str) -> str:
    sa = service_account or "the configured service account"
    via = f" through workload identity provider {provider}" if provider else ""
    return (
        f"Raydeck could not get a token for service account {sa}{via}. Check that the "
        "workload identity pool and provider exist and accept Raydeck's identity (issuer, "
        "allowed audiences, attribute condition), and that the pool's principal is granted "
        f"roles/iam.workloadIdentityUser on {sa}."
    )


# --- Names, labels, conversions.


def instance_name(node_id: uuid.UUID) -> str:
    name = f"rd-{node_id}"
    assert _INSTANCE_NAME.fullmatch(name)  # noqa: S101 - UUIDs always fit; guards edits
    return name


def gce_labels(*, cloud_id: uuid.UUID, node: NodeSpec) -> dict[str, str]:
    """Tags as GCE labels: lowercase [a-z0-9_-], ≤63 chars, keys start with a letter.
    Raydeck's own three are applied last so a user label can never overwrite them."""
    labels: dict[str, str] = {}
    for key, value in instance_tags(cloud_id=cloud_id, node=node).items():
        clean_key = _LABEL_INVALID.sub("_", key.lower())[:63]
        if not clean_key or not clean_key[0].isalpha():
            continue  # not expressible as a GCE label key
        labels[clean_key] = _LABEL_INVALID.sub("_", value.lower())[:63]
    labels.update(
        {TAG_CLOUD: str(cloud_id), TAG_CLUSTER: str(node.cluster_id), TAG_NODE: str(node.node_id)}
    )
    return labels


def label_filter(labels: dict[str, str]) -> str:
    # GCE list filter: one parenthesised `labels.KEY = "VALUE"` term each, ANDed.
    return " AND ".join(f'(labels.{k} = "{v}")' for k, v in labels.items())


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _parse_timestamp(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _to_instance(resource: compute_v1.Instance) -> Instance:
    labels = dict(resource.labels)
    private_address = public_address = None
    for nic in resource.network_interfaces:
        private_address = private_address or nic.network_i_p or None
        for access in nic.access_configs:
            public_address = public_address or access.nat_i_p or None
    return Instance(
        instance_id=f"{_last_segment(resource.zone)}/{resource.name}",
        state=_STATES.get(resource.status, InstanceState.UNKNOWN),
        node_id=_uuid_or_none(labels.get(TAG_NODE)),
        cluster_id=_uuid_or_none(labels.get(TAG_CLUSTER)),
        instance_type=_last_segment(resource.machine_type) if resource.machine_type else "",
        private_address=private_address,
        public_address=public_address,
        launched_at=_parse_timestamp(resource.creation_timestamp),
    )


def _cors_entry(wanted: BrowserRead) -> dict[str, Any]:
    """Raydeck's entry in a bucket's CORS configuration: exactly the log page's read.
    (Cloud Storage's `responseHeader` names both the request headers a preflight may ask
    for and the response headers the page may read.)"""
    return {
        "origin": [wanted.origin],
        "method": [wanted.method],
        "responseHeader": [*wanted.request_headers, *wanted.exposed_headers],
        "maxAgeSeconds": wanted.max_age_seconds,
    }


def _cors_entry_allows(entry: dict[str, Any], wanted: BrowserRead) -> bool:
    headers = entry.get("responseHeader", [])
    return wanted.allowed_by(
        origins=entry.get("origin", []),
        methods=entry.get("method", []),
        request_headers=headers,
        exposed_headers=headers,
    )


def _is_raydecks_entry(entry: dict[str, Any], ours: dict[str, Any]) -> bool:
    """Cloud Storage's entries have no ID: Raydeck's is the one shaped like its own, for
    whatever origin."""
    return {**entry, "origin": ours["origin"]} == ours


def _split_instance_id(instance_id: str) -> tuple[str, str]:
    zone, _, name = instance_id.partition("/")
    if not zone or not name or "/" in name:
        raise PermanentCloudError(
            f"{instance_id!r} is not a GCE instance id (expected zone/name).",
            kind=PermanentErrorKind.INVALID_REQUEST,
        )
    return zone, name


# --- The driver.


class GcpProvider(GcpTraits):
    """Compute Engine in one project, across a few zones of the customer's choosing."""

    def __init__(
        self,
        *,
        cloud_id: uuid.UUID,
        project_id: str,
        zones: list[str],
        log_location: str = "",
        credentials: Credentials,
        image: str = "",
        node_service_account: str = "",
        api_endpoint: str | None = None,
        storage_endpoint: str | None = None,
        signer: Callable[[bytes], bytes] | None = None,
        network: str = "global/networks/default",
        subnetwork: str = "",
        public_addresses: bool = False,
        disk_size_gb: int = 50,
        operation_timeout: float = 120.0,
        call_timeout: float = 30.0,
        poll_interval: float = 2.0,
        firewall: FirewallSpec | None = None,
        console_origin: str = "",
    ) -> None:
        self.firewall = firewall  # the cloud's firewall rules (gcp_firewall.py)
        # Where the console's log page reads stored logs from ("": no browser does).
        self.console_origin = console_origin
        self._firewall_ready = False
        if not zones:
            raise ValueError("GcpProvider needs at least one zone")
        self.cloud_id = cloud_id
        self.project_id = project_id
        self.zones = list(zones)
        self.log_location = log_location
        self.image = image
        self.node_service_account = node_service_account  # what the VMs run as
        self.network = network
        self.subnetwork = subnetwork
        self.public_addresses = public_addresses  # an external NAT address per VM
        self.disk_size_gb = disk_size_gb
        self.operation_timeout = operation_timeout
        self.call_timeout = call_timeout
        self.poll_interval = poll_interval
        self._credentials = credentials
        self._storage_endpoint = (storage_endpoint or STORAGE_ENDPOINT).rstrip("/")
        # Signs storage URLs as the impersonated service account (IAM signBlob), since
        # federated credentials hold no private key; tests pass a local key's signer.
        self._signer = signer or self._sign_blob
        options = {"api_endpoint": api_endpoint} if api_endpoint else None
        kwargs: dict[str, Any] = {
            "credentials": credentials,
            "transport": "rest",
            "client_options": options,
        }
        self._client_kwargs = kwargs  # the service router's clients (gcp_router.py)
        self._instances = compute_v1.InstancesClient(**kwargs)
        self._operations = compute_v1.ZoneOperationsClient(**kwargs)
        self._zones_client = compute_v1.ZonesClient(**kwargs)
        self._projects = compute_v1.ProjectsClient(**kwargs)
        self._builds = gcp_builds.GcpBuilds(
            cloud_id=cloud_id,
            project_id=project_id,
            region=self.zones[0].rsplit("-", 1)[0],
            log_location=log_location,
            builds=cloudbuild_v1.CloudBuildClient(**kwargs),
            registry=artifactregistry_v1.ArtifactRegistryClient(**kwargs),
            call=self._call,
            read_text=self._stored_text,
        )
        self._builds_ready = False  # the cloud's build repository exists
        self._firewalls = gcp_firewall.Firewalls(
            compute_v1.FirewallsClient(**kwargs),
            compute_v1.GlobalOperationsClient(**kwargs),
            project_id,
            call_timeout,
        )

    # Who we act as, for messages; never the token itself.
    @property
    def service_account(self) -> str:
        return str(getattr(self._credentials, "service_account_email", None) or "")

    @property
    def workload_identity_provider(self) -> str:
        info = getattr(self._credentials, "info", None)
        audience = info.get("audience", "") if isinstance(info, dict) else ""
        return audience.removeprefix(IAM_AUDIENCE_PREFIX)

    def _call(
        self,
        fn: Callable[..., _T],
        *,
        action: str,
        permission: str,
        image: str = "",
        **kwargs: Any,
    ) -> _T:
        # No library-level retries (some methods default to retrying for 10 minutes):
        # callers retry TransientCloudError with their own backoff, so calls stay bounded.
        try:
            return fn(retry=None, timeout=self.call_timeout, **kwargs)
        except GOOGLE_ERRORS as exc:
            raise self._mapped(exc, action=action, permission=permission, image=image) from exc

    def _mapped(
        self, exc: BaseException, *, action: str, permission: str, image: str = ""
    ) -> CloudError:
        error = map_google_error(
            exc,
            action=action,
            permission=permission,
            service_account=self.service_account,
            project_id=self.project_id,
            image=image,
            workload_identity_provider=self.workload_identity_provider,
        )
        not_found = getattr(error, "kind", None) == PermanentErrorKind.NOT_FOUND
        # A 404 is routine here (describe/terminate of a gone instance): no warning.
        logger.log(
            logging.DEBUG if not_found else logging.WARNING,
            "GCP call failed (%s): %s",
            action,
            error.detail or error.user_message,
        )
        return error

    def _list(self, zone: str, labels: dict[str, str], *, action: str) -> list[Instance]:
        def fetch(**kwargs: Any) -> list[compute_v1.Instance]:
            # The pager fetches further pages while iterating, so iterate inside the call.
            return list(self._instances.list(**kwargs))

        request = compute_v1.ListInstancesRequest(
            project=self.project_id, zone=zone, filter=label_filter(labels)
        )
        resources = self._call(
            fetch, action=action, permission="compute.instances.list", request=request
        )
        return [_to_instance(r) for r in resources]

    def _get(self, zone: str, name: str) -> compute_v1.Instance | None:
        try:
            return self._call(
                self._instances.get,
                action="read instances",
                permission="compute.instances.get",
                project=self.project_id,
                zone=zone,
                instance=name,
            )
        except PermanentCloudError as exc:
            if exc.kind == PermanentErrorKind.NOT_FOUND:
                return None
            raise

    def _wait(self, operation: compute_v1.Operation, zone: str) -> compute_v1.Operation:
        """Poll the zone operation until DONE, but never past `operation_timeout`: a
        slow GCE becomes a TransientCloudError (the retry finds the instance by label or
        reuses the request_id), not a stuck worker."""
        deadline = time.monotonic() + self.operation_timeout
        while operation.status != compute_v1.Operation.Status.DONE:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientCloudError(
                    f"GCP operation {operation.name} in {zone} is still running after "
                    f"{self.operation_timeout:.0f} s; Raydeck will check again.",
                )
            started = time.monotonic()
            try:
                # `wait` returns when the operation is done or after up to ~2 minutes.
                operation = self._operations.wait(
                    project=self.project_id,
                    zone=zone,
                    operation=operation.name,
                    retry=None,
                    timeout=max(0.1, min(remaining, self.call_timeout)),
                )
            except requests.exceptions.Timeout:
                continue  # our own per-call timeout while GCE held the wait: keep polling
            except GOOGLE_ERRORS as exc:
                raise self._mapped(
                    exc, action="wait for an operation", permission="compute.zoneOperations.get"
                ) from exc
            if operation.status != compute_v1.Operation.Status.DONE:
                # Avoid a hot loop when `wait` answers early.
                time.sleep(
                    max(0.0, min(self.poll_interval - (time.monotonic() - started), remaining))
                )
        return operation

    def _operation_error(
        self, operation: compute_v1.Operation, *, action: str, permission: str, image: str = ""
    ) -> CloudError | None:
        errors = list(operation.error.errors) if operation.error else []
        if not errors:
            return None
        error = classify(
            status=operation.http_error_status_code or None,
            reasons=[e.code for e in errors],
            message="; ".join(e.message for e in errors if e.message),
            action=action,
            permission=permission,
            service_account=self.service_account,
            project_id=self.project_id,
            image=image,
        )
        logger.warning("GCP operation %s failed (%s): %s", operation.name, action, error.detail)
        return error

    # --- CloudProvider.

    def launch(self, *, node: NodeSpec, boot_script: str, idempotency_key: str) -> Instance:
        zone = node.zone or self.zones[0]
        if zone not in self.zones:
            # list_instances only looks in configured zones; an instance elsewhere would leak.
            raise PermanentCloudError(
                f"Zone {zone} is not one of this cloud's zones ({', '.join(self.zones)}).",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        request_id = str(uuid.UUID(idempotency_key))  # GCE only accepts UUIDs here
        name = instance_name(node.node_id)
        found = self._list(
            zone,
            {TAG_CLOUD: str(self.cloud_id), TAG_NODE: str(node.node_id)},
            action="look for an existing instance",
        )
        if found:
            logger.info("GCE instance for node %s already exists: %s", node.node_id, found[0])
            return found[0]
        if not node.image:
            raise PermanentCloudError(
                "No boot image is set for this node; GCP needs an image URL such as "
                "projects/debian-cloud/global/images/family/debian-12.",
                kind=PermanentErrorKind.INVALID_IMAGE,
            )
        if self.firewall is not None and not self._firewall_ready:
            self.ensure_firewall()
        logger.info("Creating GCE instance %s in %s/%s", name, self.project_id, zone)
        try:
            operation = self._instances.insert_unary(
                request=compute_v1.InsertInstanceRequest(
                    project=self.project_id,
                    zone=zone,
                    instance_resource=self._instance_body(node, zone, name, boot_script),
                    request_id=request_id,
                ),
                retry=None,
                timeout=self.call_timeout,
            )
        except gexc.Conflict:
            # Same name, different request: an earlier attempt created it.
            return self._existing(zone, name, node)
        except GOOGLE_ERRORS as exc:
            raise self._mapped(
                exc,
                action="create instances",
                permission="compute.instances.create",
                image=node.image,
            ) from exc
        operation = self._wait(operation, zone)
        error = self._operation_error(
            operation,
            action="create instances",
            permission="compute.instances.create",
            image=node.image,
        )
        if error is not None:
            if {_norm(e.code) for e in operation.error.errors} & {"resourcealreadyexists"}:
                return self._existing(zone, name, node)
            raise error
        return self._existing(zone, name, node)

    def _existing(self, zone: str, name: str, node: NodeSpec) -> Instance:
        resource = self._get(zone, name)
        if resource is None:
            raise TransientCloudError(
                f"GCE reported instance {zone}/{name} but does not show it yet; "
                "Raydeck will check again."
            )
        labels = dict(resource.labels)
        if labels.get(TAG_NODE) != str(node.node_id) or labels.get(TAG_CLOUD) != str(self.cloud_id):
            raise PermanentCloudError(
                f"An instance named {name} already exists in {zone} but was not launched by "
                "Raydeck for this node; delete or rename it.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        return _to_instance(resource)

    def _instance_body(
        self, node: NodeSpec, zone: str, name: str, boot_script: str
    ) -> compute_v1.Instance:
        nic = compute_v1.NetworkInterface(network=self.network)
        if self.subnetwork:
            nic.subnetwork = self.subnetwork
        if self.public_addresses:
            nic.access_configs = [
                compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")
            ]
        scheduling = compute_v1.Scheduling()
        if node.spot:
            # Spot VMs cannot live-migrate or auto-restart; delete on preemption so a
            # preempted node shows up as gone rather than as a stopped disk that costs.
            scheduling = compute_v1.Scheduling(
                provisioning_model="SPOT",
                instance_termination_action="DELETE",
                automatic_restart=False,
                on_host_maintenance="TERMINATE",
            )
        return compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{node.instance_type}",
            # The cloud's firewall rules (gcp_firewall.py) apply by this tag.
            tags=compute_v1.Tags(items=[gcp_firewall.network_tag(self.cloud_id)]),
            labels=gce_labels(cloud_id=self.cloud_id, node=node),
            metadata=compute_v1.Metadata(
                items=[compute_v1.Items(key="startup-script", value=boot_script)]
            ),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=node.image, disk_size_gb=self.disk_size_gb
                    ),
                )
            ],
            network_interfaces=[nic],
            scheduling=scheduling,
            service_accounts=[
                compute_v1.ServiceAccount(
                    email=self.node_service_account, scopes=[CLOUD_PLATFORM_SCOPE]
                )
            ]
            if self.node_service_account
            else [],
        )

    def terminate(self, *, instance_id: str) -> None:
        zone, name = _split_instance_id(instance_id)
        resource = self._get(zone, name)
        if resource is None:
            return
        if dict(resource.labels).get(TAG_CLOUD) != str(self.cloud_id):
            # Only ever delete what this cloud launched, whatever id we are handed.
            raise PermanentCloudError(
                f"Instance {instance_id} is not labelled {TAG_CLOUD}={self.cloud_id}; Raydeck "
                "only deletes instances it launched for this cloud.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        logger.info("Deleting GCE instance %s in %s", instance_id, self.project_id)
        try:
            operation = self._call(
                self._instances.delete_unary,
                action="delete instances",
                permission="compute.instances.delete",
                project=self.project_id,
                zone=zone,
                instance=name,
            )
        except PermanentCloudError as exc:
            if exc.kind == PermanentErrorKind.NOT_FOUND:
                return  # deleted in the meantime
            raise
        operation = self._wait(operation, zone)
        error = self._operation_error(
            operation, action="delete instances", permission="compute.instances.delete"
        )
        if error is not None and not (
            isinstance(error, PermanentCloudError) and error.kind == PermanentErrorKind.NOT_FOUND
        ):
            raise error

    def ensure_firewall(self) -> None:
        if self.firewall is None:
            return
        try:
            self._firewalls.ensure(self.cloud_id, self.network, self.firewall)
        except GOOGLE_ERRORS as exc:
            raise self._mapped(
                exc, action="create firewall rules", permission="compute.firewalls.create"
            ) from exc
        self._firewall_ready = True

    def remove_firewall(self) -> None:
        try:
            removed = self._firewalls.remove(self.cloud_id)
        except GOOGLE_ERRORS as exc:
            raise self._mapped(
                exc, action="delete firewall rules", permission="compute.firewalls.delete"
            ) from exc
        logger.info("Removed %d firewall rules of cloud %s", removed, self.cloud_id)
        self._firewall_ready = False

    def list_instances(self, *, cluster_id: uuid.UUID | None = None) -> list[Instance]:
        labels = {TAG_CLOUD: str(self.cloud_id)}
        if cluster_id is not None:
            labels[TAG_CLUSTER] = str(cluster_id)
        found: list[Instance] = []
        for zone in self.zones:
            found.extend(self._list(zone, labels, action="list instances"))
        return found

    def router(self) -> ServiceRouter:
        return gcp_router.GcpRouter(self, self._client_kwargs)

    def default_image(self) -> str:
        if not self.image:
            raise PermanentCloudError(
                "No default boot image is configured for GCP (RAYDECK_GCP_IMAGE).",
                kind=PermanentErrorKind.INVALID_IMAGE,
            )
        return self.image

    def describe(self, *, instance_id: str) -> Instance | None:
        zone, name = _split_instance_id(instance_id)
        resource = self._get(zone, name)
        return _to_instance(resource) if resource is not None else None

    # --- Verification (read-only, but for Raydeck's CORS entry on the log bucket).

    def verify(self) -> list[CheckResult]:
        credentials = self._check_credentials()
        if not credentials.passed:
            skipped = "Not checked: Raydeck could not get GCP credentials."
            return [
                credentials,
                *(
                    CheckResult(name, False, skipped)
                    for name in ("Project", "List instances", "Log bucket", CHECK_LOG_CORS)
                ),
            ]
        bucket = self._check_bucket()
        return [
            credentials,
            self._check_project(),
            self._check_listing(),
            bucket,
            self._check_log_cors()
            if bucket.passed
            else CheckResult(CHECK_LOG_CORS, False, LOG_CORS_NOT_CHECKED),
        ]

    def _check_credentials(self) -> CheckResult:
        name = "Credentials"
        if isinstance(self._credentials, AnonymousCredentials):
            return CheckResult(name, True, "Anonymous credentials (no token needed).")
        try:
            self._credentials.refresh(Request())
        except GOOGLE_ERRORS as exc:
            error = map_google_error(
                exc,
                action="get a token",
                permission="iam.serviceAccounts.getAccessToken",
                service_account=self.service_account,
                project_id=self.project_id,
            )
            logger.warning("GCP credential check failed: %s", error.detail)
            if isinstance(error, TransientCloudError):
                return CheckResult(name, False, f"{error.user_message} ({error.detail})")
            advice = _credentials_advice(self.service_account, self.workload_identity_provider)
            return CheckResult(name, False, f"{advice} GCP said: {redact(str(exc), 200)}")
        who = self.service_account or "the configured identity"
        return CheckResult(name, True, f"Raydeck obtained a short-lived token as {who}.")

    def _check_project(self) -> CheckResult:
        name = "Project"
        who = self.service_account or "Raydeck's service account"
        try:
            self._call(
                self._projects.get,
                action="read the project",
                permission="compute.projects.get",
                project=self.project_id,
            )
        except PermanentCloudError as exc:
            if exc.kind == PermanentErrorKind.PERMISSION:
                return CheckResult(
                    name,
                    False,
                    f"{who} may not read project {self.project_id} (compute.projects.get). "
                    f"Grant it roles/compute.viewer (or roles/compute.instanceAdmin.v1) on the "
                    "project, and make sure the Compute Engine API is enabled. "
                    f"{exc.user_message}",
                )
            if exc.kind == PermanentErrorKind.NOT_FOUND:
                return CheckResult(
                    name,
                    False,
                    f"Project {self.project_id} was not found. Use the project ID (not its "
                    "name or number) and check that the Compute Engine API is enabled.",
                )
            return CheckResult(name, False, exc.user_message)
        except CloudError as exc:
            return CheckResult(name, False, exc.user_message)
        for zone in self.zones:
            try:
                self._call(
                    self._zones_client.get,
                    action="read zones",
                    permission="compute.zones.get",
                    project=self.project_id,
                    zone=zone,
                )
            except CloudError as exc:
                return CheckResult(
                    name,
                    False,
                    f"Project {self.project_id} is reachable, but zone {zone} is not usable: "
                    f"{exc.user_message}",
                )
        return CheckResult(
            name,
            True,
            f"Project {self.project_id} is reachable; zones {', '.join(self.zones)} exist.",
        )

    def _check_listing(self) -> CheckResult:
        name = "List instances"
        try:
            found = self.list_instances()
        except PermanentCloudError as exc:
            if exc.kind == PermanentErrorKind.PERMISSION:
                who = self.service_account or "Raydeck's service account"
                return CheckResult(
                    name,
                    False,
                    f"{who} may not list instances in project {self.project_id}: it needs "
                    "compute.instances.list (e.g. roles/compute.instanceAdmin.v1).",
                )
            return CheckResult(name, False, exc.user_message)
        except CloudError as exc:
            return CheckResult(name, False, exc.user_message)
        return CheckResult(
            name,
            True,
            f"Listed instances in {', '.join(self.zones)}: {len(found)} launched by Raydeck.",
        )

    def _check_bucket(self) -> CheckResult:
        name = "Log bucket"
        location = self.log_location.strip()
        if not location:
            return CheckResult(
                name, True, "Not configured: no log location is set, so node logs are not shipped."
            )
        if not location.startswith("gs://") or not location[5:].split("/", 1)[0]:
            return CheckResult(
                name, False, f"Log location {location!r} should look like gs://bucket/prefix."
            )
        bucket = location[5:].split("/", 1)[0]
        who = self.service_account or "Raydeck's service account"
        url = f"{self._storage_endpoint}/storage/v1/b/{bucket}"
        try:
            with AuthorizedSession(self._credentials) as session:
                response = session.get(url, timeout=self.call_timeout)
        except GOOGLE_ERRORS as exc:
            error = self._mapped(
                exc, action="read the log bucket", permission="storage.buckets.get"
            )
            return CheckResult(name, False, error.user_message)
        if response.status_code == 200:
            return CheckResult(name, True, f"Bucket {bucket} exists and {who} can read it.")
        if response.status_code == 404:
            return CheckResult(
                name, False, f"Bucket {bucket} does not exist. Create it or fix the log location."
            )
        if response.status_code in (401, 403):
            return CheckResult(
                name,
                False,
                f"{who} may not see bucket {bucket} (storage.buckets.get). Grant it the "
                "log bucket role from the setup commands on the bucket.",
            )
        return CheckResult(
            name,
            False,
            f"Checking bucket {bucket} failed with HTTP {response.status_code}; try again.",
        )

    def _check_log_cors(self) -> CheckResult:
        """The bucket's CORS configuration must let the console's log page read a stored
        log; when no entry does, Raydeck adds its own beside the customer's."""
        name = CHECK_LOG_CORS
        bucket, _ = split_bucket_location(self.log_location, "gs://")
        if not bucket or not self.console_origin:
            return CheckResult(name, True, "No log bucket is configured; nothing to allow.")
        wanted = BrowserRead(origin=self.console_origin)
        path = f"b/{quote(bucket, safe='')}"
        ours = _cors_entry(wanted)
        try:
            found = self._storage_request(
                "GET",
                path,
                {"fields": "cors,metageneration"},
                action="read the log bucket's CORS configuration",
                permission="storage.buckets.get",
            )
            if found is None:
                return CheckResult(name, False, f"Bucket {bucket} does not exist.")
            entries = list(found.get("cors", []))
            if any(_cors_entry_allows(entry, wanted) for entry in entries):
                return CheckResult(
                    name,
                    True,
                    f"The CORS entries of {bucket} let the console ({wanted.origin}) read logs.",
                )
            # An entry of ours for another origin (the console moved) is replaced; a
            # change to the bucket since it was read fails the update (412), not lost.
            kept = [entry for entry in entries if not _is_raydecks_entry(entry, ours)]
            self._storage_request(
                "PATCH",
                path,
                {"ifMetagenerationMatch": str(found["metageneration"]), "fields": "cors"},
                action="update the log bucket's CORS configuration",
                permission="storage.buckets.update",
                body={"cors": [*kept, ours]},
            )
        except PermanentCloudError as exc:
            if exc.kind != PermanentErrorKind.PERMISSION:
                return CheckResult(name, False, exc.user_message)
            who = self.service_account or "Raydeck's service account"
            return CheckResult(
                name,
                False,
                f"No CORS entry of bucket {bucket} lets the console ({wanted.origin}) read "
                f"logs, and {who} may not add one: grant it storage.buckets.get and "
                f"storage.buckets.update on gs://{bucket} (the log bucket role of the setup "
                "commands has them), or add this entry to the bucket's CORS configuration: "
                f"{json.dumps(ours)}",
            )
        except CloudError as exc:
            return CheckResult(name, False, exc.user_message)
        return CheckResult(
            name,
            True,
            f"Raydeck added a CORS entry to bucket {bucket}, so the console "
            f"({wanted.origin}) can read logs there; the bucket's other entries are unchanged.",
            change=f"a CORS entry of gs://{bucket} allows {wanted.origin}",
        )

    # -- object storage (the log location's bucket) --

    def _storage_root(self) -> tuple[str, str]:
        """(bucket, object name prefix ending in /) of this cloud's storage."""
        bucket, root = storage_root(self.log_location, "gs://")
        if not bucket:
            raise no_storage_error("gs://my-bucket/raydeck")
        return bucket, root

    def _object(self, key: str) -> tuple[str, str]:
        bucket, root = self._storage_root()
        return bucket, root + check_storage_key(key)

    def _sign_blob(self, payload: bytes) -> bytes:
        url = SIGN_BLOB_URL.format(self.service_account)
        body = {"payload": base64.b64encode(payload).decode()}
        try:
            with AuthorizedSession(self._credentials) as session:
                response = session.post(url, json=body, timeout=self.call_timeout)
                response.raise_for_status()
        except GOOGLE_ERRORS as exc:
            raise self._mapped(
                exc, action="sign a storage URL", permission="iam.serviceAccounts.signBlob"
            ) from exc
        return base64.b64decode(response.json()["signedBlob"])

    def _signed(
        self, method: str, key: str, expires_in: int, headers: dict[str, str] | None = None
    ) -> SignedUrl:
        bucket, name = self._object(key)
        url = v4_signed_url(
            method=method,
            endpoint=self._storage_endpoint,
            bucket=bucket,
            key=name,
            service_account=self.service_account,
            sign=self._signer,
            expires_in=expires_in,
            headers=headers,
        )
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
        return SignedUrl(method=method, url=url, expires_at=expires_at, headers=headers or {})

    def upload_url(self, *, key: str, size: int, sha256: str, expires_in: int) -> SignedUrl:
        # Cloud Storage refuses a body outside the signed length range. (It cannot check
        # a SHA-256; the control plane checks the size before it uses the object.)
        return self._signed(
            "PUT", key, expires_in, {"x-goog-content-length-range": f"{size},{size}"}
        )

    def download_url(self, *, key: str, expires_in: int) -> SignedUrl:
        return self._signed("GET", key, expires_in)

    # -- image builds (gcp_builds.py) --

    def start_build(self, *, build: BuildRequest) -> str:
        if not self._builds_ready:
            self._builds.ensure()
            self._builds_ready = True
        return self._builds.start(build)

    def poll_build(self, *, external_id: str) -> BuildStatus:
        return self._builds.poll(external_id)

    def cancel_build(self, *, external_id: str) -> None:
        self._builds.cancel(external_id)

    def build_log(self, *, external_id: str) -> str:
        return self._builds.log(external_id)

    def remove_builds(self) -> None:
        self._builds.remove()

    def _stored_text(self, bucket: str, name: str) -> str | None:
        """An object's content as text (a build's log), None when there is none."""
        path = f"b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
        found = self._storage_get(path, {"alt": "media"}, "read a build log", text=True)
        return None if found is None else str(found)

    def _storage_get(
        self, path: str, params: dict[str, str], action: str, *, text: bool = False
    ) -> Any:
        return self._storage_request(
            "GET", path, params, action=action, permission="storage.objects.get", text=text
        )

    def _storage_request(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        *,
        action: str,
        permission: str,
        body: dict[str, Any] | None = None,
        text: bool = False,
    ) -> Any:
        """A Cloud Storage JSON API call: its answer (text or JSON), None on a 404."""
        try:
            with AuthorizedSession(self._credentials) as session:
                response = session.request(
                    method,
                    f"{self._storage_endpoint}/storage/v1/{path}",
                    params=params,
                    json=body,
                    timeout=self.call_timeout,
                )
        except GOOGLE_ERRORS as exc:
            raise self._mapped(exc, action=action, permission=permission) from exc
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            error = gexc.from_http_response(response)
            raise self._mapped(error, action=action, permission=permission)
        return response.text if text else response.json()

    def object_size(self, *, key: str) -> int | None:
        bucket, name = self._object(key)
        found = self._storage_get(
            f"b/{quote(bucket, safe='')}/o/{quote(name, safe='')}", {}, "read a stored object"
        )
        return None if found is None else int(found["size"])

    def list_objects(self, *, prefix: str) -> list[StoredObject]:
        bucket, root = self._storage_root()
        found: list[StoredObject] = []
        params = {"prefix": root + prefix}
        while True:
            page = (
                self._storage_get(f"b/{quote(bucket, safe='')}/o", params, "list stored objects")
                or {}
            )
            found.extend(
                StoredObject(key=item["name"][len(root) :], size=int(item["size"]))
                for item in page.get("items", [])
            )
            if not page.get("nextPageToken"):
                return sorted(found, key=lambda o: o.key)
            params["pageToken"] = page["nextPageToken"]

    def object_uri(self, *, key: str) -> str:
        bucket, name = self._object(key)
        return f"gs://{bucket}/{name}"
