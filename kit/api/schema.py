"""The bases of the API's schemas: every answer's, and every change's (PATCH bodies)."""

from typing import Any

from ninja import Schema
from ninja.schema import DjangoGetter
from pydantic import BaseModel, model_validator


class Out(BaseModel):
    """Answers are plain pydantic models validated from dicts. ninja's Schema also reads
    ORM objects attribute by attribute through a wrapper, which endpoints here never
    need and which costs milliseconds on a page of 50 rows."""


class Changes(Schema):
    """A PATCH body: the fields that change, all optional. ninja's Schema reads any
    object attribute by attribute, so a JSON array or string would pass as "no change"
    with every field at its default; a change must be a JSON object."""

    @model_validator(mode="before")
    @classmethod
    def _a_json_object(cls, data: Any) -> Any:
        sent = data._obj if isinstance(data, DjangoGetter) else data
        if not isinstance(sent, dict):
            raise ValueError("The body must be a JSON object of the fields that change.")
        return data
