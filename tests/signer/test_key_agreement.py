"""Which keys the coordinator adopts, in memory: at least t signers reporting the same package, t
being the larger of the package's threshold and the deployment's."""

from __future__ import annotations

import pytest

from signer.frost import trusted_dealer_keygen
from signer.frost.encoding import encode_public_key_package
from signer.key_agreement import (
    THRESHOLD_BELOW_DEPLOYMENT,
    Ignored,
    KeyAgreementError,
    adopt,
    readable_reports,
)
from signer.token import kid_for


def package(t: int, n: int, secret: int | None = None) -> tuple[str, bytes]:
    _, made, _ = trusted_dealer_keygen(t, n, secret_key=secret)
    return kid_for(made.group_public_key), encode_public_key_package(made)


def test_a_package_t_signers_report_is_adopted() -> None:
    kid, encoded = package(2, 3)
    adoption = adopt({1: {kid: encoded}, 2: {kid: encoded}, 3: {}}, {}, {}, threshold=2)
    assert adoption.encoded == {kid: encoded}
    assert adoption.newly_adopted == {kid: 2}
    assert adoption.ignored == ()


def test_a_package_fewer_than_t_report_is_ignored_and_its_reporters_named() -> None:
    kid, encoded = package(2, 3)
    own, own_encoded = package(2, 3)
    adoption = adopt(
        {1: {kid: encoded}, 2: {kid: encoded}, 3: {kid: encoded, own: own_encoded}},
        {},
        {},
        threshold=2,
    )
    assert list(adoption.encoded) == [kid]
    assert adoption.ignored == (Ignored(own, (3,), 2, 2),)


def test_nothing_adopted_is_an_error_naming_counts_and_signers() -> None:
    kid, encoded = package(3, 3)
    with pytest.raises(KeyAgreementError) as caught:
        adopt(
            {1: {kid: encoded}, 2: {kid: encoded}, 3: {}},
            {},
            {3: "unavailable: down"},
            threshold=2,
        )
    assert str(caught.value) == (
        "no group key is reported identically by as many signers as it needs: "
        f"{kid} reported by 2 signer(s) [1, 2], needs 3 (unreachable: signer 3: unavailable: down)"
    )


def test_two_packages_of_one_key_the_one_more_signers_report_wins() -> None:
    kid, first = package(2, 5, secret=4711)
    same_kid, second = package(2, 5, secret=4711)  # a refresh half done
    assert same_kid == kid
    assert first != second
    reports = {i: {kid: first if i <= 3 else second} for i in (1, 2, 3, 4, 5)}
    adoption = adopt(reports, {}, {}, threshold=2)
    assert adoption.encoded == {kid: first}
    assert adoption.differing == {kid: (4, 5)}


def test_an_adopted_key_stays_while_its_signers_cannot_be_reached() -> None:
    kid, encoded = package(2, 3)
    other, other_encoded = package(2, 3)
    adoption = adopt(
        {1: {other: other_encoded}, 2: {other: other_encoded}}, {kid: encoded}, {}, threshold=2
    )
    assert adoption.encoded == {kid: encoded, other: other_encoded}
    assert adoption.newly_adopted == {other: 2}


def test_only_a_signers_own_well_formed_packages_count() -> None:
    kid, encoded = package(2, 3)
    two_kid, two_signers = package(2, 2)  # participants 1 and 2 only
    other_kid, _ = package(2, 3)
    reports = [(kid, encoded), (other_kid, encoded), ("x", b"garbage"), (two_kid, two_signers)]
    reported, problems = readable_reports(3, reports)
    assert reported == {kid: encoded}
    assert problems[0] == f"key {other_kid!r} with the package of another key, {kid}"
    assert problems[1].startswith("an unreadable key package")
    assert problems[2] == f"key {two_kid} with a package in which it holds no share"


def test_a_package_claiming_a_lower_threshold_than_the_deployment_is_ignored() -> None:
    """A 3-of-5 deployment: signers 1 and 2 collude and deal themselves a 2-of-2 key. Counted
    against its own threshold (2) their two reports would have it adopted; the deployment's t (3)
    refuses it. The honest 3-of-5 package reported by 3 signers is adopted."""
    honest, honest_encoded = package(3, 5)
    fake, fake_encoded = package(2, 2)  # participants 1 and 2 only
    reports = {
        1: {honest: honest_encoded, fake: fake_encoded},
        2: {honest: honest_encoded, fake: fake_encoded},
        3: {honest: honest_encoded},
        4: {},
        5: {},
    }
    adoption = adopt(reports, {}, {}, threshold=3)
    assert adoption.encoded == {honest: honest_encoded}
    assert adoption.newly_adopted == {honest: 3}
    assert adoption.ignored == (Ignored(fake, (1, 2), 3, 2, THRESHOLD_BELOW_DEPLOYMENT),)


def test_a_package_below_the_deployment_threshold_is_refused_however_many_report_it() -> None:
    """A 2-of-5 package every signer of a 3-of-5 deployment reports: any two of them could sign
    with it, fewer than the deployment promises."""
    low, low_encoded = package(2, 5)
    reports = {i: {low: low_encoded} for i in (1, 2, 3, 4, 5)}
    with pytest.raises(KeyAgreementError) as caught:
        adopt(reports, {}, {}, threshold=3)
    assert caught.value.refused == {low: 2}
    assert str(caught.value) == (
        "no group key is reported identically by as many signers as it needs: "
        f"{low} reported by 5 signer(s) [1, 2, 3, 4, 5], refused: its threshold 2 is below the "
        "deployment's 3"
    )


def test_a_package_above_the_deployment_threshold_needs_its_own_threshold_of_signers() -> None:
    """A 3-of-3 key in a deployment of t = 2 (a reshare raised it): two reports are not enough,
    three are."""
    kid, encoded = package(3, 3)
    two = {1: {kid: encoded}, 2: {kid: encoded}, 3: {}}
    with pytest.raises(KeyAgreementError) as caught:
        adopt(two, {}, {}, threshold=2)
    assert caught.value.needed == {kid: 3}
    adoption = adopt({**two, 3: {kid: encoded}}, {}, {}, threshold=2)
    assert adoption.encoded == {kid: encoded}
