"""The New workspace form: a cluster's choice (project, cloud, compute config, image,
scoped like the cluster form's) under a workspace's name; and its Settings form, the
same choice on the workspace's own cloud."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.db.models import Q

from accounts.models import User
from clusters import selectors as cluster_selectors
from clusters.forms import ClusterCreateForm
from clusters.models import ComputeConfigVersion, ContainerImage

from .models import Workspace, workspace_name

NAME_HELP = "Lowercase letters, digits and dashes; unique in the project. Also its SSH host name."
IMAGE_HELP = (
    "What runs on the nodes; JupyterLab and SSH work when the image has them. Blank: "
    "Raydeck's workspace image, which has both (on AWS and GCP it is built in your "
    "cloud on first use, and the workspace starts once it is built)."
)


class WorkspaceCreateForm(ClusterCreateForm):
    name = forms.CharField(max_length=63, validators=[workspace_name], help_text=NAME_HELP)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["name"] = ""
        self.fields["name"].widget.attrs["placeholder"] = "my-notebooks"
        self.fields["image"].help_text = IMAGE_HELP


class WorkspaceSettingsForm(forms.Form):
    """A stopped workspace's name, compute config and image, prefilled with its own; the
    lists are those of a create on its cloud (workspace_update checks the choice)."""

    name = forms.CharField(max_length=63, validators=[workspace_name], help_text=NAME_HELP)
    compute_config = forms.ModelChoiceField(
        queryset=ComputeConfigVersion.objects.none(),
        empty_label=None,
        label="Compute config",
        help_text="The machines of its next run: head and worker groups.",
    )
    image = forms.ModelChoiceField(
        queryset=ContainerImage.objects.none(),
        required=False,
        empty_label="Raydeck's workspace image",
        help_text=IMAGE_HELP,
    )

    def __init__(self, data: Any = None, *, workspace: Workspace, viewer: User) -> None:
        initial = {
            "name": workspace.name,
            "compute_config": workspace.compute_config_id,
            "image": workspace.image_id,
        }
        super().__init__(data, initial=initial)
        organization = workspace.organization
        latest = cluster_selectors.compute_configs_for_cluster_create(
            organization=organization, viewer=viewer, cloud=workspace.cloud
        )
        config_field = cast(forms.ModelChoiceField, self.fields["compute_config"])
        # Its own version stays offered beside the latest ones: keeping it changes nothing.
        config_field.queryset = (
            ComputeConfigVersion.objects.filter(
                Q(pk__in=latest.values("pk")) | Q(pk=workspace.compute_config_id)
            )
            .select_related("config")
            .order_by("config__name", "number")
        )
        image_field = cast(forms.ModelChoiceField, self.fields["image"])
        image_field.queryset = cluster_selectors.images_for_cluster_create(
            organization=organization, cloud=workspace.cloud
        )

    def clean_name(self) -> str:
        return self.cleaned_data["name"].strip()


class SshKeyForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="Blank: the key's comment.")
    public_key = forms.CharField(
        label="Public key",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "ssh-ed25519 AAAA… you@laptop"}),
        help_text="The contents of a .pub file, such as ~/.ssh/id_ed25519.pub.",
    )


class WorkspaceJobForm(forms.Form):
    """Create job from this workspace: what to run; the rest comes from the workspace."""

    entrypoint = forms.CharField(
        max_length=10_000,
        widget=forms.TextInput(attrs={"placeholder": "python train.py --epochs 3"}),
        help_text="Run in a copy of the workspace's folder, as in its terminal.",
    )
    name = forms.CharField(
        max_length=100, required=False, help_text="Blank: the workspace's name and the command."
    )
    max_retries = forms.IntegerField(initial=1, label="Retries")
    timeout_seconds = forms.IntegerField(
        required=False, label="Timeout (seconds)", help_text="Blank: none."
    )
