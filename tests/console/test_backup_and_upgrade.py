"""Backups and upgrades, on PostgreSQL (docs/operations.md says how to do both):

- a database populated by Raydeck, dumped with pg_dump and restored with pg_restore into
  a new database, serves as before: a person signs in with their password, lists the
  clusters, and the secrets kept at rest (each cluster's token-signing key) decrypt
  with the same keys, and only with them;
- a database made and populated by the last release (the code of commit RELEASE, taken
  from git, running its own migrations and its own test world) migrates to this code's
  head with no error, and every row of every table it had is still there.

Each step runs in a process of its own against a database of its own on the
PostgreSQL server of DATABASE_URL, with the test settings.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import dj_database_url
import psycopg
import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "3f60c66"  # the last release: main as of 2026-12-06's first commit

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="needs PostgreSQL (DATABASE_URL), pg_dump and pg_restore",
    ),
    pytest.mark.skipif(
        not (shutil.which("pg_dump") and shutil.which("pg_restore")),
        reason="needs pg_dump and pg_restore (Debian: postgresql-client)",
    ),
]

PASSWORD = "restored-Password-123"

# Run by the code under test (or the release's): a world of two organizations (the test
# suite's own), a password for one owner, and each cluster's signing key.
POPULATE = f"""
import django, json
django.setup()
from tests.conftest import make_tenant
from clusters.access import access_key
for slug in ("alpha", "bravo"):
    tenant = make_tenant(slug)
    tenant.owner.set_password({PASSWORD!r})
    tenant.owner.save()
    access_key(tenant.cluster)
