"""The per-credential budget: a sliding window of shares, exact at its edges, bounded in memory."""

from __future__ import annotations

import pytest

from signer.budget import BudgetSettings, EvidenceBudget
from signer.errors import SignerError

A, B = b"credential-a", b"credential-b"


def budget(limit: int = 3, window: float = 100.0, **kwargs: int) -> EvidenceBudget:
    return EvidenceBudget(BudgetSettings(limit, window), clock=lambda: 0.0, **kwargs)


def test_a_credential_gets_its_limit_then_nothing() -> None:
    spending = budget()

    assert [spending.spend(A, now) for now in (0, 1, 2, 3)] == [True, True, True, False]
    assert spending.remaining(A, 3) == 0


def test_credentials_are_counted_apart() -> None:
    spending = budget(limit=1)

    assert spending.spend(A, 0)
    assert spending.spend(B, 0)
    assert not spending.spend(A, 0)


def test_a_share_counts_for_exactly_one_window() -> None:
    spending = budget(limit=1, window=100.0)
    assert spending.spend(A, 0)

    assert not spending.spend(A, 99.9)
    assert spending.spend(A, 100.0)


def test_a_refusal_is_not_counted() -> None:
    spending = budget(limit=2, window=100.0)
    spending.spend(A, 0)
    spending.spend(A, 50)
    for now in range(51, 99):
        assert not spending.spend(A, now)

    assert spending.spend(A, 100)  # the share at 0 left the window; refusals never entered it


def test_memory_is_bounded_by_forgetting_the_least_recent_credential() -> None:
    spending = budget(limit=1, max_tracked=2)
    spending.spend(A, 0)
    spending.spend(B, 0)
    spending.spend(b"credential-c", 0)

    assert spending.remaining(A, 0) == 1
    assert spending.remaining(B, 0) == 0


def test_a_credential_whose_shares_left_the_window_is_forgotten() -> None:
    """Nothing of it counts any more, so remembering it costs memory and decides nothing."""
    spending = budget(limit=1, window=100.0)
    spending.spend(A, 0)
    spending.spend(B, 60)
    assert spending.tracked == 2

    assert spending.spend(b"credential-c", 100.0)  # A's share at 0 has left the window
    assert spending.tracked == 2
    assert spending.remaining(B, 100.0) == 0  # B's share at 60 still counts, and is still known


@pytest.mark.parametrize(("limit", "window"), [(0, 10.0), (-1, 10.0), (1, 0.0), (1, -5.0)])
def test_settings_check_themselves(limit: int, window: float) -> None:
    with pytest.raises(SignerError):
        BudgetSettings(limit, window)
