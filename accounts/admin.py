"""The support admin: the one place that sees across organizations.

Read-only by default. The few write actions call services, which leave audit events.
Password hashes, MFA secrets and tokens are never shown.
"""

from __future__ import annotations

from typing import Any

from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from kit.types import AuthedRequest

from .models import (
    ApiToken,
    AuditEvent,
    DomainClaim,
    Invitation,
    Membership,
    Organization,
    Project,
    ServiceAccount,
    SsoConnection,
    SsoIdentity,
    User,
)
from .services.tokens import token_revoke
from .services.users import user_deactivate, user_unlock


class StaffReadOnly:
    """Staff may look; nobody edits rows directly here (write actions go through
    services). Shared by the model admins and their inlines."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SupportAdmin(StaffReadOnly, admin.ModelAdmin):
    """The base of every support admin page. Lists stay fast on tables of millions of
    rows: no second count of the unfiltered table, no date drill-down (its SELECT
    DISTINCT of dates reads every row: list filters by date instead), filters on
    free-text columns offer recent values only (RecentValuesFilter), uuids are searched
    exactly, and lists are ordered by an indexed column."""

    show_full_result_count = False


def recent_values_filter(field: str, *, recent: int = 1000) -> type[admin.SimpleListFilter]:
    """A list filter on a free-text column offering the values of its `recent` newest
    rows, instead of a SELECT DISTINCT over the whole table on every page."""

    class RecentValuesFilter(admin.SimpleListFilter):
        title = field.replace("_", " ")
        parameter_name = field

        def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
            newest = model_admin.model.objects.order_by("-pk").values_list(field, flat=True)
            return [(v, v) for v in sorted(set(newest[:recent])) if v]

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            value = self.value()
            return queryset.filter(**{field: value}) if value else queryset

    return RecentValuesFilter


class ReadOnlyInline(StaffReadOnly, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True


class MembershipInline(ReadOnlyInline):
    model = Membership
    # Tuples: the stubs give `fields` and `readonly_fields` different list types, so
    # one list cannot be both.
    fields = readonly_fields = ("organization", "user", "role", "created_at")


@admin.register(User)
class UserAdmin(SupportAdmin):
    list_display = ["email", "name", "is_active", "is_staff", "date_joined", "last_login"]
    list_filter = ["is_active", "is_staff"]
    search_fields = ["email", "name"]
    # `password` is deliberately absent: not even its hash is shown.
    fields = readonly_fields = (
        "email",
        "name",
        "is_active",
        "is_staff",
        "date_joined",
        "last_login",
    )
    inlines = [MembershipInline]
    actions = ["deactivate_users", "unlock_sign_in"]

    @admin.action(description="Deactivate the selected users (ends their sessions)")
    def deactivate_users(self, request: AuthedRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            if user.pk == request.user.pk:
                self.message_user(request, "You cannot deactivate yourself.", messages.ERROR)
                continue
            user_deactivate(user=user, actor=request.user)
        self.message_user(request, "Done. Each deactivation is in the audit log.")

    @admin.action(description="Unlock sign-in after too many failed attempts")
    def unlock_sign_in(self, request: AuthedRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            user_unlock(user=user, actor=request.user, request=request)
        self.message_user(request, f"Unlocked {queryset.count()} account(s).")


@admin.register(Organization)
class OrganizationAdmin(SupportAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    fields = readonly_fields = ("name", "slug", "max_token_days", "created_at", "updated_at")
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(SupportAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "organization__name", "organization__slug"]
    list_select_related = ["user", "organization"]


@admin.register(Project)
class ProjectAdmin(SupportAdmin):
    list_display = ["name", "slug", "organization", "created_at"]
    search_fields = ["name", "slug", "organization__name", "organization__slug"]
    list_select_related = ["organization"]


@admin.register(Invitation)
class InvitationAdmin(SupportAdmin):
    list_display = ["email", "organization", "role", "status", "created_at", "expires_at"]
    search_fields = ["email", "organization__name", "organization__slug"]
    list_select_related = ["organization"]
    # The nonce is part of the signed link: never shown.
    exclude = ["nonce"]


@admin.register(AuditEvent)
class AuditEventAdmin(SupportAdmin):
    list_display = ["created_at", "organization", "actor_email", "verb", "target_repr", "ip"]
    list_filter = [recent_values_filter("verb"), ("created_at", admin.DateFieldListFilter)]
    search_fields = [
        "actor_email",
        "verb",
        "target_repr",
        "organization__name",
        "organization__slug",
        "=ip",
        "=request_id",
    ]
    list_select_related = ["organization"]
    ordering = ["-created_at"]


# API tokens: `token_hash` is never listed among the fields, so no page shows it.
API_TOKEN_FIELDS = (
    "name",
    "organization",
    "user",
    "service_account",
    "prefix",
    "read_only",
    "status",
    "expires_at",
    "last_used_at",
    "last_used_ip",
    "created_by",
    "created_at",
    "revoked_at",
)


class ApiTokenInline(ReadOnlyInline):
    model = ApiToken
    fk_name = "service_account"
    fields = readonly_fields = (
        "name",
        "prefix",
        "read_only",
        "status",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )


@admin.register(ApiToken)
class ApiTokenAdmin(SupportAdmin):
    list_display = [
        "name",
        "prefix",
        "organization",
        "user",
        "service_account",
        "read_only",
        "status",
        "expires_at",
        "last_used_at",
        "last_used_ip",
    ]
    list_filter = ["read_only"]
    search_fields = [
        "name",
        "prefix",
        "user__email",
        "service_account__name",
        "organization__name",
        "organization__slug",
    ]
    list_select_related = ["organization", "user", "service_account"]
    fields = readonly_fields = API_TOKEN_FIELDS
    actions = ["revoke_tokens"]

    @admin.action(description="Revoke the selected tokens")
    def revoke_tokens(self, request: AuthedRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = 0
        for token in queryset.select_related("organization"):
            try:
                token_revoke(token=token, actor=request.user, by_support=True)
            except ValidationError:
                continue  # already revoked
            revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s). Each is in the audit log.")


@admin.register(ServiceAccount)
class ServiceAccountAdmin(SupportAdmin):
    list_display = ["name", "organization", "role", "created_by", "created_at", "disabled_at"]
    list_filter = ["role"]
    search_fields = ["name", "organization__name", "organization__slug"]
    list_select_related = ["organization", "created_by"]
    fields = readonly_fields = (
        "name",
        "organization",
        "role",
        "created_by",
        "created_at",
        "disabled_at",
    )
    inlines = [ApiTokenInline]


# --- Single sign-on -------------------------------------------------------------------

# allauth's own admin for SocialApp (each organization's IdP trust and OIDC client
# secrets), SocialAccount and SocialToken would let staff read secrets and change an
# organization's IdP without a service or an audit event: off. The connection below
# shows what support needs.
for _model in (SocialApp, SocialAccount, SocialToken):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


@admin.register(SsoConnection)
class SsoConnectionAdmin(SupportAdmin):
    list_display = ["organization", "protocol", "enabled", "enforce_sso", "default_role"]
    list_filter = ["protocol", "enabled", "enforce_sso"]
    search_fields = ["organization__name", "organization__slug"]
    list_select_related = ["organization"]
    fields = readonly_fields = (
        "organization",
        "protocol",
        "enabled",
        "default_role",
        "groups_attribute",
        "enforce_sso",
        "break_glass_user",
        "idp_entity",
        "created_by",
        "created_at",
        "updated_at",
    )

    @admin.display(description="IdP")
    def idp_entity(self, connection: SsoConnection) -> str:
        # Public values only: the SAML entity id, or the OIDC client id (never a secret).
        idp = connection.social_app.settings.get("idp", {})
        return idp.get("entity_id") or connection.social_app.client_id


@admin.register(SsoIdentity)
class SsoIdentityAdmin(SupportAdmin):
    list_display = ["subject", "user", "organization", "email", "last_login_at"]
    search_fields = ["subject", "email", "user__email", "organization__name", "organization__slug"]
    list_select_related = ["user", "organization"]
    fields = readonly_fields = (
        "organization",
        "connection",
        "subject",
        "user",
        "email",
        "groups",
        "created_at",
        "last_login_at",
    )


@admin.register(DomainClaim)
class DomainClaimAdmin(SupportAdmin):
    list_display = ["domain", "organization", "verified_at", "last_checked_at"]
    search_fields = ["domain", "organization__name", "organization__slug"]
    list_select_related = ["organization"]
    fields = readonly_fields = (
        "organization",
        "domain",
        "verified_at",
        "last_checked_at",
        "created_by",
        "created_at",
    )
