"""The batcher's linger: clients that post again after each answer are gathered into one batch
instead of alternating in halves; a lone client never waits."""

from __future__ import annotations

import asyncio
import time

from sepsiscope.service.batching import Batcher


def _clients(n_clients: int, rounds: int, linger: float):
    sizes, gathers = [], []

    def score(items):
        sizes.append(len(items))
        time.sleep(0.01)  # a model call
        return items

    async def main():
        b = Batcher(score, linger=linger)
        real = b._gather
        b._gather = lambda want: gathers.append(want) or real(want)

        async def client(i):
            for k in range(rounds):
                assert await b.submit((i, k)) == (i, k)
                await asyncio.sleep(0.002 * (1 + i % 3))  # the answer travels, the next request comes

        await asyncio.gather(*(client(i) for i in range(n_clients)))
        b.close()

    asyncio.run(main())
    return sizes, gathers


def test_clients_that_post_again_are_gathered_into_one_batch():
    halves, _ = _clients(8, 6, linger=0.0)
    whole, gathers = _clients(8, 6, linger=0.5)
    assert sum(halves) == sum(whole) == 48
    assert len(halves) > 6 and min(halves) < 8  # without lingering the clients split up
    assert whole == [8] * 6 and gathers         # with it: all eight at once, every time


def test_a_lone_client_never_waits():
    sizes, gathers = _clients(1, 5, linger=0.5)
    assert sizes == [1] * 5 and gathers == []
