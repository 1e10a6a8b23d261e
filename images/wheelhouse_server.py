"""Serve a wheelhouse directory on 127.0.0.1 while images/build.sh builds.

    python images/wheelhouse_server.py DIR PORT_FILE

Binds the port itself and then writes it to PORT_FILE. It tries the same ports in the same
order for the same directory, so a build usually gets the port of the last one: the URL is a
build argument, and Docker rebuilds every layer after a build argument whose value changed.
"""

from __future__ import annotations

import functools
import sys
import zlib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def bind(directory: str) -> ThreadingHTTPServer:
    handler = functools.partial(QuietHandler, directory=directory)
    # Above Linux's default ephemeral range (32768-60999), and so above the ports a
    # platform chooses for itself (below it): a port of those, taken at that moment by a
    # test's platform, would cost the whole layer cache.
    first = 61000 + zlib.crc32(directory.encode()) % 4000
    for port in [*range(first, first + 20), 0]:  # 0: any free port, as a last resort
        try:
            return ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError:
            continue
    raise SystemExit("wheelhouse_server.py: no port to listen on")


def main(directory: str, port_file: str) -> None:
    server = bind(directory)
    partial = Path(port_file + ".partial")
    partial.write_text(str(server.server_address[1]))
    partial.rename(port_file)
    server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])
