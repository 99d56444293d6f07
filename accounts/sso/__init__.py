"""Single sign-on for organizations. The models are in accounts.models (SsoConnection
and its neighbours). Imports run one way, top to bottom:

    urls, pages, views     the settings pages (views: SAML, access, groups; pages: the
                           "Sign in with SSO" page, domains, OIDC settings)
    forms, domains, adapter  the pages' forms, verified domains, allauth's adapter
    saml, oidc_sign_in     the protocols' sign-in views, ending in flow
    flow                   the end of every sign-in, SAML or OIDC alike
    services               protocol-neutral sign-in and the connection's settings
    enforcement            who must sign in through SSO
    saml_idp, oidc         an IdP's settings and documents (oidc: connections, client,
    idp_redirects, outbound  documents, and allauth's provider with its URLs, which
                           names oidc_sign_in's); leaving for the IdP
    saml_provider          allauth's SAML provider, its URLs from urls
"""
