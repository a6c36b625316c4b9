"""Live updates: one Redis subscription to the profiles worker's ``profile-updated`` channel,
fanned out to the Server-Sent Event streams of the shoppers concerned."""

import asyncio
import logging
from collections import defaultdict

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


class LiveUpdates:
    def __init__(self, client: aioredis.Redis, channel: str, max_streams: int = 1000) -> None:
        self._redis = client
        self._channel = channel
        self.max_streams = max_streams
        self._streams: dict[str, set[asyncio.Queue[None]]] = defaultdict(set)
        self.open = 0
        self.ready = asyncio.Event()

    def subscribe(self, user_id: str) -> asyncio.Queue[None] | None:
        """A queue that gets an item whenever ``user_id``'s profile changes; None when full."""
        if self.open >= self.max_streams:
            return None
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)  # changes coalesce: one pending is enough
        self._streams[user_id].add(queue)
        self.open += 1
        return queue

    def unsubscribe(self, user_id: str, queue: asyncio.Queue[None]) -> None:
        streams = self._streams.get(user_id)
        if streams and queue in streams:
            streams.discard(queue)
            self.open -= 1
            if not streams:
                del self._streams[user_id]

    def notify(self, user_id: str) -> None:
        for queue in self._streams.get(user_id, ()):
            if queue.empty():
                queue.put_nowait(None)

    async def run(self) -> None:
        """Listen until cancelled; reconnects when Redis goes away."""
        delay = 0.5
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self.ready.set()
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self.notify(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarts must not end live updates for good
                self.ready.clear()
                log.warning("live updates lost their Redis subscription; retrying", extra={"error": str(exc), "delay_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                try:
                    await asyncio.wait_for(pubsub.aclose(), timeout=2.0)
                except Exception:  # closing a broken connection may fail or hang too
                    pass
