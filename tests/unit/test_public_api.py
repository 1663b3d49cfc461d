"""The package's public names are deliberate: sorted, and each one importable."""

from __future__ import annotations

import cloudstate


def test_all_is_sorted_and_every_name_exists() -> None:
    """``__all__`` is sorted (diffs stay readable) and lists only real attributes."""
    assert list(cloudstate.__all__) == sorted(cloudstate.__all__)
    for name in cloudstate.__all__:
        assert hasattr(cloudstate, name), name
