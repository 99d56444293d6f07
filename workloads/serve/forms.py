"""Services' console forms: they parse and scope their choices; the rules are the
services' (services/deploy.py), shown on the fields they name."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from accounts.models import Organization, Project, User
from clouds.models import Cloud
from clusters.models import ComputeConfigVersion

from . import selectors

EXAMPLE_CONFIG = "import_path: my_app:app\nargs: {}\nruntime_env: {}\n"


class ServiceDeployForm(forms.Form):
    name = forms.SlugField(
        max_length=63, help_text="Deploying a name that is live in the project adds a version."
    )
    project = forms.ModelChoiceField(queryset=Project.objects.none())
    cloud = forms.ModelChoiceField(
        queryset=Cloud.objects.none(), help_text="Where its clusters run."
    )
    compute_config = forms.ModelChoiceField(
        queryset=ComputeConfigVersion.objects.none(),
        required=False,
        empty_label="The cloud's default",
        help_text="The nodes of each version's cluster.",
    )
    serve_config = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "mono"}),
        initial=EXAMPLE_CONFIG,
        help_text="A Ray Serve config in YAML or JSON: one application (import_path, args, "
        "runtime_env, route_prefix) or applications: [...].",
    )
    canary_steps = forms.CharField(
        initial="10, 50, 100", help_text="Percent of the traffic a new version takes, step by step."
    )
    step_seconds = forms.IntegerField(
        min_value=1, max_value=86400, initial=60, help_text="How long each step holds."
    )

    def __init__(self, *args: Any, organization: Organization, viewer: User, **kwargs: Any):
        super().__init__(*args, **kwargs)
        choices = {
            "project": selectors.projects_for_deploy(viewer, organization),
            "cloud": selectors.clouds_for_deploy(viewer, organization),
            "compute_config": selectors.compute_configs_for_deploy(viewer, organization),
        }
        for name, rows in choices.items():
            field = self.fields[name]
            assert isinstance(field, forms.ModelChoiceField)  # noqa: S101 - declared above
            field.queryset = rows

    def clean_serve_config(self) -> Any:
        import yaml  # here, not at the top: PyYAML's import is a cost of every start

        raw = self.cleaned_data["serve_config"]
        try:
            return yaml.safe_load(raw) if raw.strip()[:1] != "{" else json.loads(raw)
        except (yaml.YAMLError, ValueError) as exc:
            raise forms.ValidationError(f"This is not valid YAML or JSON: {exc}") from exc

    def clean_canary_steps(self) -> list[Any]:
        parts = [p.strip() for p in self.cleaned_data["canary_steps"].replace("→", ",").split(",")]
        try:
            return [int(p) for p in parts if p]
        except ValueError as exc:
            raise forms.ValidationError("Give whole percentages, e.g. 10, 50, 100.") from exc


class TrafficForm(forms.Form):
    canary = forms.IntegerField(
        required=False, help_text="The new version's share in percent; empty to unpin."
    )
