"""Forms of the console's account and organization pages. Choice fields are scoped to
the organization in the URL; the services check scope again when they write."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.utils.text import slugify

from .choices import OrgRole, ProjectRole, TokenStatus
from .models import SERVICE_ACCOUNT_ROLES, Organization, Project, User
from .permissions import READ_ONLY_ORG_ROLES, has_perm
from .services.projects import project_slug_taken
from .tokens import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS_CEILING


class SlugFromNameMixin:
    """A blank slug is derived from the name, so most people never type one. With
    `live_check(url)`, typing in either field asks `url` whether the slug is free."""

    def live_check(self, url: str) -> None:
        fields: dict[str, forms.Field] = self.fields  # type: ignore[attr-defined]
        for name in ("name", "slug"):
            fields[name].widget.attrs.update(
                {
                    "hx-post": url,
                    "hx-trigger": "input changed delay:300ms",
                    "hx-target": "#slug-feedback",
                    "hx-include": "closest form",
                    "hx-vals": '{"_validate": "1"}',
                    "hx-sync": "closest form:replace",
                    "aria-describedby": "slug-feedback",
                }
            )

    def clean_slug(self) -> str:
        data: dict[str, Any] = self.cleaned_data  # type: ignore[attr-defined]
        slug = data.get("slug") or slugify(data.get("name", ""))[:50].strip("-")
        if not slug:
            raise ValidationError("Choose a short name made of letters, digits and hyphens.")
        return slug


class OrganizationCreateForm(SlugFromNameMixin, forms.Form):
    name = forms.CharField(max_length=100, help_text="Your company or team.")
    slug = forms.CharField(
        max_length=50,
        required=False,
        label="URL name",
        help_text="Appears in addresses: /o/<url-name>/. Leave blank to derive it from the name.",
    )

    field_order = ["name", "slug"]

    def clean_slug(self) -> str:
        slug = super().clean_slug()
        if Organization.objects.filter(slug=slug).exists():
            raise ValidationError(f"“{slug}” is taken. Choose another URL name.")
        return slug


class OrganizationSettingsForm(forms.Form):
    name = forms.CharField(max_length=100)
    max_token_days = forms.IntegerField(
        label="Maximum API token lifetime (days)",
        min_value=1,
        max_value=MAX_TOKEN_DAYS_CEILING,
        help_text=f"From 1 to {MAX_TOKEN_DAYS_CEILING}. Applies to tokens created from now "
        "on; existing tokens keep their expiry (revoke them on the API tokens page).",
    )


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=OrgRole.choices)


def assignable_roles(actor: User, organization: Organization) -> list[tuple[str, str]]:
    """Owners can hand out every role; admins every role but owner."""
    if has_perm(actor, "member.manage_owners", organization):
        return list(OrgRole.choices)
    return [c for c in OrgRole.choices if c[0] != OrgRole.OWNER]


class InvitationForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=OrgRole.choices, initial=OrgRole.MEMBER)
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        help_text="Optional: also add them to this project.",
    )
    project_role = forms.ChoiceField(
        choices=ProjectRole.choices, initial=ProjectRole.WRITER, required=False
    )

    def __init__(self, *args: Any, actor: User, organization: Organization, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # `fields` is typed as holding plain Fields; these are the ones declared above.
        cast(forms.ChoiceField, self.fields["role"]).choices = assignable_roles(actor, organization)
        projects = Project.objects.visible_to(actor, organization)
        cast(forms.ModelChoiceField, self.fields["project"]).queryset = projects


class ProjectCreateForm(SlugFromNameMixin, forms.Form):
    name = forms.CharField(max_length=100)
    slug = forms.CharField(
        max_length=50,
        required=False,
        label="URL name",
        help_text="Leave blank to derive it from the name.",
    )
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=2000
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.organization = organization

    def clean_slug(self) -> str:
        # Asked here too for the live feedback while typing; project_create decides.
        slug = super().clean_slug()
        if taken := project_slug_taken(organization=self.organization, slug=slug):
            raise ValidationError(taken)
        return slug


class ProjectEditForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=2000
    )


class MemberChoiceField(forms.ModelChoiceField):
    """Lists users by display name, not by email (their __str__)."""

    def label_from_instance(self, obj: User) -> str:
        return obj.display_name


class ProjectMemberAddForm(forms.Form):
    user = MemberChoiceField(
        queryset=User.objects.none(),
        label="Member",
        empty_label="Choose a member of the organization",
    )
    role = forms.ChoiceField(choices=ProjectRole.choices, initial=ProjectRole.WRITER)

    def __init__(self, *args: Any, project: Project, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # `fields` is typed as holding plain Fields; this is the one declared above.
        cast(MemberChoiceField, self.fields["user"]).queryset = (
            User.objects.filter(memberships__organization_id=project.organization_id)
            .exclude(project_memberships__project=project)
            .order_by("email")
        )


class ProjectMemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=ProjectRole.choices)


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, label="Actor email")
    # An example as placeholder, not help text: a line under one field would lift its box
    # above the others in the filter row.
    verb = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "e.g. member. or project.create"}),
    )
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise ValidationError("The start date must be on or before the end date.")
        return data


class ProfileForm(forms.Form):
    name = forms.CharField(max_length=150, required=False, label="Display name")


# --- API tokens and service accounts ----------------------------------------------------


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What it is for, e.g. “laptop” or “nightly training job”."
    )
    days = forms.IntegerField(label="Expires after (days)", min_value=1)
    read_only = forms.BooleanField(
        required=False,
        label="Read-only",
        help_text="It can list and look at things, never create, change or delete them.",
    )

    def __init__(self, *args: Any, organization: Organization, holder_role: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        limit = organization.max_token_days
        days = cast(forms.IntegerField, self.fields["days"])
        days.max_value = limit
        days.validators.append(
            MaxValueValidator(limit, f"At most {limit} days: {organization.name}'s maximum.")
        )
        days.widget.attrs.update({"min": 1, "max": limit})
        days.initial = min(DEFAULT_TOKEN_DAYS, limit)
        days.help_text = (
            f"From 1 to {limit} days: the owners and admins of {organization.name} "
            f"allow tokens to live at most {limit} days."
        )
        self.forced_read_only = holder_role in READ_ONLY_ORG_ROLES
        if self.forced_read_only:
            read_only = self.fields["read_only"]
            read_only.initial = True
            read_only.disabled = True
            read_only.help_text = "Viewers' tokens are always read-only."


class TokenFilterForm(forms.Form):
    q = forms.CharField(
        required=False,
        label="Search",
        widget=forms.TextInput(
            attrs={
                "type": "search",
                "placeholder": "Name, token prefix, person or service account…",
            }
        ),
    )
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *TokenStatus.choices])
    kind = forms.ChoiceField(
        required=False,
        label="Holder",
        choices=[("", "Anyone"), ("personal", "People"), ("service", "Service accounts")],
    )


class ServiceAccountForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="e.g. “ci” or “airflow-prod”.")
    role = forms.ChoiceField(
        choices=SERVICE_ACCOUNT_ROLES,
        initial=OrgRole.MEMBER,
        help_text="Its role in the organization, as for a person. Admins manage every "
        "project; members only create projects; viewers only look.",
    )


class OrganizationChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Organization) -> str:
        return obj.name


class CliConfirmForm(forms.Form):
    organization = OrganizationChoiceField(
        queryset=Organization.objects.none(),
        empty_label=None,
        help_text="The CLI will act in this organization only.",
    )
    read_only = forms.BooleanField(
        required=False,
        label="Read-only",
        help_text="The CLI can look, never change anything.",
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any):
        super().__init__(*args, **kwargs)
        orgs = Organization.objects.filter(
            pk__in=[
                m.organization_id
                for m in user.current_memberships()
                if has_perm(user, "token.manage_own", m.organization)
            ]
        ).order_by("name")
        cast(OrganizationChoiceField, self.fields["organization"]).queryset = orgs
