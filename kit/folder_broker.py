"""The embedded default's Celery broker: kombu's folder transport with an atomic put.

kombu's own put creates the message file under its final name and only then locks and
writes it, while a get takes no lock: it moves the newest name away and reads it. A
reader can therefore take a file that is still empty and fail on its JSON (seen when
`make run`'s worker read a pidbox broadcast while shutting down). Here a message is
written under a name no queue matches, then renamed into place: a rename within one
folder is atomic, so a reader sees a whole message or none.

Selected by the broker URL's prefix: ``kit.folder_broker.Transport+filesystem://``.
"""

import contextlib
import itertools
import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# A name being written ends in this, never in ".<queue>.msg", so no get or size counts it.
PARTIAL_SUFFIX = ".partial"

# Orders a process's messages within one millisecond (kombu's names order only by the
# millisecond, then by a random uuid).
_sequence = itertools.count()


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # A get takes the smallest name first: the millisecond, then this process's count.
        name = f"{round(monotonic() * 1000)}_{next(_sequence):012d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f"{uuid.uuid4()}{PARTIAL_SUFFIX}")
        try:
            with open(partial, "wb") as stream:
                stream.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
