"""sclm quickstart: embed an AnnData with CellPLM, cluster with scanpy, plot.

    pip install ".[examples]"          # from the repository root (see README)
    python examples/quickstart.py      # writes quickstart_umap.png

The data is simulated here (3 cell types, 2 batches) so the script runs offline; with your data, replace the first step by ``adata = anndata.read_h5ad("yours.h5ad")``
(raw counts in X or a layer). The model is pretrained here for a few epochs on the data itself;
with an imported checkpoint use ``model = sclm.load("cellplm-85m/")`` instead.
"""
import sys

import anndata as ad
import numpy as np

import sclm


def simulated(n_cells: int = 1500, n_genes: int = 500, seed: int = 1) -> ad.AnnData:
    """Counts of 3 cell types over 2 batches: negative-binomial draws around per-type gene
    means (each type over-expresses its own 40 genes), a per-batch scale on every gene."""
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    base = rng.gamma(0.6, 1.0, n_genes)
    types = rng.integers(0, 3, n_cells)
    batches = rng.integers(0, 2, n_cells)
    mean = np.tile(base, (3, 1))
    for t in range(3):
        mean[t, t * 40:(t + 1) * 40] *= 6.0
    scale = rng.lognormal(0.0, 0.2, (2, n_genes))
    lib = rng.lognormal(0.0, 0.3, n_cells)[:, None]
    mu = mean[types] * scale[batches] * lib
    counts = rng.negative_binomial(2, 2 / (2 + mu)).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{t}" for t in types]),
                        "batch": pd.Categorical([f"batch{b}" for b in batches])},
                       index=[f"cell{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=[f"Gene{j:04d}" for j in range(n_genes)])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)


def main() -> None:
    out_png = sys.argv[1] if len(sys.argv) > 1 else "quickstart_umap.png"
    adata = simulated()
    print(adata)

    # 1. A model: pretrained on the data for a few epochs (small CPU preset).
    model = sclm.pretrain(adata, epochs=5, batch_key="batch", seed=0)
    print(model)

    # 2. Embed: adata.obsm["X_cellplm"], in place (scanpy's convention).
    model.embed(adata)

    # 3. Cluster and plot with scanpy on the embedding.
    import scanpy as sc

    sc.pp.neighbors(adata, use_rep="X_cellplm")
    sc.tl.leiden(adata, resolution=0.5, flavor="igraph", n_iterations=2, directed=False)
    sc.tl.umap(adata)
    from sklearn.metrics import adjusted_rand_score

    ari = adjusted_rand_score(adata.obs["cell_type"], adata.obs["leiden"])
    print(f"{adata.obs['leiden'].nunique()} Leiden clusters; ARI against the simulated cell types: {ari:.3f}")
    import matplotlib

    matplotlib.use("Agg")
    fig = sc.pl.umap(adata, color=["cell_type", "batch", "leiden"], return_fig=True, show=False)
    fig.savefig(out_png, dpi=100, bbox_inches="tight")
    print(f"wrote {out_png}; embedding {adata.obsm['X_cellplm'].shape}, mean {np.mean(adata.obsm['X_cellplm']):.4f}")


if __name__ == "__main__":
    main()
