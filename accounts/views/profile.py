"""The signed-in person's profile page."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from kit.types import AuthedRequest

from .. import selectors
from ..forms import ProfileForm
from ..services.users import user_update_profile


class ProfileView(View):
    template = "accounts/profile.html"

    def get(self, request: AuthedRequest, form: ProfileForm | None = None) -> HttpResponse:
        from allauth.mfa.models import Authenticator

        return render(
            request,
            self.template,
            {
                "form": form or ProfileForm(initial={"name": request.user.name}),
                "events": selectors.security_events_of(request.user),
                "mfa_enabled": Authenticator.objects.filter(
                    user=request.user, type=Authenticator.Type.TOTP
                ).exists(),
                "memberships": request.user.memberships.select_related("organization"),
            },
        )

    def post(self, request: AuthedRequest) -> HttpResponse:
        form = ProfileForm(request.POST)
        if form.is_valid():
            user_update_profile(user=request.user, name=form.cleaned_data["name"])
            messages.success(request, "Profile saved.")
            return redirect("profile")
        return self.get(request, form=form)
