"""Forms of the SSO settings page."""

from __future__ import annotations

from typing import Any

from django import forms

from ..choices import OrgRole, ProjectRole
from ..models import Organization, Project, SsoConnection, User
from .saml_idp import (
    IdpSettingsError,
    fetch_idp_metadata,
    idp_from_metadata,
    normalize_certificate,
)
from .services import SamlIdp


class SamlIdpForm(forms.Form):
    """The IdP, by one of: its metadata URL, its metadata XML, or by hand."""

    metadata_url = forms.URLField(
        label="IdP metadata URL",
        required=False,
        assume_scheme="https",
        help_text="Fetched now (HTTPS, public address); save again to pick up a new certificate.",
    )
    metadata_xml = forms.CharField(
        label="…or IdP metadata XML",
        required=False,
        max_length=1024 * 1024,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
    )
    entity_id = forms.CharField(label="…or IdP entity id", required=False, max_length=1024)
    sso_url = forms.URLField(
        label="IdP sign-on URL (HTTP-Redirect)", required=False, assume_scheme="https"
    )
    x509cert = forms.CharField(
        label="IdP signing certificate (PEM)",
        required=False,
        max_length=20000,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
    )
    email_attribute = forms.CharField(
        required=False,
        max_length=200,
        help_text="Empty: email, mail or the standard claim names, then the NameID when it "
        "is an email address.",
    )
    name_attribute = forms.CharField(
        required=False, max_length=200, help_text="Empty: displayName or the standard names."
    )
    groups_attribute = forms.CharField(
        required=False,
        max_length=200,
        initial="groups",
        help_text="The attribute listing the person's groups, for the group mapping.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        url, xml = data.get("metadata_url"), data.get("metadata_xml", "").strip()
        manual = [data.get("entity_id"), data.get("sso_url"), data.get("x509cert")]
        try:
            if url:
                idp = idp_from_metadata(fetch_idp_metadata(url), metadata_url=url)
            elif xml:
                idp = idp_from_metadata(xml.encode())
            elif all(manual):
                idp = {
                    "entity_id": data["entity_id"].strip(),
                    "sso_url": data["sso_url"],
                    "x509cert": normalize_certificate(data["x509cert"]),
                }
            else:
                raise forms.ValidationError(
                    "Give the IdP's metadata URL, or its metadata XML, or its entity id, "
                    "sign-on URL and certificate."
                )
        except IdpSettingsError as exc:
            raise forms.ValidationError(str(exc)) from None
        if not idp["sso_url"].startswith("https://"):
            raise forms.ValidationError("The IdP's sign-on URL must start with https://.")
        data["idp"] = SamlIdp(**idp)
        return data


NO_ACCESS = ""


class SsoAccessForm(forms.Form):
    enabled = forms.BooleanField(
        label="Single sign-on is on",
        required=False,
        help_text="People can sign in through the IdP.",
    )
    default_role = forms.ChoiceField(
        choices=[
            *[c for c in OrgRole.choices if c[0] != OrgRole.OWNER],
            (NO_ACCESS, "No access (only mapped groups get in)"),
        ],
        required=False,
        help_text="The role of people in no mapped group.",
    )
    enforce_sso = forms.BooleanField(
        label="Require single sign-on",
        required=False,
        help_text="Members cannot use a password for this organization; their password "
        "sessions lose it at their next request.",
    )
    break_glass_user = forms.ModelChoiceField(
        queryset=User.objects.none(),
        required=False,
        label="Break-glass owner",
        help_text="The one owner who may still sign in with a password.",
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["break_glass_user"]
        assert isinstance(field, forms.ModelChoiceField)  # noqa: S101 (declared above)
        field.queryset = User.objects.filter(
            memberships__organization=organization, memberships__role=OrgRole.OWNER
        )

    @classmethod
    def initial_for(cls, connection: SsoConnection) -> dict[str, Any]:
        return {
            "enabled": connection.enabled,
            "default_role": connection.default_role,
            "enforce_sso": connection.enforce_sso,
            "break_glass_user": connection.break_glass_user_id,
        }


class SsoMappingForm(forms.Form):
    idp_group = forms.CharField(label="IdP group", max_length=255)
    org_role = forms.ChoiceField(label="Organization role", choices=OrgRole.choices)
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), required=False, empty_label="(no project)"
    )
    project_role = forms.ChoiceField(choices=[("", "—"), *ProjectRole.choices], required=False)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["project"]
        assert isinstance(field, forms.ModelChoiceField)  # noqa: S101 (declared above)
        # Only this organization's projects, whatever the POST says.
        field.queryset = Project.objects.filter(organization=organization)


class OidcIdpForm(forms.Form):
    """An OpenID Connect IdP: its issuer (the discovery document is fetched when saved),
    and Raydeck's client there. The secret is never shown again: empty keeps it."""

    issuer = forms.URLField(
        label="Issuer URL",
        max_length=500,
        assume_scheme="https",
        help_text="For example https://login.example.com/realms/acme: Raydeck reads "
        "/.well-known/openid-configuration under it when you save.",
    )
    client_id = forms.CharField(label="Client id", max_length=191)
    client_secret = forms.CharField(
        label="Client secret",
        max_length=500,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    groups_attribute = forms.CharField(
        label="Groups claim",
        required=False,
        max_length=200,
        initial="groups",
        help_text="The ID token or user info claim listing the person's groups, for the "
        "group mapping.",
    )

    def __init__(self, *args: Any, secret_is_set: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["client_secret"]
        if secret_is_set:
            field.help_text = "Set (hidden). Enter a new one only to replace it."
        else:
            field.required = True
            field.help_text = "Stored encrypted; it cannot be shown again."


class DomainClaimForm(forms.Form):
    domain = forms.CharField(
        max_length=260,
        help_text="The part after the @ of your people's email addresses, e.g. example.com.",
        widget=forms.TextInput(attrs={"placeholder": "example.com", "spellcheck": "false"}),
    )


class SsoStartForm(forms.Form):
    identifier = forms.CharField(
        label="Work email or organization URL name",
        max_length=254,
        widget=forms.TextInput(
            attrs={"autocomplete": "email", "autofocus": True, "spellcheck": "false"}
        ),
    )
