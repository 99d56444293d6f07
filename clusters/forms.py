"""Forms of the cluster pages. Every choice is scoped to the organization in the URL and
to what the viewer may use; `cluster_create` checks the same again when it writes."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any, cast

from django import forms

from accounts.models import Organization, Project, User
from clouds.choices import CloudKind
from clouds.models import Cloud

from . import selectors
from .choices import ClusterState
from .models import ComputeConfigVersion, ContainerImage
from .services.defaults import ray_version
from .services.lifecycle import cloud_usable_by

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
        # it changes); without one they list everything, and clean() checks the pair.
        self.chosen_cloud = self._chosen_cloud()
        config_field = cast(forms.ModelChoiceField, self.fields["compute_config"])
        config_field.queryset = selectors.compute_configs_for_cluster_create(
            organization=organization, viewer=viewer
        )
        configs = selectors.compute_configs_for_cluster_create(
            organization=organization, viewer=viewer, cloud=self.chosen_cloud
        )
        if self.chosen_cloud is not None:  # the blank choice already stands for it
            configs = configs.exclude(config__name=default_config_name(self.chosen_cloud))
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
        if not self.initial.get("cloud") and len(self.clouds) == 1:
            self.initial["cloud"] = self.clouds[0].pk
        if not self.initial.get("name"):
            self.initial["name"] = suggest_name(project)

    def follow_cloud(self, url: str) -> None:
        """Choosing a cloud asks `url` for its compute configs and images."""
        self.fields["cloud"].widget.attrs.update(
            {"hx-get": url, "hx-trigger": "change", "hx-target": "#cloud-fields",
             "hx-swap": "outerHTML"}
        )  # fmt: skip

    @property
    def can_create(self) -> bool:
        return bool(self.projects)

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
        return label if self.chosen_cloud else f"{label} · {version.cloud.name}"

    @staticmethod
    def _image_label(image: ContainerImage) -> str:
        return f"{image.name} · {image.image_uri}" if image.image_uri else image.name

    def clean_name(self) -> str:
        return self.cleaned_data["name"].strip()

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        project: Project | None = data.get("project")
        cloud: Cloud | None = data.get("cloud")
        if project is None or cloud is None:
            return data
        reason = cloud_usable_by(cloud, project)
        if reason:
            self.add_error("cloud", reason)
            return data
        version: ComputeConfigVersion | None = data.get("compute_config")
        if version is not None:
            if version.cloud_id != cloud.pk:
                self.add_error(
                    "compute_config",
                    f"{version.config.name} runs on {version.cloud.name}, not {cloud.name}. "
                    f"Choose a config for {cloud.name}, or leave it blank for the default.",
                )
            elif version.config.project_id not in (None, project.pk):
                self.add_error(
                    "compute_config",
                    f"{version.config.name} belongs to another project. Choose one of "
                    f"{project.name} or of the whole organization.",
                )
        image: ContainerImage | None = data.get("image")
        if image is not None:
            local = cloud.kind == CloudKind.LOCAL
            if local and image.image_uri:
                self.add_error(
                    "image",
                    f"{cloud.name} runs nodes as local processes, not containers. "
                    "Choose a Python environment, or leave it blank for the default.",
                )
            elif not local and not image.image_uri:
                self.add_error(
                    "image",
                    f"{image.name} is a local Python environment; {cloud.name} needs a "
                    "container image. Choose one, or leave it blank for the default.",
                )
        return data
