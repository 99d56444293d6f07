"""The New job form: a cluster's choice (project, cloud, compute config, image, scoped
like the cluster form's) plus what to run. It parses; job_submit holds the rules."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError

from clusters.forms import ClusterCreateForm
from clusters.models import Cluster

from . import selectors
from .choices import MAX_CONCURRENCY, QueueOrder


class JobCreateForm(ClusterCreateForm):
    name = forms.CharField(max_length=100, required=False, help_text="Blank: the command's name.")
    entrypoint = forms.CharField(
        max_length=10_000,
        widget=forms.TextInput(attrs={"placeholder": "python train.py --epochs 3"}),
        help_text="The command Ray runs on the head. Your code comes from a working "
        "directory uploaded with the CLI, or from the image.",
    )
    env_vars = forms.CharField(
        required=False,
        label="Environment",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "SEED=1"}),
        help_text="One NAME=value a line.",
    )
    max_retries = forms.IntegerField(
        initial=1, label="Retries", help_text="How many times a failed attempt is retried."
    )
    timeout_seconds = forms.IntegerField(
        required=False, label="Timeout (seconds)", help_text="Blank: none."
    )
    target_cluster = forms.ModelChoiceField(
        queryset=Cluster.objects.none(),
        required=False,
        label="Run on",
        help_text="A running cluster of the project: the job waits in its queue. "
        "Blank: each attempt gets a cluster of its own.",
        error_messages={"invalid_choice": "No such cluster here: choose a running cluster."},
    )
    priority = forms.IntegerField(
        initial=0,
        required=False,
        help_text="In a priority queue, higher runs first (-1000 to 1000).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order_fields(["project", "entrypoint", "name", "target_cluster", "priority", "cloud"])
        # Validated against every cluster the viewer sees here (another project's gets
        # job_submit's message); offered: the running ones that can take jobs.
        field = cast(forms.ModelChoiceField, self.fields["target_cluster"])
        field.queryset = Cluster.objects.visible_to(self.viewer, self.organization)
        field.choices = [
            ("", "A new cluster for each attempt"),
            *(
                (c.pk, f"{c.name} ({c.project.name})")
                for c in selectors.queue_clusters(
                    viewer=self.viewer, organization=self.organization
                )
            ),
        ]
        # A queue's cluster brings its cloud.
        self.fields["cloud"].required = False

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["priority"] = data.get("priority") or 0
        if data.get("target_cluster") is not None:
            data["cloud"] = data["target_cluster"].cloud
        elif not data.get("cloud") and "cloud" not in self.errors:
            self.add_error("cloud", "Choose a cloud, or a cluster to run on.")
        return data

    def job_fields(self) -> dict[str, Any]:
        """What the job runs, as job_submit and schedule_create take it."""
        data = self.cleaned_data
        fields = ("project", "name", "entrypoint", "cloud", "compute_config", "image")
        more = ("env_vars", "max_retries", "timeout_seconds", "target_cluster", "priority")
        return {name: data[name] for name in (*fields, *more)}

    def clean_env_vars(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for line in self.cleaned_data["env_vars"].splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise ValidationError(f"Write “{line.strip()}” as NAME=value.")
            env[key.strip()] = value
        return env


class QueueForm(forms.Form):
    order = forms.ChoiceField(choices=QueueOrder.choices)
    max_concurrency = forms.IntegerField(
        label="Jobs at once", help_text=f"1 to {MAX_CONCURRENCY}; the rest wait their turn."
    )


class ScheduleCreateForm(JobCreateForm):
    cron = forms.CharField(
        max_length=120,
        label="Cron expression",
        widget=forms.TextInput(attrs={"placeholder": "0 3 * * *"}),
        help_text="Minute, hour, day of month, month, day of week: 0 3 * * * is 03:00 daily.",
    )
    timezone = forms.CharField(
        max_length=64, initial="UTC", label="Time zone", help_text="Such as UTC or Europe/Berlin."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].required = True
        self.order_fields(["project", "name", "cron", "timezone", "entrypoint", "cloud"])
