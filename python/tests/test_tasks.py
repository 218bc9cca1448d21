"""Training and the task protocols from Python (the library's protocols; their quality is
tested in the Rust suites, these check what the Python layer returns and writes)."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest

import sclm
from conftest import bits, run_cli


def test_pretrain_equals_cli_and_learns(sim_path, data_dir):
    a = ad.read_h5ad(sim_path)
    out = data_dir / "py-pretrained"
    m = sclm.pretrain(a, epochs=2, seed=4, output=out, verbose=False)
    assert len(m.history) == 2 and all(np.isfinite(m.history))
    assert m.path == str(out) and m.family == "cellplm"
    cli = data_dir / "cli-pretrained"
    run_cli("--seed", "4", "pretrain", "cellplm", sim_path, "-o", cli, "--epochs", "2")
    # The same seed gives the same weights, hence the same embedding bit for bit.
    z_py = m.get_latent_representation(a, verbose=False)
    z_cli = sclm.load(cli).get_latent_representation(a, verbose=False)
    assert np.array_equal(bits(z_py), bits(z_cli))


def test_pretrain_interrupt(sim):
    calls = []

    def cb(event, done, total, value):
        calls.append(event)
        raise KeyboardInterrupt

    bar = cb
    parts = [("d", sclm._adata.parts_of(sim, None, obs_keys=["batch"]))]
    with pytest.raises(KeyboardInterrupt):
        sclm._sclm.pretrain(parts, epochs=3, progress=bar)
    assert calls == ["step"], "training must stop after the first step"


def test_annotation_classifier_and_predict(sim, data_dir):
    label = "cell_type" if "cell_type" in sim.obs else sim.obs.columns[0]
    clf = sclm.finetune.annotation(sim, label_key=label, epochs=3, n_top_genes=80,
                                   output=data_dir / "clf", verbose=False)
    assert isinstance(clf.report, pd.DataFrame) and len(clf.report) == 2
    assert {"accuracy", "macro_F1"} <= set(clf.report.columns)
    assert clf.report["accuracy"].between(0, 1).all()
    key = f"{label}_cellplm"
    assert set(sim.obs[key + "_split"]) <= {"train", "valid", "test", "excluded"}
    assert (sim.obs[key + "_split"] == "test").sum() > 0
    assert sorted(clf.classes) == sorted(set(sim.obs[label].astype(str)))
    # The returned classifier predicts what the protocol wrote, and so does the saved one.
    b = sim.copy()
    clf.predict(b, key_added="again", verbose=False)
    assert list(b.obs["again"].astype(str)) == list(sim.obs[key].astype(str))
    c = sclm.load(data_dir / "clf").predict(sim, copy=True, verbose=False)
    assert list(c.obs["cellplm_prediction"].astype(str)) == list(sim.obs[key].astype(str))
    with pytest.raises(KeyError, match="no obs column named 'nope'"):
        sclm.finetune.annotation(sim, label_key="nope", verbose=False)


def test_denoising(sim):
    rep, data = sclm.finetune.denoising(sim, n_top_genes=60, pretrain_epochs=1, epochs=1, return_data=True,
                                        verbose=False)
    assert len(rep) == 4 and "rmse" in {c.lower() for c in rep.columns}
    assert "counts_hidden" in data.layers and data.n_vars <= 60
    with pytest.raises(ValueError, match="zero-shot"):
        sclm.finetune.denoising(sim, model=sclm.Model.fresh(sim.var_names, "cellplm"), pretrain_epochs=2,
                                verbose=False)


def test_spatial_imputation(spatial_path):
    a = ad.read_h5ad(spatial_path)
    rep, q = sclm.finetune.spatial_imputation(a, n_top_genes=40, holdout_frac=0.2, epochs=1, return_data=True,
                                              verbose=False)
    assert len(rep) == 2 and q.var["held_out"].any()
    assert any(k.endswith("_imputed") for k in q.layers)
    with pytest.raises(KeyError, match="no obsm entry named 'xy'"):
        sclm.finetune.spatial_imputation(a, spatial_key="xy", verbose=False)


def test_perturbation(perturb_path):
    a = ad.read_h5ad(perturb_path)
    rep = sclm.finetune.perturbation(a, epochs=1, verbose=False)
    assert len(rep) >= 2 and rep.attrs["n_controls"] > 0 and rep.attrs["conditions"]["test"]


def test_evaluate(sim, model_dir):
    label = "cell_type" if "cell_type" in sim.obs else sim.obs.columns[0]
    rep = sclm.tl.evaluate(sim, str(model_dir), label_key=label, n_top_genes=80, verbose=False)
    assert len(rep) == 2 and "ARI" in rep.columns
    assert sim.obsm["X_cellplm"].shape[0] == sim.n_obs
