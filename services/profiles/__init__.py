"""Shopper profiles: a Faust app over `clicks`, with state in Redis and River learners."""
