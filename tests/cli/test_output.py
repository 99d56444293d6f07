"""How the CLI prints: tables for people, JSON and YAML (every field) for scripts."""

from __future__ import annotations

import json

import pytest
import yaml
from raydeck.models import Cluster, Organization
from raydeck.output import cell, render

CLUSTER = {
    "id": "7d0c3f8e-8a56-4c1c-9a53-2f7c2c1d9b10",
    "name": "demo",
    "project": "research",
    "cloud": "3",
    "state": "running",
    "created_at": "2026-11-25T21:58:03.412Z",
    "state_reason": None,
    "added_later": {"a": 1},  # a field the SDK does not know yet
}


def test_json_prints_every_field_the_server_sent() -> None:
    cluster = Cluster.from_api(CLUSTER)
    assert json.loads(render(cluster, "json")) == CLUSTER
    assert json.loads(render([cluster, cluster], "json")) == [CLUSTER, CLUSTER]
    assert json.loads(render([], "json")) == []


def test_yaml_round_trips() -> None:
    assert yaml.safe_load(render([Cluster.from_api(CLUSTER)], "yaml")) == [CLUSTER]


def test_table_has_a_header_and_aligned_columns() -> None:
    rows = [
        Organization.from_api({"slug": "acme", "name": "Acme Corp", "role": "owner"}),
        Organization.from_api({"slug": "b", "name": "B", "role": None}),
    ]
    lines = render(rows, "table", "orgs").splitlines()
    assert lines[0].split() == ["SLUG", "NAME", "ROLE"]
    assert lines[1].split() == ["acme", "Acme", "Corp", "owner"]
    assert lines[2].split() == ["b", "B", "-"]
    # Every column starts at the same offset on every line.
    assert lines[0].index("NAME") == lines[1].index("Acme") == lines[2].index("B ")


def test_table_of_one_object_lists_its_fields() -> None:
    text = render(Cluster.from_api(CLUSTER), "table")
    assert "name          demo" in text
    assert "created_at    2026-11-25 21:58:03" in text
    assert "state_reason  -" in text


def test_cells_are_one_short_line() -> None:
    assert cell("2026-11-25T21:58:03+00:00") == "2026-11-25 21:58:03"
    assert cell(True) == "yes"
    assert cell(None) == "-"
    assert cell("two\nlines") == "two lines"
    assert cell({"CPU": 2, "GPU": 0}) == "CPU=2, GPU=0"
    long = cell("x" * 500)
    assert len(long) == 60 and long.endswith("…")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="csv"):
        render([], "csv")


def test_models_take_ids_as_strings_and_keep_unknown_fields() -> None:
    cluster = Cluster.from_api({**CLUSTER, "id": 12})
    assert cluster.id == "12" and cluster.state == "running" and cluster.started_at is None
    assert cluster.raw["added_later"] == {"a": 1}
    assert not cluster.is_final
