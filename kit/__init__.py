"""The shared kit every app builds on, below `accounts` in the layers (see
docs/architecture.md): helpers for pages (pagination, after-write navigation, showing a
service's refusal on a form), the JSON API's error shape, pages and schemas, the lean WSGI
path and compiled statements of the hot paths, shared-cache rate limits, secrets at rest,
and the template tags. It knows nothing of organizations, clouds or clusters."""
