"""The head's keeping of a workspace's files (raydeck_agent/workspace.py) on a real
folder store: a save is incremental and content-addressed, a restore puts back exactly
what was saved, limits and excludes are honoured, an interrupted save leaves the last
manifest whole, and a job's zip holds exactly what a save kept."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from raydeck_agent.workspace import MANIFEST, Files, FolderStore, Rules, TooLarge, pack


def blobs(store_root: Path) -> set[str]:
    return {p.name for p in (store_root / "objects").rglob("*") if p.is_file()}


def test_save_then_restore_on_a_new_head_gives_back_every_file(tmp_path) -> None:
    work, store_root = tmp_path / "head1", tmp_path / "store"
    (work / "data").mkdir(parents=True)
    (work / "notebook.ipynb").write_text('{"cells": []}')
    (work / "data" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(work / "data" / "run.sh", 0o755)  # noqa: S103 - an executable script
    (work / ".ipynb_checkpoints").mkdir()
    (work / ".ipynb_checkpoints" / "x.ipynb").write_text("old")
    (work / "huge.bin").write_bytes(b"x" * 2048)
    rules = Rules(excludes=(".ipynb_checkpoints",), max_file_bytes=1024)
    result = Files(work, FolderStore(store_root)).save(rules)
    assert result.files == 2 and result.skipped == [
        ["huge.bin", "larger than the size limit for one file"]
    ]

    fresh = tmp_path / "head2"
    assert Files(fresh, FolderStore(store_root)).restore() == 2
    assert (fresh / "notebook.ipynb").read_text() == '{"cells": []}'
    assert (fresh / "data" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert not (fresh / ".ipynb_checkpoints").exists() and not (fresh / "huge.bin").exists()


def test_a_second_save_uploads_only_what_changed_and_drops_deleted_files(tmp_path) -> None:
    work, store_root = tmp_path / "work", tmp_path / "store"
    work.mkdir()
    (work / "a.txt").write_text("one")
    (work / "b.txt").write_text("two")
    files = Files(work, FolderStore(store_root))
    files.save(Rules())
    first = blobs(store_root)
    (work / "a.txt").write_text("changed")
    (work / "b.txt").unlink()
    store = FolderStore(store_root)
    puts: list[str] = []
    original = store.put
    store.put = lambda digest, source: (puts.append(source.name), original(digest, source))[1]  # type: ignore[method-assign]
    files.store = store
    result = files.save(Rules())
    assert puts == ["a.txt"] and result.files == 1
    assert len(blobs(store_root) - first) == 1
    fresh = tmp_path / "again"
    Files(fresh, FolderStore(store_root)).restore()
    assert sorted(p.name for p in fresh.iterdir()) == ["a.txt"]
    assert (fresh / "a.txt").read_text() == "changed"


def test_a_manifest_never_points_outside_the_working_directory(tmp_path) -> None:
    store = FolderStore(tmp_path / "store")
    store.write_manifest({"files": {"../escape.txt": {"sha256": "0" * 64, "size": 1}}})
    assert Files(tmp_path / "work", store).restore() == 0
    assert not (tmp_path / "escape.txt").exists()
    assert (tmp_path / "store" / MANIFEST).is_file()


def test_a_job_gets_exactly_what_the_save_kept_the_same_tree_the_same_zip(tmp_path) -> None:
    work, store = tmp_path / "head", FolderStore(tmp_path / "store")
    (work / "src").mkdir(parents=True)
    (work / "src" / "train.py").write_text("print('hi')\n")
    os.chmod(work / "src" / "train.py", 0o755)  # noqa: S103 - an executable script
    (work / "__pycache__").mkdir()
    (work / "__pycache__" / "x.pyc").write_bytes(b"\0")
    Files(work, store).save(Rules(excludes=("__pycache__",)))
    first = pack(store, limit=1 << 20)
    (work / "src" / "train.py").touch()  # a new mtime, the same content
    Files(work, store).save(Rules(excludes=("__pycache__",)))
    assert pack(store, limit=1 << 20) == first  # the same digest: stored once
    archive = zipfile.ZipFile(io.BytesIO(first))
    assert archive.namelist() == ["src/train.py"]
    assert archive.read("src/train.py") == b"print('hi')\n"
    assert (archive.getinfo("src/train.py").external_attr >> 16) & 0o777 == 0o755
    with pytest.raises(TooLarge):
        pack(store, limit=5)
