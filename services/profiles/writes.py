"""A batch of Redis writes applied by one Lua script: atomic like MULTI/EXEC, one round trip,
and one reply instead of one per command (per-reply parsing dominated the worker's time).

>>> batch = WriteBatch()
>>> batch.call("SET", "k", 1, "EX", 60)
>>> batch.call("LPUSH", "l", "a")
>>> batch.args()
[5, 'SET', 'k', 1, 'EX', 60, 3, 'LPUSH', 'l', 'a']
"""

from typing import Any

import redis.asyncio as aioredis

# ARGV is a flat list: a count n, then the n words of one command, then the next count …
# Keys are not passed as KEYS: fine on a single Redis or a replica set, not on Redis Cluster.
_SCRIPT = """
local i = 1
local n = #ARGV
while i <= n do
  local count = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + count))
  i = i + count + 1
end
return n
"""


class WriteBatch:
    def __init__(self) -> None:
        self._args: list[Any] = []

    def call(self, *command: Any) -> None:
        self._args.append(len(command))
        self._args.extend(command)

    def args(self) -> list[Any]:
        return list(self._args)

    def __bool__(self) -> bool:
        return bool(self._args)

    async def execute(self, client: aioredis.Redis) -> None:
        if self._args:
            await client.eval(_SCRIPT, 0, *self._args)
