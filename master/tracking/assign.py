"""Matching detections to tracks: the IoU matrix and an optimal one-to-one assignment.

Pure and small: numpy for the IoU matrix, plain Python for the assignment. scipy is not a
dependency, so the assignment is our own Hungarian method (shortest augmenting paths with row and
column potentials, O(n^2 m)). It only ever sees one connected group of candidate pairs: the gate
(IoU >= a threshold) splits a frame into groups that are almost always 1x1, and those are matched
without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]  # x, y, w, h in pixels


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """IoU of every box in `a` (rows) with every box in `b` (columns); 0 where either is empty."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    ba, bb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ax0, ay0, aw, ah = (ba[:, i:i + 1] for i in range(4))
    bx0, by0, bw, bh = (bb[:, i] for i in range(4))
    iw = np.clip(np.minimum(ax0 + aw, bx0 + bw) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay0 + ah, by0 + bh) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = np.clip(aw, 0, None) * np.clip(ah, 0, None) + np.clip(bw, 0, None) * np.clip(bh, 0, None) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """(row, column) pairs, each row and column at most once, maximizing total IoU over pairs >= min_iou."""
    allowed = iou >= min_iou
    pairs: list[tuple[int, int]] = []
    for rows, cols in _groups(allowed):
        if len(rows) == 1 and len(cols) == 1:
            pairs.append((rows[0], cols[0]))
            continue
        cost = [[-float(iou[r, c]) if allowed[r, c] else 0.0 for c in cols] for r in rows]
        pairs += [(rows[i], cols[j]) for i, j in hungarian(cost) if allowed[rows[i], cols[j]]]
    return sorted(pairs)


def _groups(allowed: np.ndarray) -> list[tuple[list[int], list[int]]]:
    """Connected groups of the bipartite graph whose edges are the allowed pairs (isolated nodes left out)."""
    n = allowed.shape[0]
    parent = list(range(n + allowed.shape[1]))  # rows, then columns at n + c

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    edges = list(zip(*(a.tolist() for a in np.nonzero(allowed))))
    for r, c in edges:
        parent[root(r)] = root(n + c)
    groups: dict[int, tuple[set[int], set[int]]] = {}
    for r, c in edges:
        rows, cols = groups.setdefault(root(r), (set(), set()))
        rows.add(r)
        cols.add(c)
    return [(sorted(rows), sorted(cols)) for rows, cols in groups.values()]


def hungarian(cost: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """A minimum-cost assignment of a rectangular matrix: min(rows, cols) (row, column) pairs."""
    n = len(cost)
    m = len(cost[0]) if n else 0
    if not n or not m:
        return []
    if n > m:
        return sorted((r, c) for c, r in hungarian([list(col) for col in zip(*cost)]))
    inf = float("inf")
    row_pot, col_pot = [0.0] * (n + 1), [0.0] * (m + 1)
    owner = [0] * (m + 1)  # owner[j]: the row (1-based) holding column j; column 0 is the root of each search
    for row in range(1, n + 1):
        owner[0], col = row, 0
        slack, back, done = [inf] * (m + 1), [0] * (m + 1), [False] * (m + 1)
        while owner[col]:
            done[col] = True
            r, delta, nxt = owner[col], inf, 0
            for j in range(1, m + 1):
                if done[j]:
                    continue
                reduced = cost[r - 1][j - 1] - row_pot[r] - col_pot[j]
                if reduced < slack[j]:
                    slack[j], back[j] = reduced, col
                if slack[j] < delta:
                    delta, nxt = slack[j], j
            for j in range(m + 1):
                if done[j]:
                    row_pot[owner[j]] += delta
                    col_pot[j] -= delta
                else:
                    slack[j] -= delta
            col = nxt
        while col:  # flip the augmenting path back to the root
            prev = back[col]
            owner[col] = owner[prev]
            col = prev
    return sorted((owner[j] - 1, j - 1) for j in range(1, m + 1) if owner[j])
