"""LangCell from Python: a published-layout checkpoint (fixtures/langcell/ckpt) imported with the
CLI, then embedding and zero-shot annotation through sclm.LangCell give exactly what
``sclm embed`` / ``sclm annotate`` write, and bad input raises a clear exception."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sclm

from conftest import ROOT, run_cli

FX = ROOT / "fixtures" / "langcell"
CLASSES = ["B cell", "erythrocyte", "T cell"]
TEXTS = {
    "B cell": "cell type: B cell.",
    "erythrocyte": "cell type: erythrocyte. A red blood cell.",
    "T cell": "cell type: T cell.",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lc") / "model"
    run_cli("import", "langcell", "--ckpt", FX / "ckpt", "--token-dictionary", FX / "token_dictionary.tsv",
            "--gene-medians", FX / "gene_median_dictionary.tsv", "-o", d)
    return d


@pytest.fixture()
def cells():
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, size=(25, 37)).astype(np.float32)
    x[:, 0] += 1  # no empty cell
    a = ad.AnnData(sp.csr_matrix(x))
    a.var_names = [f"ENSG{i:011d}" for i in range(37)]
    a.obs_names = [f"c{i}" for i in range(25)]
    a.obs["truth"] = pd.Categorical([CLASSES[i % 3] for i in range(25)])
    return a


def test_embed_and_annotate_equal_the_cli(model_dir, cells, tmp_path):
    m = sclm.load(model_dir)
    assert isinstance(m, sclm.LangCell) and m.family == "langcell"
    z = m.get_latent_representation(cells, verbose=False)
    assert z.shape == (25, 8)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)

    m.annotate(cells, classes=CLASSES, texts=TEXTS, alpha=0.1, verbose=False)
    assert set(cells.obs["langcell_zero_shot"]) <= set(CLASSES)
    assert cells.obsm["langcell_zero_shot_scores"].shape == (25, 3)
    assert cells.uns["langcell_zero_shot"]["classes"] == CLASSES

    f = tmp_path / "in.h5ad"
    cells.write_h5ad(f)
    tsv = tmp_path / "texts.tsv"
    tsv.write_text("".join(f"{k}\t{v}\n" for k, v in TEXTS.items()))
    run_cli("embed", f, "--model", model_dir, "-o", tmp_path / "emb.h5ad")
    run_cli("annotate", f, "--model", model_dir, "-o", tmp_path / "ann.h5ad", "--classes", ",".join(CLASSES),
            "--texts", tsv, "--alpha", "0.1")
    e = ad.read_h5ad(tmp_path / "emb.h5ad")
    np.testing.assert_array_equal(e.obsm["X_langcell"], z)
    a = ad.read_h5ad(tmp_path / "ann.h5ad")
    assert list(a.obs["langcell_zero_shot"].astype(str)) == list(cells.obs["langcell_zero_shot"].astype(str))
    np.testing.assert_array_equal(a.obsm["langcell_zero_shot_scores"], cells.obsm["langcell_zero_shot_scores"])


def test_bad_input_is_named(model_dir, cells):
    m = sclm.LangCell.load(model_dir)
    with pytest.raises(ValueError, match="Foo cell"):
        m.annotate(cells, classes=["B cell", "Foo cell"], texts=TEXTS, verbose=False)
    with pytest.raises(ValueError, match="texts"):
        m.annotate(cells, classes=CLASSES, verbose=False)
    empty = cells.copy()
    empty.X = sp.csr_matrix(np.zeros((25, 37), dtype=np.float32))
    with pytest.raises(ValueError, match="no gene of the LangCell vocabulary"):
        m.get_latent_representation(empty, verbose=False)


def test_pretrain_from_python(sim, tmp_path):
    labels = sorted(set(sim.obs["cell_type"].astype(str)))
    texts = {l: f"cell type: {n}." for l, n in zip(labels, ["B cell", "T cell", "monocyte", "erythrocyte"])}
    m = sclm.LangCell.pretrain(sim, texts=texts, epochs=1, batch_size=8, max_cell_tokens=32, output=tmp_path / "lc",
                               run_dir=tmp_path / "lc.run", verbose=False)
    assert isinstance(m, sclm.LangCell) and len(m.history) == 1 and np.isfinite(m.history[0])
    assert m.zero_shot_valid is not None and 0.0 <= m.zero_shot_valid[1] <= 1.0
    assert (tmp_path / "lc.run" / "log.jsonl").exists()
    m.annotate(sim, classes_from="cell_type", texts=texts, verbose=False)
    assert set(sim.obs["langcell_zero_shot"]) <= set(labels)
    with pytest.raises(ValueError, match=labels[0]):
        sclm.LangCell.pretrain(sim, texts={labels[1]: "x"}, epochs=1, verbose=False)


def test_finetune_annotation_with_a_langcell_model(model_dir, sim):
    # The fixture model's vocabulary (37 Ensembl ids) does not cover the simulated genes: the
    # gene match fails with a clear error; a fresh LangCell over the data's genes fine-tunes.
    clf = sclm.finetune.annotation(sim, label_key="cell_type", family="langcell", epochs=1, verbose=False)
    assert clf.family == "langcell" and sorted(clf.classes) == sorted(set(sim.obs["cell_type"].astype(str)))
    assert len(clf.report) > 0
    clf.predict(sim, verbose=False)
    assert set(sim.obs["langcell_prediction"]) <= set(clf.classes)
    with pytest.raises(ValueError, match="gene"):
        sclm.finetune.annotation(sim, label_key="cell_type", model=sclm.load(model_dir), epochs=1, verbose=False)


def test_few_shot_returns_a_tuned_model(model_dir, cells):
    m = sclm.LangCell.load(model_dir)
    tuned = m.few_shot(cells, "truth", k=2, texts=TEXTS, verbose=False)
    assert isinstance(tuned, sclm.LangCell) and len(tuned.shots) == 6
    a = m.get_latent_representation(cells, verbose=False)
    b = tuned.get_latent_representation(cells, verbose=False)
    assert a.shape == b.shape and not np.array_equal(a, b), "tuning changes the cell encoder"
