"""The edges of a session's RTCPeerConnection: taking an offer, answering it, closing within a bound.

aiortc reports a bad offer with whatever its parser raised (ValueError, AssertionError,
KeyError...) and can fail to close a connection whose negotiation stopped half way;
here both become what the server can act on: an OfferError that says what to change
(400), and a close that always returns.
"""

from __future__ import annotations

import asyncio
import logging

from aiortc import RTCPeerConnection, RTCSessionDescription

from app.stream.ice import offered_addresses

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0


class OfferError(ValueError):
    """An offer that cannot become a session (400); the message says what to change."""


def _what(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


async def take_offer(pc: RTCPeerConnection, sdp: str) -> None:
    """Apply the client's offer (its tracks arrive through the `track` event meanwhile)."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    except Exception as exc:
        raise OfferError(f"malformed SDP offer ({_what(exc)}); send the SDP of an RTCPeerConnection offer") from None


async def answer_offer(pc: RTCPeerConnection, addresses: tuple[str, ...]) -> str:
    """The answer SDP, with host candidates on `addresses` (aioice's choice when empty)."""
    try:
        answer = await pc.createAnswer()
        with offered_addresses(addresses):
            await pc.setLocalDescription(answer)
    except Exception as exc:  # an offer aiortc accepted but cannot answer (e.g. no codec in common)
        raise OfferError(f"the offer cannot be answered ({_what(exc)}); offer VP8 or H.264 video") from None
    return str(pc.localDescription.sdp)


async def close_peer(pc: RTCPeerConnection, label: str) -> None:
    """Close `pc`, giving up after CLOSE_TIMEOUT_S; never raises, so the session still ends and frees its plugin."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await pc.close()
    except TimeoutError:
        logger.warning("session %s: peer connection did not close within %.0f s", label, CLOSE_TIMEOUT_S)
    except Exception:
        # Found by fuzzing mutated offers: a negotiation stopped half way can fail to close.
        logger.warning("session %s: the peer connection failed to close cleanly", label, exc_info=True)
