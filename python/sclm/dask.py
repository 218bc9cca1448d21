"""Embedding a dataset too large for one machine on a Dask cluster.

``sclm.dask.embed(adata, model)`` embeds an AnnData whose ``X`` (or layer) is a Dask array
(dense or SciPy-sparse chunks, e.g. read lazily with
``anndata.experimental.read_elem_lazy``), with the cluster of the active
``distributed.Client`` (or Dask's default scheduler). The forward calls are planned once, as
one process would make them (cells of a group attend to each other, so a call is never
split), dealt whole into tasks, and each task reads only the row blocks its cells lie in: the
assembled embedding equals ``model.embed`` in one process, bit for bit.
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Union

import numpy as np

from . import _adata, _sclm
from ._model import Model, PathLike, load


@functools.lru_cache(maxsize=4)
def _worker_model(path: str) -> "_sclm.Model":
    # One load per worker process and model directory.
    return _sclm.Model.load(path)


def _embed_task(path, blocks, starts, rows, labels, var_names, var_columns, gene_id_column, coords, max_cells,
                allow_non_integer):
    """Runs on a worker: the task's rows out of its row blocks, embedded one planned forward
    call (group label = call) at a time. Returns ``(rows, embedding)``."""
    import scipy.sparse as sp

    pieces = []
    for blk, start in zip(blocks, starts):
        lo, hi = np.searchsorted(rows, [start, start + blk.shape[0]])
        if hi > lo:
            pieces.append(blk[rows[lo:hi] - start])
    if not pieces:
        return rows, np.zeros((0, _worker_model(path).embedding_dim), dtype=np.float32)
    if sp.issparse(pieces[0]):
        x = sp.vstack(pieces, format="csr")
        if x.indices.dtype not in (np.int32, np.int64):
            x.indices = x.indices.astype(np.int64)
    else:
        x = np.ascontiguousarray(np.concatenate([np.asarray(p) for p in pieces], axis=0))
    emb, _ = _worker_model(path).embed(
        _adata.matrix_arg(x), var_names, var_columns, gene_id_column, labels, coords, max_cells, allow_non_integer,
        None,
    )
    return rows, emb


def embed(
    adata,
    model: Union[Model, PathLike],
    key_added: Optional[str] = None,
    layer: Optional[str] = None,
    batch_key: Optional[str] = None,
    spatial_key: Optional[str] = None,
    gene_id_column: Optional[str] = None,
    max_cells: int = 10_000,
    allow_non_integer: bool = False,
    n_tasks: Optional[int] = None,
    copy: bool = False,
):
    """Embeds every cell of a Dask-backed ``adata`` on the cluster into
    ``adata.obsm[key_added]`` (default ``X_<family>``), in place (``copy=True``: returns a
    new AnnData). The result is identical to :meth:`sclm.Model.embed` in one process.

    Parameters
    ----------
    model
        A model directory (each worker opens it; it must be readable there) or a
        :class:`sclm.Model` loaded from or saved to one.
    n_tasks
        Number of tasks (default: one per forward call); each holds whole forward calls of
        near-equal total size.
    Others as :meth:`sclm.Model.get_latent_representation`.
    """
    import dask

    if isinstance(model, Model):
        if model.path is None:
            raise ValueError("sclm.dask.embed needs a model directory the workers can read: save the model first")
        path = model.path
        m = model
    else:
        path = os.fspath(model)
        m = load(path)
    path = os.path.abspath(path)
    x = _adata.counts_of(adata, layer)
    if not hasattr(x, "to_delayed"):
        # Not lazy: one process is the fastest way.
        return m.embed(adata, key_added=key_added, copy=copy, layer=layer, batch_key=batch_key,
                       spatial_key=spatial_key, gene_id_column=gene_id_column, max_cells=max_cells,
                       allow_non_integer=allow_non_integer, verbose=False)
    if len(x.chunks[1]) != 1:
        x = x.rechunk({1: -1})
    _, names, cols, groups, coords = m._read(adata, layer, batch_key, spatial_key, gene_id_column)
    n = int(x.shape[0])
    plan = _sclm.plan_pieces(n, groups, max_cells)
    k = len(plan) if n_tasks is None else max(1, min(int(n_tasks), len(plan)))
    bounds = np.concatenate([[0], np.cumsum(x.chunks[0])]).astype(np.int64)
    blocks = x.to_delayed().ravel()
    fn = dask.delayed(_embed_task, pure=True)
    tasks = []
    for i in range(k):
        shard = _sclm.plan_pieces(n, groups, max_cells, (i, k)) if k > 1 else plan
        if not shard:
            continue
        label = np.empty(n, dtype=object)
        for j, p in enumerate(shard):
            label[p] = f"{j:09d}"
        rows = np.sort(np.concatenate(shard))
        b0 = int(np.searchsorted(bounds, rows[0], side="right") - 1)
        b1 = int(np.searchsorted(bounds, rows[-1], side="right") - 1)
        need = [b for b in range(b0, b1 + 1) if np.any((rows >= bounds[b]) & (rows < bounds[b + 1]))]
        tasks.append(
            fn(
                path,
                [blocks[b] for b in need],
                [int(bounds[b]) for b in need],
                rows,
                [str(v) for v in label[rows]],
                names,
                cols,
                gene_id_column,
                None if coords is None else np.ascontiguousarray(coords[rows]),
                max_cells,
                allow_non_integer,
            )
        )
    out = np.zeros((n, m.embedding_dim), dtype=np.float32)
    for rows, emb in dask.compute(*tasks):
        out[rows] = emb
    target = adata.copy() if copy else adata
    target.obsm[key_added or m.default_key] = out
    return target if copy else None


__all__ = ["embed"]
