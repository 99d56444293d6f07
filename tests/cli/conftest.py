"""The `raydeck` command as a user runs it: the installed console script in a child
process, against this test's live server (a real HTTP server on the test database),
with its own config folder."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

RAYDECK = Path(sys.executable).parent / "raydeck"
COMMAND_TIMEOUT = 120


@dataclass
class Cli:
    url: str
    config_home: Path

    @property
    def config_file(self) -> Path:
        return self.config_home / "raydeck" / "config.json"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAYDECK_")}
        env.update(RAYDECK_URL=self.url, XDG_CONFIG_HOME=str(self.config_home))
        env.update(extra)
        return env

    def __call__(
        self, *args: str, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RAYDECK), *args],
            env=self.env(**env),
            input=input,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(RAYDECK), *args],
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def cli(live_server, tmp_path: Path) -> Cli:
    assert RAYDECK.exists(), "the raydeck command is not installed: run `make install`"
    return Cli(url=live_server.url, config_home=tmp_path / "xdg")
