"""A batch of Redis writes applied by one Lua script: atomic like MULTI/EXEC, one round trip,
and one reply instead of one per command (per-reply parsing dominated the worker's time).
The whole batch travels as one MessagePack argument: redis-py's asyncio client packs every
argument in Python, which took a fifth of the worker's time with thousands of them per batch.

A batch can be guarded: it applies only while each guarded hash field still holds the value
the worker read, and then sets it to a new one (compare-and-set, used for partition positions),
and only while each required sorted-set member is still there (parked clicks: whoever takes one
out first applies it).

>>> batch = WriteBatch()
>>> batch.call("SET", "k", 1, "EX", 60)
>>> batch.call("LPUSH", "l", "a")
>>> batch.guard("offsets", "0", None, "12/1")
>>> batch.require("parked", "m")
>>> batch.call("ZINCRBY", "z", 0.1, "a")
>>> batch.args()
[1, 'offsets', '0', '', '12/1', 1, 'parked', 'm', 5, 'SET', 'k', 1, 'EX', 60, 3, 'LPUSH', 'l', 'a', 4, 'ZINCRBY', 'z', '0.1', 'a']
"""

from typing import Any

import msgpack
import numpy as np
import redis.asyncio as aioredis

from state.experiments import EXPERIMENT_ADD_LUA, SHOPPER_TTL_S
from state.pairs import PAIRS_LUA

# ARGV[1], unpacked: the number of guards g; g guards (key, field, expected value or '', new value); the number
# of required members r; r pairs (sorted set, member); then a flat list of commands: a count n,
# then the n words of one command, then the next count …
# The keys are inside the packed argument, not in KEYS: KEYS[1] is only the group's routing key,
# which names the hash slot (see keys.py), so on Redis Cluster every key a batch touches must
# share it — the handler builds one batch per key group.
_SCRIPT = (
    EXPERIMENT_ADD_LUA
    + PAIRS_LUA
    + """
local ARGV = cmsgpack.unpack(ARGV[1])
local g = tonumber(ARGV[1])
local after_guards = 2 + 4 * g
for at = 2, after_guards - 1, 4 do
  if (redis.call('HGET', ARGV[at], ARGV[at + 1]) or '') ~= ARGV[at + 2] then return 0 end
end
local r = tonumber(ARGV[after_guards])
local first = after_guards + 1 + 2 * r
for at = after_guards + 1, first - 1, 2 do
  if not redis.call('ZSCORE', ARGV[at], ARGV[at + 1]) then return 0 end
end
local i = first
local n = #ARGV
local skip = 0
local pairs_delta = 0
while i <= n do
  local count = tonumber(ARGV[i])
  local name = ARGV[i + 1]
  if skip > 0 then
    skip = skip - 1
  elseif name == '_once' then
    if redis.call('SADD', ARGV[i + 2], ARGV[i + 3]) == 0 then skip = tonumber(ARGV[i + 5]) end
    redis.call('EXPIRE', ARGV[i + 2], ARGV[i + 4])
  elseif name == '_experiment_add' then
    experiment_add(unpack(ARGV, i + 2, i + count))
  elseif name == '_interleave_win' then
    interleave_win(unpack(ARGV, i + 2, i + count))
  elseif name == '_pairs' then
    pairs_delta = pairs_delta + pairs_add(ARGV, i + 2, i + count)
  elseif name == '_pairs_bound' then
    pairs_bound(pairs_delta, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5])
    pairs_delta = 0
  else
    redis.call(unpack(ARGV, i + 1, i + count))
  end
  i = i + count + 1
end
for at = 2, after_guards - 1, 4 do
  redis.call('HSET', ARGV[at], ARGV[at + 1], ARGV[at + 3])
end
return 1
"""
)


_FLOATS = frozenset({float, np.float64})  # numpy's is a float too, and would travel as a Lua number


