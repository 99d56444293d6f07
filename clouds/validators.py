"""The shape of what users type about their clouds, checked in one place
(Cloud.clean calls these), each with a message that says what is expected."""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath

from django.core.exceptions import ValidationError

AWS_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
AWS_ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
GCP_REGION = re.compile(r"^[a-z]+-[a-z]+\d$")
GCP_ZONE = re.compile(r"^[a-z]+-[a-z]+\d-[a-z]$")
GCP_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
GCP_SERVICE_ACCOUNT = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com$"
)
GCP_WIF_PROVIDER = re.compile(
    r"^(//iam\.googleapis\.com/)?projects/\d+/locations/global/"
    r"workloadIdentityPools/[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}$"
)
S3_LOCATION = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[\w./-]*)?$")
GCS_LOCATION = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/[\w./-]*)?$")


def _match(pattern: re.Pattern[str], value: str, message: str) -> None:
    if not pattern.match(value):
        raise ValidationError(message)


def validate_aws_region(value: str) -> None:
    _match(AWS_REGION, value, f"“{value}” is not an AWS region name, such as us-east-1.")


def validate_aws_role_arn(value: str) -> None:
    _match(
        AWS_ROLE_ARN,
        value,
        "Paste the role's ARN, such as arn:aws:iam::123456789012:role/raydeck-control-plane.",
    )


def validate_gcp_region(value: str) -> None:
    _match(GCP_REGION, value, f"“{value}” is not a Google Cloud region, such as us-central1.")


def validate_gcp_zones(zones: list[str], region: str) -> None:
    for zone in zones:
        _match(GCP_ZONE, zone, f"“{zone}” is not a zone name, such as {region or 'us-central1'}-a.")
        if region and not zone.startswith(region + "-"):
            raise ValidationError(f"Zone {zone} is not in region {region}.")


def validate_gcp_project(value: str) -> None:
    _match(GCP_PROJECT, value, "Use the project ID (6-30 lowercase letters, digits, hyphens).")


def validate_gcp_service_account(value: str) -> None:
    _match(
        GCP_SERVICE_ACCOUNT,
        value,
        "Use the service account's email, such as raydeck@my-project.iam.gserviceaccount.com.",
    )


def validate_gcp_wif_provider(value: str) -> None:
    _match(
        GCP_WIF_PROVIDER,
        value,
        "Use the provider's full name: projects/<number>/locations/global/"
        "workloadIdentityPools/<pool>/providers/<provider>.",
    )


def validate_log_location(kind: str, value: str) -> None:
    if not value:
        return
    if kind == "aws":
        _match(S3_LOCATION, value, "Use an S3 location such as s3://my-bucket/raydeck-logs.")
    elif kind == "gcp":
        _match(GCS_LOCATION, value, "Use a Cloud Storage location such as gs://my-bucket/logs.")
    elif not PurePosixPath(value).is_absolute():
        raise ValidationError("Use an absolute folder path, such as /var/lib/raydeck/logs.")


def validate_local_root(value: str) -> None:
    if value and not PurePosixPath(value).is_absolute():
        raise ValidationError("Use an absolute folder path, such as /var/lib/raydeck/nodes.")


AWS_INSTANCE_PROFILE = re.compile(
    r"^(arn:aws[a-z-]*:iam::\d{12}:instance-profile/[\w+=,.@/-]{1,128}|[\w+=,.@-]{1,128})$"
)
GCP_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9-]{2,63}@[a-z0-9.-]+\.gserviceaccount\.com$")


def validate_node_identity(kind: str, value: str) -> None:
    if kind == "aws":
        _match(
            AWS_INSTANCE_PROFILE,
            value,
            "Give an instance profile name or ARN, such as raydeck-nodes.",
        )
    elif kind == "gcp":
        example = "nodes@my-project.iam.gserviceaccount.com"
        _match(GCP_SERVICE_ACCOUNT, value, f"Give a service account email, such as {example}.")
    else:
        raise ValidationError("Nodes of the local cloud run as Raydeck itself.")


MAX_GATEWAY_CIDRS = 50  # AWS allows 60 rules per security group


def validate_gateway_cidrs(cidrs: object, open_to_internet: bool) -> None:
    """A list of CIDR ranges (IPv4 or IPv6, no host bits set); the whole internet
    (0.0.0.0/0, ::/0) only with the explicit confirmation."""
    if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
        raise ValidationError("Give the CIDR ranges as a list, e.g. 203.0.113.0/24.")
    if len(cidrs) > MAX_GATEWAY_CIDRS:
        raise ValidationError(f"Give at most {MAX_GATEWAY_CIDRS} CIDR ranges.")
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=True)
        except ValueError:
            raise ValidationError(
                f"{cidr!r} is not a CIDR range: write it as 203.0.113.0/24 (no host bits "
                "after the prefix) or 2001:db8::/32."
            ) from None
        if network.prefixlen == 0 and not open_to_internet:
            raise ValidationError(
                f"{cidr} opens the clusters' gateways to the whole internet. Confirm that "
                "you want this, or give your network's ranges instead."
            )
