"""Connected components of accepted pairs, in numpy (min-label hooking + pointer jumping)."""
from __future__ import annotations

import numpy as np

from matcher.dense import dense_index


def connected_components(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (nodes, labels): each distinct node id and the smallest node index of its component."""
    nodes, inverse = dense_index(np.concatenate([left, right]))
    a, b = inverse[: len(left)], inverse[len(left):]
    labels = np.arange(len(nodes))
    while True:
        low = np.minimum(labels[a], labels[b])
        new = labels.copy()
        # hook each endpoint's root onto the smaller label seen across the edge
        np.minimum.at(new, labels[a], low)
        np.minimum.at(new, labels[b], low)
        # pointer jumping: follow labels to their root
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, labels):
            return nodes, labels
        labels = new


def best_edge_per_node(left: np.ndarray, right: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each node on any edge: (node ids, index of its highest-scoring incident edge).

    Ties go to the edge whose other end has the smallest id, so the choice does not depend on
    the order the pairs were read in (a resumed run must write what an uninterrupted one does).
    """
    ends = np.concatenate([left, right])
    other = np.concatenate([right, left])
    edge = np.concatenate([np.arange(len(left)), np.arange(len(right))])
    s = np.concatenate([score, score])
    order = np.lexsort((other, -s, ends))  # by node, then score descending, then the other end
    nodes, first = np.unique(ends[order], return_index=True)
    return nodes, edge[order][first]
