"""Learning to rank from a stream, measuring rankings, and the baselines they are measured against.

- ``pairwise``  — the online pairwise ranker (River) and the numpy scorer services rank with
- ``metrics``   — HR@k, NDCG@k, MRR, coverage and intra-list diversity, tallied over a stream
- ``item_model`` — an item-to-item model over whole shopper histories (EASE), counted online
- ``baselines`` — popularity, decayed popularity and item co-visitation, learned one event at a time
"""

from models.ranking.baselines import Baseline, CoVisitation, DecayedPopularity, Popularity
from models.ranking.item_model import CoOccurrence, ItemModel, ItemWeights, LowRankItemWeights, fit_item_model, merge_counts
from models.ranking.metrics import RankingTally, intra_list_diversity
from models.ranking.pairwise import LinearScorer, PairwiseRanker

__all__ = [
    "Baseline",
    "CoOccurrence",
    "CoVisitation",
    "DecayedPopularity",
    "ItemModel",
    "ItemWeights",
    "LinearScorer",
    "LowRankItemWeights",
    "PairwiseRanker",
    "Popularity",
    "RankingTally",
    "fit_item_model",
    "intra_list_diversity",
    "merge_counts",
]
