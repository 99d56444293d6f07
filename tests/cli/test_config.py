"""Where the SDK finds its server and token, and how the token is kept on disk."""

from __future__ import annotations

import stat

import pytest
from raydeck.client import new_lines
from raydeck.config import ConfigFile, config_path, normalize_url, resolve
from raydeck.errors import ConfigError, NotSignedIn


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ("RAYDECK_URL", "RAYDECK_TOKEN", "RAYDECK_ORG", "RAYDECK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_the_file_is_0600_in_a_0700_folder(tmp_path) -> None:
    file = ConfigFile()
    file.remember(url="http://127.0.0.1:8000", org="acme", token="rdk_secret")
    path = file.save()
    assert path == tmp_path / "xdg" / "raydeck" / "config.json" == config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # Saving again over a file someone loosened makes it private again.
    path.chmod(0o644)
    ConfigFile.load().save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left


def test_arguments_then_environment_then_file(monkeypatch) -> None:
    file = ConfigFile()
    file.remember(url="http://file.example", org="acme", token="rdk_file")
    file.save()
    assert resolve().__dict__ == {"url": "http://file.example", "token": "rdk_file", "org": "acme"}
    monkeypatch.setenv("RAYDECK_TOKEN", "rdk_env")
    assert resolve().__dict__ == {"url": "http://file.example", "token": "rdk_env", "org": "acme"}
    # The file's organization and tokens are for its server only.
    monkeypatch.setenv("RAYDECK_URL", "http://env.example/api/v1/")
    assert resolve().__dict__ == {"url": "http://env.example", "token": "rdk_env", "org": None}
    monkeypatch.delenv("RAYDECK_TOKEN")
    with pytest.raises(NotSignedIn):
        resolve()
    settings = resolve("https://arg.example", "rdk_arg", "other")
    assert settings.__dict__ == {"url": "https://arg.example", "token": "rdk_arg", "org": "other"}


def test_one_token_per_organization() -> None:
    file = ConfigFile()
    file.remember(url="http://x.example", org="acme", token="rdk_a")
    file.remember(url="http://x.example", org="beta", token="rdk_b")
    file.save()
    assert resolve().token == "rdk_b"  # the last login is the default
    assert resolve(org="acme").token == "rdk_a"
    with pytest.raises(NotSignedIn, match=r"'gamma'.*acme, beta"):
        resolve(org="gamma")
    # Signing in to another server forgets the first one's tokens.
    file.remember(url="http://y.example", org="acme", token="rdk_y")
    assert file.tokens == {"acme": "rdk_y"}


def test_nothing_configured_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="raydeck login --url"):
        resolve()
    with pytest.raises(NotSignedIn, match="raydeck login"):
        resolve(url="http://x.example")
    with pytest.raises(ConfigError, match="http:// or https://"):
        normalize_url("file:///etc/passwd")


def test_a_broken_file_is_reported_not_a_traceback(tmp_path) -> None:
    path = tmp_path / "xdg" / "raydeck" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="Cannot read"):
        ConfigFile.load()


@pytest.mark.parametrize(
    ("previous", "current", "new"),
    [
        ([], ["a", "b"], ["a", "b"]),
        (["a", "b"], ["a", "b"], []),
        (["a", "b", "c"], ["b", "c", "d"], ["d"]),
        (["a", "b"], ["a", "b", "c", "d"], ["c", "d"]),
        (["a", "b"], ["x", "y"], ["x", "y"]),
    ],
)
def test_following_a_log_prints_each_line_once(previous, current, new) -> None:
    assert new_lines(previous, current) == new
