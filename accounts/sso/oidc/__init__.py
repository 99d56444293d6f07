"""OpenID Connect sign-in through allauth's OpenID Connect provider, hardened.

One allauth SocialApp per organization (provider "openid_connect", provider_id
"oidc-<slug>"): `settings["server_url"]` is the issuer, `client_id` the IdP's client id
and `secret` the client secret encrypted with kit.crypto (never shown again).

allauth alone would: send PKCE only when configured, send and check no nonce, skip the
ID token's signature in the code flow (it came over TLS), answer a token without `kid`
with a KeyError (a 500) and a JWKS endpoint that fails with an exception it does not
catch. So:

- `RaydeckOidcProvider` (allauth's `provider_class` setting) always adds PKCE S256 and
  a fresh nonce (kept in allauth's per-browser state) to the authorization request, and
  reads the IdP's discovery document through `discover`, which requires the exact
  issuer the owner configured (mix-up defence) and https endpoints.
- `callback` (mounted at allauth's callback path) pops the state, redeems the code
  with the PKCE verifier, and verifies the ID token itself (`verify_id_token`):
  signature by a key from the IdP's JWKS chosen by `kid`, an asymmetric algorithm the
  IdP advertises (never `none` or HMAC), issuer, audience (and `azp`), expiry, nonce.
  Every failure is an error page (`OidcError`), never a 500, and signs nobody in.
- The discovery document (checked) and the JWKS are kept in the shared cache
  (`cached_discovery`, `IdpKeys`): an hour and ten minutes. A token whose `kid` the
  cached JWKS lacks fetches the JWKS once more (the IdP may have rotated its keys), at
  most once per sign-in and once a minute per connection, so made-up kids cannot turn
  Raydeck into a flood at the IdP.
- The person is identified by (connection, `sub`) and handed to accounts.sso.flow,
  exactly like SAML: the email links to an existing account only on a verified domain.

The modules: `client` talks to the IdP (discovery, JWKS, user info, ID-token
verification; nothing here knows about sign-in or requests), `sign_in` is allauth's
provider and the callback view, `connections` saves an organization's OIDC settings.
"""
