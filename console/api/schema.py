"""The base of every answer's schema."""

from pydantic import BaseModel


class Out(BaseModel):
    """Answers are plain pydantic models validated from dicts. ninja's Schema also reads
    ORM objects attribute by attribute through a wrapper, which endpoints here never
    need and which costs milliseconds on a page of 50 rows."""
