"""scanpy-style functions: ``sclm.tl.embed(adata, model)``, ``sclm.tl.evaluate(...)``."""
from __future__ import annotations

from typing import Optional, Union

import pandas as pd

from . import _adata, _sclm
from ._model import Model, load
from ._report import shown


def _model(model: Union[Model, str]) -> Model:
    return model if isinstance(model, Model) else load(model)


def embed(adata, model: Union[Model, str], key_added: Optional[str] = None, copy: bool = False, **kwargs):
    """Embeds ``adata`` with ``model`` (a :class:`sclm.Model` or a model directory) into
    ``adata.obsm[key_added]`` (default ``X_<family>``), in place (``copy=True``: returns a new
    AnnData); see :meth:`sclm.Model.get_latent_representation` for the keyword arguments."""
    return _model(model).embed(adata, key_added=key_added, copy=copy, **kwargs)


def evaluate(
    adata,
    model: Union[Model, str],
    label_key: str,
    batch_key: Optional[str] = None,
    group_key: Optional[str] = None,
    layer: Optional[str] = None,
    key_added: Optional[str] = None,
    n_top_genes: int = 3000,
    seed: int = 0,
    verbose: bool = True,
) -> pd.DataFrame:
    """Embedding quality (``sclm evaluate``): embeds ``adata``, clusters the embedding (Leiden
    sweep) and scores it against ``obs[label_key]`` (ARI, NMI, ASW, ...; batch mixing over
    ``obs[batch_key]`` when given) next to PCA-50 of the ``n_top_genes`` most variable genes.

    Writes ``obsm[key_added]`` (default ``X_<family>``) and ``obsm["X_pca_sclm"]`` in place;
    returns the report (DataFrame, one row per method). ``group_key``: the groups of cells
    that attend to each other (default: the model's saved key).
    """
    m = _model(model)
    for k in [label_key] + ([batch_key] if batch_key else []):
        if k not in adata.obs.columns:
            raise KeyError(f"no obs column named '{k}' (obs columns: {', '.join(map(str, adata.obs.columns))})")
    gk = group_key if group_key is not None else m.manifest.get("registry", {}).get("group_key", "batch")
    parts = _adata.parts_of(adata, layer, obs_keys=[label_key, batch_key, gk], obsm_keys=["spatial"])
    reports, emb, base, notes = _sclm.embedding_quality(
        m._m, parts, label_key, batch_key=batch_key, group_key=group_key, n_top_genes=n_top_genes, seed=seed
    )
    adata.obsm[key_added or m.default_key] = emb
    adata.obsm["X_pca_sclm"] = base
    return shown(reports, notes, verbose)


__all__ = ["embed", "evaluate"]
