"""sclm quickstart: embed an AnnData with CellPLM, cluster with scanpy, plot.

    pip install ".[examples]"          # from the repository root (see README)
    python examples/quickstart.py      # writes quickstart_umap.png

The data is simulated by sclm's own simulator (3 cell types, 2 batches) so the script runs
offline; with your data, replace the first step by ``adata = anndata.read_h5ad("yours.h5ad")``
(raw counts in X or a layer). The model is pretrained here for a few epochs on the data itself;
with an imported checkpoint use ``model = sclm.load("cellplm-85m/")`` instead.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import anndata as ad
import numpy as np

import sclm


def simulated(path: str) -> ad.AnnData:
    """1,500 cells x 500 genes from ``sclm simulate`` (the CLI built with cargo)."""
    exe = os.environ.get("SCLM_BIN") or shutil.which("sclm") or "target/debug/sclm"
    subprocess.run([exe, "-q", "--seed", "1", "simulate", "-o", path, "--cells", "1500", "--genes", "500",
                    "--types", "3", "--batches", "2"], check=True)
    return ad.read_h5ad(path)


def main() -> None:
    out_png = sys.argv[1] if len(sys.argv) > 1 else "quickstart_umap.png"
    with tempfile.TemporaryDirectory() as tmp:
        adata = simulated(os.path.join(tmp, "sim.h5ad"))
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
