from django.db import models


class JobState(models.TextChoices):
    PENDING = "pending", "Pending"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"
    TIMED_OUT = "timed_out", "Timed out"


FINAL_JOB_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED, JobState.TIMED_OUT}
)
ACTIVE_JOB_STATES = frozenset({JobState.PENDING, JobState.STARTING, JobState.RUNNING})

# Where a job (or an attempt) may go from each state; anything else is a bug.
TRANSITIONS: dict[str, frozenset[str]] = {
    JobState.PENDING: frozenset({JobState.STARTING, JobState.RUNNING, *FINAL_JOB_STATES}),
    JobState.STARTING: frozenset({JobState.PENDING, JobState.RUNNING, *FINAL_JOB_STATES}),
    JobState.RUNNING: frozenset({JobState.STARTING, *FINAL_JOB_STATES}),
    **{state: frozenset() for state in FINAL_JOB_STATES},
}

# What the head reports (Ray's job statuses) → an attempt's state.
RAY_STATUS = {
    "PENDING": JobState.STARTING,
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "STOPPED": JobState.STOPPED,
}


class QueueOrder(models.TextChoices):
    """Which waiting job of a cluster's queue runs next."""

    FIFO = "fifo", "First in, first out"
    PRIORITY = "priority", "Highest priority first (then first in)"


# A cluster's queue runs this many jobs at once until someone says otherwise.
DEFAULT_MAX_CONCURRENCY = 1
MAX_CONCURRENCY = 100
