"""The workloads' test world: the API's two verified tenants (tests/api/conftest.py)."""

from tests.api.conftest import alpha, bravo

__all__ = ["alpha", "bravo"]
