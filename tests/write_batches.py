"""Running a worker's write script (``services.profiles.writes.WriteBatch``) from a synchronous test."""

import asyncio

import redis.asyncio as aioredis

from services.profiles.writes import WriteBatch


def execute(redis_url: str, batch: WriteBatch, routing: str) -> bool:
    """``batch`` applied on the Redis at ``redis_url`` with its own client, as the worker applies it."""

    async def run() -> bool:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await batch.execute(client, routing)
        finally:
            await client.aclose()

    return asyncio.run(run())
