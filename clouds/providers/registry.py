"""Build the driver for a Cloud row. The only bridge between models and drivers."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.crypto import salted_hmac
from django.utils.module_loading import import_string
from raydeck_agent.config import DEFAULT_PORTS as AGENT_DEFAULT_PORTS

from kit.metrics import CLOUD_CALLS, CLOUD_ERRORS, CLOUD_LATENCY

from ..choices import CloudKind, NodeAddresses
from .base import CloudProvider, FirewallSpec, PermanentCloudError, TransientCloudError
from .kinds import AwsTraits, CloudTraits, GcpTraits, LocalTraits

if TYPE_CHECKING:
    from ..models import Cloud

T = TypeVar("T")


def local_root(cloud: Cloud) -> Path:
    return Path(cloud.local_root or settings.RAYDECK_LOCAL_CLOUD_ROOT) / str(cloud.uuid)


def log_location_for(cloud: Cloud) -> str:
    """Where the cloud's nodes keep their logs: the cloud's log location, or on the local
    cloud a `logs` folder beside its nodes' folders (which go when the nodes do)."""
    if cloud.log_location or cloud.kind != CloudKind.LOCAL:
        return cloud.log_location
    return str(local_root(cloud) / "logs")


def files_location_for(cloud: Cloud, key: str) -> str:
    """Where files kept between a workload's runs go (a workspace's working directory):
    on the local cloud a `files/<key>` folder beside its nodes' folders (kept when the
    nodes go), elsewhere `files/<key>` in the bucket of the cloud's log location; "" when
    the cloud has no place for them."""
    if cloud.kind == CloudKind.LOCAL:
        return str(local_root(cloud) / "files" / key)
    if not cloud.log_location:
        return ""
    scheme, _, rest = cloud.log_location.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/raydeck-files/{key}"


TRAITS: dict[str, type[CloudTraits]] = {
    CloudKind.AWS: AwsTraits,
    CloudKind.GCP: GcpTraits,
    CloudKind.LOCAL: LocalTraits,
}


def traits_for(kind: str) -> type[CloudTraits]:
    """What a kind of cloud is (default machines, images it runs, how nodes boot), without
    building a driver or importing its SDK."""
    try:
        return TRAITS[kind]
    except KeyError:
        raise ValueError(f"Unknown cloud kind {kind!r}") from None


def firewall_spec(cloud: Cloud) -> FirewallSpec:
    """What the cloud's firewall lets in: the gateway port from its CIDR ranges."""
    return FirewallSpec(
        gateway_port=AGENT_DEFAULT_PORTS["gateway"],
        gateway_cidrs=tuple(str(c).strip() for c in cloud.gateway_cidrs or ()),
    )


def console_origin() -> str:
    """The origin the console's pages run in (RAYDECK_BASE_URL's scheme, host and any
    port but the scheme's default), as a browser sends it: a log bucket's CORS rule
    must allow it for the log page to read a stored log."""
    parts = urlsplit(settings.RAYDECK_BASE_URL.strip())
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{host}{port}"


def local_storage_secret() -> bytes:
    """The key the local cloud's storage URLs are signed with (from SECRET_KEY)."""
    return salted_hmac("raydeck.local-storage", "v1").digest()


def provider_for(cloud: Cloud) -> CloudProvider:
    """The driver for `cloud`, wrapped so every call to its API is counted, timed and its
    errors counted by provider and call (kit/metrics.py): the one place they all pass."""
    return MeteredProvider(_driver_for(cloud), provider=cloud.kind)


def _driver_for(cloud: Cloud) -> CloudProvider:
    if settings.RAYDECK_TEST_CLOUD_DRIVER:
        # Scale tests and benchmarks: a stand-in for every cloud (console/settings/test.py).
        return import_string(settings.RAYDECK_TEST_CLOUD_DRIVER)(cloud)
    if cloud.kind == CloudKind.AWS:
        from .aws import AwsProvider

        return AwsProvider(
            cloud_id=cloud.uuid,
            region=cloud.region,
            role_arn=cloud.aws_role_arn,
            external_id=cloud.aws_external_id,
            log_location=cloud.log_location,
            ami_parameter=settings.RAYDECK_AWS_AMI_PARAMETER,
            instance_profile=cloud.node_identity,
            firewall=firewall_spec(cloud),
            public_addresses=cloud.node_addresses == NodeAddresses.PUBLIC,
            console_origin=console_origin(),
        )
    if cloud.kind == CloudKind.GCP:
        from .gcp import GcpProvider, federated_credentials

        return GcpProvider(
            cloud_id=cloud.uuid,
            project_id=cloud.gcp_project_id,
            zones=list(cloud.zones) or [f"{cloud.region}-a"],
            log_location=cloud.log_location,
            image=settings.RAYDECK_GCP_IMAGE,
            node_service_account=cloud.node_identity,
            firewall=firewall_spec(cloud),
            public_addresses=cloud.node_addresses == NodeAddresses.PUBLIC,
            console_origin=console_origin(),
            credentials=federated_credentials(
                workload_identity_provider=cloud.gcp_workload_identity_provider,
                service_account=cloud.gcp_service_account,
            ),
        )
    if cloud.kind == CloudKind.LOCAL:
        from .local import LocalProvider

        return LocalProvider(
            cloud_id=cloud.uuid,
            root=local_root(cloud),
            log_dir=log_location_for(cloud),
            storage_url=settings.RAYDECK_BASE_URL,
            storage_secret=local_storage_secret(),
        )
    raise ValueError(f"Unknown cloud kind {cloud.kind!r}")


# The driver calls that reach the cloud's API (the rest is computed locally).
METERED_CALLS = frozenset(
    {
        "launch",
        "terminate",
        "list_instances",
        "describe",
        "default_image",
        "machine_image",
        "verify",
        "upload_url",
        "download_url",
        "object_size",
        "list_objects",
        "ensure_firewall",
        "remove_firewall",
        "start_build",
        "poll_build",
        "cancel_build",
        "build_log",
        "remove_builds",
    }
)


class MeteredProvider:
    """A driver, with each call in METERED_CALLS counted, timed and its errors counted.
    Anything else (traits, boot scripts, the driver's own attributes) is the driver's."""

    def __init__(self, driver: CloudProvider, *, provider: str) -> None:
        self.driver = driver
        self.provider = provider

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance() sees the driver, as with Django's lazy objects
        return type(self.driver)

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.driver, name)
        if name in METERED_CALLS and callable(found):
            return functools.partial(self._call, name, found)
        return found

    def _call(self, call: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        CLOUD_CALLS.labels(self.provider, call).inc()
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except TransientCloudError:
            CLOUD_ERRORS.labels(self.provider, call, "transient").inc()
            raise
        except PermanentCloudError:
            CLOUD_ERRORS.labels(self.provider, call, "permanent").inc()
            raise
        except Exception:
            CLOUD_ERRORS.labels(self.provider, call, "other").inc()
            raise
        finally:
            CLOUD_LATENCY.labels(self.provider, call).observe(time.perf_counter() - started)
