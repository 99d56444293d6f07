"""ninja's renderer for the API's answers: kit/api/encoding.py's encoder."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.renderers import BaseRenderer

from .encoding import dump_json


class ApiRenderer(BaseRenderer):
    media_type = "application/json"
    charset = "utf-8"

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> bytes:
        return dump_json(data)
