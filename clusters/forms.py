"""Forms of the cluster pages. They parse input: every choice is scoped to the
organization in the URL and to what the viewer may use, and the rules (which cloud,
config and image go together) are the services', shown back on their fields."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.db import models

from accounts.models import Organization, Project, User
from accounts.permissions import has_perm
from clouds.models import Cloud
from kit.forms import add_service_error

from . import selectors
from .choices import ClusterState
from .models import VERSIONED_FIELDS, WORKER_GROUP_DEFAULTS, ComputeConfigVersion, ContainerImage
from .services.defaults import default_machines_preview, ray_version

_SUFFIX_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def suggest_name(project: Project | None) -> str:
    """`<project>-<4 random characters>`: unique enough that most people keep it."""
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(4))
    return f"{project.slug if project else 'cluster'}-{suffix}"[:100]


def default_config_name(cloud: Cloud) -> str:
    """The name `default_compute_config` gives the config it makes for `cloud`."""
    return f"Default for {cloud.name}"[:100]


def _offer(field: forms.ModelChoiceField, shown: Iterable[Any], label: Any, empty: str) -> None:
    """Show only `shown` in the dropdown while the field still validates against its
    (wider, still scoped) queryset, so a choice that stopped fitting gets a message that
    says why instead of "Select a valid choice"."""
    field.choices = [("", empty), *((obj.pk, label(obj)) for obj in shown)]


class NodeLogFilterForm(forms.Form):
    """Which of a node's log lines to show (and download): one file group, a text."""

    source = forms.ChoiceField(
        required=False,
        label="File",
        choices=[("", "All files"), *((k, v[0]) for k, v in selectors.LOG_SOURCES.items())],
    )
    q = forms.CharField(required=False, max_length=200, label="Search")
    dumps = forms.BooleanField(required=False, label="Ray's periodic state dumps")

    def filters(self) -> dict[str, Any]:
        """The node_log arguments; an invalid filter shows everything."""
        if not self.is_valid():
            return {}
        data = self.cleaned_data
        return {"source": data["source"], "query": data["q"], "dumps": data["dumps"]}


class ClusterFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Name")
    project = forms.ChoiceField(required=False)
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *ClusterState.choices])
    cloud = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)

    def __init__(self, data: Any, *, projects: list[Project], clouds: list[Cloud]) -> None:
        super().__init__(data)
        project_field = cast(forms.ChoiceField, self.fields["project"])
        project_field.choices = [("", "Any project"), *((p.slug, p.name) for p in projects)]
        cloud_field = cast(forms.ChoiceField, self.fields["cloud"])
        cloud_field.choices = [("", "Any cloud"), *((c.pk, c.name) for c in clouds)]
        for name in self.fields:
            self.fields[name].widget.attrs["id"] = f"filter-{name}"

    def filters(self) -> dict[str, Any]:
        """The valid filters; an unknown value filters nothing rather than failing."""
        if self.is_valid():
            data = self.cleaned_data
        else:
            data = {k: v for k, v in self.cleaned_data.items() if k not in self.errors}
        return {
            "query": (data.get("q") or "").strip(),
            "project": data.get("project") or "",
            "state": data.get("state") or "",
            "cloud": data.get("cloud"),
        }


