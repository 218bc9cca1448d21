"""Fixtures: small datasets written by the project's own simulator (``sclm simulate``), and a
fresh small CellPLM saved as a model directory."""
import os
import shutil
import subprocess
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def sclm_bin() -> str:
    """The CLI built by ``cargo test`` / ``cargo build`` (``SCLM_BIN`` overrides)."""
    b = os.environ.get("SCLM_BIN") or str(ROOT / "target" / "debug" / "sclm")
    if not os.path.exists(b):
        b = shutil.which("sclm") or b
    assert os.path.exists(b), f"the sclm CLI is needed for these tests: build it with cargo build ({b})"
    return b


def run_cli(*args) -> subprocess.CompletedProcess:
    p = subprocess.run([sclm_bin(), "-q", *map(str, args)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _simulate(d: Path, name: str, *extra) -> Path:
    f = d / f"{name}.h5ad"
    if not f.exists():
        run_cli("--seed", "3", "simulate", "-o", f, *extra)
    return f


@pytest.fixture(scope="session")
def sim_path(data_dir) -> Path:
    return _simulate(data_dir, "sim", "--cells", "240", "--genes", "100", "--batches", "2", "--types", "3")


@pytest.fixture()
def sim(sim_path):
    return ad.read_h5ad(sim_path)


@pytest.fixture(scope="session")
def spatial_path(data_dir) -> Path:
    return _simulate(data_dir, "spatial", "--cells", "200", "--genes", "80", "--spatial")


@pytest.fixture(scope="session")
def perturb_path(data_dir) -> Path:
    return _simulate(data_dir, "perturb", "--cells", "600", "--genes", "100", "--perturb", "6")


@pytest.fixture(scope="session")
def model_dir(data_dir, sim_path):
    import sclm

    genes = list(ad.read_h5ad(sim_path).var_names)
    d = data_dir / "fresh-model"
    sclm.Model.fresh(genes, family="cellplm", seed=7).save(d)
    return d


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
