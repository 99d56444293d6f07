"""Schemathesis over /api/v1/openapi.json against a live server (pytest-django's, on the
test database): every check ("all", object-level authorization included), with two
users of different organizations as peers. Pass: no failure at all, so no 5xx, no
answer outside the document, no object of one organization readable by the other.

Examples are bounded (SCHEMATHESIS_MAX_EXAMPLES, default 10 per operation and phase) so
CI stays quick; raise it by hand for a deeper run. The clusters here are terminated and
the clouds unverified, so no create reaches the reconciler or a real cloud."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from accounts.choices import OrgRole
from tests.conftest import Tenant

from .conftest import token_secret

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
[dictionaries.orgs]
values = ["alpha", "bravo"]

[dictionaries.projects]
values = ["alpha-project", "bravo-project"]

[auth.wfc]
path = "{auth}"
peers = ["alice", "bob"]

[parameters]
"path.org" = {{ dictionary = "orgs", probability = 0.9 }}
"body.project" = {{ dictionary = "projects", probability = 0.5 }}

# A create whose body fits the schema may still name a project, cloud or image that is
# not there, or a name already taken: the API answers 422 with the field, which no
# schema can rule out in advance.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""


def test_schemathesis_finds_nothing(
    tenant_a: Tenant, tenant_b: Tenant, live_server: Any, settings: Any, tmp_path: Path
) -> None:
    settings.RAYDECK_API_RATE_LIMIT = 1_000_000  # the fuzzer is one busy client
    auth = {
        "auth": [
            {
                "name": name,
                "fixedHeaders": [
                    {"name": "Authorization", "value": f"Bearer {token_secret(t, OrgRole.ADMIN)}"}
                ],
            }
            for name, t in (("alice", tenant_a), ("bob", tenant_b))
        ]
    }
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(auth=tmp_path / "auth.json"))
    examples = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{live_server.url}/api/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        examples,
        "--seed",
        "7",
        "--workers",
        "1",
        "--no-color",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-3000:]
    assert selected[1] == selected[2] == tested[1], output[-3000:]  # every operation ran
    assert " passed" in output and "failed" not in output.split("SUMMARY")[-1], output[-3000:]
