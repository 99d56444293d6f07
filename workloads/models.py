"""What runs on clusters. Each kind of workload is an app of its own inside this package
(its own models and migrations, so they change independently):

- `workloads.jobs` (label `jobs`): Job, JobAttempt, schedules;
- `workloads.workspaces` (label `workspaces`): Workspace;
- `workloads.serve` (label `serve`): Service, ServiceVersion (Ray Serve apps).

This app (`workloads`) holds what they share, such as working directories in the
cloud's storage.
"""

from __future__ import annotations

from django.db import models

from accounts.models import Organization, OrgOwnedQuerySet, User
from clouds.models import Cloud


class WorkingDir(models.Model):
    """A zipped working directory in one cloud's storage, named by its content's SHA-256:
    the same tree is uploaded once per cloud, and every job that uses it points here."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    cloud = models.ForeignKey(Cloud, on_delete=models.CASCADE, related_name="working_dirs")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # When Raydeck saw the object in the cloud's storage, with the size asked for.
    uploaded_at = models.DateTimeField(null=True, blank=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["cloud", "sha256"], name="one_working_dir_per_digest")
        ]

    def __str__(self) -> str:
        return f"working dir {self.sha256[:12]}"

    @property
    def key(self) -> str:
        """Where it is in the cloud's storage."""
        return f"{WORKING_DIRS}/{self.sha256}.zip"


WORKING_DIRS = "workdirs"  # the folder of every working directory in a cloud's storage
