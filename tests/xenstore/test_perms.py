"""Permission strings and the access rules of C xenstored's perm_for_conn."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.xenstore.perms import (
    Access,
    Caller,
    Perm,
    PermKind,
    access_for,
    allows,
    format_perms,
    parse_perms,
    with_owner,
    without_domain,
)
from xenvirtio.xenstore.wire import XsError

perm = st.builds(Perm, st.integers(0, 0xFFFF), st.sampled_from(PermKind))


@given(st.lists(perm, min_size=1, max_size=6))
def test_roundtrip(perms: list[Perm]) -> None:
    assert parse_perms(format_perms(perms)) == tuple(perms)


@pytest.mark.parametrize("bad", [[], ["x1"], ["r"], ["r-1"], ["r1a"], ["b65536"], ["r 1"], [""]])
def test_parse_errors(bad: list[str]) -> None:
    with pytest.raises(XsError) as err:
        parse_perms(bad)
    assert err.value.name == "EINVAL"


def test_owner_and_default() -> None:
    perms = parse_perms(["n1", "r2", "w3", "b4"])
    assert access_for(Caller(1), perms) == Access.READ | Access.WRITE | Access.OWNER
    assert access_for(Caller(2), perms) == Access.READ
    assert access_for(Caller(3), perms) == Access.WRITE
    assert access_for(Caller(4), perms) == Access.READ | Access.WRITE
    assert access_for(Caller(5), perms) == Access.NONE  # the owner entry is the default
    assert access_for(Caller(5), parse_perms(["r1"])) == Access.READ


def test_privileged_bypasses() -> None:
    assert allows(Caller(0, privileged=True), parse_perms(["n7"]), Access.WRITE | Access.OWNER)


def test_target_acts_as_its_target() -> None:
    perms = parse_perms(["n5", "r6"])
    stubdom = Caller(9, target=5)
    assert allows(stubdom, perms, Access.WRITE | Access.OWNER)  # owner is its target
    assert access_for(Caller(9, target=6), perms) == Access.READ  # target's entry applies
    assert access_for(Caller(9), perms) == Access.NONE


def test_first_matching_entry_wins() -> None:
    assert access_for(Caller(2), parse_perms(["n0", "r2", "w2"])) == Access.READ


def test_owner_helpers() -> None:
    perms = parse_perms(["r0", "b3", "w4"])
    assert format_perms(with_owner(perms, 3)) == ["r3", "b3", "w4"]
    assert format_perms(without_domain(perms, 3)) == ["r0", "w4"]
    assert format_perms(without_domain(parse_perms(["b3", "r4"]), 3)) == ["b0", "r4"]
