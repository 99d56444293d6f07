"""A notebook's kernel channel through the access gateway, with nothing standing in: a
real Jupyter server and kernel on loopback (the one JupyterLab runs on a head), the real
gateway in front of it, and a client that speaks what JupyterLab speaks (the
v1.kernel.websocket.jupyter.org framing) and sends its requests the moment the upgrade
is answered, as a browser does."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from raydeck_agent.gateway import AccessPolicy, Gateway
from raydeck_agent.tls import NodeTLS

from .test_gateway import CLUSTER, free_port, token
from .tls_ca import TestCA

KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"
CELLS = 20  # each on a channel of its own, as reconnects open them
START_SECONDS = 120  # a loaded machine starts Jupyter and a kernel slowly


@pytest.fixture
def jupyter(tmp_path: Path) -> Iterator[int]:
    """Jupyter's server on a loopback port, as apps.py starts it (under /jupyter/)."""
    port = free_port()
    state = tmp_path / "jupyter-state"
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_DATA_DIR": str(state / "data"),
        "IPYTHONDIR": str(state / "ipython"),
    }
    log = (tmp_path / "jupyter.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.base_url=/jupyter/",
            f"--ServerApp.root_dir={tmp_path}",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.allow_remote_access=True",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/jupyter/api", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"Jupyter did not start: {(tmp_path / 'jupyter.log').read_text()}"
                    ) from None
                time.sleep(0.2)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
        log.close()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def gateway(
    tmp_path: Path, key: Ed25519PrivateKey, jupyter: int
) -> Iterator[tuple[Gateway, TestCA]]:
    ca = TestCA(tmp_path)
    tls = NodeTLS(tmp_path / "node")
    assert tls.save_certificate(ca.sign(tls.csr("127.0.0.1"), ["127.0.0.1"]))
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    gw = Gateway(
        host="127.0.0.1",
        port=free_port(),
        policy=AccessPolicy.from_pem(CLUSTER, pem.decode()),
        upstreams={"dashboard": free_port(), "jupyter": jupyter},
        tls=tls,
    )
    gw.start()
    yield gw, ca
    gw.stop()


def message(msg_type: str, session: str, content: dict) -> dict:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": session,
            "username": "test",
            "version": "5.3",
            "date": "2026-01-01T00:00:00Z",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "buffers": [],
    }


def frame(msg: dict, channel: str) -> bytes:
    return serialize_msg_to_ws_v1(msg, channel, pack=lambda part: json.dumps(part).encode())


async def run_cells(gw: Gateway, ca: TestCA, key: Ed25519PrivateKey, cells: int) -> list[str]:
    """Start a kernel through the gateway, then `cells` times: open its channel, send an
    execute request at once, and read until its reply and the printed line arrive.
    Returns the lines printed."""
    base = f"https://127.0.0.1:{gw.port}/jupyter"
    headers = {"Authorization": f"Bearer {token(key)}"}
    ssl = ca.client_context()
    printed: list[str] = []
    # Jupyter's XSRF check, passed as JupyterLab passes it: the same token in a cookie
    # and a header (tornado takes a plain hex one).
    xsrf = uuid.uuid4().hex
    headers |= {"X-XSRFToken": xsrf, "Cookie": f"_xsrf={xsrf}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{base}/api/kernels", json={}, ssl=ssl) as answer:
            assert answer.status == 201, await answer.text()
            kernel = (await answer.json())["id"]
        client = uuid.uuid4().hex  # JupyterLab keeps its client id across reconnects
        for cell in range(cells):
            url = f"wss://127.0.0.1:{gw.port}/jupyter/api/kernels/{kernel}/channels"
            async with session.ws_connect(
                f"{url}?session_id={client}", protocols=[KERNEL_PROTOCOL], ssl=ssl
            ) as channel:
                assert channel.protocol == KERNEL_PROTOCOL
                request = message("execute_request", client, {"code": f"print('cell', {cell})"})
                await channel.send_bytes(frame(request, "shell"))
                replied, output = False, ""
                deadline = time.monotonic() + START_SECONDS
                while not (replied and output.endswith("\n")):
                    left = deadline - time.monotonic()
                    assert left > 0, f"cell {cell}: reply {replied}, output {output}"
                    got = await channel.receive(timeout=left)
                    assert got.type == aiohttp.WSMsgType.BINARY, (cell, got)
                    _, parts = deserialize_msg_from_ws_v1(got.data)
                    header, parent, _, content = (json.loads(p) for p in parts[:4])
                    if parent.get("msg_id") != request["header"]["msg_id"]:
                        continue
                    if header["msg_type"] == "execute_reply":
                        assert content["status"] == "ok", content
                        replied = True
                    elif header["msg_type"] == "stream":
                        output += content["text"]  # one line may come in parts
                printed.append(output.strip())
    return printed


def test_a_request_sent_at_once_after_the_upgrade_reaches_the_kernel(gateway, key) -> None:
    gw, ca = gateway
    printed = asyncio.run(run_cells(gw, ca, key, cells=CELLS))
    assert printed == [f"cell {n}" for n in range(CELLS)]