class ClusterCreateForm(forms.Form):
    project = forms.ModelChoiceField(queryset=Project.objects.none())
    name = forms.CharField(
        max_length=100,
        help_text="Unique among the live clusters of the project.",
    )
    cloud = forms.ModelChoiceField(queryset=Cloud.objects.none(), help_text="Where the nodes run.")
    compute_config = forms.ModelChoiceField(
        queryset=ComputeConfigVersion.objects.none(),
        required=False,
        label="Compute config",
        help_text="The machines: head and worker groups. Blank: a small default for the cloud.",
    )
    image = forms.ModelChoiceField(
        queryset=ContainerImage.objects.none(),
        required=False,
        help_text="What runs on the nodes. Blank: Raydeck's image for the kind of cloud.",
    )

    def __init__(
        self,
        data: Any = None,
        *,
        organization: Organization,
        viewer: User,
        initial: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data, initial=initial)
        self.organization = organization
        self.viewer = viewer
        self.default_config: ComputeConfigVersion | None = None
        projects = selectors.projects_for_cluster_create(organization=organization, viewer=viewer)
        self.projects = list(projects)
        project_field = cast(forms.ModelChoiceField, self.fields["project"])
        project_field.queryset = projects
        project_field.empty_label = None if len(self.projects) == 1 else "Choose a project"

        self.clouds = list(
            selectors.clouds_for_cluster_create(
                organization=organization, viewer=viewer, projects=projects
            )
        )
        if not self.is_bound:
            self._preset()
        cloud_field = cast(forms.ModelChoiceField, self.fields["cloud"])
        cloud_field.queryset = Cloud.objects.visible_to(viewer).filter(organization=organization)
        _offer(cloud_field, self.clouds, self._cloud_label, "Choose a cloud")

        # The config and image lists follow the chosen cloud (the page asks again when
        # it changes); without one they list everything, and cluster_create checks the pair.
        config_field = cast(forms.ModelChoiceField, self.fields["compute_config"])
        config_field.queryset = selectors.compute_configs_for_cluster_create(
            organization=organization, viewer=viewer
        )
        self.chosen_config = self._chosen_config(config_field.queryset)
        if not self.is_bound and self.chosen_config and not self.initial.get("cloud"):
            # A config picked before the cloud brings its cloud along.
            self.initial["cloud"] = self.chosen_config.cloud_id
        self.chosen_cloud = self._chosen_cloud()
        configs = list(
            selectors.compute_configs_for_cluster_create(
                organization=organization, viewer=viewer, cloud=self.chosen_cloud
            )
        )
        if self.chosen_cloud is not None:  # the blank choice already stands for it
            default_name = default_config_name(self.chosen_cloud)
            self.default_config = next((v for v in configs if v.config.name == default_name), None)
            configs = [v for v in configs if v.config.name != default_name]
        # A chosen config stays chosen when the cloud changes; the page says it does not
        # fit (and cluster_create refuses the pair) rather than silently picking another.
        self.config_mismatch = bool(
            self.chosen_config
            and self.chosen_cloud
            and self.chosen_config.cloud_id != self.chosen_cloud.pk
        )
        if self.chosen_config and self.config_mismatch and self.chosen_config not in configs:
            configs.append(self.chosen_config)
        _offer(
            config_field,
            configs,
            self._config_label,
            default_config_name(self.chosen_cloud)
            if self.chosen_cloud
            else "Default for the chosen cloud",
        )
        image_field = cast(forms.ModelChoiceField, self.fields["image"])
        image_field.queryset = selectors.images_for_cluster_create(organization=organization)
        _offer(
            image_field,
            selectors.images_for_cluster_create(organization=organization, cloud=self.chosen_cloud),
            self._image_label,
            f"Raydeck's default (Ray {ray_version()})",
        )

    def _preset(self) -> None:
        """An empty form starts with what the user would most likely pick: the project
        named in the link (or the only one), the only cloud, a fresh name."""
        wanted = str(self.initial.get("project", ""))
        project = next((p for p in self.projects if wanted in (p.slug, str(p.pk))), None)
        if project is None and len(self.projects) == 1:
            project = self.projects[0]
        self.initial["project"] = project.pk if project else None
        if not self.initial.get("cloud") and not self.initial.get("compute_config"):
            # The same rule as a request that names no cloud (a config brings its own).
            cloud = (
                selectors.cloud_for_create(project=project, viewer=self.viewer)
                if project
                else (self.clouds[0] if len(self.clouds) == 1 else None)
            )
            if cloud in self.clouds:
                self.initial["cloud"] = cloud.pk
        if not self.initial.get("name"):
            self.initial["name"] = suggest_name(project)

    def follow_cloud(self, url: str) -> None:
        """Choosing a cloud or a config asks `url` again with everything chosen so far,
        for the cloud's compute configs and images and the chosen config's machines."""
        for name in ("cloud", "compute_config"):
            self.fields[name].widget.attrs.update(
                {
                    "hx-get": url,
                    "hx-trigger": "change",
                    "hx-include": "closest form",
                    # A GET: the CSRF token would land in the URL, and so in access logs.
                    "hx-params": "not csrfmiddlewaretoken",
                    "hx-target": "#cloud-fields",
                    "hx-swap": "outerHTML",
                }
            )

    @property
    def summary_config(self) -> ComputeConfigVersion | None:
        """The machines the cluster would get: the chosen config, else the cloud's default."""
        if self.chosen_config or self.default_config:
            return self.chosen_config or self.default_config
        return default_machines_preview(self.chosen_cloud) if self.chosen_cloud else None

    @property
    def can_create(self) -> bool:
        return bool(self.projects)

    def _chosen_config(
        self, configs: models.QuerySet[ComputeConfigVersion]
    ) -> ComputeConfigVersion | None:
        value = (
            self.data.get("compute_config") if self.is_bound else self.initial.get("compute_config")
        )
        if isinstance(value, ComputeConfigVersion):
            return value
        if not str(value or "").isdigit():
            return None
        return configs.filter(pk=int(str(value))).first()

    def _chosen_cloud(self) -> Cloud | None:
        value = self.data.get("cloud") if self.is_bound else self.initial.get("cloud")
        if isinstance(value, Cloud):
            value = value.pk
        return next((c for c in self.clouds if str(c.pk) == str(value)), None)

    @staticmethod
    def _cloud_label(cloud: Cloud) -> str:
        where = cloud.get_kind_display()
        if cloud.region:
            where += f", {cloud.region}"
        return f"{cloud.name} ({where})"

    def _config_label(self, version: ComputeConfigVersion) -> str:
        label = f"{version.config.name} (v{version.number})"
        on_chosen_cloud = self.chosen_cloud and version.cloud_id == self.chosen_cloud.pk
        return label if on_chosen_cloud else f"{label} · {version.cloud.name}"

    @staticmethod
    def _image_label(image: ContainerImage) -> str:
        return f"{image.name} · {image.image_uri}" if image.image_uri else image.name

    def clean_name(self) -> str:
        return self.cleaned_data["name"].strip()


