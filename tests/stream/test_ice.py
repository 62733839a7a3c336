"""ICE settings: --ice-server URLs and the host addresses offered as candidates (DESIGN 4.5)."""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest

from app.stream.ice import check_addresses, offered_addresses, parse_ice_server, parse_ice_servers


def test_turn_url_with_credentials_becomes_an_ice_server_with_username_and_credential() -> None:
    server = parse_ice_server("turn://alice:s%40cret@turn.example.org:3478?transport=tcp")
    assert server.urls == "turn:turn.example.org:3478?transport=tcp"
    assert (server.username, server.credential) == ("alice", "s@cret")


def test_plain_webrtc_spellings_are_accepted() -> None:
    assert parse_ice_server("stun:stun.example.org:19302").urls == "stun:stun.example.org:19302"
    assert parse_ice_server("turns:bob:pw@turn.example.org").urls == "turns:turn.example.org"


def test_no_ice_servers_is_an_empty_list_not_aiortcs_public_default() -> None:
    assert parse_ice_servers(()) == []


@pytest.mark.parametrize(
    "url",
    ["http://example.org", "turn://turn.example.org:3478", "stun:", "stun://host:notaport", "stun:host?transport=udp"],
)
def test_bad_ice_server_url_raises_naming_it(url: str) -> None:
    with pytest.raises(ValueError, match="ICE server|TURN server") as error:
        parse_ice_server(url)
    assert url in str(error.value)


def test_ice_addresses_must_be_ip_addresses() -> None:
    assert check_addresses(["127.0.0.1", "::1"]) == ("127.0.0.1", "::1")
    with pytest.raises(ValueError, match="'localhost'"):
        check_addresses(["localhost"])


def test_offered_addresses_apply_only_inside_the_context() -> None:
    with offered_addresses(("127.0.0.1", "::1")):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    # Outside, aioice's own discovery: every interface, loopback left out.
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


async def test_offered_addresses_do_not_leak_into_other_tasks() -> None:
    seen: list[list[str]] = []

    async def other() -> None:
        seen.append(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False))

    task = asyncio.create_task(other())  # created outside the context: its own copy of the context
    with offered_addresses(("127.0.0.1",)):
        await task
    assert "127.0.0.1" not in seen[0]
