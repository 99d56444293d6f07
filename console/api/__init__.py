"""The JSON API under /api/v1: token authentication, one error shape, keyset pages,
per-token rate limits and idempotent creates. The endpoints live with their apps
(accounts/api.py, clouds/api.py, clusters/api.py); urls.py puts them together."""