# --- Compute configs ---------------------------------------------------------------------

# Blank worker group rows the form offers, so a group can be added without JavaScript.
BLANK_GROUP_ROWS = 4


def _version_default(name: str) -> Any:
    """The model's default for a setting, so a new config's form starts where the API does."""
    field = cast("models.Field[Any, Any]", ComputeConfigVersion._meta.get_field(name))
    return field.get_default()


class WorkerGroupForm(forms.Form):
    """One row of the worker groups table. It only parses numbers: the rules (names,
    min <= max, ...) are the model's, reported back by the service per row."""

    name = forms.CharField(required=False, label="Name")
    instance_type = forms.CharField(required=False, label="Instance type")
    cpus = forms.FloatField(required=False, label="CPUs")
    memory_mb = forms.IntegerField(required=False, label="Memory (MB)")
    gpus = forms.FloatField(required=False, label="GPUs")
    min = forms.IntegerField(required=False, label="Min")
    max = forms.IntegerField(required=False, label="Max")
    spot = forms.BooleanField(required=False, label="Spot")
    downscale_delay_seconds = forms.IntegerField(required=False, label="Downscale delay (s)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The table's cells have no <label>: each input names its column and row.
        row = int(self.prefix.rsplit("-", 1)[-1]) + 1 if self.prefix else 1
        # A blank row shows the defaults; left as is, it has not changed and is skipped.
        for name, field in self.fields.items():
            field.widget.attrs["aria-label"] = f"Group {row} {field.label or name}"
            if name in WORKER_GROUP_DEFAULTS:
                field.initial = WORKER_GROUP_DEFAULTS[name]
            if isinstance(field, forms.FloatField):
                field.widget.attrs["step"] = "any"
        self.fields["name"].widget.attrs["placeholder"] = "e.g. workers"

    def group(self) -> dict[str, Any]:
        """The row as the service takes it: blank numbers left to the defaults."""
        return {
            key: value
            for key, value in self.cleaned_data.items()
            if key in WORKER_GROUP_DEFAULTS and (value is not None or key == "name")
        }


class ComputeConfigForm(forms.Form):
    """A compute config's settings and its worker groups (a formset of rows). Creating
    also asks for the name and the project; both stay fixed once created. Choices are
    scoped to the organization and to where the viewer may manage configs."""

    name = forms.CharField(max_length=100, help_text="Unique in the organization.")
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        help_text="Who may use it: one project, or every project of the organization.",
    )
    cloud = forms.ModelChoiceField(queryset=Cloud.objects.none(), help_text="Where the nodes run.")
    region = forms.CharField(required=False, help_text="Blank: the cloud's region.")
    zone = forms.CharField(required=False, help_text="Blank: the cloud's first zone.")
    head_instance_type = forms.CharField(
        required=False, label="Head instance type", help_text="Blank on the local cloud."
    )
    head_cpus = forms.FloatField(label="Head CPUs", widget=forms.NumberInput(attrs={"step": "any"}))
    head_memory_mb = forms.IntegerField(label="Head memory (MB)")
    idle_timeout_minutes = forms.IntegerField(
        label="Idle timeout (minutes)",
        help_text="A cluster with nothing running this long is terminated.",
    )
    max_uptime_minutes = forms.IntegerField(
        required=False,
        label="Max uptime (minutes)",
        help_text="Blank: no limit. A cluster is terminated after running this long.",
    )

    def __init__(
        self,
        data: Any = None,
        *,
        organization: Organization,
        viewer: User,
        version: ComputeConfigVersion | None = None,
    ) -> None:
        """With `version`, the form edits its config (prefilled from it): no name or
        project. Without, it creates one."""
        self.editing = version is not None
        initial: dict[str, Any] = {}
        groups: list[dict[str, Any]] = []
        if version is not None:
            initial = {name: getattr(version, name) for name in VERSIONED_FIELDS}
            initial["cloud"] = version.cloud_id
            groups = version.worker_groups
        else:
            for name in ("head_cpus", "head_memory_mb", "idle_timeout_minutes"):
                initial[name] = _version_default(name)
        super().__init__(data, initial=initial)
        clouds = Cloud.objects.visible_to(viewer).filter(organization=organization)
        cast(forms.ModelChoiceField, self.fields["cloud"]).queryset = clouds.order_by("name", "pk")
        self.may_manage_org_wide = has_perm(viewer, "compute_config.manage", organization)
        self.projects = selectors.projects_granting(
            organization=organization, viewer=viewer, perm="compute_config.manage"
        ).order_by("name", "pk")
        if self.editing:
            del self.fields["name"], self.fields["project"]
            self.fields["region"].help_text = self.fields["zone"].help_text = ""
        else:
            project_field = cast(forms.ModelChoiceField, self.fields["project"])
            project_field.queryset = self.projects
            project_field.required = not self.may_manage_org_wide
            project_field.empty_label = (
                "Organization-wide" if self.may_manage_org_wide else "Choose a project"
            )
        blank_rows = max(1, BLANK_GROUP_ROWS - len(groups))
        formset = forms.formset_factory(
            WorkerGroupForm, extra=blank_rows, can_delete=True, can_delete_extra=False
        )
        self.groups = formset(data, initial=groups, prefix="groups")

    def is_valid(self) -> bool:
        return all([super().is_valid(), self.groups.is_valid()])

    def _kept_rows(self) -> list[WorkerGroupForm]:
        """The rows that are groups: neither removed nor left blank."""
        return [
            row
            for row in self.groups.forms
            if (row.has_changed() or not row.empty_permitted) and not row.cleaned_data.get("DELETE")
        ]

    def service_fields(self) -> dict[str, Any]:
        """The cleaned data as keyword arguments of compute_config_create/_update."""
        fields = dict(self.cleaned_data)
        fields["worker_groups"] = [row.group() for row in self._kept_rows()]
        return fields

    def add_service_error(self, error: ValidationError) -> None:
        """A service's error on the form: "worker_groups.<i>" on the i-th kept row
        (blank rows are not sent), the rest as add_service_error does."""
        if hasattr(error, "error_dict"):
            rows = self._kept_rows()
            others = {}
            for key, errors in error.error_dict.items():
                prefix, _, position = key.partition(".")
                if prefix == "worker_groups" and position.isdigit() and int(position) < len(rows):
                    rows[int(position)].add_error(None, errors)
                else:
                    others[key] = errors
            if not others:
                return
            error = ValidationError(others)
        add_service_error(self, error)


