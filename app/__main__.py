"""`python -m app`: parse settings and serve with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from app.config import load_settings
from app.server import create_app
from app.stream.ice import check_addresses, parse_ice_servers


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(argv)
    try:  # fail here, with the flag's value, rather than inside the server's startup
        parse_ice_servers(settings.ice_servers)
        check_addresses(settings.ice_addresses)
    except ValueError as exc:
        sys.exit(f"python -m app: error: {exc}")
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        ws_max_size=64 * 1024,
        # The same loop and HTTP parser whatever is installed: the ray extra brings uvloop and
        # httptools, which uvicorn would otherwise pick up on its own.
        loop="asyncio",
        http="h11",
        # A health subscriber that never reads would otherwise hold shutdown forever.
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
