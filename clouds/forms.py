"""Forms of the cloud pages. Project choices are scoped to the organization in the URL;
the services validate each field's shape (Cloud.clean) and check scope again."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings

from accounts.models import Organization, Project

from .choices import CloudKind, LaunchAccess, NodeAddresses
from .models import Cloud

AWS_REGIONS = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "sa-east-1",
]


class CloudForm(forms.Form):
    """Fields every kind of cloud has."""

    kind: str = ""
    name = forms.CharField(max_length=100, help_text="How your team will recognise it.")
    launch_access = forms.ChoiceField(
        choices=LaunchAccess.choices,
        initial=LaunchAccess.ALL,
        widget=forms.RadioSelect,
        label="Who may launch clusters here",
    )
    projects = forms.ModelMultipleChoiceField(
        queryset=Project.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Used when only chosen projects may launch.",
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        projects = cast(forms.ModelMultipleChoiceField, self.fields["projects"])
        projects.queryset = Project.objects.filter(organization=organization).order_by("name")

    def service_fields(self) -> dict[str, Any]:
        """cleaned_data split into what cloud_create/cloud_update take."""
        data = dict(self.cleaned_data)
        projects = list(data.pop("projects", []) or [])
        return {"projects": projects, **data}


class GatewayAccessFields(forms.Form):
    """Who may reach the clusters' gateways (the cloud's firewall): CIDR ranges, and the
    explicit confirmation the whole internet needs. Cloud.clean checks the ranges."""

    gateway_cidrs = forms.CharField(
        required=False,
        label="Who may reach the clusters",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "203.0.113.0/24"}),
        help_text="CIDR ranges allowed to the gateway port, one per line or comma-separated "
        "(your office, your VPN). Blank: nothing from outside the cloud's network.",
    )
    gateway_open_to_internet = forms.BooleanField(
        required=False,
        label="Yes, 0.0.0.0/0 may reach the clusters' gateways (the whole internet)",
    )

    node_addresses = forms.ChoiceField(
        choices=NodeAddresses.choices,
        initial=NodeAddresses.PUBLIC,
        required=False,  # blank: public, as before the choice existed
        widget=forms.RadioSelect,
        label="Node addresses",
        help_text="The cluster page shows the address users reach: the head's public one "
        "when it has one, else its private one.",
    )

    def clean_node_addresses(self) -> str:
        return self.cleaned_data.get("node_addresses") or NodeAddresses.PUBLIC

    def clean_gateway_cidrs(self) -> list[str]:
        raw = self.cleaned_data.get("gateway_cidrs") or ""
        return [c.strip() for c in raw.replace(",", "\n").splitlines() if c.strip()]


class AwsCloudForm(GatewayAccessFields, CloudForm):
    kind = CloudKind.AWS
    region = forms.CharField(
        max_length=64,
        initial="us-east-1",
        widget=forms.TextInput(attrs={"list": "aws-regions"}),
        help_text="Where clusters of this cloud run.",
    )
    log_location = forms.CharField(
        max_length=300,
        required=False,
        label="Log bucket",
        widget=forms.TextInput(attrs={"placeholder": "s3://my-bucket/raydeck-logs"}),
        help_text="Ray and agent logs are kept here. Optional.",
    )
    node_identity = forms.CharField(
        max_length=300,
        required=False,
        label="Node instance profile",
        widget=forms.TextInput(attrs={"placeholder": "raydeck-nodes"}),
        help_text="What the nodes run as: it must allow s3:PutObject on the log bucket "
        "(and s3:GetObject under raydeck-files/ for workspaces' files). Optional; without "
        "one, nodes cannot write logs to the bucket.",
    )
    field_order = [
        "name",
        "region",
        "log_location",
        "node_identity",
        "gateway_cidrs",
        "gateway_open_to_internet",
        "node_addresses",
        "launch_access",
        "projects",
    ]


class GcpCloudForm(GatewayAccessFields, CloudForm):
    kind = CloudKind.GCP
    gcp_project_id = forms.CharField(max_length=64, label="Project ID")
    region = forms.CharField(max_length=64, initial="us-central1")
    zones = forms.CharField(
        max_length=300,
        required=False,
        help_text="Comma-separated, such as us-central1-a, us-central1-b. Blank: <region>-a.",
    )
    log_location = forms.CharField(
        max_length=300,
        required=False,
        label="Log bucket",
        widget=forms.TextInput(attrs={"placeholder": "gs://my-bucket/raydeck-logs"}),
        help_text="Optional.",
    )
    node_identity = forms.CharField(
        max_length=300,
        required=False,
        label="Node service account",
        widget=forms.TextInput(attrs={"placeholder": "nodes@my-project.iam.gserviceaccount.com"}),
        help_text="What the VMs run as: it must be allowed to create objects in the log "
        "bucket. Optional; without one, nodes cannot write logs to the bucket.",
    )
    field_order = [
        "name",
        "gcp_project_id",
        "region",
        "zones",
        "log_location",
        "node_identity",
        "gateway_cidrs",
        "gateway_open_to_internet",
        "node_addresses",
        "launch_access",
        "projects",
    ]

    def clean_zones(self) -> list[str]:
        raw = self.cleaned_data.get("zones") or ""
        return [z.strip() for z in raw.split(",") if z.strip()]


class LocalCloudForm(CloudForm):
    kind = CloudKind.LOCAL
    local_root = forms.CharField(
        max_length=300,
        required=False,
        label="Node folder",
        help_text="Each node gets a folder here. Blank: the installation's default.",
    )
    log_location = forms.CharField(
        max_length=300, required=False, label="Log folder", help_text="Optional."
    )
    field_order = ["name", "local_root", "log_location", "launch_access", "projects"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["local_root"].widget.attrs["placeholder"] = str(
            settings.RAYDECK_LOCAL_CLOUD_ROOT
        )


CLOUD_FORMS: dict[str, type[CloudForm]] = {
    CloudKind.AWS: AwsCloudForm,
    CloudKind.GCP: GcpCloudForm,
    CloudKind.LOCAL: LocalCloudForm,
}


class AwsIdentityForm(forms.Form):
    aws_role_arn = forms.CharField(
        max_length=200,
        label="Role ARN",
        widget=forms.TextInput(
            attrs={"placeholder": "arn:aws:iam::123456789012:role/raydeck-control-plane"}
        ),
    )


class GcpIdentityForm(forms.Form):
    gcp_workload_identity_provider = forms.CharField(
        max_length=300,
        label="Workload Identity provider",
        widget=forms.TextInput(
            attrs={
                "placeholder": "projects/123456789/locations/global/"
                "workloadIdentityPools/raydeck/providers/raydeck-aws"
            }
        ),
    )
    gcp_service_account = forms.CharField(
        max_length=200,
        label="Service account",
        widget=forms.TextInput(attrs={"placeholder": "raydeck@my-project.iam.gserviceaccount.com"}),
    )


IDENTITY_FORMS: dict[str, type[forms.Form]] = {
    CloudKind.AWS: AwsIdentityForm,
    CloudKind.GCP: GcpIdentityForm,
}


class DefaultCloudForm(forms.Form):
    """The preferred default cloud of an organization or a project: a cloud of the
    organization in the URL (services.default_cloud_set checks it again)."""

    cloud = forms.ModelChoiceField(
        queryset=Cloud.objects.none(),
        required=False,
        empty_label="No preference",
        label="Preferred default cloud",
    )

    def __init__(
        self, *args: Any, organization: Organization, help_text: str, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        field = cast(forms.ModelChoiceField, self.fields["cloud"])
        field.queryset = Cloud.objects.filter(organization=organization).order_by("name")
        field.help_text = help_text
