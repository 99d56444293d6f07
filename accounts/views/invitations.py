"""Invitation pages: invite, revoke, resend, and the link an invitee follows to accept."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View

from kit.types import AuthedRequest
from kit.views import done

from ..forms import InvitationForm
from ..models import Invitation
from ..services.invitations import (
    InvalidInvitation,
    invitation_accept,
    invitation_create,
    invitation_from_token,
    invitation_resend,
    invitation_revoke,
)
from .base import OrgFormView, OrgView


class InvitationCreateView(OrgFormView):
    permission = "member.invite"
    template = "accounts/invitation_create.html"

    def form(self, data: Any = None) -> InvitationForm:
        return InvitationForm(data, actor=self.request.user, organization=self.organization)

    def submitted(self, form: forms.Form) -> HttpResponse:
        invitation = invitation_create(
            organization=self.organization, actor=self.request.user, **form.cleaned_data
        )
        return done(
            self.request,
            reverse("member_list", args=[self.organization.slug]),
            f"Invitation sent to {invitation.email}.",
        )


class InvitationObjectView(OrgView):
    permission = "member.invite"
    invitation: Invitation

    def load_objects(self, **kwargs: Any) -> None:
        self.invitation = self.object_or_404(Invitation, pk=kwargs["invitation_id"])


class InvitationRevokeView(InvitationObjectView):
    def get(self, request: AuthedRequest, org_slug: str, invitation_id: int) -> HttpResponse:
        return self.render("accounts/invitation_revoke.html", {"invitation": self.invitation})

    def post(self, request: AuthedRequest, org_slug: str, invitation_id: int) -> HttpResponse:
        invitation = self.invitation
        try:
            invitation_revoke(invitation=invitation, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"Invitation of {invitation.email} revoked.")
        return redirect("member_list", org_slug=org_slug)


class InvitationResendView(InvitationObjectView):
    def post(self, request: AuthedRequest, org_slug: str, invitation_id: int) -> HttpResponse:
        invitation = self.invitation
        try:
            invitation_resend(invitation=invitation, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"A new invitation link was sent to {invitation.email}.")
        return redirect("member_list", org_slug=org_slug)


@method_decorator(login_not_required, name="dispatch")
class InvitationAcceptView(View):
    """The link in the invitation email. Works before sign-up: it explains what to do,
    and keeps the link as `next` through sign-in."""

    template = "accounts/invitation_accept.html"

    def load(self, token: str) -> tuple[Invitation | None, str | None]:
        try:
            return invitation_from_token(token), None
        except InvalidInvitation as exc:
            return None, str(exc)

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        invitation, error = self.load(token)
        return render(
            request,
            self.template,
            {"invitation": invitation, "error": error, "token": token},
            status=404 if error else 200,
        )

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect(f"{reverse('account_login')}?{urlencode({'next': request.path})}")
        invitation, error = self.load(token)
        if invitation is None:
            return render(request, self.template, {"error": error}, status=404)
        try:
            membership = invitation_accept(invitation=invitation, user=request.user)
        except ValidationError as exc:
            return render(
                request,
                self.template,
                {
                    "invitation": invitation,
                    "error": " ".join(exc.messages),
                    "token": token,
                },
                status=400,
            )
        messages.success(request, f"Welcome to {membership.organization.name}.")
        return redirect("project_list", org_slug=membership.organization.slug)
