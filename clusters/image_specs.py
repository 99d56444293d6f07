"""What an image build spec may say, and its one normal form (whose hash finds an
identical build already made).

A spec (image.yaml, the API's body, the console's form) is a mapping:

    base: ray                      # the built-in Ray base, or a full image reference
    requirements: [requests==2.32.3]
    debian_packages: [curl]
    env: {MY_SETTING: "1"}
    post_build: ["python -c 'import requests'"]
    containerfile: "FROM ray\\nRUN ..."   # instead of the four lists above

`normalize_spec` returns the normal form or raises a ValidationError naming the field;
what a kind of cloud cannot build is its traits' say (clouds/providers/builds.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from django.core.exceptions import ValidationError

from clouds.providers.builds import BASE_RAY

MAX_REQUIREMENTS = 500
MAX_DEBIAN_PACKAGES = 200
MAX_ENV = 100
MAX_POST_BUILD = 50
MAX_COMMAND = 2000
MAX_CONTAINERFILE = 20_000
SPEC_FIELDS = ("base", "requirements", "debian_packages", "env", "post_build", "containerfile")
# A Containerfile builds on a base and runs commands; nothing else: there is no build
# context to COPY or ADD from, and Raydeck owns the entrypoint and the ports.
CONTAINERFILE_ALLOWED = ("FROM", "RUN", "ENV", "ARG", "LABEL", "WORKDIR")
# registry host (with a dot or a port, or localhost) / path [:tag] [@digest]
IMAGE_REFERENCE = re.compile(
    r"^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)+(?::\d+)?|[a-z0-9-]+:\d+|localhost(?::\d+)?)"
    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+)?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _strings(value: Any, field: str, *, limit: int, noun: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.splitlines()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError({field: f"Give {noun} as a list of strings."})
    items = [v.strip() for v in value if v.strip() and not v.strip().startswith("#")]
    if len(items) > limit:
        raise ValidationError({field: f"At most {limit} {noun} ({len(items)} given)."})
    return items


def _requirements(value: Any) -> list[str]:
    # Imported here, not at the top: packaging's grammar is a cost of every start.
    from packaging.requirements import InvalidRequirement, Requirement

    items = _strings(value, "requirements", limit=MAX_REQUIREMENTS, noun="pip requirements")
    for number, item in enumerate(items, 1):
        if item.startswith("-"):
            raise ValidationError(
                {"requirements": f"Line {number} ({item}): pip options are not allowed here."}
            )
        try:
            Requirement(item)
        except InvalidRequirement as exc:
            raise ValidationError(
                {"requirements": f"Line {number} ({item}) is not a pip requirement: {exc}"}
            ) from exc
    return sorted(set(items), key=str.lower)


def _debian_packages(value: Any) -> list[str]:
    items = _strings(
        value, "debian_packages", limit=MAX_DEBIAN_PACKAGES, noun="Debian package names"
    )
    for item in items:
        if not DEBIAN_PACKAGE.match(item):
            raise ValidationError(
                {"debian_packages": f"{item} is not a Debian package name (e.g. curl)."}
            )
    return sorted(set(items))


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError({"env": "Give environment variables as NAME: value pairs."})
    if len(value) > MAX_ENV:
        raise ValidationError({"env": f"At most {MAX_ENV} environment variables."})
    env = {}
    for name, setting in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ValidationError({"env": f"{name!r} is not a variable name (letters, digits, _)."})
        if name.startswith("RAYDECK_"):
            raise ValidationError({"env": f"{name}: RAYDECK_ variables are Raydeck's own."})
        if not isinstance(setting, str | int | float | bool) or "\0" in str(setting):
            raise ValidationError({"env": f"{name}: give a string."})
        env[name] = str(setting)
    return dict(sorted(env.items()))


def _post_build(value: Any) -> list[str]:
    items = _strings(value, "post_build", limit=MAX_POST_BUILD, noun="post-build commands")
    for item in items:
        if len(item) > MAX_COMMAND or "\0" in item:
            raise ValidationError(
                {"post_build": f"A command has at most {MAX_COMMAND} characters."}
            )
    return items  # in order: each runs after the one before


def base_error(base: str) -> str | None:
    """Why `base` is not a base image, or None."""
    if base == BASE_RAY or IMAGE_REFERENCE.match(base):
        return None
    return (
        f"Unknown base {base!r}. Choose {BASE_RAY} (Raydeck's Ray image) or give a full "
        "image reference such as registry.example.com/team/image:tag."
    )


def _containerfile(text: str) -> str:
    """Check every instruction; the base after FROM must be a base like `base`."""
    if len(text) > MAX_CONTAINERFILE:
        raise ValidationError(
            {"containerfile": f"A Containerfile has at most {MAX_CONTAINERFILE} characters."}
        )
    instructions: list[tuple[int, str, str]] = []
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, rest = whole.partition(" ")
        instructions.append((start, keyword.upper(), rest.strip()))
    if not instructions or instructions[0][1] != "FROM":
        raise ValidationError({"containerfile": "A Containerfile starts with FROM <base>."})
    for number, keyword, _rest in instructions:
        if keyword not in CONTAINERFILE_ALLOWED:
            raise ValidationError(
                {
                    "containerfile": f"Line {number}: {keyword} is not allowed (allowed: "
                    f"{', '.join(CONTAINERFILE_ALLOWED)})."
                }
            )
        if keyword == "FROM" and number != instructions[0][0]:
            raise ValidationError({"containerfile": f"Line {number}: only one FROM."})
    base = instructions[0][2].split()[0] if instructions[0][2] else ""
    if error := base_error(base):
        raise ValidationError({"containerfile": f"Line {instructions[0][0]}: {error}"})
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"


def normalize_spec(raw: Any) -> dict[str, Any]:
    """The spec in its normal form: lists stripped, requirements and packages sorted and
    deduplicated, variables sorted; post-build commands keep their order."""
    if not isinstance(raw, dict):
        raise ValidationError({"spec": "Give the spec as a mapping (base, requirements, ...)."})
    unknown = sorted(set(map(str, raw)) - set(SPEC_FIELDS))
    if unknown:
        raise ValidationError(
            {"spec": f"Unknown field(s): {', '.join(unknown)} (known: {', '.join(SPEC_FIELDS)})."}
        )
    containerfile = raw.get("containerfile") or ""
    if not isinstance(containerfile, str):
        raise ValidationError({"containerfile": "Give the Containerfile as text."})
    if containerfile.strip():
        others = [f for f in ("requirements", "debian_packages", "env", "post_build") if raw.get(f)]
        if others:
            raise ValidationError(
                {"containerfile": f"Give a Containerfile or {', '.join(others)}, not both."}
            )
        text = _containerfile(containerfile)
        return {"base": text.split()[1], "containerfile": text}
    base = raw.get("base", BASE_RAY)
    if not isinstance(base, str) or (error := base_error(base.strip())):
        raise ValidationError({"base": error if isinstance(base, str) else "Give a base image."})
    return {
        "base": base.strip(),
        "requirements": _requirements(raw.get("requirements")),
        "debian_packages": _debian_packages(raw.get("debian_packages")),
        "env": _env(raw.get("env")),
        "post_build": _post_build(raw.get("post_build")),
    }


def spec_hash(spec: dict[str, Any], *, ray_version: str) -> str:
    """The content address of a normalized spec: the built-in base means this Ray."""
    canonical = json.dumps({"spec": spec, "ray": ray_version}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
