"""Path rules (xenstore.txt, C is_valid_nodename)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.xenstore import paths
from xenvirtio.xenstore.wire import XsError


@pytest.mark.parametrize(
    "path",
    ["/", "/a", "/local/domain/3/device/vif/0", "/a-b_c@d/9", "/" + "x" * 2047],
)
def test_valid(path: str) -> None:
    assert paths.is_valid_path(path)


@pytest.mark.parametrize(
    "path",
    ["", "a", "/a/", "//", "/a//b", "/a b", "/a.b", "/é", "/" + "x" * 2048, "@introduceDomain"],
)
def test_invalid(path: str) -> None:
    assert not paths.is_valid_path(path)


def test_home_prefix_does_not_count() -> None:
    home = "/local/domain/12345/"
    assert paths.is_valid_path(home + "x" * 2048)
    assert not paths.is_valid_path(home + "x" * 2049)
    assert not paths.is_valid_path("/local/domain/123456/" + "x" * 2040)


def test_canonicalize() -> None:
    assert paths.canonicalize("device/vif", 3) == "/local/domain/3/device/vif"
    assert paths.canonicalize("/abs", 3) == "/abs"
    assert paths.canonicalize("@releaseDomain", 3) == "@releaseDomain"
    with pytest.raises(XsError) as err:
        paths.node_path("", 3)  # "/local/domain/3/" ends with a slash
    assert err.value.name == "EINVAL"


def test_tree_helpers() -> None:
    assert paths.parent("/a/b") == "/a"
    assert paths.parent("/a") == "/"
    assert paths.basename("/a/b") == "b"
    assert list(paths.ancestors("/a/b/c")) == ["/a/b", "/a", "/"]
    assert paths.components("/") == []
    assert paths.join("/", "a") == "/a"
    assert paths.is_child("/a/b", "/a") and paths.is_child("/a", "/a")
    assert not paths.is_child("/ab", "/a")
    assert paths.is_child("/anything", "/")
    assert paths.relative_to("/local/domain/1/x", "/local/domain/1") == "x"


names = st.text("abc-_@019", min_size=1, max_size=5)


@given(st.lists(names, min_size=1, max_size=6))
def test_parent_join_inverse(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert paths.is_valid_path(path)
    assert paths.join(paths.parent(path), paths.basename(path)) == path
