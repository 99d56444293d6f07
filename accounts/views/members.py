"""Member pages: the member list, change a member's role, remove a member."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers

from kit.types import AuthedRequest
from kit.views import done, paginate

from .. import selectors
from ..forms import (
    MemberRoleForm,
    assignable_roles,
)
from ..models import Membership
from ..permissions import has_perm
from ..services.members import membership_change_role, membership_remove
from .base import OrgView


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class MemberListView(OrgView):
    permission = "member.view"
    template = "accounts/member_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        members = selectors.membership_list(organization=self.organization, viewer=request.user)
        can_invite = has_perm(request.user, "member.invite", self.organization)
        return self.render(
            self.template,
            {
                "page": paginate(request, members),
                "invitations": selectors.invitation_list(
                    organization=self.organization, viewer=request.user
                )
                if can_invite
                else [],
                "roles": assignable_roles(request.user, self.organization),
                "can_manage": has_perm(request.user, "member.update_role", self.organization),
                "can_invite": can_invite,
            },
        )


class MembershipObjectView(OrgView):
    membership: Membership

    def load_objects(self, **kwargs: Any) -> None:
        self.membership = self.object_or_404(
            self.scoped(Membership).select_related("user", "organization"),
            pk=kwargs["membership_id"],
        )


class MemberRoleView(MembershipObjectView):
    permission = "member.update_role"

    def post(self, request: AuthedRequest, org_slug: str, membership_id: int) -> HttpResponse:
        membership = self.membership
        form = MemberRoleForm(request.POST)
        error = None
        if form.is_valid():
            try:
                membership = membership_change_role(
                    membership=membership, role=form.cleaned_data["role"], actor=request.user
                )
            except ValidationError as exc:
                error = " ".join(exc.messages)
        else:
            error = "Choose one of the listed roles."
        if request.htmx:
            membership.refresh_from_db()
            return self.render(
                "accounts/member_list.html#member-row",
                {
                    "m": membership,
                    "row_error": error,
                    "saved": error is None,
                    "roles": assignable_roles(request.user, self.organization),
                    "can_manage": True,
                },
            )
        if error:
            messages.error(request, error)
        else:
            messages.success(request, f"{membership.user} is now {membership.get_role_display()}.")
        return redirect("member_list", org_slug=org_slug)


class MemberRemoveView(MembershipObjectView):
    """Confirm, then remove a member (or leave, when it is your own membership)."""

    template = "accounts/member_remove.html"

    def get(self, request: AuthedRequest, org_slug: str, membership_id: int) -> HttpResponse:
        membership = self.membership
        return self.render(
            self.template, {"m": membership, "leaving": membership.user_id == request.user.pk}
        )

    def post(self, request: AuthedRequest, org_slug: str, membership_id: int) -> HttpResponse:
        membership = self.membership
        leaving = membership.user_id == request.user.pk
        try:
            membership_remove(membership=membership, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("member_list", org_slug=org_slug)
        if leaving:
            request.session.pop("raydeck_org", None)
            return done(request, reverse("home"), f"You left {self.organization.name}.")
        return done(
            request,
            reverse("member_list", args=[org_slug]),
            f"{membership.user} was removed from {self.organization.name}.",
        )
