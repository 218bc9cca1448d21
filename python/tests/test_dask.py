"""sclm.dask.embed on a local cluster with 2 workers equals the single-process embedding."""
import anndata as ad
import numpy as np
import pytest

import sclm
from conftest import bits

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c) as cl:
            yield cl


@pytest.mark.parametrize("batch_key", [None, ""])
def test_dask_equals_one_process(client, sim, model_dir, batch_key):
    m = sclm.load(model_dir)
    want = m.get_latent_representation(sim, batch_key=batch_key, max_cells=70, verbose=False)
    x = sim.X.tocsr().astype(np.float32)
    lazy = ad.AnnData(X=da.from_array(x, chunks=(50, -1), asarray=False), obs=sim.obs, var=sim.var)
    sclm.dask.embed(lazy, m, batch_key=batch_key, max_cells=70, n_tasks=3)
    assert np.array_equal(bits(lazy.obsm["X_cellplm"]), bits(want))
    dense = ad.AnnData(X=da.from_array(np.asarray(x.todense()), chunks=(64, -1)), obs=sim.obs, var=sim.var)
    out = sclm.dask.embed(dense, str(model_dir), batch_key=batch_key, max_cells=70, copy=True)
    assert np.array_equal(bits(out.obsm["X_cellplm"]), bits(want))
    assert "X_cellplm" not in dense.obsm
