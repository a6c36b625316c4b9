"""The profile arithmetic: toward what is clicked, away from what is dismissed, fading with time."""

import numpy as np
import pytest

from services.profiles.profile import (
    ClickParams,
    Profile,
    apply,
    decay,
    forward_decay_score,
)

PARAMS = ClickParams(half_life_s=100.0)
A, B = np.array([1.0, 0.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32)


def _cos(u, v):
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_moves_toward_clicked_items_more_for_stronger_signals():
    p = apply(Profile.empty(2), PARAMS, vector=A, category="a", kind="view", at=0)
    p = apply(p, PARAMS, vector=B, category="b", kind="purchase", at=0)
    assert _cos(p.vector, B) > _cos(p.vector, A)
    assert p.categories == {"a": 1.0, "b": 8.0} and p.counts == {"view": 1, "purchase": 1}


def test_old_signals_decay_with_the_injected_clock():
    p = apply(Profile.empty(2), PARAMS, vector=A, category="a", kind="click", at=0)
    later = apply(p, PARAMS, vector=B, category="b", kind="click", at=100)  # one half-life on
    assert later.vector.tolist() == pytest.approx([1.0, 2.0])
    assert later.categories == pytest.approx({"a": 1.0, "b": 2.0})
    assert decay(PARAMS, 300) == pytest.approx(0.125)


def test_dismiss_pushes_away_and_late_events_count_less():
    p = apply(Profile.empty(2), PARAMS, vector=A, category="a", kind="click", at=0)
    p = apply(p, PARAMS, vector=A, category="a", kind="dismiss", at=0)
    assert p.vector.tolist() == pytest.approx([-1.0, 0.0])
    q = apply(Profile.empty(2), PARAMS, vector=A, category="a", kind="click", at=100)
    q = apply(q, PARAMS, vector=B, category="b", kind="click", at=0)  # arrives late
    assert q.updated_at == 100 and q.vector.tolist() == pytest.approx([2.0, 1.0])


def test_forward_decay_ranks_like_decayed_sums():
    old = forward_decay_score(PARAMS, 8.0, at=1.7e9, epoch=1.7e9)
    new = forward_decay_score(PARAMS, 1.0, at=1.7e9 + 400, epoch=1.7e9)  # four half-lives later
    assert new / old == pytest.approx(2.0)
