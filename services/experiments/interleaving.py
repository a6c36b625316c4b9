"""Team-draft interleaving (Radlinski, Kurup & Joachims, 2008): two rankings merged into one
list, each product credited to the ranking that placed it.

Each round, the team with fewer picks so far chooses next (a coin decides a tie) and takes its
best product not yet in the list. A shopper who prefers one ranking's products clicks its
team's more often; comparing the two within the same list removes the differences between
shoppers that an A/B test has to average away, which is why it needs much less traffic.

>>> import random
>>> merged, teams = team_draft([1, 2, 3, 4], [3, 1, 5, 6], 4, random.Random(0), ("a", "b"))
>>> len(merged), sorted(set(merged)) == sorted(merged), teams.count("a"), teams.count("b")
(4, True, 2, 2)
>>> team_draft([1, 2], [1, 2], 4, random.Random(0), ("a", "b"))[0]
[1, 2]
"""

import random


def team_draft(first: list[int], second: list[int], k: int, rng: random.Random, names: tuple[str, str]) -> tuple[list[int], list[str]]:
    """(the merged list of at most ``k``, and the team of each place)."""
    merged: list[int] = []
    teams: list[str] = []
    taken: set[int] = set()
    picks = [0, 0]
    heads = [0, 0]
    rankings = (first, second)
    while len(merged) < k:
        for side in (0, 1):
            while heads[side] < len(rankings[side]) and rankings[side][heads[side]] in taken:
                heads[side] += 1
        left = [heads[side] < len(rankings[side]) for side in (0, 1)]
        if not any(left):
            break
        side = 0 if picks[0] < picks[1] else 1 if picks[1] < picks[0] else rng.randrange(2)
        if not left[side]:
            side = 1 - side
        item = rankings[side][heads[side]]
        merged.append(item)
        teams.append(names[side])
        taken.add(item)
        picks[side] += 1
    return merged, teams
