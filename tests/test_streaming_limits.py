"""The streaming service's limits without Ray: the session table (an atomic limit, idle
expiry), the prompt size limit and the token check (issue 24). The same code runs in both
implementations; tests/test_streaming_service.py checks them through the real services."""

from __future__ import annotations

import asyncio

import pytest

from helpers.streaming.api import (
    PromptTooLarge,
    SessionTable,
    _presented_token,
    _read_request,
    _token_problem,
    new_token,
)


def test_a_burst_of_reservations_gets_exactly_max_sessions() -> None:
    async def burst() -> tuple[list[str], list[str]]:
        table = SessionTable(max_sessions=5, idle_timeout_s=600)

        async def init() -> str:  # as a backend does: reserve, then start the session (awaits)
            session_id = table.reserve()
            await asyncio.sleep(0.01)
            return session_id

        results = await asyncio.gather(*(init() for _ in range(50)), return_exceptions=True)
        return (
            [r for r in results if isinstance(r, str)],
            [str(r) for r in results if isinstance(r, OverflowError)],
        )

    opened, refused = asyncio.run(burst())
    assert len(opened) == 5 and len(set(opened)) == 5 and len(refused) == 45
    assert "5 sessions are open, the most allowed: delete one first" in refused[0]


def test_idle_sessions_are_listed_unless_a_request_is_in_progress() -> None:
    table = SessionTable(max_sessions=3, idle_timeout_s=10)
    quiet, streaming = table.reserve(), table.reserve()
    table.begin(streaming)
    later = table._last[quiet] + 11
    assert table.idle(now=later) == [quiet]
    table.end(streaming)  # its idle clock starts again now
    ended = table._last[streaming]
    assert streaming not in table.idle(now=ended + 9) and streaming in table.idle(now=ended + 10)
    table.release(quiet)
    assert len(table) == 1 and table.reserve() and len(table) == 2
    assert 0.25 <= table.check_interval_s() <= 30


def test_expire_forever_deletes_idle_sessions() -> None:
    async def scenario() -> list[str]:
        table = SessionTable(max_sessions=3, idle_timeout_s=0.3)
        deleted: list[str] = []
        session = table.reserve()

        async def delete(session_id: str) -> None:
            deleted.append(session_id)
            table.release(session_id)

        task = asyncio.ensure_future(table.expire_forever(delete))
        await asyncio.sleep(1.0)
        task.cancel()
        return [session, *deleted]

    session, *deleted = asyncio.run(scenario())
    assert deleted == [session]


def test_a_prompt_over_the_limit_is_refused_before_anything_runs() -> None:
    assert _read_request('{"prompt": "abc", "max_tokens": 2}', 4, 8, max_prompt_chars=3) == (
        "abc",
        2,
    )
    with pytest.raises(PromptTooLarge, match="the prompt has 4 characters; at most 3"):
        _read_request('{"prompt": "abcd"}', 4, 8, max_prompt_chars=3)
    with pytest.raises(PromptTooLarge, match="a prompt may have at most 3"):
        _read_request("x" * 10_000_000, 4, 8, max_prompt_chars=3)  # not even parsed


def test_the_token_check_says_what_is_missing() -> None:
    token = new_token()
    assert len(token) >= 32 and token != new_token()
    assert _presented_token(f"Bearer {token}", None) == token
    assert _presented_token("Basic abc", "q") is None
    assert _presented_token(None, "q") == "q"
    assert "Authorization: Bearer TOKEN" in _token_problem(None, token)
    assert "wrong token" in _token_problem("nope", token)
    assert _token_problem(token, token) is None
