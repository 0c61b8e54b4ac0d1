"""Where a functional Keras supernet can be cut into a chain of segments.

The segment-wise computations (``il_tf/spaces/space.py``) need the forward pass as a
chain: one state tensor handed from each piece to the next. In a functional graph a
tensor can be that state when every path from the images to the features passes
through it (it *dominates* the features): a tensor after a residual block does, a
tensor inside one does not. Cutting at every such tensor would make a segment of
every layer of a plain chain, so the cuts follow the choice points instead: a
segment runs from one cut to the first dominating tensor after the next choice point
(a top-level block: the layers before it, its choices, its residual join), and the
layers after the last choice make the last segment. Where a later layer reads a
tensor from before a choice (a long skip, an :class:`~il_tf.spaces.choices.InputChoice`)
no tensor between them dominates, so their choices share one segment, up to the
whole network being one. A layer used in two segments (shared weights) joins them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras


@dataclasses.dataclass(frozen=True)
class SegmentCut:
    """One segment: the tensor it starts from and the one it ends at, in the graph."""

    start: keras.KerasTensor
    end: keras.KerasTensor


def _producer(tensor: keras.KerasTensor):
    # The functional graph's own links (what keras.Model uses to run the graph).
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def plan_cuts(
    images: keras.KerasTensor,
    features: keras.KerasTensor,
    is_choice: type,
) -> list[SegmentCut] | None:
    """The cuts of the graph from ``images`` to ``features``, or None when there is no chain.

    ``is_choice`` is the layer class of the choice points (the mixtures).
    """
    # Ancestors of the features, in topological order (inputs before the nodes reading them).
    order: list[keras.KerasTensor] = []
    preds: dict[int, list[keras.KerasTensor]] = {}
    seen: set[int] = set()
    todo: list[tuple[keras.KerasTensor, bool]] = [(features, False)]
    while todo:
        tensor, expanded = todo.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        inputs = list(_producer(tensor).input_tensors)
        preds[id(tensor)] = inputs
        todo.append((tensor, True))
        todo.extend((p, False) for p in reversed(inputs) if id(p) not in seen)
    position = {id(t): i for i, t in enumerate(order)}
    if id(images) not in position:
        return None
    # Tensors computed from the images, and their dominators among them.
    depends = {id(images)}
    dominators: dict[int, frozenset[int]] = {id(images): frozenset({id(images)})}
    for tensor in order:
        key = id(tensor)
        if key == id(images):
            continue
        image_preds = [id(p) for p in preds[key] if id(p) in depends]
        if not image_preds:
            if preds[key]:
                return None  # a layer computed without the images (a constant): no chain
            continue  # an input of the graph (the logits)
        depends.add(key)
        dominators[key] = frozenset({key}).union(
            frozenset.intersection(*(dominators[p] for p in image_preds))
        )
    chain = sorted(dominators[id(features)], key=position.__getitem__)
    chain_index = {key: i for i, key in enumerate(chain)}
    by_id = {id(t): t for t in order}

    # Per region between chain[r] and chain[r + 1]: whether it has a choice, its weights.
    regions = len(chain) - 1
    has_choice = [False] * regions
    weights: list[set[int]] = [set() for _ in range(regions)]
    for key in depends - {id(images)}:
        region = max(
            (chain_index[d] for d in dominators[key] if d != key and d in chain_index),
            default=None,
        )
        if region is None:
            return None
        operation = _producer(by_id[key]).operation
        if isinstance(operation, is_choice):
            has_choice[region] = True
        weights[region].update(id(v) for v in operation.trainable_variables)

    # A segment ends after each region that holds a choice; the rest make the last one.
    groups: list[list[int]] = []
    current: list[int] = []
    for region in range(regions):
        current.append(region)
        if has_choice[region]:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    groups = _join_shared(groups, weights)
    return [SegmentCut(by_id[chain[group[0]]], by_id[chain[group[-1] + 1]]) for group in groups]


def _join_shared(groups: list[list[int]], weights: Sequence[set[int]]) -> list[list[int]]:
    """``groups`` with every run of groups that share a weight joined into one."""
    while True:
        owner: dict[int, int] = {}
        join = None
        for g, group in enumerate(groups):
            for region in group:
                for w in weights[region]:
                    if owner.setdefault(w, g) != g:
                        join = (owner[w], g)
                        break
                if join:
                    break
            if join:
                break
        if join is None:
            return groups
        a, b = join
        groups = [*groups[:a], [r for group in groups[a : b + 1] for r in group], *groups[b + 1 :]]
