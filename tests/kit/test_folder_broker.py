"""The embedded default's folder broker (kit/folder_broker.py): a reader racing writers
gets every message whole, once, in order. No stand-in: real files in a temporary folder."""

import threading
from pathlib import Path

from kombu import Connection

from console.settings.local import CELERY_BROKER_URL

MESSAGES = 150
PAD = 256 * 1024  # big enough that a write takes a while: kombu's own put lost this race


def connection(folder: Path, url: str = CELERY_BROKER_URL) -> Connection:
    return Connection(
        url,
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
        },
    )


def test_a_reader_racing_two_writers_gets_every_message_whole_and_in_order(tmp_path):
    (tmp_path / "processed").mkdir()
    received: list[dict] = []
    errors: list[BaseException] = []

    def write(writer: str) -> None:
        with connection(tmp_path) as conn, conn.SimpleQueue("race") as queue:
            for number in range(MESSAGES):
                queue.put({"writer": writer, "number": number, "pad": "x" * PAD})

    def read() -> None:
        try:
            with connection(tmp_path) as conn, conn.SimpleQueue("race") as queue:
                while len(received) < 2 * MESSAGES:
                    message = queue.get(timeout=20)
                    received.append(message.payload)
                    message.ack()
        except BaseException as exc:  # reported below, with what arrived
            errors.append(exc)

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in [*writers, reader]:
        thread.join(timeout=60)

    assert errors == [], f"{errors!r} after {len(received)} messages"
    for writer in ("a", "b"):
        numbers = [m["number"] for m in received if m["writer"] == writer]
        assert numbers == list(range(MESSAGES))
    assert all(len(m["pad"]) == PAD for m in received)
    # Nothing is left behind: no message, no half-written file.
    assert [p.name for p in tmp_path.iterdir()] == ["processed"]