print("populated")
"""

# Run against a restored database: what a person and the reconciler need of it.
CHECK = f"""
import django, json
django.setup()
from cryptography.hazmat.primitives import serialization
from django.test import Client
from clusters.models import ClusterAccessKey
from kit.crypto import InvalidToken, decrypt
client = Client()
signed_in = client.post(
    "/accounts/login/", {{"login": "owner@alpha.example.com", "password": {PASSWORD!r}}}
)
page = client.get("/o/alpha/clusters/")
keys = []
for key in ClusterAccessKey.objects.order_by("pk"):
    try:
        private = serialization.load_pem_private_key(
            decrypt(key.private_key_encrypted).encode(), password=None
        )
    except InvalidToken:
        keys.append("undecryptable")
        continue
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    keys.append("matches" if public.strip() == key.public_key.strip() else "wrong")
print(json.dumps({{
    "sign_in": signed_in.status_code,
    "signed_in_as": str(page.wsgi_request.user),
    "clusters_page": page.status_code,
    "lists_alpha_cluster": "alpha-cluster" in page.content.decode(),
    "lists_bravo_cluster": "bravo-cluster" in page.content.decode(),
    "keys": keys,
}}))
"""


def tool(name: str) -> str:
    return shutil.which(name) or name


def admin_dsn(dbname: str = "postgres") -> str:
    params = dj_database_url.parse(os.environ["DATABASE_URL"])
    return psycopg.conninfo.make_conninfo(
        host=params.get("HOST") or "127.0.0.1",
        port=params.get("PORT") or 5432,
        user=params.get("USER") or "postgres",
        password=params.get("PASSWORD") or None,
        dbname=dbname,
    )


@pytest.fixture
def databases() -> Iterator[list[str]]:
    """Names for new databases (created by the test), all dropped at the end."""
    made: list[str] = []
    yield made
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(databases: list[str], purpose: str) -> str:
    name = f"raydeck_{purpose}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    databases.append(name)
    return name


def run(code_or_argv: str | list[str], dbname: str, *, cwd: Path = ROOT, **env: str) -> str:
    """Python (a script, or manage.py's arguments) with the test settings on `dbname`."""
    url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + f"/{dbname}"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "RAYDECK_"))}
    environment.update(
        DJANGO_SETTINGS_MODULE="console.settings.test", DATABASE_URL=url, PYTHONPATH=str(cwd)
    )
    environment.update(env)
    if isinstance(code_or_argv, str):
        argv = [sys.executable, "-c", code_or_argv]
    else:
        argv = [sys.executable, "manage.py", *code_or_argv]
    done = subprocess.run(
        argv, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def row_counts(dbname: str) -> dict[str, int]:
    with psycopg.connect(admin_dsn(dbname)) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        counts = {}
        for table in tables:
            row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()  # noqa: S608
            counts[table] = int(row[0]) if row else 0
        return counts


def test_a_restored_backup_signs_in_lists_clusters_and_decrypts(
    databases: list[str], tmp_path: Path
) -> None:
    source = create_database(databases, "backup")
    run(["migrate", "--noinput"], source)
    assert "populated" in run(POPULATE, source)
    dump = tmp_path / "raydeck.dump"
    subprocess.run(
        [tool("pg_dump"), "--format=custom", "--no-owner", f"--file={dump}", admin_dsn(source)],
        check=True,
        timeout=120,
    )
    restored = create_database(databases, "restored")
    subprocess.run(
        [
            tool("pg_restore"),
            "--no-owner",
            "--exit-on-error",
            f"--dbname={admin_dsn(restored)}",
            dump,
        ],
        check=True,
        timeout=120,
    )
    assert row_counts(restored) == row_counts(source)

    answer = json.loads(run(CHECK, restored).splitlines()[-1])
    assert answer["sign_in"] == 302 and answer["signed_in_as"] == "owner@alpha.example.com"
    assert answer["clusters_page"] == 200 and answer["lists_alpha_cluster"]
    assert not answer["lists_bravo_cluster"]
    assert answer["keys"] == ["matches", "matches"]

    # Restored without the keys (here: other encryption keys than those that sealed
    # them): people still sign in and see their clusters, the sealed secrets are lost.
    other_keys = Fernet.generate_key().decode()
    answer = json.loads(run(CHECK, restored, RAYDECK_ENCRYPTION_KEYS=other_keys).splitlines()[-1])
    assert answer["sign_in"] == 302 and answer["lists_alpha_cluster"]
    assert answer["keys"] == ["undecryptable", "undecryptable"]


def release_tree(tmp_path: Path) -> Path:
    """The release's code, from git (no worktree: an archive of its files)."""
    archive = tmp_path / "release.tar"
    try:
        subprocess.run(
            [
                tool("git"),
                "-C",
                str(ROOT),
                "archive",
                "--format=tar",
                f"--output={archive}",
                RELEASE,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the release's code is not in this checkout's git history: {exc}")
    tree = tmp_path / "release"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def test_a_database_of_the_last_release_upgrades_with_every_row_kept(
    databases: list[str], tmp_path: Path
) -> None:
    tree = release_tree(tmp_path)
    dbname = create_database(databases, "upgrade")
    run(["migrate", "--noinput"], dbname, cwd=tree)  # the release's schema, by its code
    assert "populated" in run(POPULATE, dbname, cwd=tree)
    before = row_counts(dbname)
    assert before["clusters_cluster"] == 2 and before["accounts_auditevent"] >= 0

    out = run(["migrate", "--noinput"], dbname)  # this code's migrations, to head
    assert "Applying" in out
    run(["migrate", "--check", "--noinput"], dbname)  # nothing left unapplied
    after = row_counts(dbname)
    # Django's own bookkeeping grows with new migrations and models; nothing else changes.
    grows = {"django_migrations", "django_content_type", "auth_permission"}
    lost = {
        t: (n, after.get(t))
        for t, n in before.items()
        if (after.get(t, -1) < n if t in grows else after.get(t) != n)
    }
    assert lost == {}, f"rows changed by the upgrade (before, after): {lost}"

    answer = json.loads(run(CHECK, dbname).splitlines()[-1])
    assert answer["sign_in"] == 302 and answer["lists_alpha_cluster"]
    assert answer["keys"] == ["matches", "matches"]
