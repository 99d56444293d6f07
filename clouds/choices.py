"""Fixed vocabularies of the clouds app."""

from django.db import models


class CloudKind(models.TextChoices):
    AWS = "aws", "AWS"
    GCP = "gcp", "Google Cloud"
    LOCAL = "local", "This machine"


class CloudState(models.TextChoices):
    UNVERIFIED = "unverified", "Unverified"
    VERIFYING = "verifying", "Verifying"
    ACTIVE = "active", "Active"
    ERROR = "error", "Error"


class LaunchAccess(models.TextChoices):
    ALL = "all", "Every project of the organization"
    PROJECTS = "projects", "Only the chosen projects"


class NodeAddresses(models.TextChoices):
    """Whether an AWS or GCP cloud's nodes get a public address (users reach the gateway
    there) or only a private one (users reach it over a VPN or peering)."""

    PUBLIC = "public", "Public: users reach the gateway at the head's public address"
    PRIVATE = "private", "Private only: users reach it inside the cloud's network (VPN, peering)"


class VerificationState(models.TextChoices):
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
