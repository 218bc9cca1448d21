"""sclm: single-cell language models on AnnData, over a Rust core.

>>> import sclm
>>> model = sclm.load("cellplm-85m/")          # any family; or sclm.CellPLM.load(...)
>>> model.embed(adata)                         # adata.obsm["X_cellplm"], in place
>>> z = model.get_latent_representation(adata) # the array (n_obs × dim, float32)
>>> lc = sclm.LangCell.load("langcell/")       # zero-shot cell types from texts:
>>> lc.annotate(adata, classes=["B cell", "T cell"], ontology="cell_ontology.tsv")

Modules: :mod:`sclm.tl` (scanpy-style functions), :mod:`sclm.finetune` (annotation and the
other task protocols, reports as DataFrames), :func:`sclm.pretrain`, :mod:`sclm.dask`
(embedding a Dask-backed dataset on a cluster, identical to one process).
"""
from . import _sclm
from ._model import CellPLM, LangCell, Model, load
from ._train import pretrain
from . import finetune, tl

__version__ = _sclm.version()


def __getattr__(name):
    # sclm.dask needs dask installed (pip install "sclm[dask]"): imported on first use.
    if name == "dask":
        import importlib

        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module 'sclm' has no attribute '{name}'")


def set_threads(n: int) -> None:
    """Number of CPU threads compute uses (call before any compute; default: all cores)."""
    _sclm.set_threads(int(n))


__all__ = ["Model", "CellPLM", "LangCell", "load", "pretrain", "finetune", "tl", "set_threads", "__version__", "dask"]
