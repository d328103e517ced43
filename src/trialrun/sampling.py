"""Seeded, stratified samples of items: which positions to keep, the same on any machine.

`allocate` splits N over strata: proportionally with largest-remainder rounding (Hamilton's
method; ties go to the stratum that sorts first), or equally, where a stratum smaller
than its share gives every item and the rest is shared by the others. `draw` then picks
each stratum's items with numpy's default_rng(seed): the strata in sorted order, each
stratum's items sorted by id, so the draw depends on the items and the seed only, not on
the file's order, the platform or the hash seed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np

Allocation = Literal["proportional", "equal"]


def allocate(sizes: dict[str, int], n: int, allocation: Allocation) -> dict[str, int]:
    """Items to draw per stratum: at most each stratum's size, min(n, total) in all."""
    total = sum(sizes.values())
    n = min(n, total)
    names = sorted(sizes)
    if allocation == "proportional":
        exact = {s: n * sizes[s] / total for s in names}
        quota = {s: int(exact[s]) for s in names}
        by_remainder = sorted(names, key=lambda s: (-(exact[s] - quota[s]), names.index(s)))
        for s in by_remainder[: n - sum(quota.values())]:
            quota[s] += 1
        return quota
    quota = dict.fromkeys(names, 0)
    left = n
    while left > 0:
        open_ = [s for s in names if quota[s] < sizes[s]]
        share, extra = divmod(left, len(open_))
        for index, s in enumerate(open_):
            give = min(share + (1 if index < extra else 0), sizes[s] - quota[s])
            quota[s] += give
            left -= give
    return quota


def draw(
    ids: Sequence[str],
    strata: Sequence[Hashable] | None,
    n: int,
    *,
    seed: int,
    allocation: Allocation = "proportional",
) -> tuple[list[int], dict[str, int]]:
    """Positions of the sampled items (in their original order) and the count per stratum
    (one stratum, `all`, when `strata` is None)."""
    labels = [str(s) for s in strata] if strata is not None else ["all"] * len(ids)
    members: dict[str, list[int]] = {}
    for position, label in enumerate(labels):
        members.setdefault(label, []).append(position)
    quota = allocate({s: len(p) for s, p in members.items()}, n, allocation)
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    for label in sorted(members):
        positions = sorted(members[label], key=lambda p: ids[p])
        chosen = rng.choice(len(positions), size=quota[label], replace=False)
        kept += [positions[i] for i in chosen]
    return sorted(kept), {label: quota[label] for label in sorted(members)}
