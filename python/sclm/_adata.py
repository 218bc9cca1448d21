"""Taking an AnnData apart for the native module, and putting results back.

The count matrix is handed over as its own buffers (no copy): a SciPy CSR/CSC matrix as
``(indptr, indices, data)``, a NumPy array as itself. Only the supported dtypes are accepted
(float32, float64, int32, int64 values; int32/int64 indices); anything else is a ``TypeError``
that says what to change, never a silent conversion of the whole matrix.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import scipy.sparse as sp

_VALUE_DTYPES = (np.float32, np.float64, np.int32, np.int64)
_INDEX_DTYPES = (np.int32, np.int64)


def _check_dtype(arr: np.ndarray, allowed, what: str) -> None:
    if arr.dtype.type not in allowed:
        names = ", ".join(np.dtype(t).name for t in allowed)
        raise TypeError(f"{what} has dtype {arr.dtype}; sclm reads {names} (convert it with .astype(np.float32))")


def counts_of(adata, layer: Optional[str] = None):
    """The counts matrix of ``adata`` (``X`` or ``layers[layer]``)."""
    if layer is None:
        x = adata.X
        if x is None:
            raise ValueError("adata.X is empty; pass layer= with the raw counts")
        return x
    if layer not in adata.layers:
        raise KeyError(f"no layer named '{layer}' (layers: {', '.join(adata.layers.keys()) or 'none'})")
    return adata.layers[layer]


def matrix_arg(x) -> tuple:
    """The tuple the native module borrows: ``("csr"|"csc", shape, indptr, indices, data)`` or
    ``("dense", shape, array)``. No copy is made."""
    shape = (int(x.shape[0]), int(x.shape[1]))
    if sp.issparse(x):
        fmt = x.format
        if fmt not in ("csr", "csc"):
            raise TypeError(f"a sparse {fmt.upper()} matrix: convert it with .tocsr() (sclm reads CSR, CSC or dense)")
        _check_dtype(x.indptr, _INDEX_DTYPES, "indptr")
        _check_dtype(x.indices, _INDEX_DTYPES, "indices")
        _check_dtype(x.data, _VALUE_DTYPES, "X")
        return (fmt, shape, x.indptr, x.indices, x.data)
    if hasattr(x, "compute") and not isinstance(x, np.ndarray):
        raise TypeError("a lazy (Dask) matrix: use sclm.dask.embed, or .compute() it first")
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"X has {arr.ndim} dimensions; expected cells × genes")
    _check_dtype(arr, _VALUE_DTYPES, "X")
    return ("dense", shape, arr)


def var_arg(adata, gene_id_column: Optional[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The var index and the string columns the gene matching may read (``gene_ids`` and the
    column asked for)."""
    names = [str(v) for v in adata.var_names]
    cols: dict[str, list[str]] = {}
    wanted = ["gene_ids"] + ([gene_id_column] if gene_id_column else [])
    if gene_id_column and gene_id_column not in adata.var.columns:
        raise KeyError(f"no var column named '{gene_id_column}' (var columns: {', '.join(map(str, adata.var.columns)) or 'none'})")
    for c in wanted:
        if c in adata.var.columns:
            cols[c] = [str(v) for v in adata.var[c].astype(str)]
    return names, cols


def labels_of(adata, key: Optional[str], what: str = "obs column", required: bool = False) -> Optional[list[str]]:
    """The values of obs column ``key`` as strings; ``None`` when no key is given or (unless
    ``required``) the column is absent."""
    if not key:
        return None
    if key not in adata.obs.columns:
        if required:
            raise KeyError(f"no {what} named '{key}' (obs columns: {', '.join(map(str, adata.obs.columns)) or 'none'})")
        return None
    col = adata.obs[key]
    return [("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)) for v in col.tolist()]


def coords_of(adata, key: Optional[str], required: bool) -> Optional[np.ndarray]:
    """``obsm[key]``'s first two columns as float64, or ``None``."""
    if not key:
        return None
    if key not in adata.obsm:
        if required:
            raise KeyError(f"no obsm entry named '{key}' (obsm: {', '.join(adata.obsm.keys()) or 'none'})")
        return None
    c = np.asarray(adata.obsm[key], dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"obsm['{key}'] has shape {c.shape}; coordinates need 2 columns")
    return np.ascontiguousarray(c[:, :2])


def parts_of(adata, layer: Optional[str] = None, obs_keys=(), obsm_keys=(), layers=()) -> dict[str, Any]:
    """The parts of ``adata`` a task protocol reads (an owned copy is made on the Rust side:
    protocols train over their data for many epochs)."""
    obs = {}
    for k in obs_keys:
        if k and k in adata.obs.columns:
            col = adata.obs[k]
            import pandas as pd

            if pd.api.types.is_numeric_dtype(col.dtype) and not isinstance(col.dtype, pd.CategoricalDtype):
                obs[k] = np.asarray(col, dtype=np.float64)
            else:
                obs[k] = labels_of(adata, k)
    var = {}
    if "gene_ids" in adata.var.columns:
        var["gene_ids"] = [str(v) for v in adata.var["gene_ids"].astype(str)]
    obsm = {k: np.ascontiguousarray(np.asarray(adata.obsm[k], dtype=np.float64)) for k in obsm_keys if k and k in adata.obsm}
    lay = {k: matrix_arg(adata.layers[k]) for k in layers if k in adata.layers}
    x = counts_of(adata, layer)
    return {
        "x": matrix_arg(x),
        "obs_names": [str(v) for v in adata.obs_names],
        "var_names": [str(v) for v in adata.var_names],
        "obs": obs,
        "var": var,
        "obsm": obsm,
        "layers": lay,
    }


def anndata_from_parts(parts: dict[str, Any]):
    """An AnnData from the parts the native module returns (CSR tuples)."""
    import anndata as ad
    import pandas as pd

    def csr(t):
        _, shape, indptr, indices, data = t
        return sp.csr_matrix((data, indices, indptr), shape=shape)

    obs = pd.DataFrame(parts.get("obs", {}), index=pd.Index(parts["obs_names"]))
    var = pd.DataFrame(index=pd.Index(parts["var_names"]))
    a = ad.AnnData(X=csr(parts["x"]), obs=obs, var=var)
    for k, t in parts.get("layers", {}).items():
        a.layers[k] = csr(t)
    return a


class Progress:
    """A progress bar (tqdm's, in notebooks too, when tqdm is installed) fed with the total
    done; silent when ``verbose`` is false or tqdm is absent."""

    def __init__(self, total: int, desc: str, unit: str, verbose: bool):
        self.bar = None
        self.last = 0
        if verbose:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)
            except ImportError:
                self.bar = None

    def __call__(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.last)
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
