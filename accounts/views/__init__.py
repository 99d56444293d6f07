"""Console pages for accounts, one module per topic; `accounts/urls.py` names each view.

    organizations     create an organization, its settings
    members           the member list, a member's role, remove a member
    invitations       invite, revoke, resend; the invitee's accept page
    projects          projects and their members
    audit_log         the audit log and its export
    tokens            API tokens: list, create, revoke
    service_accounts  service accounts and their tokens
    cli_handoff       `raydeck login`: the CLI's endpoints and the confirm page
    profile           the signed-in person's profile
    common            what the pages share (HTMX live validation)

Views parse input and pick templates; services (`accounts.services.<topic>`) do the work.
"""
