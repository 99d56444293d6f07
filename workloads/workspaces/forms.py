"""The New workspace form: a cluster's choice (project, cloud, compute config, image,
scoped like the cluster form's) under a workspace's name."""

from __future__ import annotations

from typing import Any

from django import forms

from clusters.forms import ClusterCreateForm

from .models import workspace_name


class WorkspaceCreateForm(ClusterCreateForm):
    name = forms.CharField(
        max_length=63,
        validators=[workspace_name],
        help_text="Lowercase letters, digits and dashes; unique in the project. Also its "
        "SSH host name.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["name"] = ""
        self.fields["name"].widget.attrs["placeholder"] = "my-notebooks"
        self.fields["image"].help_text = (
            "What runs on the nodes; JupyterLab and SSH work when the image has them. Blank: "
            "Raydeck's workspace image, which has both (on AWS and GCP it is built in your "
            "cloud on first use, and the workspace starts once it is built)."
        )


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
