"""Row-sparse gradients of the rendering parameters, synchronised across processes.

A step draws a few hundred categories out of thousands, so the rendering tables' gradients are sparse in rows.
Averaging them as dense tensors (what DDP would do) costs ``C x N`` values per step whatever the batch; here
every process contributes only its rows: the row indices and values are gathered (padded to the longest), summed
per row and divided by the number of processes. Communication and the optimiser step (``SparseAdam``, lazy)
then scale with the categories the step touched.
"""

from __future__ import annotations

import math

import torch


def average_row_gradients(parameters, accelerator) -> int:
    """Replaces each parameter's sparse ``.grad`` by its average over processes; returns rows exchanged.

    Every process must call it at the same point (it gathers). Parameters without a gradient on this process
    send no rows but still take part.
    """
    exchanged = 0
    world = accelerator.num_processes
    for p in parameters:
        if p.grad is None:
            rows = torch.zeros(0, dtype=torch.long, device=p.device)
            values = torch.zeros(0, p.shape[1], dtype=p.dtype, device=p.device)
        else:
            grad = p.grad.coalesce()
            rows, values = grad.indices()[0], grad.values()
        if world > 1:
            # Accelerate pads every process's rows to the longest (row -1 marks padding); the values to the same
            # length (zeros); gather; drop the padding.
            rows = accelerator.pad_across_processes(rows, dim=0, pad_index=-1)
            values = torch.cat([values, values.new_zeros(len(rows) - len(values), values.shape[1])])
            rows, values = accelerator.gather(rows), accelerator.gather(values)
            real = rows >= 0
            rows, values = rows[real], values[real]
        exchanged += len(rows)
        if len(rows) == 0:
            p.grad = None
            continue
        with torch.sparse.check_sparse_tensor_invariants(enable=True):  # the rows are ours: check them
            summed = torch.sparse_coo_tensor(rows[None], values, p.shape).coalesce()
        p.grad = summed / world if world > 1 else summed
    return exchanged


def clip_sparse_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` for sparse gradients: the total 2-norm of their values, scaled down to ``max_norm``."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.stack([g.coalesce().values().float().norm() for g in grads]).norm()
    if math.isfinite(max_norm) and float(norm) > max_norm:
        for g in grads:
            g.mul_(max_norm / (float(norm) + 1e-6))
    return norm
