"""``python -m ecr_emulator --port N``: run the emulator in the foreground.

Prints one line ``ecr-emulator ready on http://HOST:PORT`` on stdout once it
accepts connections (with ``--port 0`` the system picks a free port and this
line tells which), then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from typing import Any

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import make_server

from .server import SSO_BEARER_ENVIRON, SSO_BEARER_HEADER, Emulator


class RequestHandler(MotoRequestHandler):
    """moto's handler, also keeping the IAM Identity Center portal's ``x-amz-sso_bearer_token``
    header, which Werkzeug's server drops (its name has an underscore) and which the portal's
    ``GetRoleCredentials`` needs (see ``Emulator._sso_role_credentials``)."""

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        token = self.headers.get(SSO_BEARER_HEADER)
        if token is not None:
            environ[SSO_BEARER_ENVIRON] = token
        return environ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ecr_emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port; 0 picks a free one (default 5000)")
    parser.add_argument(
        "--no-layer-check",
        action="store_true",
        help="accept image manifests whose config and layer blobs were never uploaded "
        "(ECR refuses them with LayersNotFoundException; useful for pushing bare manifests)",
    )
    parser.add_argument(
        "--pull-time-exclusion",
        action="append",
        default=[],
        metavar="ARN",
        help="an IAM principal on the pull-time update exclusion list from the start (repeatable): its reads "
        "do not update lastRecordedPullTime, as for the stack's function role. ECR starts with an empty list",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (test harnesses keep a pipe open, so the emulator dies with them)",
    )
    args = parser.parse_args(argv)

    try:
        if not ipaddress.ip_address(args.host).is_loopback:
            parser.error(f"--host {args.host} is not a loopback address; the emulator only listens on loopback")
    except ValueError:
        if args.host != "localhost":
            parser.error(f"--host {args.host} is not an IP address")

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    app = Emulator(check_layers=not args.no_layer_check, pull_time_exclusions=tuple(args.pull_time_exclusion))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=RequestHandler)

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    if args.exit_on_stdin_eof:

        def watch_stdin() -> None:
            while sys.stdin.buffer.read(1024):
                pass
            stop(0, None)

        threading.Thread(target=watch_stdin, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"ecr-emulator ready on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
