"""The crowd's pair sets — co-visitation (``co:``) and history pairs (``ch:``) — and their bounds.

Each product has a sorted set per kind: the products paired with it and how strongly. The
profiles worker grows them; the recommender reads their top members. Two bounds keep their
memory from growing with the catalogue times itself:

- **Per set, a SpaceSaving top-k** (Metwally, Agrawal and El Abbadi, 2005). A set holds at most
  ``cap`` members. A new member arriving at a full set takes the place of the weakest one and
  inherits its count, so a pair seen often enough always gets in and stays: any pair whose
  weight exceeds 1/``cap`` of the set's total is kept. (Trimming the weakest after each
  increment instead would evict every newcomer of a full set before it could add up.)
- **In all, a member budget per key group.** Every pair set is listed in a ledger (a sorted set
  scored by when it last grew), and a counter holds how many members all of them have. When a
  write takes the count over ``limit``, the sets that grew longest ago are dropped until it is
  under; sets that have not grown for the profile TTL are dropped too. So the ledger, not a TTL
  per set, forgets stale sets, and a write sets no expiry per set it touches.

A write aggregates its pairs first (one ``_pairs`` per set, the member's amounts summed), then
applies the bound once (``_pairs_bound``); both are operations of the write script
(``services.profiles.writes``). Amounts travel as text (a Lua number would be rounded to 14
digits when handed to Redis) and are positive, so an increment that returns the amount itself
added a new member.
"""

# pairs_add(ARGV, from, to): ARGV[from .. to] is (set key, ledger key, stamp, cap, member, amount,
# member, amount, …). Read in place, not unpacked: a popular product's set can take thousands of
# pairs in one write, more than Lua's unpack allows. Returns the change in members counted.
PAIRS_LUA = """
local function pairs_add(A, from, to)
  local key, ledger, stamp, cap = A[from], A[from + 1], A[from + 2], tonumber(A[from + 3])
  local card, delta = false, 0
  for j = from + 4, to, 2 do
    local member, amount = A[j], A[j + 1]
    if tonumber(redis.call('ZINCRBY', key, amount, member)) <= tonumber(amount) then
      card = card and card + 1 or redis.call('ZCARD', key)
      delta = delta + 1
      if card > cap + 1 then
        -- the cap was lowered since the set filled: the weakest go
        redis.call('ZREMRANGEBYRANK', key, 0, card - cap - 1)
        delta, card = delta - (card - cap), cap
      elseif card > cap then
        -- full: the newcomer takes the weakest other member's place and count
        local low = redis.call('ZRANGE', key, 0, 1, 'WITHSCORES')
        local at = (low[1] == member) and 3 or 1
        redis.call('ZREM', key, low[at])
        redis.call('ZINCRBY', key, low[at + 1], member)
        delta, card = delta - 1, cap
      end
    end
  end
  if redis.call('ZADD', ledger, stamp, key) == 1 then
    -- new to the ledger: none of its members were counted yet (a set from before the ledger
    -- also loses the expiry it was written with: the ledger forgets it when it goes stale)
    redis.call('PERSIST', key)
    return redis.call('ZCARD', key)
  end
  return delta
end

-- pairs_bound(members added by this write's pairs_add, counter key, ledger key, limit, stale
-- before): the count moves by the write's additions; sets that last grew before ``stale before``
-- go, then the longest unchanged ones while the count is over the limit (a bounded number a write,
-- so a lowered limit is reached over a few writes, not in one long script).
local function pairs_bound(delta, counter, ledger, limit, stale_before)
  local total = tonumber(redis.call('GET', counter) or '0') + delta
  local budget = 1000
  local stale = redis.call('ZRANGEBYSCORE', ledger, '-inf', '(' .. stale_before, 'LIMIT', 0, budget)
  for _, key in ipairs(stale) do
    total = total - redis.call('ZCARD', key)
    redis.call('DEL', key)
    redis.call('ZREM', ledger, key)
  end
  budget = budget - #stale
  while total > tonumber(limit) and budget > 0 do
    local gone = redis.call('ZPOPMIN', ledger)
    if #gone == 0 then total = 0 break end
    total = total - redis.call('ZCARD', gone[1])
    redis.call('DEL', gone[1])
    budget = budget - 1
  end
  redis.call('SET', counter, math.max(total, 0))
end
"""
