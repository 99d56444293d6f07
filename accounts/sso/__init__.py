"""Single sign-on for organizations: protocol-neutral sign-in (services.py), SAML
(saml.py), the settings pages (views.py) and enforcement (enforcement.py).
The models are in accounts.models (SsoConnection and its neighbours)."""
