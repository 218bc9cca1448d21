"""``sclm.pretrain``: pretraining on AnnData in memory (the library's ``sclm pretrain``)."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

from . import _adata, _sclm
from ._model import Model, PathLike, _reloaded


class _Bar:
    """Epoch progress bar fed by the native callback ``(event, done, total, value)``."""

    def __init__(self, total: int, desc: str, verbose: bool):
        self.p = _adata.Progress(total, desc, "epochs", verbose)
        self.stages: list = []

    def __call__(self, event: str, done: int, total: int, value) -> None:
        if event == "epoch":
            self.p(done)
            if self.p.bar is not None and value is not None:
                self.p.bar.set_postfix(loss=f"{value:.4f}")
        elif event == "stage":
            self.stages.append(value)
            if self.p.bar is not None:
                self.p.bar.set_description(str(value)[:40])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.p.close()
        return False


def _datasets(adatas) -> list:
    if isinstance(adatas, Mapping):
        return [(str(k), v) for k, v in adatas.items()]
    if isinstance(adatas, (list, tuple)):
        return [(f"dataset{i}", a) for i, a in enumerate(adatas)]
    return [("dataset0", adatas)]


def pretrain(
    adatas,
    family: str = "cellplm",
    config: Union[str, PathLike] = "small",
    epochs: int = 20,
    lr: float = 3e-4,
    weight_decay: float = 1e-8,
    mask_node_rate: float = 0.75,
    mask_feature_rate: float = 0.25,
    drop_node_rate: float = 0.3,
    batch_key: str = "batch",
    spatial_key: str = "spatial",
    layer: Optional[str] = None,
    max_cells_per_group: int = 128,
    seed: int = 0,
    output: Optional[PathLike] = None,
    run_dir: Optional[PathLike] = None,
    resume: bool = False,
    verbose: bool = True,
) -> Model:
    """Pretrains a model on one or more AnnData objects with raw counts (``sclm pretrain``).

    Parameters
    ----------
    adatas
        An AnnData, a list of them, or a dict ``name -> AnnData`` (several datasets get a
        dataset covariate each; list items are named ``dataset0``, ``dataset1``, ...).
    family
        ``cellplm`` (the family whose pretraining is built).
    config
        ``small`` (CPU preset), ``85m`` (the published architecture) or a JSON config file;
        an empty ``gene_list`` takes the datasets' union vocabulary.
    epochs, lr, weight_decay
        Passes over the data; peak learning rate (warm-up, then cosine decay); AdamW decay.
    mask_node_rate, mask_feature_rate, drop_node_rate
        Masked-cell modelling: fraction of cells masked, mean fraction of their genes hidden,
        fraction of cells dropped per step.
    batch_key
        obs column whose values form the groups of cells that attend to each other (a dataset
        without it is one group); saved with the model as its default.
    spatial_key
        obsm key of 2-D coordinates, used when present.
    layer
        Layer with the raw counts (default ``X``).
    max_cells_per_group
        Larger groups are split at random into pieces of at most this many cells.
    seed
        Seed of the weights, the masks and the split of large groups (the same seed gives the
        same weights as ``sclm --seed S pretrain``).
    output
        Save the model to this directory as well.
    run_dir, resume
        Write ``log.jsonl`` and a per-epoch checkpoint there; continue an interrupted run.
    verbose
        Progress bar and notes.

    Returns
    -------
    The pretrained :class:`sclm.Model`, with ``.history`` (mean training loss per epoch) and
    ``.notes``. Ctrl-C stops training after the current step (``KeyboardInterrupt``; the run
    directory keeps the last finished epoch for ``resume=True``).
    """
    ds = _datasets(adatas)
    if not ds:
        raise ValueError("pretrain: no datasets given")
    parts = []
    for name, a in ds:
        parts.append((name, _adata.parts_of(a, layer, obs_keys=[batch_key], obsm_keys=[spatial_key])))
    cfg = os.fspath(config)
    with _Bar(epochs, f"pretrain {family}", verbose) as bar:
        native, notes, losses = _sclm.pretrain(
            parts,
            family=family,
            config=cfg,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            mask_node_rate=mask_node_rate,
            mask_feature_rate=mask_feature_rate,
            drop_node_rate=drop_node_rate,
            batch_key=batch_key,
            spatial_key=spatial_key,
            max_cells_per_group=max_cells_per_group,
            seed=seed,
            run_dir=None if run_dir is None else os.fspath(run_dir),
            resume=resume,
            progress=bar,
        )
    if verbose:
        for n in notes:
            print(f"sclm: {n}")
    m = _reloaded(native, output)
    m.history = list(losses)
    m.notes = list(notes)
    return m
