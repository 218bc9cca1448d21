"""Model objects: one class for every family, the family read from the model directory."""
from __future__ import annotations

import json
import os
from typing import Optional, Union

import numpy as np

from . import _adata
from . import _sclm

PathLike = Union[str, "os.PathLike[str]"]


class Model:
    """A model of any family: pretrained, imported or a fine-tuned classifier.

    Open one with :func:`sclm.load` (any family) or ``sclm.CellPLM.load``; create an untrained
    one with ``Model.fresh``. Embedding follows scanpy's convention (``embed`` writes
    ``adata.obsm`` in place, ``copy=True`` returns a new AnnData) and scvi-tools' (
    ``get_latent_representation`` returns the array).
    """

    #: The family a subclass stands for (``None``: any).
    family_name: Optional[str] = None

    def __init__(self, native: "_sclm.Model"):
        if self.family_name is not None and native.family != self.family_name:
            raise ValueError(f"this is a {native.family} model, not a {self.family_name} one (use sclm.load)")
        self._m = native
        #: The directory the model was loaded from or saved to (``None``: in memory only).
        self.path: Optional[str] = None
        #: Mean training loss per epoch, when this object was just trained.
        self.history: list = []
        #: Notes of the run that made this object (gene matching, data, training).
        self.notes: list = []

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, path: PathLike) -> "Model":
        """Opens the model directory ``path`` (written by ``sclm import``, ``sclm pretrain``,
        ``sclm finetune ... --save-model`` or :meth:`save`)."""
        native = _sclm.Model.load(os.fspath(path))
        m = _wrap(native) if cls is Model else cls(native)
        m.path = os.fspath(path)
        return m

    @classmethod
    def fresh(cls, genes, family: Optional[str] = None, seed: int = 0) -> "Model":
        """An untrained model over ``genes`` (its small CPU preset), weights drawn with ``seed``."""
        fam = family or cls.family_name
        if fam is None:
            raise ValueError("fresh: name the family (family='cellplm')")
        return _wrap(_sclm.Model.fresh(fam, [str(g) for g in genes], seed))

    def save(self, path: PathLike) -> None:
        """Writes the model as a model directory (atomic: a failed save leaves nothing)."""
        self._m.save(os.fspath(path))
        if self.path is None:
            self.path = os.fspath(path)

    # -- properties -----------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The family (``cellplm``, ...)."""
        return self._m.family

    @property
    def genes(self) -> list:
        """The gene vocabulary, in model order."""
        return self._m.genes

    @property
    def embedding_dim(self) -> int:
        """Width of the cell embedding."""
        return self._m.embedding_dim

    @property
    def classes(self) -> list:
        """Class names of a fine-tuned classifier (empty for a pretrained model)."""
        return self._m.classes

    @property
    def manifest(self) -> dict:
        """The model directory's manifest (``model.json``): family, kind, registry, classes."""
        return json.loads(self._m.manifest_json)

    @property
    def default_key(self) -> str:
        """The obsm key embeddings are written to by default (``X_<family>``)."""
        return f"X_{self.family}"

    def __repr__(self) -> str:
        return self._m.__repr__()

    # -- reading AnnData ------------------------------------------------------------------
    def _read(self, adata, layer, batch_key, spatial_key, gene_id_column):
        reg = self.manifest.get("registry", {})
        group_key = reg.get("group_key", "batch") if batch_key is None else batch_key
        if spatial_key is None:
            sk, required = reg.get("spatial_key", "spatial"), False
        else:
            sk, required = spatial_key, bool(spatial_key)
        x = _adata.counts_of(adata, layer)
        names, cols = _adata.var_arg(adata, gene_id_column)
        groups = _adata.labels_of(adata, group_key, "batch key", required=batch_key not in (None, ""))
        coords = _adata.coords_of(adata, sk, required=required)
        return x, names, cols, groups, coords

    def get_latent_representation(
        self,
        adata,
        layer: Optional[str] = None,
        batch_key: Optional[str] = None,
        spatial_key: Optional[str] = None,
        gene_id_column: Optional[str] = None,
        max_cells: int = 10_000,
        allow_non_integer: bool = False,
        verbose: bool = True,
    ) -> np.ndarray:
        """The embedding of every cell of ``adata`` (raw counts in ``X`` or ``layer``).

        Parameters
        ----------
        adata
            AnnData with raw counts; genes are matched to the model's vocabulary by symbol or
            Ensembl id (var index or a ``gene_ids`` column, whichever matches more).
        layer
            Layer with the raw counts (default ``X``).
        batch_key
            obs column whose values form the groups of cells that attend to each other
            (default: the key saved with the model, ``batch`` for CellPLM, used when present;
            ``""``: all cells one group).
        spatial_key
            obsm key of 2-D coordinates (default: the model's, ``spatial``, when present;
            ``""``: none).
        gene_id_column
            var column with the gene identifiers (default: var index or ``gene_ids``).
        max_cells
            Most cells in one forward call (bounds memory).
        allow_non_integer
            Accept non-integer values where the model expects counts.
        verbose
            Progress bar and the gene-matching report.

        Returns
        -------
        ``float32`` array of shape ``(n_obs, embedding_dim)``.
        """
        x, names, cols, groups, coords = self._read(adata, layer, batch_key, spatial_key, gene_id_column)
        with _adata.Progress(adata.n_obs, "embed", "cells", verbose) as bar:
            emb, report = self._m.embed(
                _adata.matrix_arg(x),
                names,
                cols,
                gene_id_column,
                groups,
                coords,
                max_cells,
                allow_non_integer,
                bar,
            )
        if verbose:
            print(f"sclm: {report}")
        return emb

    def embed(self, adata, key_added: Optional[str] = None, copy: bool = False, **kwargs):
        """Embeds every cell of ``adata`` into ``adata.obsm[key_added]`` (default
        ``X_<family>``), in place; with ``copy=True`` returns a new AnnData instead. Keyword
        arguments are those of :meth:`get_latent_representation`."""
        emb = self.get_latent_representation(adata, **kwargs)
        target = adata.copy() if copy else adata
        target.obsm[key_added or self.default_key] = emb
        return target if copy else None

    def predict(
        self,
        adata,
        key_added: Optional[str] = None,
        copy: bool = False,
        layer: Optional[str] = None,
        batch_key: Optional[str] = None,
        spatial_key: Optional[str] = None,
        gene_id_column: Optional[str] = None,
        max_cells: int = 10_000,
        allow_non_integer: bool = False,
        verbose: bool = True,
    ):
        """Annotates every cell with a fine-tuned classifier: ``obs[key_added]`` (default
        ``<family>_prediction``) and ``obs[key_added + "_prob"]``, in place (or on a copy with
        ``copy=True``, which is returned). Other arguments as :meth:`get_latent_representation`."""
        import pandas as pd

        if not self.classes:
            raise NotImplementedError(f"{self.family} model is not a fine-tuned classifier (see sclm.finetune.annotation)")
        x, names, cols, groups, coords = self._read(adata, layer, batch_key, spatial_key, gene_id_column)
        with _adata.Progress(adata.n_obs, "predict", "cells", verbose) as bar:
            pred, prob, report = self._m.predict(
                _adata.matrix_arg(x), names, cols, gene_id_column, groups, coords, max_cells, allow_non_integer, bar
            )
        if verbose:
            print(f"sclm: {report}")
        key = key_added or f"{self.family}_prediction"
        target = adata.copy() if copy else adata
        target.obs[key] = pd.Categorical(pred, categories=sorted(set(self.classes)))
        target.obs[key + "_prob"] = prob
        return target if copy else None


