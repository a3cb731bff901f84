"""Hostile servers: each dialogue ends within its timeouts with one of our errors.

Tarpits, replies that never end, endless capability lines, overlong lines, binary
garbage, resets; and a property test that feeds random bytes as every reply.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner import starttls
from scanner.errors import ProtocolError, ResetError, ScanError, ScanTimeout
from scanner.starttls import DialogueOptions, PlaintextFacts
from tests.integration.starttls_servers import Peer, connect, serve

DIALOGUES = ("smtp", "imap", "pop3")
SHORT = DialogueOptions(timeout=0.3, greeting_timeout=0.3)
OPTS = DialogueOptions(timeout=5.0)

GREETING = {"smtp": "220 mail.test ESMTP", "imap": "* OK ready", "pop3": "+OK ready"}
# The first line of the capability reply, and one more line of it.
CAPS_START = {"smtp": "250-mail.test", "imap": "* CAPABILITY IMAP4rev1", "pop3": "+OK"}
CAPS_MORE = {"smtp": "250-PIPELINING", "imap": "* OK [ALERT] more", "pop3": "TOP"}

pytestmark = pytest.mark.parametrize("dialogue", DIALOGUES)


async def test_tarpit_without_greeting_times_out(dialogue: str) -> None:
    async def handler(_peer: Peer) -> None:
        await asyncio.sleep(3600)

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ScanTimeout) as err:
            await starttls.read_capabilities(dialogue, reader, writer, SHORT)

    assert err.value.phase == "greeting"


async def test_close_without_greeting_is_a_reset(dialogue: str) -> None:
    async def handler(_peer: Peer) -> None:
        return

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ResetError) as err:
            await starttls.read_capabilities(dialogue, reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_reply_that_never_ends_times_out(dialogue: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.send(GREETING[dialogue])
        await peer.recv_line()
        await peer.send(CAPS_START[dialogue], CAPS_MORE[dialogue])
        await asyncio.sleep(3600)

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ScanTimeout) as err:
            await starttls.read_capabilities(dialogue, reader, writer, SHORT)

    assert err.value.phase == "greeting"


async def test_endless_capability_lines_hit_the_line_limit(dialogue: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.send(GREETING[dialogue])
        await peer.recv_line()
        await peer.send(CAPS_START[dialogue])
        for _ in range(1000):  # far more than the client takes; it hangs up first
            await peer.send(*[CAPS_MORE[dialogue]] * 100)

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError) as err:
            await starttls.read_capabilities(dialogue, reader, writer, OPTS)

    assert err.value.phase == "greeting"
    assert "256 lines" in err.value.message


@pytest.mark.parametrize(
    "tail",
    [b"x" * 9000 + b"\r\n", b"x" * 200_000],
    ids=["over-max-line-bytes", "over-reader-limit-without-newline"],
)
async def test_overlong_greeting_line(dialogue: str, tail: bytes) -> None:
    async def handler(peer: Peer) -> None:
        await peer.send_raw(GREETING[dialogue].encode() + tail)
        await asyncio.sleep(3600)

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError) as err:
            await starttls.read_capabilities(dialogue, reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_binary_garbage_greeting(dialogue: str) -> None:
    # A TLS alert record, as from a server that expects implicit TLS, then a newline
    async def handler(peer: Peer) -> None:
        await peer.send_raw(b"\x15\x03\x01\x00\x02\x02\x46\r\n")
        await asyncio.sleep(3600)

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError) as err:
            await starttls.read_capabilities(dialogue, reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_control_bytes_inside_a_valid_looking_line(dialogue: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.send_raw(GREETING[dialogue].encode() + b" \x00\x01\x02\r\n")
        await asyncio.sleep(3600)

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError):
            await starttls.read_capabilities(dialogue, reader, writer, OPTS)


async def test_reset_after_greeting(dialogue: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.send(GREETING[dialogue])
        await peer.recv_line()
        peer.writer.transport.abort()

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ResetError) as err:
            await starttls.read_capabilities(dialogue, reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_close_in_the_middle_of_a_line(dialogue: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.send_raw(GREETING[dialogue].encode()[:4])

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ResetError):
            await starttls.read_capabilities(dialogue, reader, writer, OPTS)


async def test_cancellation_is_not_swallowed(dialogue: str) -> None:
    entered = asyncio.Event()

    async def handler(_peer: Peer) -> None:
        entered.set()
        await asyncio.sleep(3600)

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        task = asyncio.create_task(starttls.read_capabilities(dialogue, reader, writer, OPTS))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- random bytes as every reply ------------------------------------------------------

_PREFIXES = [
    b"",
    b"220 ",
    b"250-",
    b"421 ",
    b"* OK ",
    b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ",
    b"* BYE ",
    b"a1 OK ",
    b"+OK ",
    b"-ERR ",
    b"+ ",
    b"{5}",
]
_random_reply = st.builds(
    lambda prefix, tail: prefix + tail, st.sampled_from(_PREFIXES), st.binary(max_size=120)
)

# Well-formed conversations (towards STARTTLS, or towards the login check) that the
# strategy below keeps, splices random bytes into, replaces or cuts short, step by step.
_SCRIPTS: dict[str, list[list[bytes]]] = {
    "smtp": [
        [b"220 mx ESMTP\r\n", b"250-mx\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n", b"220 go\r\n"],
        [
            b"220-mx\r\n220 ESMTP\r\n",
            b"250-mx\r\n250 AUTH LOGIN\r\n",
            b"334 VXNlcg==\r\n",
            b"334 UGFzcw==\r\n",
            b"535 5.7.8 failed\r\n",
        ],
        [b"220 mx\r\n", b"502 no\r\n", b"250 mx\r\n", b"538 5.7.11 Encryption required\r\n"],
    ],
    "imap": [
        [b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n", b"a2 OK begin\r\n"],
        [b"* OK hi\r\n", b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK\r\n", b"a4 NO fail\r\n"],
        [
            b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=PLAIN] hi\r\n",
            b"+ \r\n",
            b"* BAD [ALERT] x\r\na4 NO [PRIVACYREQUIRED] no\r\n",
        ],
    ],
    "pop3": [
        [b"+OK hi <1.2@mx>\r\n", b"+OK\r\nSTLS\r\nUSER\r\n.\r\n", b"+OK go\r\n"],
        [b"+OK hi\r\n", b"+OK\r\nUSER\r\n.\r\n", b"+OK\r\n", b"-ERR [AUTH] failed\r\n"],
        [b"+OK hi\r\n", b"-ERR no CAPA\r\n", b"-ERR [AUTH] Plaintext disallowed\r\n"],
    ],
}


@st.composite
def _conversations(draw: st.DrawFn, dialogue: str) -> list[bytes]:
    replies: list[bytes] = []
    for reply in draw(st.sampled_from(_SCRIPTS[dialogue])):
        how = draw(st.sampled_from(["keep", "keep", "keep", "splice", "replace", "cut"]))
        if how == "keep":
            replies.append(reply)
        elif how == "splice":
            at = draw(st.integers(0, len(reply)))
            replies.append(reply[:at] + draw(st.binary(min_size=1, max_size=40)) + reply[at:])
        elif how == "replace":
            replies.append(draw(_random_reply))
        else:
            replies.append(reply[: draw(st.integers(0, len(reply) - 1))])
            break
    return replies


async def _random_dialogue(dialogue: str, replies: list[bytes], hang: bool) -> object:
    """Serve ``replies`` (one up front, one per client line), then hang or close."""

    async def handler(peer: Peer) -> None:
        for reply in replies:
            await peer.send_raw(reply)
            if await peer.recv_line() is None:
                return
        if hang:
            await asyncio.sleep(3600)

    opts = DialogueOptions(timeout=0.1, max_line_bytes=100, max_reply_lines=8)
    async with serve(handler) as addr, connect(addr) as (reader, writer):
        # Bounds the test only: every step has its own 0.1 s timeout.
        async with asyncio.timeout(30):
            try:
                facts = await starttls.read_capabilities(dialogue, reader, writer, opts)
                if facts.starttls_offered:
                    await starttls.start_tls(dialogue, reader, writer, opts, facts)
                    return facts
                return await starttls.try_plaintext_login(dialogue, reader, writer, opts, facts)
            except ScanError as exc:
                return exc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), hang=st.sampled_from([False, False, False, True]))
def test_random_replies_end_in_our_errors(dialogue: str, data: st.DataObject, hang: bool) -> None:
    replies = data.draw(_conversations(dialogue))
    outcome = asyncio.run(_random_dialogue(dialogue, replies, hang))
    if isinstance(outcome, ScanError):
        assert outcome.phase in ("greeting", "starttls", "auth")
    else:
        assert isinstance(outcome, PlaintextFacts) or outcome in ("accepted", "refused")
