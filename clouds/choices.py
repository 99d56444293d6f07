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


class VerificationState(models.TextChoices):
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