class CellPLM(Model):
    """CellPLM (Wen et al. 2023): cells as tokens of a tissue. ``CellPLM.load(dir)`` opens a
    directory written by ``sclm import cellplm`` or ``sclm pretrain cellplm``."""

    family_name = "cellplm"


class LangCell(Model):
    """LangCell (Zhao et al. 2024): a cell BERT over rank-ordered genes aligned with a text BERT.
    ``LangCell.load(dir)`` opens a directory written by ``sclm import langcell`` or
    ``sclm pretrain langcell``; :meth:`annotate` names cell types from texts alone."""

    family_name = "langcell"

    @classmethod
    def pretrain(
        cls,
        adatas,
        label_key: str = "cell_type",
        ontology: Optional[PathLike] = None,
        texts: Optional[dict] = None,
        drop_unmatched: bool = False,
        init: Optional[PathLike] = None,
        text_init: Optional[PathLike] = None,
        max_cell_tokens: Optional[int] = None,
        stage: int = 2,
        epochs: int = 10,
        batch_size: int = 16,
        lr: float = 1e-4,
        warmup_steps: int = 100,
        weight_decay: float = 1e-3,
        mask_ratio: float = 0.15,
        w_mgm: float = 0.1,
        w_cc: float = 0.05,
        w_ct: float = 1.0,
        w_ctm: float = 1.0,
        temperature: float = 0.05,
        cc_temperature: float = 0.2,
        queue_size: int = 256,
        momentum: float = 0.995,
        valid_fraction: float = 0.1,
        layer: Optional[str] = None,
        allow_non_integer: bool = False,
        seed: int = 0,
        output: Optional[PathLike] = None,
        run_dir: Optional[PathLike] = None,
        resume: bool = False,
        verbose: bool = True,
    ) -> "LangCell":
        """Pretrains LangCell (both stages; ``sclm pretrain langcell``) on AnnData objects with
        raw counts and cell-type labels in ``obs[label_key]``; label texts from ``texts`` (dict
        label → text), then the Cell Ontology TSV ``ontology``. ``init``: continue from a
        LangCell directory (e.g. an imported checkpoint); otherwise a fresh small model over the
        data's genes, its text encoder and tokenizer started from the Hugging Face BERT directory
        ``text_init`` when given (e.g. all-MiniLM-L6-v2); ``max_cell_tokens`` (default 256) sizes it. Defaults and their reasons are those of the CLI (``sclm pretrain langcell
        --help``). Returns the model with ``.history`` (training loss per epoch), ``.notes`` and
        ``.zero_shot_valid`` (accuracy, macro-F1 of the held-out validation cells, or None)."""
        from ._train import _Bar, _datasets

        ds = _datasets(adatas)
        if not ds:
            raise ValueError("pretrain: no datasets given")
        if init is not None and (max_cell_tokens is not None or text_init is not None):
            raise ValueError("pretrain: max_cell_tokens and text_init size a fresh model; a model from init has its own")
        labels = set()
        for name, a in ds:
            if label_key not in a.obs:
                raise KeyError(f"{name}: obs has no column '{label_key}'")
            labels.update(a.obs[label_key].astype(str))
        if ontology is None and texts is None:
            raise ValueError("pretrain: give label texts (texts={label: text}) and/or ontology=<Cell Ontology TSV>")
        names, class_texts, report, unmatched = _sclm.class_texts(
            sorted(labels), None if ontology is None else os.fspath(ontology), texts
        )
        if verbose:
            print("sclm: label texts:\n" + report.rstrip())
        if unmatched and not drop_unmatched:
            raise ValueError(
                f"no text for {len(unmatched)} label(s): {', '.join(unmatched)} (pass texts=..., or drop_unmatched=True)"
            )
        parts = [(name, _adata.parts_of(a, layer, obs_keys=[label_key], obsm_keys=[])) for name, a in ds]
        with _Bar(epochs, "pretrain langcell", verbose) as bar:
            native, notes, losses, zs = _sclm.pretrain_langcell(
                parts, list(zip(names, class_texts)), label_key=label_key,
                init=None if init is None else os.fspath(init),
                text_init=None if text_init is None else os.fspath(text_init),
                max_cell_tokens=256 if max_cell_tokens is None else max_cell_tokens, stage=stage,
                epochs=epochs, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
                mask_ratio=mask_ratio, w_mgm=w_mgm, w_cc=w_cc, w_ct=w_ct, w_ctm=w_ctm, temperature=temperature,
                cc_temperature=cc_temperature, queue_size=queue_size, momentum=momentum,
                valid_fraction=valid_fraction, allow_non_integer=allow_non_integer, seed=seed,
                run_dir=None if run_dir is None else os.fspath(run_dir), resume=resume, progress=bar,
            )
        if verbose:
            for n in notes:
                print(f"sclm: {n}")
            if zs is not None:
                print(f"sclm: zero-shot on the validation cells: accuracy {zs[0]:.4f}, macro-F1 {zs[1]:.4f}")
        m = _reloaded(native, output)
        m.history = list(losses)
        m.notes = list(notes)
        m.zero_shot_valid = zs
        return m

    def few_shot(
        self,
        adata,
        label_key: str,
        k: int = 5,
        classes=None,
        ontology: Optional[PathLike] = None,
        texts: Optional[dict] = None,
        layer: Optional[str] = None,
        gene_id_column: Optional[str] = None,
        allow_non_integer: bool = False,
        seed: int = 0,
        verbose: bool = True,
    ) -> "LangCell":
        """Few-shot tuning (published recipe: Adam 1e-5, 10 epochs, batch 12, ctm_head frozen,
        CE(similarity) + CE(matching)) on ``k`` cells per class drawn with ``seed`` from
        ``obs[label_key]``; classes (default: the labels' distinct values) get texts as in
        :meth:`annotate`. Returns the tuned model (annotate with it); ``.shots`` holds the
        obs names of the cells it was tuned on, to leave them out of any score."""
        if label_key not in adata.obs:
            raise KeyError(f"obs has no column '{label_key}'")
        labels = adata.obs[label_key].astype(str)
        if classes is None:
            classes = sorted(set(labels))
        if ontology is None and texts is None:
            raise ValueError("few_shot: give class texts (texts={class: text}) and/or ontology=<Cell Ontology TSV>")
        names, class_texts, report, unmatched = _sclm.class_texts(
            [str(c) for c in classes], None if ontology is None else os.fspath(ontology), texts
        )
        if unmatched:
            raise ValueError(f"no text for {len(unmatched)} class(es): {', '.join(unmatched)}")
        index = {n: i for i, n in enumerate(names)}
        y = [index.get(l, -1) for l in labels]
        x = _adata.counts_of(adata, layer)
        var_names, cols = _adata.var_arg(adata, gene_id_column)
        native, shots = self._m.few_shot(
            _adata.matrix_arg(x), var_names, cols, class_texts, y, int(k), gene_id_column, allow_non_integer, int(seed)
        )
        m = _reloaded(native, None)
        m.shots = [str(adata.obs_names[i]) for i in shots]
        if verbose:
            print(f"sclm: few-shot tuned on {len(shots)} cells ({k} per class at most)")
        return m

    def annotate(
        self,
        adata,
        classes=None,
        classes_from: Optional[str] = None,
        ontology: Optional[PathLike] = None,
        texts: Optional[dict] = None,
        drop_unmatched: bool = False,
        alpha: float = 0.2,
        top_k: Optional[int] = None,
        key_added: str = "langcell_zero_shot",
        copy: bool = False,
        layer: Optional[str] = None,
        gene_id_column: Optional[str] = None,
        max_cells: int = 10_000,
        allow_non_integer: bool = False,
        verbose: bool = True,
    ):
        """Zero-shot cell-type annotation (paper §3.4): ``alpha·softmax(similarity/0.05) +
        (1−alpha)·softmax(matching)`` over the candidate classes, exactly as ``sclm annotate``.

        ``classes`` (a list) or ``classes_from`` (an obs column whose distinct values are the
        candidates) name the classes; their texts come from ``texts`` (dict class → text), then
        the Cell Ontology TSV ``ontology`` ("cell type: {name}. {definition}"). Writes
        ``obs[key_added]``, ``obs[key_added + "_score"]`` and ``obsm[key_added + "_scores"]``
        (cells × classes, columns in ``uns[key_added]["classes"]``); in place, or on a copy
        with ``copy=True`` (returned). ``alpha=0.1`` is the published notebook's weight; 0.2 the
        paper's. ``top_k`` runs matching only for the k most similar classes."""
        import pandas as pd

        if classes_from is not None:
            if classes is not None:
                raise ValueError("give classes or classes_from, not both")
            if classes_from not in adata.obs:
                raise KeyError(f"obs has no column '{classes_from}'")
            classes = sorted(set(adata.obs[classes_from].astype(str)))
        if not classes:
            raise ValueError("annotate: give the candidate classes (classes=[...] or classes_from='obs column')")
        if ontology is None and texts is None:
            raise ValueError("annotate: give class texts (texts={class: text}) and/or ontology=<Cell Ontology TSV>")
        names, class_texts, report, unmatched = _sclm.class_texts(
            [str(c) for c in classes], None if ontology is None else os.fspath(ontology), texts
        )
        if verbose:
            print("sclm: class texts:\n" + report.rstrip())
        if unmatched and not drop_unmatched:
            raise ValueError(
                f"no text for {len(unmatched)} class(es): {', '.join(unmatched)} (pass texts=..., or drop_unmatched=True)"
            )
        if not names:
            raise ValueError("no class has a text")
        x = _adata.counts_of(adata, layer)
        var_names, cols = _adata.var_arg(adata, gene_id_column)
        with _adata.Progress(adata.n_obs, "zero-shot", "cells", verbose) as bar:
            sim, ctm, combined, emb, rep, truncated = self._m.zero_shot(
                _adata.matrix_arg(x), var_names, cols, class_texts, gene_id_column, float(alpha), top_k,
                max_cells, allow_non_integer, bar,
            )
        if verbose:
            print(f"sclm: {rep}")
            for c, n in truncated:
                print(f"sclm: text of '{names[c]}' cut by {n} tokens to the text encoder's positions")
        best = combined.argmax(axis=1)
        target = adata.copy() if copy else adata
        target.obs[key_added] = pd.Categorical([names[i] for i in best], categories=names)
        target.obs[key_added + "_score"] = combined[np.arange(len(best)), best]
        target.obsm[key_added + "_scores"] = combined
        target.uns[key_added] = {"classes": list(names), "alpha": float(alpha), "texts": list(class_texts)}
        return target if copy else None


_FAMILIES = {"cellplm": CellPLM, "langcell": LangCell}


def _wrap(native: "_sclm.Model") -> Model:
    cls = _FAMILIES.get(native.family, Model)
    return cls(native)


def _reloaded(native: "_sclm.Model", output: Optional[PathLike]) -> Model:
    """A model just trained, saved (to ``output`` or a temporary directory) and opened again
    on the inference device, so that it embeds exactly as ``sclm embed --model DIR`` does."""
    import tempfile

    if output is not None:
        native.save(os.fspath(output))
        return Model.load(output)
    with tempfile.TemporaryDirectory(prefix="sclm-") as tmp:
        d = os.path.join(tmp, "model")
        native.save(d)
        m = Model.load(d)
    m.path = None
    return m


def load(path: PathLike) -> Model:
    """Opens a model directory of any family (its ``model.json`` names the family)."""
    return Model.load(path)
