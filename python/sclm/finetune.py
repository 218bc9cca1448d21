"""Task protocols on AnnData in memory (``sclm finetune ...``): each trains (or fine-tunes) a
model and scores it next to its baseline on held-out data; reports come back as pandas
DataFrames (one row per method). The defaults are the CLI's and the papers'.

Every function takes ``model`` (a :class:`sclm.Model`; default: a fresh small model of
``family`` over the data's genes), ``layer`` (the raw counts, default ``X``), ``seed`` and
``verbose`` (progress bar, notes). Ctrl-C stops training after the current step.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import pandas as pd

from . import _adata, _sclm
from ._model import Model, PathLike, _reloaded
from ._report import shown
from ._train import _Bar


def _native(model: Optional[Model]):
    if model is not None and not isinstance(model, Model):
        raise TypeError(f"model must be an sclm.Model (sclm.load(dir)), not {type(model).__name__}")
    return None if model is None else model._m


def annotation(
    adata,
    label_key: str,
    model: Optional[Model] = None,
    family: str = "cellplm",
    key_added: Optional[str] = None,
    layer: Optional[str] = None,
    batch_key: Optional[str] = None,
    gene_id_column: Optional[str] = None,
    epochs: int = 300,
    lr: float = 5e-3,
    valid_frac: float = 0.2,
    test_frac: float = 0.2,
    min_cells_per_class: int = 3,
    n_top_genes: int = 3000,
    allow_non_integer: bool = False,
    output: Optional[PathLike] = None,
    run_dir: Optional[PathLike] = None,
    resume: bool = False,
    seed: int = 0,
    verbose: bool = True,
) -> Model:
    """Cell-type annotation (CellPLM §4.3): fine-tunes ``model`` on the labels in
    ``obs[label_key]`` (stratified train / valid / test split, early stopping on validation
    macro-F1) and scores it on the test cells next to logistic regression on PCA-50.

    Writes ``obs[key_added]`` (default ``<label_key>_<family>``: the prediction for every
    cell), ``obs[key_added + "_prob"]`` and ``obs[key_added + "_split"]`` (``train`` /
    ``valid`` / ``test`` / ``excluded``) in place.

    Parameters
    ----------
    batch_key
        obs column forming the groups of cells that attend to each other (default: the model's
        saved key; a fresh model: all cells one group).
    n_top_genes
        Genes of a fresh model and of the baseline's PCA: the most variable ones.
    output
        Save the classifier to this directory (for :func:`sclm.load` and ``sclm predict``).
    run_dir, resume
        Log, per-epoch checkpoint and best model; continue an interrupted run.

    Returns
    -------
    The fine-tuned classifier (a :class:`sclm.Model`; ``.predict(adata)`` annotates new
    data) with ``.report`` (DataFrame: accuracy, macro/weighted F1, macro precision/recall of
    the model and the baseline) and ``.notes``.
    """
    if label_key not in adata.obs.columns:
        cols = ", ".join(map(str, adata.obs.columns)) or "none"
        raise KeyError(f"no obs column named '{label_key}' (obs columns: {cols})")
    keys = [label_key] + ([batch_key] if batch_key else [])
    if not batch_key and model is not None:
        keys.append(model.manifest.get("registry", {}).get("group_key", "batch"))
    parts = _adata.parts_of(adata, layer, obs_keys=keys, obsm_keys=["spatial"])
    if batch_key and batch_key not in adata.obs.columns:
        raise KeyError(f"no batch key named '{batch_key}' (obs columns: {', '.join(map(str, adata.obs.columns))})")
    with _Bar(epochs, "finetune", verbose) as bar:
        native, reports, pred, prob, split, notes, n_epochs = _sclm.annotation(
            parts,
            label_key,
            model=_native(model),
            family=family,
            epochs=epochs,
            lr=lr,
            valid_frac=valid_frac,
            test_frac=test_frac,
            min_cells_per_class=min_cells_per_class,
            n_top_genes=n_top_genes,
            batch_key=batch_key,
            gene_id_column=gene_id_column,
            allow_non_integer=allow_non_integer,
            run_dir=None if run_dir is None else os.fspath(run_dir),
            resume=resume,
            seed=seed,
            progress=bar,
        )
    report = shown(reports, notes, verbose)
    clf = _reloaded(native, output)
    clf.report = report
    clf.notes = list(notes)
    clf.epochs = n_epochs
    key = key_added or f"{label_key}_{clf.family}"
    adata.obs[key] = pd.Categorical(pred, categories=sorted(set(pred)))
    adata.obs[key + "_prob"] = np.asarray(prob)
    adata.obs[key + "_split"] = pd.Categorical(split, categories=["train", "valid", "test", "excluded"])
    return clf


def denoising(
    adata,
    model: Optional[Model] = None,
    family: str = "cellplm",
    layer: Optional[str] = None,
    batch_key: Optional[str] = None,
    n_top_genes: int = 3000,
    hide_frac: float = 0.1,
    pretrain_epochs: Optional[int] = None,
    epochs: int = 10,
    lr: Optional[float] = None,
    allow_non_integer: bool = False,
    return_data: bool = False,
    seed: int = 0,
    verbose: bool = True,
):
    """Denoising (CellPLM §4.2): hides ``hide_frac`` of each cell's non-zero counts over the
    ``n_top_genes`` most variable genes the model knows and scores their reconstruction (RMSE,
    MAE, Pearson on log-normalised values) next to no denoising and kNN diffusion: the model
    zero-shot, then fine-tuned for ``epochs`` (0: not fine-tuned).

    ``pretrain_epochs`` (default 10) trains a fresh model on the data with the hidden entries;
    a given ``model`` reconstructs zero-shot, so passing both is an error.

    Returns
    -------
    The report (DataFrame); with ``return_data=True`` also the evaluated cells × genes as an
    AnnData (X the counts, layers ``counts_hidden``, ``knn_denoised`` and one per model row).
    """
    if model is not None and pretrain_epochs is not None:
        raise ValueError("pretrain_epochs trains a fresh model; a given model reconstructs zero-shot (drop one)")
    keys = [batch_key] if batch_key else []
    parts = _adata.parts_of(adata, layer, obs_keys=keys, obsm_keys=["spatial"])
    with _Bar(epochs, "denoising", verbose) as bar:
        reports, data, n_hidden, notes = _sclm.denoising(
            parts,
            model=_native(model),
            family=family,
            n_top_genes=n_top_genes,
            hide_frac=hide_frac,
            pretrain_epochs=10 if pretrain_epochs is None else pretrain_epochs,
            epochs=epochs,
            lr=lr,
            batch_key=batch_key,
            allow_non_integer=allow_non_integer,
            seed=seed,
            progress=bar,
        )
    rep = shown(reports, notes + [f"{n_hidden} hidden entries"], verbose)
    return (rep, _adata.anndata_from_parts(data)) if return_data else rep


def spatial_imputation(
    adata,
    reference=None,
    model: Optional[Model] = None,
    family: str = "cellplm",
    spatial_key: str = "spatial",
    layer: Optional[str] = None,
    batch_key: Optional[str] = None,
    n_top_genes: int = 1000,
    holdout_frac: float = 0.1,
    epochs: int = 10,
    lr: Optional[float] = None,
    return_data: bool = False,
    seed: int = 0,
    verbose: bool = True,
):
    """Spatial imputation (CellPLM §4.4): holds out ``holdout_frac`` of the genes shared with
    ``reference`` (stratified by sparsity) in the spatial data (coordinates in
    ``obsm[spatial_key]``), imputes them from the reference (default: half of the spots) and
    scores them (Pearson, Spearman, cosine, RMSE per gene) next to kNN regression.

    Returns
    -------
    The report (DataFrame); with ``return_data=True`` also the query spots as an AnnData
    (layers ``<family>_imputed``, ``knn_imputed``; var ``held_out``).
    """
    if spatial_key not in adata.obsm:
        raise KeyError(f"no obsm entry named '{spatial_key}' (obsm: {', '.join(adata.obsm.keys()) or 'none'})")
    keys = [batch_key] if batch_key else []
    parts = _adata.parts_of(adata, layer, obs_keys=keys, obsm_keys=[spatial_key])
    ref = None if reference is None else _adata.parts_of(reference, layer, obs_keys=keys)
    with _Bar(epochs, "spatial imputation", verbose) as bar:
        reports, data, sizes, notes = _sclm.spatial_imputation(
            parts,
            reference=ref,
            model=_native(model),
            family=family,
            spatial_key=spatial_key,
            n_top_genes=n_top_genes,
            holdout_frac=holdout_frac,
            epochs=epochs,
            lr=lr,
            batch_key=batch_key,
            seed=seed,
            progress=bar,
        )
    q, r, ng, h, s = sizes
    rep = shown(reports, notes + [f"{q} query spots, {r} reference cells, {ng} genes of which {h} held out ({s} scored)"],
                verbose)
    if not return_data:
        return rep
    a = _adata.anndata_from_parts(data)
    if "held_out" in data.get("var", {}):
        a.var["held_out"] = [v == "true" for v in data["var"]["held_out"]]
    return rep, a


def perturbation(
    adata,
    perturbation_key: str = "perturbation",
    control: Optional[str] = None,
    model: Optional[Model] = None,
    family: str = "cellplm",
    layer: Optional[str] = None,
    test_frac: float = 0.25,
    valid_frac: float = 0.1,
    epochs: int = 10,
    lr: Optional[float] = None,
    allow_non_integer: bool = False,
    seed: int = 0,
    verbose: bool = True,
) -> pd.DataFrame:
    """Perturbation prediction (CellPLM §4.5): conditions in ``obs[perturbation_key]``
    (GEARS names ``A+ctrl``, ``A+B``, ``ctrl``), an unseen-perturbation split; the model
    predicts each held-out condition's mean expression from the controls, scored (MSE and
    Pearson of the change, overall and on the top-20 DE genes) next to the no-change baseline.

    Returns
    -------
    The report (DataFrame): test conditions, then validation conditions; ``.attrs`` holds
    the ``conditions`` (train / valid / test) and ``n_controls``.
    """
    if perturbation_key not in adata.obs.columns:
        cols = ", ".join(map(str, adata.obs.columns)) or "none"
        raise KeyError(f"no obs column named '{perturbation_key}' (obs columns: {cols})")
    parts = _adata.parts_of(adata, layer, obs_keys=[perturbation_key])
    with _Bar(epochs, "perturbation", verbose) as bar:
        reports, conditions, n_controls, notes = _sclm.perturbation(
            parts,
            model=_native(model),
            family=family,
            perturbation_key=perturbation_key,
            control=control,
            test_frac=test_frac,
            valid_frac=valid_frac,
            epochs=epochs,
            lr=lr,
            allow_non_integer=allow_non_integer,
            seed=seed,
            progress=bar,
        )
    rep = shown(reports, notes, verbose)
    rep.attrs["conditions"] = {"train": list(conditions[0]), "valid": list(conditions[1]), "test": list(conditions[2])}
    rep.attrs["n_controls"] = n_controls
    return rep


__all__ = ["annotation", "denoising", "spatial_imputation", "perturbation"]
