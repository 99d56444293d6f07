"""Jobs: bounded work run to completion, each attempt on a cluster of its own (created
for it and terminated after) or in a shared cluster's queue."""

from __future__ import annotations

import uuid

from django.db import models

from accounts.models import Organization, OrgOwnedQuerySet, Project, User
from clouds.models import Cloud
from clusters.choices import DesiredState
from clusters.models import Cluster, ComputeConfigVersion, ContainerImage
from workloads.models import WorkingDir

from .choices import (
    DEFAULT_MAX_CONCURRENCY,
    FINAL_JOB_STATES,
    TRANSITIONS,
    JobState,
    QueueOrder,
)


class InvalidTransition(Exception):
    pass


# The cluster badge colour that reads the same (console.css).
BADGE_CLASSES = {
    JobState.PENDING: "cluster-pending",
    JobState.STARTING: "cluster-starting",
    JobState.RUNNING: "cluster-running",
    JobState.SUCCEEDED: "cluster-running",
    JobState.FAILED: "cluster-failed",
    JobState.STOPPED: "cluster-terminated",
    JobState.TIMED_OUT: "cluster-failed",
}


class JobQuerySet(OrgOwnedQuerySet):
    def active(self) -> JobQuerySet:
        return self.exclude(state__in=FINAL_JOB_STATES)


class Job(models.Model):
    """One piece of bounded work: an entrypoint run with a runtime env until it ends,
    retried up to `max_retries` times."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    entrypoint = models.TextField(max_length=10_000)
    # Ray's runtime_env without working_dir (env_vars, pip): working_dir is below.
    runtime_env = models.JSONField(default=dict, blank=True)
    working_dir = models.ForeignKey(
        WorkingDir, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs"
    )
    cloud = models.ForeignKey(Cloud, on_delete=models.PROTECT, related_name="jobs")
    compute_config = models.ForeignKey(
        ComputeConfigVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    image = models.ForeignKey(
        ContainerImage, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    max_retries = models.PositiveSmallIntegerField(default=1)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    # A running cluster whose queue runs the job; empty: a cluster of its own per attempt.
    target_cluster = models.ForeignKey(
        Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="queued_jobs"
    )
    # In a queue ordered by priority, higher runs first.
    priority = models.SmallIntegerField(default=0)
    # The schedule that submitted it, if one did.
    schedule = models.ForeignKey(
        "JobSchedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.PENDING)
    state_reason = models.CharField(max_length=1000, blank=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    stop_requested_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["project", "-created_at"]),
            models.Index(
                fields=["state"],
                name="job_active",
                condition=models.Q(state__in=["pending", "starting", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    @property
    def badge_class(self) -> str:
        return BADGE_CLASSES[JobState(self.state)]

    def move_to(self, state: str, reason: str = "") -> None:
        if state == self.state:
            return
        if state not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"job {self.pk}: {self.state} → {state}")
        self.state = state
        self.state_reason = reason[:1000]


class JobAttempt(models.Model):
    """One run of a job's entrypoint on one cluster (a Ray job submission)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    cluster = models.ForeignKey(
        Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="job_attempts"
    )
    # Whether Raydeck created the cluster for this attempt (and so terminates it after).
    owns_cluster = models.BooleanField(default=True)
    submission_id = models.CharField(max_length=100, unique=True)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.PENDING)
    exit_code = models.IntegerField(null=True, blank=True)
    reason = models.CharField(max_length=1000, blank=True)  # why it ended, for people
    log_bytes = models.BigIntegerField(default=0)  # how much driver log the head has seen
    log_key = models.CharField(max_length=300, blank=True)  # the archived driver log
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)  # the driver began running
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["job", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="one_attempt_per_number"),
            # At most one attempt of a job is under way.
            models.UniqueConstraint(
                fields=["job"],
                condition=models.Q(state__in=["pending", "starting", "running"]),
                name="one_active_attempt_per_job",
            ),
        ]
        indexes = [
            models.Index(
                fields=["cluster"],
                name="attempt_active_on_cluster",
                condition=models.Q(state__in=["pending", "starting", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job} attempt {self.number}"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    @property
    def log_being_stored(self) -> bool:
        """Ended, no driver log yet, and its own cluster still up: the head may still
        store the log (services._release_clusters keeps the cluster for it, LOG_GRACE at
        most), so the job's page keeps refreshing until it does."""
        return (
            self.is_final
            and not self.log_key
            and self.owns_cluster
            and self.cluster is not None
            and self.cluster.desired_state == DesiredState.RUNNING
        )

    @property
    def badge_class(self) -> str:
        return BADGE_CLASSES[JobState(self.state)]

    def move_to(self, state: str, reason: str = "") -> None:
        if state == self.state:
            return
        if state not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"attempt {self.pk}: {self.state} → {state}")
        self.state = state
        if reason:
            self.reason = reason[:1000]


class JobEvent(models.Model):
    """Something that happened to a job (each state change), shown on its page."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    attempt = models.PositiveSmallIntegerField(null=True, blank=True)
    step = models.CharField(max_length=40)
    message = models.CharField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.job}: {self.step}"


class JobQueue(models.Model):
    """How a shared cluster runs the jobs that target it: in which order, how many at
    once. A cluster without a row has the defaults."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    cluster = models.OneToOneField(Cluster, on_delete=models.CASCADE, related_name="job_queue")
    order = models.CharField(max_length=16, choices=QueueOrder.choices, default=QueueOrder.FIFO)
    max_concurrency = models.PositiveSmallIntegerField(default=DEFAULT_MAX_CONCURRENCY)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgOwnedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"queue of {self.cluster}"


class JobSchedule(models.Model):
    """A job definition submitted as a new job at each time its cron expression names
    (in its time zone), unless paused."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="job_schedules")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    cron = models.CharField(max_length=120)
    timezone = models.CharField(max_length=64, default="UTC")
    paused = models.BooleanField(default=False)
    # The job each run submits (as job_submit's arguments).
    entrypoint = models.TextField(max_length=10_000)
    runtime_env = models.JSONField(default=dict, blank=True)
    working_dir = models.ForeignKey(
        WorkingDir, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    cloud = models.ForeignKey(Cloud, on_delete=models.PROTECT, related_name="+")
    compute_config = models.ForeignKey(
        ComputeConfigVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    image = models.ForeignKey(
        ContainerImage, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    max_retries = models.PositiveSmallIntegerField(default=1)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    target_cluster = models.ForeignKey(
        Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    priority = models.SmallIntegerField(default=0)
    # When the next run is due (None while paused), and how the last one went.
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_error = models.CharField(max_length=1000, blank=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]
        indexes = [
            models.Index(
                fields=["next_run_at"],
                name="schedule_due",
                condition=models.Q(paused=False),
            ),
        ]

    def __str__(self) -> str:
        return self.name
