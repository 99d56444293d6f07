"""AWS driver: EC2 instances in the customer's own account, reached through a role.

Raydeck never holds a customer secret. Its own identity (boto3's default chain: the
installation's environment, instance profile, IRSA...) calls STS AssumeRole on the
customer's role with the cloud's ExternalId; the resulting one-hour credentials live
only in this process's memory (`_CACHE`) and are refreshed before they expire.

This is the only module that imports boto3/botocore (tests aside).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from . import aws_builds, aws_firewall, aws_router
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
    storage_root,
)
from .builds import BuildRequest, BuildStatus
from .kinds import AwsTraits

logger = logging.getLogger(__name__)

# botocore clients are untyped (no stubs installed); name the type for readability.
Client = Any

SESSION_SECONDS = 3600
# Refresh this long before expiry so no call starts with credentials about to lapse.
REFRESH_MARGIN = timedelta(minutes=5)
# EC2 rejects user data over 16 KB (raw, before base64): say so before calling.
USER_DATA_LIMIT = 16 * 1024

# Timeouts keep a dead endpoint from holding a worker; standard retries absorb brief
# throttling (RunInstances is safe to retry: every attempt carries the same ClientToken).
CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"mode": "standard", "max_attempts": 4},
    user_agent_appid="raydeck",
)

S3_CLIENT_CONFIG = CLIENT_CONFIG.merge(Config(signature_version="s3v4"))

CHECK_ASSUME_ROLE = "Assume role"
CHECK_REGIONS = "Describe regions"
CHECK_INSTANCES = "Describe instances"
CHECK_LOG_BUCKET = "Log bucket"
NOT_CHECKED = "Not checked: the role could not be assumed."
# The ID of Raydeck's own rule among a log bucket's CORS rules (the customer's are kept).
CORS_RULE_ID = "raydeck-console"

_STATES: dict[str, InstanceState] = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "shutting-down": InstanceState.STOPPING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPED,
    "terminated": InstanceState.TERMINATED,
}
# States in which an instance still stands for its node (a relaunch must reuse it).
_STANDING_STATES = ["pending", "running", "stopping", "stopped"]

_TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestThrottled",
        "SlowDown",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "IDPCommunicationError",
    }
)
# The cached credentials stopped working early (clock skew, revoked session): forget
# them so the next call assumes the role afresh.
_STALE_CREDENTIAL_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId"}
)
_CAPACITY_CODES = frozenset(
    {"InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity"}
)
_QUOTA_CODES = frozenset(
    {
        "VcpuLimitExceeded",
        "InstanceLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "VolumeLimitExceeded",
    }
)
_PERMISSION_CODES = frozenset(
    {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure", "403"}
)
_IMAGE_CODES = frozenset(
    {"InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable"}
)
_NOT_FOUND_CODES = frozenset(
    {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed", "NoSuchBucket", "404"}
)
# Where the IAM action differs from the API operation (for "add X to the policy").
_IAM_ACTIONS = {
    "HeadBucket": "s3:ListBucket",
    "GetBucketCors": "s3:GetBucketCORS",
    "PutBucketCors": "s3:PutBucketCORS",
}


# --- Credentials ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)  # never in a repr, log or traceback
    session_token: str = field(repr=False)
    expiration: datetime

    def fresh(self, now: datetime) -> bool:
        return self.expiration - now > REFRESH_MARGIN


# (role_arn, external_id) -> credentials. The external id is part of the key so two
# clouds naming the same role never share a session: each must pass its own trust check.
_CACHE: dict[tuple[str, str], _Credentials] = {}
_CACHE_LOCK = threading.Lock()
# The secret parts of every cached credential, for the log redaction filter below.
# Swapped as a whole (never mutated) so the filter can read it without the lock.
_LIVE_SECRETS: frozenset[str] = frozenset()

_DEFAULT_SESSION: boto3.session.Session | None = None
# boto3 sessions are not thread-safe to create clients from; clients themselves are.
_SESSION_LOCK = threading.Lock()


def _now() -> datetime:
    return datetime.now(UTC)


def _default_session() -> boto3.session.Session:
    global _DEFAULT_SESSION
    with _SESSION_LOCK:
        if _DEFAULT_SESSION is None:
            _DEFAULT_SESSION = boto3.session.Session()
        return _DEFAULT_SESSION


def _store(key: tuple[str, str], credentials: _Credentials | None) -> None:
    global _LIVE_SECRETS
    with _CACHE_LOCK:
        if credentials is None:
            _CACHE.pop(key, None)
        else:
            _CACHE[key] = credentials
        _LIVE_SECRETS = frozenset(
            s for c in _CACHE.values() for s in (c.secret_access_key, c.session_token)
        )


def _cached(key: tuple[str, str]) -> _Credentials | None:
    with _CACHE_LOCK:
        return _CACHE.get(key)


def clear_credentials_cache() -> None:
    """Forget every assumed-role session (tests; or after rotating an external id)."""
    global _LIVE_SECRETS
    with _CACHE_LOCK:
        _CACHE.clear()
        _LIVE_SECRETS = frozenset()


# --- Log redaction ---------------------------------------------------------------------

# botocore logs response bodies (an AssumeRole body holds the secret key and token) and
# signed request headers (X-Amz-Security-Token) at DEBUG. An operator turning DEBUG on
# must still not get customer credentials in the logs, so scrub those records.
_REDACT_PATTERNS = [
    re.compile(r"(<(?:SecretAccessKey|SessionToken)>)[^<]*"),
    re.compile(
        r"""(['"](?:SecretAccessKey|SessionToken|aws_secret_access_key|aws_session_token)"""
        r"""['"]\s*:\s*b?['"])[^'"]*"""
    ),
    re.compile(r"""((?i:x-amz-security-token)['"]?\s*[:=]\s*b?['"]?)[^'",\s&}]+"""),
]
_REDACTED_LOGGERS = [
    "botocore.auth",
    "botocore.client",
    "botocore.endpoint",
    "botocore.hooks",
    "botocore.httpsession",
    "botocore.parsers",
    "botocore.retries.standard",
    "urllib3.connectionpool",
]


