"""Embedding from Python: zero-copy input, equality with the CLI, conventions, errors."""
import subprocess

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sclm
from conftest import bits, run_cli, sclm_bin


def test_load_and_repr(model_dir):
    m = sclm.load(model_dir)
    assert isinstance(m, sclm.CellPLM)
    assert m.family == "cellplm" and m.embedding_dim > 0 and len(m.genes) == 100
    assert "cellplm" in repr(m) and "100 genes" in repr(m)
    assert sclm.CellPLM.load(model_dir).genes == m.genes
    assert m.manifest["family"] == "cellplm"
    assert m.classes == []


def test_zero_copy_addresses(sim):
    x = sim.X.tocsr().astype(np.float32)
    got = sclm._sclm.borrowed_addresses(sclm._adata.matrix_arg(x))
    assert got == [x.indptr.ctypes.data, x.indices.ctypes.data, x.data.ctypes.data]
    csc = x.tocsc()
    got = sclm._sclm.borrowed_addresses(sclm._adata.matrix_arg(csc))
    assert got == [csc.indptr.ctypes.data, csc.indices.ctypes.data, csc.data.ctypes.data]
    dense = np.asarray(x.todense(), dtype=np.float64)
    assert sclm._sclm.borrowed_addresses(sclm._adata.matrix_arg(dense)) == [dense.ctypes.data]
    # A strided view is read in place as well (its first element's address).
    view = dense[::2]
    assert sclm._sclm.borrowed_addresses(sclm._adata.matrix_arg(view)) == [view.ctypes.data]


def test_equals_cli_bit_for_bit(sim_path, model_dir, data_dir):
    out = data_dir / "cli-embed.h5ad"
    run_cli("embed", sim_path, "--model", model_dir, "-o", out)
    want = ad.read_h5ad(out).obsm["X_cellplm"]
    a = ad.read_h5ad(sim_path)
    m = sclm.load(model_dir)
    z = m.get_latent_representation(a, verbose=False)
    assert z.dtype == np.float32 and z.shape == (a.n_obs, m.embedding_dim)
    assert np.array_equal(bits(z), bits(want))
    # Every layout and dtype of the same counts gives the same bits.
    x = a.X.tocsr()
    for variant in [x.astype(np.float64), x.tocsc(), np.asarray(x.todense(), dtype=np.float32),
                    sp.csr_matrix((x.data.astype(np.int64), x.indices.astype(np.int64), x.indptr.astype(np.int64)),
                                  shape=x.shape)]:
        b = ad.AnnData(X=variant, obs=a.obs, var=a.var)
        assert np.array_equal(bits(m.get_latent_representation(b, verbose=False)), bits(want))


def test_in_place_copy_and_tl(sim, model_dir):
    m = sclm.load(model_dir)
    assert m.embed(sim, verbose=False) is None
    assert sim.obsm["X_cellplm"].shape == (sim.n_obs, m.embedding_dim)
    c = sclm.load(model_dir).embed(sim, key_added="X_other", copy=True, verbose=False)
    assert "X_other" in c.obsm and "X_other" not in sim.obsm
    assert np.array_equal(c.obsm["X_other"], sim.obsm["X_cellplm"])
    assert sclm.tl.embed(sim, str(model_dir), key_added="X_tl", verbose=False) is None
    assert np.array_equal(sim.obsm["X_tl"], sim.obsm["X_cellplm"])


def test_groups_change_the_embedding_and_max_cells_splits(sim, model_dir):
    m = sclm.load(model_dir)
    # A fresh model saves no group key: all cells are one group unless a batch key is given.
    grouped = m.get_latent_representation(sim, batch_key="batch", verbose=False)
    one = m.get_latent_representation(sim, verbose=False)
    assert not np.array_equal(grouped, one), "cells of other batches must not attend to each other"
    assert np.array_equal(m.get_latent_representation(sim, batch_key="", verbose=False), one)
    assert not np.array_equal(m.get_latent_representation(sim, max_cells=50, verbose=False), one)


def test_progress_callback_and_interrupt(sim, model_dir):
    m = sclm.load(model_dir)
    seen = []
    arg = sclm._adata.matrix_arg(sim.X)
    names, cols = sclm._adata.var_arg(sim, None)
    m._m.embed(arg, names, cols, None, None, None, 60, False, seen.append)
    assert seen == [60, 120, 180, 240]

    def stop(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m._m.embed(arg, names, cols, None, None, None, 60, False, stop)


def test_errors(sim, model_dir):
    m = sclm.load(model_dir)
    with pytest.raises(KeyError, match="no layer named 'counts'"):
        m.embed(sim, layer="counts", verbose=False)
    with pytest.raises(KeyError, match="no batch key named 'donor'"):
        m.embed(sim, batch_key="donor", verbose=False)
    with pytest.raises(KeyError, match="no obsm entry named 'xy'"):
        m.embed(sim, spatial_key="xy", verbose=False)
    bad = sim.copy()
    bad.X = sim.X.astype(np.int16)
    with pytest.raises(TypeError, match="int16"):
        m.embed(bad, verbose=False)
    with pytest.raises(TypeError, match="tocsr"):
        sclm._adata.matrix_arg(sp.coo_matrix(sim.X))
    neg = sim.copy()
    x = neg.X.tocsr().astype(np.float32)
    x.data[5] = -3.0
    neg.X = x
    with pytest.raises(ValueError, match="negative"):
        m.embed(neg, verbose=False)
    frac = sim.copy()
    x = frac.X.tocsr().astype(np.float32)
    x.data[0] = 0.5
    frac.X = x
    with pytest.raises(ValueError, match="integer"):
        m.embed(frac, verbose=False)
    m.embed(frac, allow_non_integer=True, verbose=False)
    other = sim.copy()
    other.var_names = [f"NOPE{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="gene"):
        m.embed(other, verbose=False)
    with pytest.raises(FileNotFoundError):
        sclm.load("/nonexistent/model")
    with pytest.raises(ValueError, match="unknown family"):
        sclm.Model.fresh(["A", "B"], family="nope")
    with pytest.raises(NotImplementedError):
        m.predict(sim, verbose=False)


def test_shard_cli_rejects_bad_spec(sim_path, model_dir, data_dir):
    p = subprocess.run([sclm_bin(), "embed", str(sim_path), "--model", str(model_dir), "-o",
                        str(data_dir / "x.h5ad"), "--shard", "5/4"], capture_output=True, text=True)
    assert p.returncode != 0 and "--shard" in p.stderr


def test_save_roundtrip(model_dir, data_dir, sim):
    m = sclm.load(model_dir)
    d = data_dir / "saved"
    m.save(d)
    assert np.array_equal(sclm.load(d).get_latent_representation(sim, verbose=False),
                          m.get_latent_representation(sim, verbose=False))
