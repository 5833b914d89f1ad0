"""Which (category, view seed) pairs each process trains on, and which are held out for evaluation.

Counter-based: micro-batch ``k`` of process ``r`` comes from a generator seeded by :func:`counter_seed` of
``(seed, r, k)``, so a data loader may prefetch ahead and the checkpointed state is just the next ``k``.
"""

from __future__ import annotations

import math

import torch

_M64 = 2**64 - 1
_XXPRIME_1, _XXPRIME_2, _XXPRIME_5 = 11400714785074694791, 14029467366897019727, 2870177450012600261
_MERSENNE_61 = 2**61 - 1


def counter_seed(*values: int) -> int:
    """A 63-bit seed from a tuple of integers: CPython's 64-bit tuple hash (xxHash-style lanes over each int's
    hash modulo the Mersenne prime 2^61 - 1), computed here with explicit integer arithmetic so that it does not
    depend on the interpreter. It equals ``hash(values) & (2**63 - 1)`` on 64-bit CPython >= 3.8, which the first
    version used, so the streams, and with them the golden loss traces, stay those of the first version (tested)."""
    h = _XXPRIME_5
    for value in values:
        lane = abs(value) % _MERSENNE_61
        lane = -lane if value < 0 else lane
        lane = (-2 if lane == -1 else lane) & _M64  # hash(-1) is -2 in CPython (-1 marks an error)
        h = (h + lane * _XXPRIME_2) & _M64
        h = ((h << 31) | (h >> 33)) & _M64
        h = (h * _XXPRIME_1) & _M64
    h = (h + (len(values) ^ (_XXPRIME_5 ^ 3527539))) & _M64
    if h == _M64:
        h = 1546275796
    return h & (2**63 - 1)


class ViewOrder:
    """This process's stream of (category, view seed) draws.

    View seeds are drawn in ``[0, 2^62)``, or in ``[0, views_per_class)`` to train on a static dataset's views;
    negative seeds are held out for evaluation. ``index`` (the next micro-batch) is the whole state.

    Grouped draws (``data.views_per_category``, ``data.repeated_aug``; both 1 by default, which draws exactly as
    before): a micro-batch is ``B / (views_per_category * repeated_aug)`` groups, one per category, the categories
    distinct within the micro-batch (so that two groups never share a category: a contrastive task would count
    them as negatives); each group holds ``views_per_category`` different view seeds of its category, each of
    them ``repeated_aug`` times, adjacent::

        views_per_category=2, repeated_aug=2:  (c0, s0) (c0, s0) (c0, s1) (c0, s1) (c1, s2) (c1, s2) ...

    With ``repeated_aug > 1`` and ``views_per_category = 1`` the categories are drawn independently (as in the
    ungrouped stream), since copies of one render are the positives there. Copies of one (category, view seed) are
    the same render; what differs between them is what the objective draws per copy (its image augmentations).
    """

    def __init__(self, seed: int, rank: int, num_classes: int, views_per_class: int = 0, views_per_category: int = 1,
                 repeated_aug: int = 1):
        self.seed, self.rank, self.num_classes, self.views = seed, rank, num_classes, views_per_class
        self.views_per_category, self.repeated_aug = views_per_category, repeated_aug
        self.index = 0

    def batch(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch ``index``: ``(B,)`` int64 class ids and ``(B,)`` int64 view seeds, on the CPU."""
        generator = torch.Generator().manual_seed(counter_seed(self.seed, self.rank, index))
        per_category, copies = self.views_per_category, self.repeated_aug
        if per_category == 1 and copies == 1:  # the original draws, kept bit for bit (golden loss traces)
            ids = torch.randint(0, self.num_classes, (batch_size,), generator=generator)
            seeds = torch.randint(0, self.views or 2**62, (batch_size,), generator=generator)
            return ids, seeds
        if batch_size % (per_category * copies):
            raise ValueError(f"batch size {batch_size} is not a multiple of views_per_category x repeated_aug = "
                             f"{per_category * copies}")
        groups = batch_size // (per_category * copies)
        if per_category == 1:
            ids = torch.randint(0, self.num_classes, (groups,), generator=generator)
            seeds = torch.randint(0, self.views or 2**62, (groups, 1), generator=generator)
        else:
            if groups > self.num_classes or (self.views and per_category > self.views):
                raise ValueError(f"{groups} distinct categories of {self.num_classes} with {per_category} distinct "
                                 f"views of {self.views or 2**62} each cannot be drawn")
            ids = torch.randperm(self.num_classes, generator=generator)[:groups]
            if self.views:  # distinct seeds among the dataset's views: the first of a random order of them
                seeds = torch.rand(groups, self.views, generator=generator).argsort(1)[:, :per_category]
            else:  # two equal draws in [0, 2^62) have probability ~2^-62 per pair: distinct in practice
                seeds = torch.randint(0, 2**62, (groups, per_category), generator=generator)
        ids = ids.repeat_interleave(per_category * copies)
        seeds = seeds.reshape(-1).repeat_interleave(copies)
        return ids, seeds

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next micro-batch (advances ``index``)."""
        out = self.batch(self.index, batch_size)
        self.index += 1
        return out


def held_out_views(count: int, num_classes: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of the evaluation set: categories round-robin, view seeds ``-1, -2, ...`` (never
    drawn in training). The set is rounded up to a multiple of ``world`` so that every share is equal."""
    total = math.ceil(count / world) * world
    index = torch.arange(rank, total, world)
    return index % num_classes, -(index + 1)