def redact(text: str) -> str:
    """`text` with credential-looking values and every cached secret replaced."""
    for pattern in _REDACT_PATTERNS:
        text = pattern.sub(r"\1***", text)
    for secret in _LIVE_SECRETS:
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


class _RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to break
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_REDACTION_FILTER = _RedactCredentials()
for _name in _REDACTED_LOGGERS:
    logging.getLogger(_name).addFilter(_REDACTION_FILTER)


# --- Helpers ---------------------------------------------------------------------------


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _tags(data: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in data.get("Tags") or []}


def _to_instance(data: dict[str, Any]) -> Instance:
    tags = _tags(data)
    return Instance(
        instance_id=data["InstanceId"],
        state=_STATES.get((data.get("State") or {}).get("Name", ""), InstanceState.UNKNOWN),
        node_id=_uuid(tags.get(TAG_NODE)),
        cluster_id=_uuid(tags.get(TAG_CLUSTER)),
        instance_type=data.get("InstanceType", ""),
        private_address=data.get("PrivateIpAddress") or None,
        public_address=data.get("PublicIpAddress") or None,
        launched_at=data.get("LaunchTime"),
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _cors_rule(wanted: BrowserRead) -> dict[str, Any]:
    """Raydeck's own rule among a bucket's CORS rules: exactly the log page's read."""
    return {
        "ID": CORS_RULE_ID,
        "AllowedOrigins": [wanted.origin],
        "AllowedMethods": [wanted.method],
        "AllowedHeaders": list(wanted.request_headers),
        "ExposeHeaders": list(wanted.exposed_headers),
        "MaxAgeSeconds": wanted.max_age_seconds,
    }


def _cors_rule_allows(rule: dict[str, Any], wanted: BrowserRead) -> bool:
    return wanted.allowed_by(
        origins=rule.get("AllowedOrigins", []),
        methods=rule.get("AllowedMethods", []),
        request_headers=rule.get("AllowedHeaders", []),
        exposed_headers=rule.get("ExposeHeaders", []),
    )


def _iam_action(service: str, operation: str | None) -> str:
    if not operation:
        return service
    return _IAM_ACTIONS.get(operation, f"{service}:{operation}")


# --- The driver ------------------------------------------------------------------------


class AwsProvider(AwsTraits):
    """Raydeck's driver for one AWS cloud (one role, one region).

    `base_session` is Raydeck's own identity (default: boto3's default chain). Every
    client, including STS's, is created from it, so handlers registered on
    `base_session.events` see every call (tests use this to inspect and fake calls).
    """

    def __init__(
        self,
        *,
        cloud_id: uuid.UUID,
        region: str,
        role_arn: str,
        external_id: str,
        log_location: str = "",
        ami_parameter: str = "",
        instance_profile: str = "",
        base_session: boto3.session.Session | None = None,
        firewall: FirewallSpec | None = None,
        public_addresses: bool = True,
        console_origin: str = "",
    ) -> None:
        self.firewall = firewall  # the cloud's security group (aws_firewall.py)
        # Where the console's log page reads stored logs from ("": no browser does).
        self.console_origin = console_origin
        # Whether instances get a public IPv4 address, whatever the subnet's default.
        self.public_addresses = public_addresses
        self._security_group: str | None = None
        self._builds_ready = False  # the cloud's repository and project (aws_builds.py)
        self.cloud_id = cloud_id
        self.region = region
        self.role_arn = role_arn
        self.external_id = external_id
        self.log_location = log_location
        self.ami_parameter = ami_parameter
        self.instance_profile = instance_profile  # what nodes run as (name or ARN)
        self._session = base_session

    def __repr__(self) -> str:  # the external id is not a secret, but need not be logged
        return f"AwsProvider(cloud_id={self.cloud_id}, region={self.region!r})"

    @property
    def session_name(self) -> str:
        return f"raydeck-{str(self.cloud_id)[:8]}"

    @property
    def _key(self) -> tuple[str, str]:
        return (self.role_arn, self.external_id)

    # -- credentials and clients --

    def _base_session(self) -> boto3.session.Session:
        return self._session or _default_session()

    def _credentials(self, *, refresh: bool = False) -> _Credentials:
        cached = None if refresh else _cached(self._key)
        if cached is not None and cached.fresh(_now()):
            return cached
        try:
            credentials = self._assume_role()
        except TransientCloudError:
            # STS hiccuped during an early refresh: the old session still has minutes.
            if cached is not None and cached.expiration - _now() > timedelta(minutes=1):
                return cached
            raise
        except PermanentCloudError:
            _store(self._key, None)  # a role we can no longer assume must not be used
            raise
        _store(self._key, credentials)
        return credentials

    def _assume_role(self) -> _Credentials:
        if not self.role_arn:
            raise PermanentCloudError(
                "This cloud has no role ARN yet: create the role and paste its ARN.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        if not self.external_id:
            # Never assume a customer role without an ExternalId (confused deputy).
            raise PermanentCloudError(
                "This cloud has no external ID; recreate the cloud to get one.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        session = self._base_session()  # outside the lock: it may take it
        with _SESSION_LOCK:
            sts = session.client("sts", region_name=self.region, config=CLIENT_CONFIG)
        try:
            response = sts.assume_role(
                RoleArn=self.role_arn,
                RoleSessionName=self.session_name,
                ExternalId=self.external_id,
                DurationSeconds=SESSION_SECONDS,
            )
        except ClientError as exc:
            raise self._assume_role_error(exc) from exc
        except ParamValidationError:
            # botocore rejects a RoleArn that cannot be one (too short) before sending.
            raise PermanentCloudError(
                f"{self.role_arn} is not a valid role ARN: paste it as "
                "arn:aws:iam::<account>:role/<name>.",
                kind=PermanentErrorKind.INVALID_REQUEST,
                detail="ParamValidationError",
            ) from None
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise PermanentCloudError(
                "This Raydeck installation has no AWS identity of its own to assume "
                "customer roles with: ask your Raydeck administrator to configure one.",
                kind=PermanentErrorKind.PERMISSION,
                detail=type(exc).__name__,
            ) from None
        except BotoCoreError as exc:
            raise self._translate(exc, service="sts") from exc
        raw = response["Credentials"]
        logger.debug(
            "Assumed %s for cloud %s until %s", self.role_arn, self.cloud_id, raw["Expiration"]
        )
        return _Credentials(
            access_key_id=raw["AccessKeyId"],
            secret_access_key=raw["SecretAccessKey"],
            session_token=raw["SessionToken"],
            expiration=raw["Expiration"],
        )

    def _assume_role_error(self, exc: ClientError) -> CloudError:
        code = _error_code(exc)
        detail = f"sts:AssumeRole: {code}: {exc.response.get('Error', {}).get('Message', '')}"
        if code in ("AccessDenied", "AccessDeniedException"):
            # AWS answers AccessDenied both for a missing role and a failed trust check.
            return PermanentCloudError(
                f"AWS did not let Raydeck assume {self.role_arn}. Check that the role exists "
                "and that its trust policy allows sts:AssumeRole for Raydeck's principal "
                "with sts:ExternalId equal to this cloud's external ID (copy the trust "
                "policy from this cloud's setup page).",
                kind=PermanentErrorKind.PERMISSION,
                detail=detail,
            )
        if code == "NoSuchEntity":
            return PermanentCloudError(
                f"The role {self.role_arn} does not exist: create it from this cloud's "
                "setup page, or paste the ARN of the role you created.",
                kind=PermanentErrorKind.NOT_FOUND,
                detail=detail,
            )
        if code in ("ValidationError", "InvalidParameterValue", "MalformedPolicyDocument"):
            return PermanentCloudError(
                f"{self.role_arn} is not a valid role ARN: paste it as "
                "arn:aws:iam::<account>:role/<name>.",
                kind=PermanentErrorKind.INVALID_REQUEST,
                detail=detail,
            )
        return self._translate(exc, service="sts")

    def _client(self, service: str) -> Client:
        """A client for one operation, signed with the assumed role's credentials (S3's
        with Signature Version 4, which presigned URLs need to sign a checksum header)."""
        credentials = self._credentials()
        session = self._base_session()
        with _SESSION_LOCK:
            return session.client(
                service,
                region_name=self.region,
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token,
                config=S3_CLIENT_CONFIG if service == "s3" else CLIENT_CONFIG,
            )

    # -- error mapping --

    @contextmanager
    def _errors(self, service: str, *, node: NodeSpec | None = None) -> Iterator[None]:
        """Turn botocore failures inside the block into CloudErrors."""
        try:
            yield
        except ParamValidationError as exc:
            # Its message quotes parameter values (user data may hold cluster secrets).
            raise self._translate(exc, service=service, node=node) from None
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, service=service, node=node) from exc

    def _translate(
        self, exc: Exception, *, service: str, node: NodeSpec | None = None
    ) -> CloudError:
        if isinstance(exc, ClientError):
            return self._translate_client_error(exc, service=service, node=node)
        if isinstance(exc, ParamValidationError):
            return PermanentCloudError(
                f"Raydeck built an invalid {service} request; this is a bug in Raydeck.",
                kind=PermanentErrorKind.INVALID_REQUEST,
                detail="ParamValidationError",
            )
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return TransientCloudError(
                f"Could not reach AWS {service} in {self.region} "
                f"({type(exc).__name__}); Raydeck will retry.",
                detail=str(exc),
            )
        # Any other client-side failure: retrying later is the safer default.
        return TransientCloudError(
            f"The call to AWS {service} failed ({type(exc).__name__}); Raydeck will retry.",
            detail=str(exc),
        )

    def _translate_client_error(
        self, exc: ClientError, *, service: str, node: NodeSpec | None
    ) -> CloudError:
        code = _error_code(exc)
        status = _status(exc)
        action = _iam_action(service, exc.operation_name)
        message = str(exc.response.get("Error", {}).get("Message", ""))
        detail = f"{action}: {code or status}: {message}"
        where = (node.zone if node and node.zone else "") or self.region
        what = node.instance_type if node else "this instance type"

        if code in _STALE_CREDENTIAL_CODES:
            _store(self._key, None)
            return TransientCloudError(
                f"The role's session for {action} had expired; Raydeck will retry.",
                detail=detail,
            )
        if code in _TRANSIENT_CODES:
            return self._transient(code, action, detail)
        if code in _CAPACITY_CODES:
            return PermanentCloudError(
                f"AWS has no capacity for {what} in {where} right now: "
                "try another zone or instance type.",
                kind=PermanentErrorKind.CAPACITY,
                detail=detail,
            )
        if code in _QUOTA_CODES:
            return PermanentCloudError(
                f"Your AWS account has reached a limit ({code}) for {what} in {self.region}: "
                "request a quota increase in the Service Quotas console (Amazon EC2), "
                "or use fewer or smaller nodes.",
                kind=PermanentErrorKind.QUOTA,
                detail=detail,
            )
        if code in _PERMISSION_CODES:
            if code == "AuthFailure":
                _store(self._key, None)
            return PermanentCloudError(
                f"The role {self.role_arn} is not allowed to call {action}: add {action} "
                "to the role's permissions policy (the policy on this cloud's setup page "
                "has it).",
                kind=PermanentErrorKind.PERMISSION,
                detail=detail,
            )
        if code in _IMAGE_CODES:
            image = node.image if node else "the image"
            return PermanentCloudError(
                f"The image {image} does not exist in {self.region} or is not available to "
                "this account: use an AMI id from this region.",
                kind=PermanentErrorKind.INVALID_IMAGE,
                detail=detail,
            )
        if code in _NOT_FOUND_CODES:
            return PermanentCloudError(
                f"AWS does not know what {action} asked for ({code}).",
                kind=PermanentErrorKind.NOT_FOUND,
                detail=detail,
            )
        # Known codes come first: EC2 reports InsufficientInstanceCapacity as a 500.
        if status >= 500:
            return self._transient(code or str(status), action, detail)
        return PermanentCloudError(
            f"AWS rejected {action} ({code or status}): check this cloud's and node's settings.",
            kind=PermanentErrorKind.INVALID_REQUEST,
            detail=detail,
        )

    def _transient(self, code: str, action: str, detail: str) -> TransientCloudError:
        return TransientCloudError(
            f"AWS is busy or unavailable ({code} on {action}); Raydeck will retry.",
            detail=detail,
        )

    # -- EC2 lookups --

    def _cloud_filter(self) -> dict[str, Any]:
        return {"Name": f"tag:{TAG_CLOUD}", "Values": [str(self.cloud_id)]}

    def _describe(self, ec2: Client, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                found.extend(reservation.get("Instances", []))
        return found

    def _find(self, ec2: Client, instance_id: str) -> dict[str, Any] | None:
        try:
            response = ec2.describe_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if _error_code(exc) in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                return None
            raise
        for reservation in response.get("Reservations", []):
            for data in reservation.get("Instances", []):
                if data.get("InstanceId") == instance_id:
                    return data
        return None

    # -- CloudProvider --

    def launch(self, *, node: NodeSpec, boot_script: str, idempotency_key: str) -> Instance:
        if not node.image:
            raise PermanentCloudError(
                "No AMI is set for this node: choose an image for the cluster.",
                kind=PermanentErrorKind.INVALID_IMAGE,
            )
        if len(boot_script.encode()) > USER_DATA_LIMIT:
            raise PermanentCloudError(
                "The node's boot script is larger than EC2's 16 KB user data limit.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        # A "Name" label wins over the node name: EC2 rejects duplicate tag keys.
        tag_map = {"Name": node.name, **instance_tags(cloud_id=self.cloud_id, node=node)}
        tags = [{"Key": k, "Value": v} for k, v in tag_map.items()]
        with self._errors("ec2", node=node):
            ec2 = self._client("ec2")
            # An instance already standing for this node wins: the reconciler relaunches
            # after lost responses and crashes, and ClientToken alone only covers
            # retries with the same key within EC2's idempotency window.
            existing = self._describe(
                ec2,
                [
                    self._cloud_filter(),
                    {"Name": f"tag:{TAG_NODE}", "Values": [str(node.node_id)]},
                    {"Name": "instance-state-name", "Values": _STANDING_STATES},
                ],
            )
            if existing:
                if len(existing) > 1:
                    logger.warning(
                        "Node %s has %d instances in cloud %s: %s",
                        node.node_id,
                        len(existing),
                        self.cloud_id,
                        ", ".join(d["InstanceId"] for d in existing),
                    )
                oldest = min(
                    existing, key=lambda d: (d.get("LaunchTime") or _now(), d["InstanceId"])
                )
                return _to_instance(oldest)
            params: dict[str, Any] = {
                "ImageId": node.image,
                "InstanceType": node.instance_type,
                "MinCount": 1,
                "MaxCount": 1,
                "ClientToken": idempotency_key,
                "UserData": boot_script,  # botocore base64-encodes it
                "TagSpecifications": [
                    {"ResourceType": "instance", "Tags": tags},
                    {"ResourceType": "volume", "Tags": tags},
                ],
                # IMDSv2 only: a token-less SSRF cannot read the instance's credentials.
                "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            }
            if node.spot:
                params["InstanceMarketOptions"] = {
                    "MarketType": "spot",
                    "SpotOptions": {
                        "SpotInstanceType": "one-time",
                        "InstanceInterruptionBehavior": "terminate",
                    },
                }
            if node.zone:
                params["Placement"] = {"AvailabilityZone": node.zone}
            if self.instance_profile:
                key = "Arn" if self.instance_profile.startswith("arn:") else "Name"
                params["IamInstanceProfile"] = {key: self.instance_profile}
            # The address choice lives on the primary interface, and so do its groups.
            interface: dict[str, Any] = {
                "DeviceIndex": 0,
                "AssociatePublicIpAddress": self.public_addresses,
            }
            if self.firewall is not None:
                interface["Groups"] = [self._ensure_security_group(ec2)]
            params["NetworkInterfaces"] = [interface]
            response = ec2.run_instances(**params)
        instance = _to_instance(response["Instances"][0])
        logger.info(
            "Launched %s for node %s in cloud %s", instance.instance_id, node.node_id, self.cloud_id
        )
        # The response may omit tags; we just set them.
        return replace(instance, node_id=node.node_id, cluster_id=node.cluster_id)

    def terminate(self, *, instance_id: str) -> None:
        with self._errors("ec2"):
            ec2 = self._client("ec2")
            data = self._find(ec2, instance_id)
            if data is None:
                return
            if _tags(data).get(TAG_CLOUD) != str(self.cloud_id):
                logger.warning(
                    "Refused to terminate %s: not tagged %s=%s",
                    instance_id,
                    TAG_CLOUD,
                    self.cloud_id,
                )
                raise PermanentCloudError(
                    f"Raydeck will not terminate {instance_id}: it is not tagged "
                    f"{TAG_CLOUD}={self.cloud_id}, so it is not one of this cloud's nodes.",
                    kind=PermanentErrorKind.PERMISSION,
                )
            if (data.get("State") or {}).get("Name") == "terminated":
                return
            try:
                ec2.terminate_instances(InstanceIds=[instance_id])
            except ClientError as exc:
                if _error_code(exc) != "InvalidInstanceID.NotFound":
                    raise
                return  # gone between the two calls
        logger.info("Terminated %s in cloud %s", instance_id, self.cloud_id)

    def _ensure_security_group(self, ec2: Client) -> str:
        if self._security_group is None and self.firewall is not None:
            self._security_group = aws_firewall.ensure(ec2, self.cloud_id, self.firewall)
        return str(self._security_group)

    def ensure_firewall(self) -> None:
        if self.firewall is None:
            return
        self._security_group = None
        with self._errors("ec2"):
            self._ensure_security_group(self._client("ec2"))

    def remove_firewall(self) -> None:
        with self._errors("ec2"):
            if aws_firewall.remove(self._client("ec2"), self.cloud_id):
                logger.info("Removed the security group of cloud %s", self.cloud_id)
        self._security_group = None

    # -- image builds (aws_builds.py) --

    def _repository_uri(self) -> str:
        return aws_builds.repository_uri(self.role_arn, self.region, self.cloud_id)

    def start_build(self, *, build: BuildRequest) -> str:
        with self._errors("codebuild"):
            if not self._builds_ready:
                aws_builds.ensure(self._client, self.cloud_id, self.role_arn)
                self._builds_ready = True
            return aws_builds.start(self._client, self.cloud_id, self._repository_uri(), build)

    def poll_build(self, *, external_id: str) -> BuildStatus:
        with self._errors("codebuild"):
            return aws_builds.poll(self._client, self.cloud_id, self._repository_uri(), external_id)

    def cancel_build(self, *, external_id: str) -> None:
        with self._errors("codebuild"):
            aws_builds.cancel(self._client, external_id)

    def build_log(self, *, external_id: str) -> str:
        with self._errors("logs"):
            return aws_builds.log(self._client, self.cloud_id, external_id)

    def remove_builds(self) -> None:
        with self._errors("codebuild"):
            aws_builds.remove(self._client, self.cloud_id)

    def list_instances(self, *, cluster_id: uuid.UUID | None = None) -> list[Instance]:
        filters = [self._cloud_filter()]
        if cluster_id is not None:
            filters.append({"Name": f"tag:{TAG_CLUSTER}", "Values": [str(cluster_id)]})
        with self._errors("ec2"):
            found = self._describe(self._client("ec2"), filters)
        return [_to_instance(d) for d in found]

    def router(self) -> ServiceRouter:
        return aws_router.AwsRouter(self)

    def default_image(self) -> str:
        """The region's AMI id, read from the SSM parameter the installation names (AWS
        publishes public ones per region, e.g. Canonical's Ubuntu images)."""
        name = self.ami_parameter
        if not name:
            raise PermanentCloudError(
                "No default AMI parameter is configured (RAYDECK_AWS_AMI_PARAMETER).",
                kind=PermanentErrorKind.INVALID_IMAGE,
            )
        try:
            with self._errors("ssm"):
                value = self._client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
        except PermanentCloudError as exc:
            if "ParameterNotFound" not in exc.detail:
                raise
            raise PermanentCloudError(
                f"The SSM parameter {name} does not exist in {self.region}, so Raydeck has no "
                "default AMI there.",
                kind=PermanentErrorKind.INVALID_IMAGE,
                detail=exc.detail,
            ) from exc
        if not str(value).startswith("ami-"):
            raise PermanentCloudError(
                f"The SSM parameter {name} in {self.region} holds {value!r}, not an AMI id.",
                kind=PermanentErrorKind.INVALID_IMAGE,
            )
        return str(value)

    def describe(self, *, instance_id: str) -> Instance | None:
        with self._errors("ec2"):
            data = self._find(self._client("ec2"), instance_id)
        return _to_instance(data) if data is not None else None

    # -- verification --

    def verify(self) -> list[CheckResult]:
        try:
            # Always a real AssumeRole: cached credentials would hide a trust policy
            # changed since they were issued.
            self._credentials(refresh=True)
        except CloudError as exc:
            return [
                CheckResult(CHECK_ASSUME_ROLE, False, exc.user_message),
                *(
                    CheckResult(name, False, NOT_CHECKED)
                    for name in (CHECK_REGIONS, CHECK_INSTANCES, CHECK_LOG_BUCKET, CHECK_LOG_CORS)
                ),
            ]
        bucket = self._check(CHECK_LOG_BUCKET, self._check_log_bucket)
        return [
            CheckResult(
                CHECK_ASSUME_ROLE, True, f"Raydeck assumed {self.role_arn} with its external ID."
            ),
            self._check(CHECK_REGIONS, self._check_region),
            self._check(CHECK_INSTANCES, self._check_instances),
            bucket,
            self._check(CHECK_LOG_CORS, self._check_log_cors)
            if bucket.passed
            else CheckResult(CHECK_LOG_CORS, False, LOG_CORS_NOT_CHECKED),
        ]

    def _check(self, name: str, run: Callable[[], str | CheckResult]) -> CheckResult:
        """`run`'s message as a passed check (or its own result), a failed one if it
        raises a CloudError."""
        try:
            done = run()
        except CloudError as exc:
            return CheckResult(name, False, exc.user_message)
        return done if isinstance(done, CheckResult) else CheckResult(name, True, done)

    def _check_region(self) -> str:
        with self._errors("ec2"):
            regions = self._client("ec2").describe_regions(AllRegions=True)["Regions"]
        status = {r["RegionName"]: r.get("OptInStatus", "opt-in-not-required") for r in regions}
        if self.region not in status:
            raise PermanentCloudError(
                f"{self.region} is not an EC2 region this account can use.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        if status[self.region] == "not-opted-in":
            raise PermanentCloudError(
                f"Region {self.region} is not enabled in this account: enable it under "
                "Account → AWS Regions in the AWS console.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        return f"Region {self.region} is enabled."

    def _check_instances(self) -> str:
        with self._errors("ec2"):
            self._client("ec2").describe_instances(Filters=[self._cloud_filter()], MaxResults=5)
        return "Raydeck can list this cloud's instances."

    def _log_bucket(self) -> str:
        """The log location's bucket ("" when no log location is set)."""
        if not self.log_location:
            return ""
        parsed = urlparse(self.log_location)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise PermanentCloudError(
                f"The log location {self.log_location} should look like s3://bucket/prefix.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        return parsed.netloc

    def _bucket_owner(self) -> dict[str, str]:
        """Only a bucket of the role's own account will do (a 403 otherwise)."""
        account = self.role_arn.split(":")[4] if self.role_arn.count(":") >= 5 else ""
        return {"ExpectedBucketOwner": account} if account.isdigit() else {}

    def _check_log_bucket(self) -> str:
        bucket = self._log_bucket()
        if not bucket:
            return "No log bucket is configured; nothing to check."
        try:
            with self._errors("s3"):
                response = self._client("s3").head_bucket(Bucket=bucket, **self._bucket_owner())
        except PermanentCloudError as exc:
            if exc.kind == PermanentErrorKind.NOT_FOUND:
                raise PermanentCloudError(
                    f"The log bucket {bucket} does not exist in this account: create it, or "
                    "fix this cloud's log location.",
                    kind=exc.kind,
                    detail=exc.detail,
                ) from exc
            if exc.kind == PermanentErrorKind.PERMISSION:
                raise PermanentCloudError(
                    f"The role {self.role_arn} is not allowed s3:ListBucket on {bucket}: add "
                    f"s3:ListBucket on arn:aws:s3:::{bucket} to the role's permissions policy "
                    "(or the bucket belongs to another account).",
                    kind=exc.kind,
                    detail=exc.detail,
                ) from exc
            raise
        bucket_region = response.get("BucketRegion") or response.get("ResponseMetadata", {}).get(
            "HTTPHeaders", {}
        ).get("x-amz-bucket-region")
        if bucket_region and bucket_region != self.region:
            return (
                f"Raydeck can reach log bucket {bucket} (it is in {bucket_region}, not "
                f"{self.region}: logs will cross regions)."
            )
        return f"Raydeck can reach log bucket {bucket}."

    def _check_log_cors(self) -> str | CheckResult:
        """The bucket's CORS rules must let the console's log page read a stored log; when
        none does, Raydeck adds its own rule (CORS_RULE_ID) beside the customer's."""
        bucket = self._log_bucket()
        if not bucket or not self.console_origin:
            return "No log bucket is configured; nothing to allow."
        wanted = BrowserRead(origin=self.console_origin)
        rules = self._bucket_cors_rules(bucket)
        if any(_cors_rule_allows(rule, wanted) for rule in rules):
            return f"The CORS rules of {bucket} let the console ({wanted.origin}) read logs."
        ours = _cors_rule(wanted)
        # A rule of ours for another origin (the console moved) is replaced.
        kept = [rule for rule in rules if rule.get("ID") != CORS_RULE_ID]
        try:
            with self._errors("s3"):
                self._client("s3").put_bucket_cors(
                    Bucket=bucket,
                    CORSConfiguration={"CORSRules": [*kept, ours]},
                    **self._bucket_owner(),
                )
        except PermanentCloudError as exc:
            if exc.kind != PermanentErrorKind.PERMISSION:
                raise
            raise PermanentCloudError(
                f"No CORS rule of {bucket} lets the console ({wanted.origin}) read logs, and "
                f"the role {self.role_arn} is not allowed s3:PutBucketCORS to add one: add "
                f"s3:PutBucketCORS on arn:aws:s3:::{bucket} to the role's permissions policy, "
                f"or add this rule to the bucket's CORS configuration: {json.dumps(ours)}",
                kind=exc.kind,
                detail=exc.detail,
            ) from exc
        return CheckResult(
            CHECK_LOG_CORS,
            True,
            f"Raydeck added the CORS rule {CORS_RULE_ID} to {bucket}, so the console "
            f"({wanted.origin}) can read logs there; the bucket's other rules are unchanged.",
            change=f"CORS rule {CORS_RULE_ID} of s3://{bucket} allows {wanted.origin}",
        )

    def _bucket_cors_rules(self, bucket: str) -> list[dict[str, Any]]:
        try:
            with self._errors("s3"):
                answer = self._client("s3").get_bucket_cors(Bucket=bucket, **self._bucket_owner())
        except PermanentCloudError as exc:
            if "NoSuchCORSConfiguration" in exc.detail:
                return []
            if exc.kind != PermanentErrorKind.PERMISSION:
                raise
            raise PermanentCloudError(
                f"The role {self.role_arn} is not allowed s3:GetBucketCORS on {bucket}, so "
                "Raydeck cannot check that the console may read logs there: add "
                f"s3:GetBucketCORS and s3:PutBucketCORS on arn:aws:s3:::{bucket} to the "
                "role's permissions policy.",
                kind=exc.kind,
                detail=exc.detail,
            ) from exc
        return list(answer.get("CORSRules", []))

    # -- object storage (the log location's bucket) --

    def _storage_root(self) -> tuple[str, str]:
        """(bucket, S3 key prefix ending in /) of this cloud's storage."""
        bucket, root = storage_root(self.log_location, "s3://")
        if not bucket:
            raise no_storage_error("s3://my-bucket/raydeck")
        return bucket, root

    def _object(self, key: str) -> tuple[str, str]:
        bucket, root = self._storage_root()
        return bucket, root + check_storage_key(key)

    def _signed(self, method: str, operation: str, key: str, expires_in: int, **params: Any) -> str:
        bucket, s3_key = self._object(key)
        with self._errors("s3"):
            url = self._client("s3").generate_presigned_url(
                operation,
                Params={"Bucket": bucket, "Key": s3_key, **params},
                ExpiresIn=expires_in,
                HttpMethod=method,
            )
        return str(url)

    def upload_url(self, *, key: str, size: int, sha256: str, expires_in: int) -> SignedUrl:
        # S3 checks the body against the signed checksum header: another body is refused.
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        url = self._signed(
            "PUT", "put_object", key, expires_in, ChecksumSHA256=checksum, ContentLength=size
        )
        return SignedUrl(
            method="PUT",
            url=url,
            expires_at=_now() + timedelta(seconds=expires_in),
            headers={"x-amz-checksum-sha256": checksum, "Content-Length": str(size)},
        )

    def download_url(self, *, key: str, expires_in: int) -> SignedUrl:
        url = self._signed("GET", "get_object", key, expires_in)
        return SignedUrl(method="GET", url=url, expires_at=_now() + timedelta(seconds=expires_in))

    def object_size(self, *, key: str) -> int | None:
        bucket, s3_key = self._object(key)
        try:
            with self._errors("s3"):
                return int(
                    self._client("s3").head_object(Bucket=bucket, Key=s3_key)["ContentLength"]
                )
        except PermanentCloudError as exc:
            if exc.kind == PermanentErrorKind.NOT_FOUND or "NoSuchKey" in exc.detail:
                return None
            raise

    def list_objects(self, *, prefix: str) -> list[StoredObject]:
        bucket, root = self._storage_root()
        found: list[StoredObject] = []
        with self._errors("s3"):
            pages = self._client("s3").get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=bucket, Prefix=root + prefix):
                found.extend(
                    StoredObject(key=item["Key"][len(root) :], size=int(item["Size"]))
                    for item in page.get("Contents", [])
                )
        return sorted(found, key=lambda o: o.key)

    def object_uri(self, *, key: str) -> str:
        bucket, s3_key = self._object(key)
        return f"s3://{bucket}/{s3_key}"