class WriteBatch:
    def __init__(self) -> None:
        self._guards: list[str] = []
        self._required: list[Any] = []
        self._args: list[Any] = []
        self._count = 0

    def call(self, *command: Any) -> None:
        self._count += 1
        self._args.append(len(command))
        # As redis-py would send them: a float's shortest exact decimal (a Lua number would be
        # rounded to 14 digits when the script hands it to a command). Most commands hold none:
        # looking for one at C speed first halves the cost of a call.
        if not _FLOATS.isdisjoint(map(type, command)):
            self._args.extend([repr(float(word)) if isinstance(word, float) else word for word in command])
        else:
            self._args.extend(command)

    def experiment_add(self, shopper_key: str, totals_key: str, variant: str, metric: str, amount: float) -> None:
        """Add ``amount`` to a shopper's ``metric`` in an experiment, and to the variant's sums
        (``state.experiments.EXPERIMENT_ADD_LUA``), in order with the other commands."""
        self.call("_experiment_add", shopper_key, totals_key, variant, metric, float(amount), SHOPPER_TTL_S)

    def once(self, key: str, member: str, ttl_s: int, commands: int) -> None:
        """The next ``commands`` commands apply only if ``member`` is new to the set ``key`` (kept ``ttl_s``)."""
        self.call("_once", key, member, ttl_s, commands)

    def interleave_win(self, list_key: str, totals_key: str, team: str, other: str, ttl_s: int) -> None:
        """One more choice for ``team`` on an interleaved list, and the list's outcome moved in the totals."""
        self.call("_interleave_win", list_key, totals_key, team, other, ttl_s, SHOPPER_TTL_S)

    def pairs(self, key: str, ledger: str, stamp: float, cap: int, members: dict[str, float]) -> None:
        """Grow the pair set ``key`` by each member's amount (positive), kept to ``cap`` members
        and listed in ``ledger`` at ``stamp`` (``state.pairs``)."""
        args = self._args
        args += (5 + 2 * len(members), "_pairs", key, ledger, repr(float(stamp)), cap)
        for member, amount in members.items():
            args += (member, repr(float(amount)))
        self._count += 1

    def pairs_bound(self, counter: str, ledger: str, limit: int, stale_before: float) -> None:
        """After this write's ``pairs``: the member count and the ledger's stale or surplus sets (``state.pairs``)."""
        self.call("_pairs_bound", counter, ledger, limit, repr(float(stale_before)))

    def guard(self, key: str, field: str, expected: str | None, new: str) -> None:
        """Apply only if ``key``'s ``field`` holds ``expected`` (None: absent), and set it to ``new``."""
        self._guards.extend([key, field, "" if expected is None else expected, new])

    def require(self, key: str, member: Any) -> None:
        """Apply only if ``member`` is still in the sorted set ``key``."""
        self._required.extend([key, member])

    def args(self) -> list[Any]:
        return [len(self._guards) // 4, *self._guards, len(self._required) // 2, *self._required, *self._args]

    def __len__(self) -> int:
        """Commands so far (guards and requirements not counted)."""
        return self._count

    def extend(self, other: "WriteBatch") -> None:
        """Append ``other``'s commands (not its guards) after these."""
        self._args.extend(other._args)
        self._count += other._count

    def __bool__(self) -> bool:
        return bool(self._args or self._guards or self._required)

    async def execute(self, client: aioredis.Redis, routing: str) -> bool:
        """Apply the batch in the slot of ``routing`` (a key of the batch's group); False when a
        guard no longer held (nothing was written)."""
        if not self:
            return True
        # use_bin_type=False: Redis's cmsgpack reads raw strings (binary-safe), not the bin type.
        return bool(await client.eval(_SCRIPT, 1, routing, msgpack.packb(self.args(), use_bin_type=False)))


# ARGV[1], unpacked: a flat list of read commands (a count n, then the n words of one command …);
# the reply: every command's reply, in order, packed with cmsgpack. One argument and one reply
# instead of thousands of each: the asyncio client packs and parses every one in Python.
_READ_SCRIPT = """
local A = cmsgpack.unpack(ARGV[1])
local out = {}
local i, n, k = 1, #A, 0
while i <= n do
  local count = A[i]
  k = k + 1
  out[k] = redis.call(unpack(A, i + 1, i + count))
  i = i + count + 1
end
return cmsgpack.pack(out)
"""


class ReadBatch:
    """Read commands run by one script, one reply for all (missing values come back as False).

    Read-only, so no atomicity is needed; one script is simply the cheapest way to send many.
    """

    def __init__(self) -> None:
        self._args: list[Any] = []
        self._count = 0

    def call(self, *command: Any) -> None:
        self._args.append(len(command))
        self._args.extend(command)
        self._count += 1

    async def execute(self, client: aioredis.Redis, routing: str) -> list[Any]:
        """Run the reads in the slot of ``routing``: every key read must share its hash tag."""
        if not self._count:
            return []
        raw = await client.eval(_READ_SCRIPT, 1, routing, msgpack.packb(self._args, use_bin_type=False))
        return msgpack.unpackb(raw, raw=True)


def as_hash(flat: list[bytes]) -> dict[bytes, bytes]:
    """A script's HGETALL reply (field, value, field, value …) as redis-py's dict."""
    it = iter(flat)
    return dict(zip(it, it, strict=True))
