"""Clouds: the trust relationship between Raydeck and a place where clusters run.

No credential of a customer is ever stored: AWS clouds keep the role ARN and the
ExternalId Raydeck generated; GCP clouds keep the project, the Workload Identity
provider and the service account to impersonate; local clouds keep a folder.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from accounts.models import Organization, OrgOwnedQuerySet, Project, User

from . import validators
from .choices import CloudKind, CloudState, LaunchAccess, NodeAddresses, VerificationState


def new_external_id() -> str:
    # 32 random characters: unguessable, so no other tenant can name this role.
    return f"raydeck-{secrets.token_hex(16)}"


class Cloud(models.Model):
    """A registered data plane: an AWS account and region, a GCP project, or this machine."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="clouds")
    # Public identity of the cloud: the `raydeck-cloud` tag on every instance.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=CloudKind.choices)
    region = models.CharField(max_length=64, blank=True)
    zones = models.JSONField(default=list, blank=True)
    state = models.CharField(
        max_length=16, choices=CloudState.choices, default=CloudState.UNVERIFIED
    )
    state_reason = models.CharField(max_length=500, blank=True)
    log_location = models.CharField(
        max_length=300,
        blank=True,
        help_text="Where cluster logs are kept: s3://…, gs://… or a folder.",
    )
    launch_access = models.CharField(
        max_length=16, choices=LaunchAccess.choices, default=LaunchAccess.ALL
    )
    projects = models.ManyToManyField(Project, blank=True, related_name="clouds")

    # AWS: the customer's role, assumed with an ExternalId only this cloud knows.
    aws_role_arn = models.CharField(max_length=200, blank=True)
    aws_external_id = models.CharField(max_length=64, blank=True, editable=False)
    # GCP: Workload Identity Federation into the customer's project, then impersonation.
    gcp_project_id = models.CharField(max_length=64, blank=True)
    gcp_workload_identity_provider = models.CharField(max_length=300, blank=True)
    gcp_service_account = models.CharField(max_length=200, blank=True)
    # What the nodes themselves run as, so their agents can write the log bucket: on AWS
    # an instance profile (name or ARN), on GCP a service account email. Blank: none.
    node_identity = models.CharField(max_length=300, blank=True)
    # Local: where node folders live (empty = the installation's default root).
    local_root = models.CharField(max_length=300, blank=True)
    # AWS/GCP: the address ranges (CIDR) allowed to reach the clusters' gateway port; the
    # cloud's firewall lets nothing else in from outside (providers/*_firewall.py).
    gateway_cidrs = models.JSONField("gateway CIDR ranges", default=list, blank=True)
    # 0.0.0.0/0 (or ::/0) in gateway_cidrs opens the gateways to the whole internet: only
    # with this explicit confirmation.
    gateway_open_to_internet = models.BooleanField(default=False)
    # AWS/GCP: whether nodes get a public address; the gateway address users reach is the
    # head's public one when it has one, else its private one (clusters/access.py).
    node_addresses = models.CharField(
        max_length=8, choices=NodeAddresses.choices, default=NodeAddresses.PUBLIC
    )

    # Blank once its creator's account is gone: the cloud stays editable.
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="cloud_name_per_org"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_usable(self) -> bool:
        return self.state == CloudState.ACTIVE

    def open_to(self, project: Project) -> bool:
        """Whether the cloud's launch access lets `project` launch clusters on it."""
        return (
            self.launch_access == LaunchAccess.ALL or self.projects.filter(pk=project.pk).exists()
        )

    @property
    def identity_configured(self) -> bool:
        """Whether the user finished telling us how to reach their account."""
        if self.kind == CloudKind.AWS:
            return bool(self.aws_role_arn)
        if self.kind == CloudKind.GCP:
            return bool(self.gcp_workload_identity_provider and self.gcp_service_account)
        return True

    def clean(self) -> None:
        """Per-kind rules: each field that matters for this kind has the right shape."""
        errors: dict[str, list[ValidationError]] = {}

        def check(field: str, validator: Callable[..., None], *args: Any) -> None:
            try:
                validator(*args)
            except ValidationError as exc:
                errors.setdefault(field, []).append(exc)

        if self.kind == CloudKind.AWS:
            check("region", validators.validate_aws_region, self.region)
            if self.aws_role_arn:
                check("aws_role_arn", validators.validate_aws_role_arn, self.aws_role_arn)
        elif self.kind == CloudKind.GCP:
            check("region", validators.validate_gcp_region, self.region)
            check("zones", validators.validate_gcp_zones, list(self.zones), self.region)
            check("gcp_project_id", validators.validate_gcp_project, self.gcp_project_id)
            if self.gcp_service_account:
                check(
                    "gcp_service_account",
                    validators.validate_gcp_service_account,
                    self.gcp_service_account,
                )
            if self.gcp_workload_identity_provider:
                check(
                    "gcp_workload_identity_provider",
                    validators.validate_gcp_wif_provider,
                    self.gcp_workload_identity_provider,
                )
        elif self.kind == CloudKind.LOCAL:
            check("local_root", validators.validate_local_root, self.local_root)
        check("log_location", validators.validate_log_location, self.kind, self.log_location)
        if self.node_identity:
            check("node_identity", validators.validate_node_identity, self.kind, self.node_identity)
        check(
            "gateway_cidrs",
            validators.validate_gateway_cidrs,
            self.gateway_cidrs,
            self.gateway_open_to_internet,
        )
        if errors:
            raise ValidationError(errors)


class CloudVerification(models.Model):
    """One run of the checks against a cloud, with its results."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    cloud = models.ForeignKey(Cloud, on_delete=models.CASCADE, related_name="verifications")
    state = models.CharField(
        max_length=16, choices=VerificationState.choices, default=VerificationState.RUNNING
    )
    requested_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-pk"]
        constraints = [
            # One verification in flight per cloud: a second "Verify" click joins it.
            models.UniqueConstraint(
                fields=["cloud"],
                condition=models.Q(state="running"),
                name="one_running_verification_per_cloud",
            )
        ]

    def __str__(self) -> str:
        return f"Verification of {self.cloud} ({self.state})"


class CloudCheck(models.Model):
    """One check of a verification: passed or failed, and what to fix."""

    verification = models.ForeignKey(
        CloudVerification, on_delete=models.CASCADE, related_name="checks"
    )
    position = models.PositiveSmallIntegerField(default=0)
    name = models.CharField(max_length=100)
    passed = models.BooleanField()
    message = models.CharField(max_length=1000)

    class Meta:
        ordering = ["position"]

    def __str__(self) -> str:
        return f"{self.name}: {'passed' if self.passed else 'failed'}"


class DefaultCloud(models.Model):
    """An organization's (project blank) or one project's preferred cloud, used when a
    request names none; the project's preference overrides the organization's."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # Deleting the cloud removes the preference: requests fall back to the next rule.
    cloud = models.ForeignKey(Cloud, on_delete=models.CASCADE, related_name="+")
    updated_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization"],
                condition=models.Q(project__isnull=True),
                name="one_default_cloud_per_org",
            ),
            models.UniqueConstraint(
                fields=["project"],
                condition=models.Q(project__isnull=False),
                name="one_default_cloud_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.cloud} preferred by {self.project or self.organization}"
