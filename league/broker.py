"""Kombu's filesystem transport, with atomic writes.

The embedded stack (``runstack``) uses a Celery broker on the filesystem so that it needs
no server. Kombu's own ``filesystem`` transport creates a message file and then writes
it, while a worker may already have moved and read the empty file: the worker then dies
on a JSON error (seen under load: ``seed_demo`` writing while the worker polls). This
transport writes to a hidden temporary name and renames it into place, so a reader only
ever sees whole messages, and it asks for no host name (kombu would warn about it in every
command's output). ``league/celery.py`` registers it for ``filesystem://``.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: the reader matches "<anything>.<queue>.msg" after the first dot,
        # which a name starting with "." never does.
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel

    @property
    def default_connection_params(self) -> dict[str, Any]:
        # No default host: a folder has none, and with one kombu warns "No hostname was
        # supplied. Reverting to default 'localhost'" into every command's output.
        return {"port": self.default_port}


def register() -> None:
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES["filesystem"] = "league.broker:Transport"