# --- Images --------------------------------------------------------------------------------

AMI_LINE_EXAMPLE = "us-east-1: ami-0123456789abcdef0"


def parse_amis(text: str) -> dict[str, str]:
    """Lines of "region: ami-…" (also "region = ami-…" or "region ami-…") as a dict; blank
    lines are skipped. Only the shape is checked here: the model checks the values."""
    amis: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.replace(":", " ").replace("=", " ").split()
        if len(parts) != 2:
            raise ValidationError(
                f"Line {number}: write one region and its AMI, e.g. {AMI_LINE_EXAMPLE}."
            )
        region, ami = parts
        if region in amis:
            raise ValidationError(f"Line {number}: {region} has an AMI already.")
        amis[region] = ami
    return amis


def format_amis(amis: dict[str, str]) -> str:
    return "\n".join(f"{region}: {ami}" for region, ami in sorted(amis.items()))


class ImageForm(forms.Form):
    """An organization's image. Parses the AMI lines; every rule is the model's, shown
    back on its field by `image_create` / `image_update`."""

    name = forms.CharField(max_length=100)
    image_uri = forms.CharField(
        label="Container image URI",
        max_length=300,
        required=False,
        help_text="For clusters on AWS and GCP, e.g. rayproject/ray:2.40.0-py311. Leave it "
        "blank for a Python environment on the local cloud.",
    )
    python_executable = forms.CharField(
        max_length=300,
        required=False,
        help_text="Local cloud only: the Python that runs Ray, e.g. /opt/ray/bin/python3.",
    )
    ray_version = forms.CharField(
        label="Ray version",
        max_length=32,
        help_text="Installed on nodes whose machine image has no Ray.",
    )
    aws_amis = forms.CharField(
        label="AWS AMIs",
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 4, "placeholder": AMI_LINE_EXAMPLE, "spellcheck": "false"}
        ),
        help_text="What AWS nodes boot: one region and AMI per line. A region without one "
        "boots Raydeck's default.",
    )
    gcp_image = forms.CharField(
        label="GCP boot image",
        max_length=300,
        required=False,
        help_text="An image or image family URL, e.g. "
        "projects/debian-cloud/global/images/family/debian-12. Blank: Raydeck's default.",
    )

    def __init__(self, data: Any = None, *, image: ContainerImage | None = None) -> None:
        self.editing = image is not None
        if image is not None:
            initial = {name: getattr(image, name) for name in self.base_fields}
            initial["aws_amis"] = format_amis(image.aws_amis or {})
        else:
            initial = {"ray_version": ray_version()}
        super().__init__(data, initial=initial)

    def clean_aws_amis(self) -> dict[str, str]:
        return parse_amis(self.cleaned_data["aws_amis"])

    def service_fields(self) -> dict[str, Any]:
        return dict(self.cleaned_data)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


