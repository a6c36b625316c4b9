"""The recommender: candidates from Qdrant and Redis, ranked, diversified and explained."""
