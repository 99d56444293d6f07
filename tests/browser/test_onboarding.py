"""A new customer signs up, creates an organization and a project, and invites a
colleague, who signs up from the invitation link and lands in that project."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from django.core import mail
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]

PASSWORD = "violet-harbour-1729"  # ≥ 10 characters, not a common password
OWNER = "ada@acme.example.com"
COLLEAGUE = "grace@acme.example.com"


def link_in_mail(to: str, path_pattern: str) -> str:
    """The path of the newest link matching `path_pattern` mailed to `to`. The live
    server runs in this process, so its locmem outbox is ours to read. Links are cut to
    their path: invitation links use RAYDECK_BASE_URL, not the live server's address."""
    for message in reversed(mail.outbox):
        if to in message.to:
            for url in re.findall(r"https?://\S+", str(message.body)):
                if re.fullmatch(path_pattern, urlsplit(url).path):
                    return urlsplit(url).path
    subjects = [(m.to, m.subject) for m in mail.outbox]
    raise AssertionError(f"no mail to {to} with a link like {path_pattern}: {subjects}")


def sign_up_and_verify(page: Page, base_url: str, email: str) -> None:
    """Fill allauth's sign-up form (already open), then follow the emailed link."""
    # allauth's labels end in a colon ("Password:", "Password (again):").
    page.get_by_label("Email").fill(email)
    page.get_by_label(re.compile(r"^Password:?$")).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    page.get_by_role("button", name="Sign Up").click()
    # The mail is sent before this page is served, so it is in the outbox now.
    expect(page.get_by_role("heading", name="Verify Your Email Address")).to_be_visible()
    page.goto(base_url + link_in_mail(email, r"/accounts/confirm-email/[^/]+/"))
    page.get_by_role("button", name="Confirm").click()
    # ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION signs the new user in right away.
    expect(page.get_by_role("status")).to_contain_text(f"Successfully signed in as {email}")


def test_owner_invites_colleague_into_a_project(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    # 1-2. The owner signs up and verifies the address.
    owner = new_page()
    owner.goto(f"{live_server.url}/accounts/signup/")
    sign_up_and_verify(owner, live_server.url, OWNER)

    # 3. Signed in, with no organization yet: home is the welcome page.
    expect(owner).to_have_url(f"{live_server.url}/")
    owner.get_by_role("link", name="Create an organization").click()
    owner.get_by_role("textbox", name="Name", exact=True).fill("Acme Rockets")
    # URL name left blank: the live check (htmx) shows the one derived from the name.
    expect(owner.get_by_text("Available:")).to_contain_text("/o/acme-rockets/")
    owner.get_by_role("button", name="Create organization").click()

    # 4. An empty Projects page; create the first project.
    expect(owner).to_have_url(f"{live_server.url}/o/acme-rockets/projects/")
    expect(owner.get_by_role("heading", name="No projects yet")).to_be_visible()
    owner.get_by_role("link", name="New project", exact=True).click()
    owner.get_by_role("textbox", name="Name", exact=True).fill("Launch pad")
    owner.get_by_role("button", name="Create project").click()
    expect(owner.get_by_role("heading", name="Launch pad", level=1)).to_be_visible()

    # 5. Invite a colleague as Member of that project.
    owner.get_by_role("navigation", name="Organization").get_by_role("link", name="Members").click()
    owner.get_by_role("link", name="Invite people").click()
    owner.get_by_role("textbox", name="Email").fill(COLLEAGUE)
    owner.get_by_role("combobox", name="Role", exact=True).select_option(label="Member")
    owner.get_by_role("combobox", name="Project", exact=True).select_option(label="Launch pad")
    owner.get_by_role("button", name="Send invitation").click()
    expect(owner.get_by_text(f"Invitation sent to {COLLEAGUE}.")).to_be_visible()

    # 6. The invitation link, from the outbox.
    invitation = link_in_mail(COLLEAGUE, r"/invitations/[^/]+/")

    # 7. The colleague, in a browser of their own, signs up from the link and accepts.
    colleague = new_page()
    colleague.goto(live_server.url + invitation)
    expect(colleague.get_by_role("heading", name="Join Acme Rockets")).to_be_visible()
    colleague.get_by_role("link", name="Create account").click()
    sign_up_and_verify(colleague, live_server.url, COLLEAGUE)
    # allauth carried ?next= through sign-up and confirmation: back on the invitation.
    expect(colleague).to_have_url(live_server.url + invitation)
    colleague.get_by_role("button", name="Accept invitation").click()

    # 8. They land on the organization's projects and see the project.
    expect(colleague).to_have_url(f"{live_server.url}/o/acme-rockets/projects/")
    expect(colleague.get_by_text("Welcome to Acme Rockets.")).to_be_visible()
    expect(colleague.get_by_role("cell", name="Launch pad")).to_be_visible()

    # The owner sees the colleague among the members, and no longer as pending.
    owner.get_by_role("navigation", name="Organization").get_by_role("link", name="Members").click()
    expect(owner.locator("#member-table")).to_contain_text(COLLEAGUE)
    expect(owner.get_by_role("combobox", name=f"Role of {COLLEAGUE}")).to_have_value("member")
    expect(owner.get_by_text("No pending invitations.")).to_be_visible()
