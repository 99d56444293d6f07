"""A workspace's files in the cloud's bucket on AWS and GCP: the head's save, then a new
head's restore (every start is a new head), over real HTTP with the node's own identity
(raydeck_agent/object_store.py), content compared byte for byte; a save uploads only
what changed, also on a new head that restored the files.

Stand-ins (the fixtures of test_object_store.py): moto in server mode for S3; for GCS
and the GCE metadata server the small fake HTTP server there (media upload and
download, the VM's token). The folder store of the local cloud is test_workspace_files.py.
"""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from pathlib import Path
from urllib.parse import unquote

import boto3
import pytest
from raydeck_agent import object_store
from raydeck_agent.workspace import BucketStore, Files, Rules, pack, store_for

from tests.agent.test_object_store import FakeGoogle, google, moto_s3  # noqa: F401

WORKSPACE = "0b9e6a1c-5d7e-4c55-9a52-7d1c2f3e4a5b"
RULES = Rules(excludes=("__pycache__",))


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URL (decoded) of every object upload the agent sends; they still go out."""
    sent: list[str] = []
    real = object_store._request

    def recording(url: str, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("method") in ("PUT", "POST"):
            sent.append(unquote(url))
        return real(url, **kwargs)

    monkeypatch.setattr(object_store, "_request", recording)
    return sent


def round_trip(location: str, tmp_path: Path, uploads: list[str]) -> None:
    work = tmp_path / "head1"
    (work / "data").mkdir(parents=True)
    (work / "notebook.ipynb").write_text('{"cells": [{"source": "print(1)"}]}')
    (work / "data" / "weights.bin").write_bytes(bytes(range(256)) * 1200 + os.urandom(4096))
    (work / "data" / "copy.bin").write_bytes((work / "data" / "weights.bin").read_bytes())
    (work / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(work / "run.sh", 0o755)  # noqa: S103 - an executable script
    (work / "empty.txt").write_bytes(b"")
    (work / "__pycache__").mkdir()
    (work / "__pycache__" / "x.pyc").write_bytes(b"\0")

    first = Files(work, store_for(location))
    assert isinstance(first.store, BucketStore)
    assert first.restore() == 0  # a new workspace: no manifest yet, not an error
    result = first.save(RULES)
    assert (result.files, result.skipped) == (5, [])
    blobs = [u for u in uploads if "/objects/" in u]
    assert len(blobs) == 4  # the two equal files are one blob; the excluded one none
    assert sum("manifest.json" in u for u in uploads) == 1

    # A new head restores exactly what was saved (not what was excluded).
    fresh = tmp_path / "head2"
    again = Files(fresh, store_for(location))
    assert again.restore() == 5
    saved = {k: v for k, v in tree(work).items() if not k.startswith("__pycache__")}
    assert tree(fresh) == saved

    # It changes one file, adds one and deletes one: the next save uploads those two
    # blobs and the manifest, nothing for the files it restored and left alone.
    del uploads[:]
    (fresh / "notebook.ipynb").write_text('{"cells": [{"source": "print(2)"}]}')
    (fresh / "new.py").write_bytes(b"import ray\n")
    (fresh / "empty.txt").unlink()
    again.save(RULES)
    assert len([u for u in uploads if "/objects/" in u]) == 2 and len(uploads) == 3
    del uploads[:]
    again.save(RULES)  # nothing changed: only the manifest
    assert len(uploads) == 1 and "manifest.json" in uploads[0]

    third = tmp_path / "head3"
    Files(third, store_for(location)).restore()
    assert tree(third) == tree(fresh)
    # A job's zip from the bucket holds the same bytes.
    archive = zipfile.ZipFile(io.BytesIO(pack(store_for(location), limit=10 << 20)))
    assert {n: archive.read(n) for n in archive.namelist()} == {
        k: v[0] for k, v in tree(fresh).items()
    }


def test_files_round_trip_through_s3(moto_s3: str, tmp_path: Path, uploads: list[str]) -> None:  # noqa: F811
    bucket = f"ws-{uuid.uuid4().hex[:12]}"  # moto's buckets outlive its server in a process
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="eu-west-1")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    round_trip(f"s3://{bucket}/raydeck-files/{WORKSPACE}", tmp_path, uploads)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(k.startswith(f"raydeck-files/{WORKSPACE}/") for k in keys)
    assert f"raydeck-files/{WORKSPACE}/manifest.json" in keys


def test_files_round_trip_through_gcs_with_the_vms_token(
    google: type[FakeGoogle],  # noqa: F811
    tmp_path: Path,
    uploads: list[str],
) -> None:
    round_trip(f"gs://acme-logs/raydeck-files/{WORKSPACE}", tmp_path, uploads)
    assert all(name.startswith(f"raydeck-files/{WORKSPACE}/") for _, name in google.objects)
    assert set(google.tokens_seen) == {"Bearer ya29.node"}


def test_a_missing_bucket_is_a_failed_save_the_head_reports(
    moto_s3: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "a.txt").write_text("kept")
    # moto's server keeps its buckets for the whole process: a name no other test made.
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    files = Files(tmp_path / "work", store_for(f"s3://{missing}/raydeck-files/x"))
    assert files.restore() == 0
    with pytest.raises(object_store.StoreError, match="NoSuchBucket"):
        files.save(RULES)  # an OSError: the handler reports "saving the files failed"
