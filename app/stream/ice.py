"""ICE configuration: STUN/TURN servers from URLs, and the host addresses offered as candidates.

aioice gathers host candidates from every interface and always leaves out
127.0.0.1 (`aioice.ice.get_host_addresses`). `--ice-address` must be able to pick
the addresses instead (127.0.0.1 keeps all test and benchmark traffic on this
machine), and aioice has no option for it, so its address discovery is wrapped
once: inside `offered_addresses(...)` it answers the chosen addresses, everywhere
else it is the original function. The choice lives in a ContextVar, so it holds
only for the task that gathers (the server's offer handler, or a test's client
peer) and never leaks into another peer connection of the same process.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from urllib.parse import unquote, urlsplit

import aioice.ice
from aiortc import RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri

_chosen: ContextVar[tuple[str, ...] | None] = ContextVar("livetrack_ice_addresses", default=None)
_original: Callable[[bool, bool], list[str]] | None = None


def parse_ice_server(url: str) -> RTCIceServer:
    """`stun:host[:port]`, `turn://user:pass@host:port[?transport=tcp]` (either spelling) to an RTCIceServer.

    Raises ValueError naming the URL when it is not a STUN/TURN URL aiortc can use.
    """
    parts = urlsplit(url.strip() if "://" in url else url.strip().replace(":", "://", 1))
    scheme = parts.scheme.lower()
    if scheme not in ("stun", "stuns", "turn", "turns") or not parts.hostname:
        raise ValueError(f"ICE server {url!r} is not a stun:, stuns:, turn: or turns: URL with a host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"ICE server {url!r} has an invalid port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    plain = f"{scheme}:{host}" + (f":{port}" if port else "") + (f"?{parts.query}" if parts.query else "")
    try:
        parse_stun_turn_uri(plain)
    except ValueError as exc:
        raise ValueError(f"ICE server {url!r} is malformed ({exc})") from None
    username = unquote(parts.username) if parts.username else None
    credential = unquote(parts.password) if parts.password else None
    if scheme.startswith("turn") and (username is None or credential is None):
        raise ValueError(f"TURN server {url!r} needs credentials: turn://user:pass@host:port")
    return RTCIceServer(urls=plain, username=username, credential=credential)


def parse_ice_servers(urls: Iterable[str]) -> list[RTCIceServer]:
    """Always a list, empty by default: aiortc would fall back to a public STUN server on None."""
    return [parse_ice_server(url) for url in urls]


def check_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """The addresses as given; ValueError naming the first one that is not an IP address."""
    checked = []
    for address in addresses:
        try:
            checked.append(str(ipaddress.ip_address(address.strip())))
        except ValueError:
            raise ValueError(f"--ice-address {address!r} is not an IPv4 or IPv6 address") from None
    return tuple(checked)


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    assert _original is not None
    chosen = _chosen.get()
    if chosen is None:
        return _original(use_ipv4, use_ipv6)
    return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]


def _install() -> None:
    global _original
    if _original is None:
        _original = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _host_addresses


@contextlib.contextmanager
def offered_addresses(addresses: tuple[str, ...]) -> Iterator[None]:
    """Host candidates gathered in this context (e.g. `setLocalDescription`) use `addresses`.

    An empty tuple keeps aioice's default: every interface but loopback.
    """
    if not addresses:
        yield
        return
    _install()
    token = _chosen.set(addresses)
    try:
        yield
    finally:
        _chosen.reset(token)


def sdp_candidates(sdp: str) -> list[str]:
    """The ICE candidates of an SDP as `address:port protocol type`, for the log."""
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) >= 8:
                found.append(f"{parts[4]}:{parts[5]} {parts[2].lower()} {parts[7]}")
    return found


def connect_failure_reason(what: str, offered: list[str]) -> str:
    """Why a session's video never connected, and what to change (DESIGN 3.5 reason shape)."""
    offer = f"the server offered {', '.join(offered)}" if offered else "the server offered no address it could bind"
    return (
        f"IceConnectionError: {what}; {offer} "
        "(the browser must reach one of these over UDP: start the server with --ice-address set to an address "
        "the browser can reach, add a TURN server with --ice-server turn://user:pass@host:port that both can "
        "reach, or open the network or firewall between them to UDP)"
    )