class ImageBuildForm(forms.Form):
    """A build spec in plain fields (one item per line); the rules are image_specs' and
    the cloud's, shown back on these fields by image_build_start."""

    name = forms.CharField(
        max_length=100, help_text="A new name makes a new image; an image's name rebuilds it."
    )
    cloud = forms.ModelChoiceField(
        queryset=Cloud.objects.none(), help_text="Its data plane builds and stores the image."
    )
    base = forms.CharField(
        initial="ray",
        max_length=300,
        help_text="ray (Raydeck's Ray image) or a full image reference.",
    )
    requirements = forms.CharField(
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 5, "placeholder": "humanize==4.9.0", "spellcheck": "false"}
        ),
        help_text="pip requirements, one per line.",
    )
    debian_packages = forms.CharField(
        label="Debian packages",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text="One per line (AWS and GCP).",
    )
    env = forms.CharField(
        label="Environment variables",
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 2, "placeholder": "NAME=value", "spellcheck": "false"}
        ),
        help_text="NAME=value, one per line.",
    )
    post_build = forms.CharField(
        label="Post-build commands",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text="Shell commands run in the image after the requirements, one per line.",
    )
    containerfile = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="Instead of the fields above: FROM, RUN, ENV, ARG, LABEL and WORKDIR only.",
    )

    def __init__(self, *args: Any, organization: Organization, viewer: User, **kwargs: Any):
        super().__init__(*args, **kwargs)
        field = cast(forms.ModelChoiceField, self.fields["cloud"])
        field.queryset = selectors.clouds_that_build(organization=organization, viewer=viewer)

    def clean_env(self) -> dict[str, str]:
        env = {}
        for line in _lines(self.cleaned_data["env"]):
            name, sep, value = line.partition("=")
            if not sep:
                raise ValidationError(f"Write {line!r} as NAME=value.")
            env[name.strip()] = value.strip()
        return env

    def spec(self) -> dict[str, Any]:
        data = self.cleaned_data
        if data["containerfile"].strip():
            return {"containerfile": data["containerfile"]}
        return {
            "base": data["base"],
            "requirements": _lines(data["requirements"]),
            "debian_packages": _lines(data["debian_packages"]),
            "env": data["env"],
            "post_build": _lines(data["post_build"]),
        }
