"""Every change to accounts, tenancy and roles: `<entity>_<verb>` functions, by topic.

Each one checks permission, validates, writes, and records its audit event in one
transaction; emails go out only after that transaction commits. This package's face is
the list below: callers may write `from accounts import services` and
`services.token_create(...)`; code inside accounts imports from the topic module
(`accounts.services.tokens`), which also holds that topic's helpers and constants.

    organizations     create an organization, change its settings
    members           change a member's role, remove a member (one owner always stays)
    invitations       invite by email, revoke, resend, accept a signed link
    projects          projects and their members
    users             a person's profile; support's deactivate and unlock
    service_accounts  an organization's non-human members
    tokens            API tokens: issue, revoke, authenticate a bearer secret
    cli_handoff       `raydeck login`: the browser confirms, the CLI collects a token
"""

from __future__ import annotations

from .cli_handoff import (
    cli_handoff_confirm,
    cli_handoff_deny,
    cli_handoff_poll,
    cli_handoff_start,
)
from .invitations import (
    InvalidInvitation,
    invitation_accept,
    invitation_create,
    invitation_from_token,
    invitation_resend,
    invitation_revoke,
    invitation_token,
)
from .members import (
    membership_change_role,
    membership_delete,
    membership_remove,
)
from .organizations import (
    organization_create,
    organization_update,
)
from .projects import (
    project_create,
    project_delete,
    project_member_add,
    project_member_change_role,
    project_member_remove,
    project_update,
)
from .service_accounts import (
    service_account_create,
    service_account_disable,
)
from .tokens import (
    authenticate_token,
    token_create,
    token_revoke,
)
from .users import (
    user_deactivate,
    user_unlock,
    user_update_profile,
)

__all__ = [
    "InvalidInvitation",
    "authenticate_token",
    "cli_handoff_confirm",
    "cli_handoff_deny",
    "cli_handoff_poll",
    "cli_handoff_start",
    "invitation_accept",
    "invitation_create",
    "invitation_from_token",
    "invitation_resend",
    "invitation_revoke",
    "invitation_token",
    "membership_change_role",
    "membership_delete",
    "membership_remove",
    "organization_create",
    "organization_update",
    "project_create",
    "project_delete",
    "project_member_add",
    "project_member_change_role",
    "project_member_remove",
    "project_update",
    "service_account_create",
    "service_account_disable",
    "token_create",
    "token_revoke",
    "user_deactivate",
    "user_unlock",
    "user_update_profile",
]
