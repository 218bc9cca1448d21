#!/usr/bin/env python3
"""Interoperability check between sclm-io (Rust) and Python anndata.

Usage: python scripts/interop_check.py --bin target/debug/examples/interop [--data DIR] [--keep DIR]

1. Python writes .h5ad files (dense / sparse / CSC X, categoricals, bool/int/float/string
   columns, obsm, varm, layers, obsp, raw, uns; plain and gzip), the Rust side reads each and writes
   it back (whole, through the streaming writer, and through the row reader); anndata reads
   the result and every value is compared with the original, exactly.
2. The Rust side writes a synthetic AnnData; anndata reads it and compares it with the same
   object built here.
3. Real files in shared/data (when present) are round-tripped the same way.
4. Bad input makes the Rust side fail with one line and a non-zero status.

Prints one line per check and a final `interop: N passed, M failed`; exits non-zero on failure.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

import anndata as ad

warnings.filterwarnings("ignore")


class Mismatch(Exception):
    pass


def fail(where, msg):
    raise Mismatch(f"{where}: {msg}")


def dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def cmp_matrix(where, a, b, same_format=True, same_dtype=True):
    if a.shape != b.shape:
        fail(where, f"shape {a.shape} != {b.shape}")
    if same_format and sp.issparse(a) != sp.issparse(b):
        fail(where, f"sparse {sp.issparse(a)} != {sp.issparse(b)}")
    if same_dtype and a.dtype != b.dtype:
        fail(where, f"dtype {a.dtype} != {b.dtype}")
    for m in (a, b):
        # scipy's compiled routines (used by scanpy, e.g. calculate_qc_metrics) need one index type.
        if sp.issparse(m) and m.indices.dtype != m.indptr.dtype:
            fail(where, f"sparse index types differ: indices {m.indices.dtype}, indptr {m.indptr.dtype}")
    da, db = dense(a), dense(b)
    if not np.array_equal(da, db, equal_nan=True):
        k = np.argwhere(~((da == db) | (np.isnan(da) & np.isnan(db))))[0]
        fail(where, f"values differ at {tuple(k)}: {da[tuple(k)]} != {db[tuple(k)]}")


def as_list(s):
    return [None if (isinstance(v, float) and np.isnan(v)) else str(v) for v in s]


def cmp_series(where, a, b):
    if isinstance(a.dtype, pd.CategoricalDtype) or isinstance(b.dtype, pd.CategoricalDtype):
        if not (isinstance(a.dtype, pd.CategoricalDtype) and isinstance(b.dtype, pd.CategoricalDtype)):
            fail(where, f"categorical vs {a.dtype}/{b.dtype}")
        if as_list(a.cat.categories) != as_list(b.cat.categories):
            fail(where, "categories differ")
        if not np.array_equal(a.cat.codes.values, b.cat.codes.values):
            fail(where, "category codes differ")
        if a.cat.ordered != b.cat.ordered:
            fail(where, "ordered flag differs")
        return
    ka, kb = a.dtype.kind, b.dtype.kind
    if ka in "biuf" or kb in "biuf":
        if a.dtype != b.dtype:
            fail(where, f"dtype {a.dtype} != {b.dtype}")
        if not np.array_equal(a.values, b.values, equal_nan=(ka == "f")):
            fail(where, "values differ")
        return
    if as_list(a) != as_list(b):
        fail(where, "string values differ")


def cmp_frame(where, a, b):
    if as_list(a.index) != as_list(b.index):
        fail(where, "index differs")
    if list(a.columns) != list(b.columns):
        fail(where, f"columns {list(a.columns)} != {list(b.columns)}")
    for c in a.columns:
        cmp_series(f"{where}['{c}']", a[c], b[c])


def cmp_arrays(where, a, b):
    if set(a.keys()) != set(b.keys()):
        fail(where, f"keys {sorted(a.keys())} != {sorted(b.keys())}")
    for k in a.keys():
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y, equal_nan=True):
            fail(f"{where}['{k}']", f"differs ({x.dtype}{x.shape} vs {y.dtype}{y.shape})")


def cmp_uns(where, a, b, exact_keys=True):
    """Compares uns trees; numbers by value (float32 arrays may come back as float64)."""
    if isinstance(a, dict):
        if not isinstance(b, dict):
            fail(where, f"dict vs {type(b).__name__}")
        if exact_keys and set(a) != set(b):
            fail(where, f"keys {sorted(a)} != {sorted(b)}")
        if not set(b) <= set(a):
            fail(where, f"unexpected keys {sorted(set(b) - set(a))}")
        for k in b:
            cmp_uns(f"{where}/{k}", a[k], b[k], exact_keys)
        return
    if isinstance(a, str) or isinstance(b, str):
        if str(a) != str(b):
            fail(where, f"{a!r} != {b!r}")
        return
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype.kind in "SUO" or y.dtype.kind in "SUO":
        lx = [v.decode() if isinstance(v, bytes) else str(v) for v in x.ravel()]
        ly = [v.decode() if isinstance(v, bytes) else str(v) for v in y.ravel()]
        if lx != ly or x.shape != y.shape:
            fail(where, "strings differ")
        return
    if x.shape != y.shape:
        fail(where, f"shape {x.shape} != {y.shape}")
    if x.dtype.kind == "b" or y.dtype.kind == "b":
        if x.dtype.kind != y.dtype.kind or not np.array_equal(x, y):
            fail(where, f"booleans differ ({x.dtype} vs {y.dtype})")
        return
    if (x.dtype.kind == "f") != (y.dtype.kind == "f"):
        fail(where, f"dtype {x.dtype} != {y.dtype}")
    if not np.array_equal(x.astype(np.float64), y.astype(np.float64), equal_nan=True):
        fail(where, "values differ")


def cmp_adata(a, b, *, x_format=True, uns_exact=True, parts=("obs", "var", "obsm", "varm", "layers", "obsp", "raw", "uns")):
    cmp_matrix("X", a.X, b.X, same_format=x_format)
    if "obs" in parts:
        cmp_frame("obs", a.obs, b.obs)
    if "var" in parts:
        cmp_frame("var", a.var, b.var)
    if "obsm" in parts:
        cmp_arrays("obsm", dict(a.obsm), dict(b.obsm))
    if "varm" in parts:
        cmp_arrays("varm", dict(a.varm), dict(b.varm))
    if "layers" in parts:
        if set(a.layers.keys()) != set(b.layers.keys()):
            fail("layers", f"keys {sorted(a.layers.keys())} != {sorted(b.layers.keys())}")
        for k in a.layers.keys():
            cmp_matrix(f"layers['{k}']", a.layers[k], b.layers[k])
    if "obsp" in parts:
        if set(a.obsp.keys()) != set(b.obsp.keys()):
            fail("obsp", f"keys {sorted(a.obsp.keys())} != {sorted(b.obsp.keys())}")
        for k in a.obsp.keys():
            # sclm keeps matrices in float32: float64 graphs come back rounded to float32.
            cmp_matrix(f"obsp['{k}']", a.obsp[k].astype(np.float32), b.obsp[k])
    if "raw" in parts:
        if (a.raw is None) != (b.raw is None):
            fail("raw", "present in only one of the files")
        if a.raw is not None:
            cmp_matrix("raw.X", a.raw.X, b.raw.X)
            cmp_frame("raw.var", a.raw.var, b.raw.var)
    if "uns" in parts:
        cmp_uns("uns", dict(a.uns), dict(b.uns), exact_keys=uns_exact)


def fixture(dense_x=False, csc=False):
    rng = np.random.default_rng(7)
    n, g = 53, 31
    x = rng.poisson(0.7, size=(n, g)).astype(np.float32)
    x[x > 0] *= np.float32(1.25)
    x[3] = 0  # an empty row
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    ct = pd.Categorical(rng.choice(["T", "B", "NK"], n), categories=["B", "NK", "T"])
    ct[5] = np.nan
    obs["cell_type"] = ct
    obs["stage"] = pd.Categorical(rng.choice(["early", "late"], n), categories=["early", "late"], ordered=True)
    obs["is_doublet"] = rng.random(n) < 0.3
    obs["n_counts"] = rng.integers(0, 10_000, n).astype(np.int64)
    obs["batch_i32"] = rng.integers(-3, 3, n).astype(np.int32)
    obs["frac"] = rng.random(n).astype(np.float32)
    obs["score"] = rng.normal(size=n)
    obs["score"].iloc[2] = np.nan
    obs["donor"] = np.array([f"d{i % 4}" for i in range(n)], dtype=object)
    var = pd.DataFrame(index=[f"G{j}" for j in range(g)])
    var["gene_ids"] = np.array([f"ENSG{j:05d}" for j in range(g)], dtype=object)
    var["highly_variable"] = rng.random(g) < 0.5
    var["mean"] = x.mean(0).astype(np.float64)
    if dense_x:
        X = x
    elif csc:
        X = sp.csc_matrix(x)
    else:
        X = sp.csr_matrix(x)
    a = ad.AnnData(X=X, obs=obs, var=var)
    a.obsm["X_pca"] = rng.normal(size=(n, 5)).astype(np.float32)
    a.obsm["spatial"] = rng.integers(0, 1000, size=(n, 2)).astype(np.int64)
    a.obsm["X_f64"] = rng.normal(size=(n, 3))
    a.varm["PCs"] = rng.normal(size=(g, 5))
    a.layers["counts"] = sp.csr_matrix(np.floor(x))
    a.layers["dense_layer"] = (x * 2).astype(np.float32)
    a.obsp["connectivities"] = sp.random(n, n, density=0.1, format="csr", dtype=np.float32, random_state=1)
    a.obsp["distances"] = sp.random(n, n, density=0.1, format="csc", dtype=np.float64, random_state=2)
    a.obsp["dense_pairs"] = rng.normal(size=(n, n)).astype(np.float32)
    raw_x = np.concatenate([x, rng.poisson(0.3, size=(n, 4)).astype(np.float32)], axis=1)
    raw = ad.AnnData(X=sp.csr_matrix(raw_x), var=pd.DataFrame(index=[f"G{j}" for j in range(g + 4)]))
    a.raw = raw
    a.uns["title"] = "fixture"
    a.uns["n_pcs"] = 5
    a.uns["resolution"] = 0.75
    a.uns["use_raw"] = True
    a.uns["cell_type_colors"] = np.array(["#111111", "#222222", "#333333"], dtype=object)
    a.uns["ints"] = np.arange(6, dtype=np.int64)
    a.uns["mat"] = rng.normal(size=(3, 4))
    a.uns["neighbors"] = {"params": {"n_neighbors": 15, "method": "umap"}, "k": np.array([1.5, 2.5])}
    return a


def synth_expected(dense_x):
    n, g = 37, 23
    d = np.zeros((n, g), dtype=np.float32)
    for i in range(n):
        for j in range(g):
            if (i * 7 + j * 3) % 11 == 0:
                d[i, j] = np.float32((i + j) * 0.5)
    a = ad.AnnData(X=d if dense_x else sp.csr_matrix(d))
    a.obs_names = [f"cell{i}" for i in range(n)]
    a.var_names = [f"gene{j}" for j in range(g)]
    codes = np.array([-1 if i == 4 else i % 3 for i in range(n)])
    a.obs["group"] = pd.Categorical.from_codes(codes, categories=["a", "b", "c"])
    a.obs["score"] = np.arange(n) * 0.25
    a.obs["flag"] = np.arange(n) % 2 == 0
    a.obs["count"] = (np.arange(n) ** 2).astype(np.int64)
    a.obs["small"] = (np.arange(n) - 5).astype(np.int32)
    a.obs["ratio"] = (np.arange(n) / 8.0).astype(np.float32)
    a.obs["name"] = np.array([f"n{i % 5}" for i in range(n)], dtype=object)
    a.var["gene_ids"] = np.array([f"ENSG{j:05d}" for j in range(g)], dtype=object)
    a.obsm["X_emb"] = (np.arange(n * 2) * 0.5).astype(np.float32).reshape(n, 2)
    a.obsm["spatial"] = np.arange(n * 2, dtype=np.int64).reshape(n, 2)
    a.layers["counts"] = sp.csr_matrix(d)
    a.uns["title"] = "synthetic"
    a.uns["vals"] = np.array([1.5, 2.5])
    a.uns["names"] = np.array(["x", "y"], dtype=object)
    a.uns["params"] = {"n": 3, "ok": True}
    return a


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="path to the built `interop` example")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data"), help="directory of real .h5ad files")
    ap.add_argument("--keep", default=None, help="keep the files written in this directory")
    args = ap.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="sclm-interop-")
    os.makedirs(tmp, exist_ok=True)
    results = []

    def rust(*cmd):
        p = subprocess.run([args.bin, *cmd], capture_output=True, text=True)
        if p.returncode != 0:
            raise Mismatch(f"rust side failed ({' '.join(cmd[:1])}): {p.stderr.strip()}")

    def check(name, fn):
        try:
            fn()
            results.append(True)
            print(f"ok    {name}")
        except Mismatch as e:
            results.append(False)
            print(f"FAIL  {name}: {e}")
        except Exception:
            results.append(False)
            print(f"FAIL  {name}: unexpected error\n{traceback.format_exc()}")

    fixtures = {
        "sparse": fixture(),
        "dense": fixture(dense_x=True),
        "csc": fixture(csc=True),
    }
    for name, a in fixtures.items():
        for gz in (False, True):
            src = os.path.join(tmp, f"py_{name}{'_gz' if gz else ''}.h5ad")
            a.write_h5ad(src, compression="gzip" if gz else None)
            for rgz in (None, "4"):
                out = os.path.join(tmp, f"rs_{name}{'_gz' if gz else ''}_{rgz or 'plain'}.h5ad")

                def rt(src=src, out=out, rgz=rgz, name=name):
                    rust("roundtrip", src, out, *(["--gzip", rgz] if rgz else []))
                    cmp_adata(ad.read_h5ad(src), ad.read_h5ad(out), x_format=(name != "csc"))

                check(f"roundtrip {os.path.basename(src)} -> rust{' gzip' if rgz else ''}", rt)
        src = os.path.join(tmp, f"py_{name}.h5ad")
        out = os.path.join(tmp, f"rs_stream_{name}.h5ad")

        def st(src=src, out=out):
            rust("stream", src, out, "--chunk", "7")
            cmp_adata(ad.read_h5ad(src), ad.read_h5ad(out), x_format=False)

        check(f"streaming writer {os.path.basename(src)}", st)
        if name != "csc":
            out2 = os.path.join(tmp, f"rs_rows_{name}.h5ad")

            def rows(src=src, out=out2):
                rust("rows", src, out, "--chunk", "6")
                cmp_adata(ad.read_h5ad(src), ad.read_h5ad(out), x_format=False, parts=("obs", "var"))

            check(f"row reader {os.path.basename(src)}", rows)

    def large():
        # Large enough (> 4M stored values) for the Rust writer's chunked streaming path.
        rng = np.random.default_rng(3)
        x = sp.random(1500, 3000, density=0.95, format="csr", dtype=np.float32, random_state=rng)
        a = ad.AnnData(X=x)
        a.obs["g"] = pd.Categorical(rng.choice(["u", "v"], 1500))
        src = os.path.join(tmp, "py_large.h5ad")
        out = os.path.join(tmp, "rs_large.h5ad")
        a.write_h5ad(src)
        rust("roundtrip", src, out)
        cmp_adata(ad.read_h5ad(src), ad.read_h5ad(out))

    check("roundtrip of a large sparse X (streamed by write_h5ad)", large)

    for dense_x in (False, True):
        for gz in (None, "6"):
            out = os.path.join(tmp, f"rs_synth_{'dense' if dense_x else 'sparse'}_{gz or 'plain'}.h5ad")

            def sy(out=out, dense_x=dense_x, gz=gz):
                rust("synth", out, *(["--dense"] if dense_x else []), *(["--gzip", gz] if gz else []))
                cmp_adata(synth_expected(dense_x), ad.read_h5ad(out))

            check(f"rust-written synthetic ({'dense' if dense_x else 'sparse'} X{', gzip' if gz else ''})", sy)

    data = os.path.abspath(args.data)
    if os.path.isdir(data):
        for f in sorted(os.listdir(data)):
            if not f.endswith(".h5ad"):
                continue
            src = os.path.join(data, f)
            out = os.path.join(tmp, f"rs_real_{f}")

            def real(src=src, out=out):
                rust("roundtrip", src, out)
                a = ad.read_h5ad(src)
                a.var_names_make_unique()
                if a.raw is not None:
                    a.raw.var.index = ad.utils.make_index_unique(a.raw.var.index)
                cmp_adata(a, ad.read_h5ad(out), uns_exact=False, parts=("obs", "var", "obsm", "varm", "layers", "obsp", "raw", "uns"))

            check(f"real file {f}", real)

        for f, mode, gz in (("celltypist_sample_counts.h5ad", "roundtrip", "4"), ("mouse_10k_subset_counts.h5ad", "stream", None),
                            ("mouse_10k_subset_counts.h5ad", "stream", "1")):
            src = os.path.join(data, f)
            if not os.path.exists(src):
                continue
            out = os.path.join(tmp, f"rs_real_{mode}_{gz or 'plain'}_{f}")

            def real2(src=src, out=out, mode=mode, gz=gz):
                rust(mode, src, out, *(["--gzip", gz] if gz else []), *(["--chunk", "997"] if mode == "stream" else []))
                a = ad.read_h5ad(src)
                a.var_names_make_unique()
                cmp_adata(a, ad.read_h5ad(out), uns_exact=False)

            check(f"real file {f} ({mode}{', gzip' if gz else ''})", real2)
    else:
        print(f"note: {data} not found; real-file round trips not run")

    def bad():
        p = os.path.join(tmp, "garbage.h5ad")
        with open(p, "wb") as fh:
            fh.write(b"\x89HDF\r\n\x1a\n" + os.urandom(2000))
        out = os.path.join(tmp, "never.h5ad")
        r = subprocess.run([args.bin, "roundtrip", p, out], capture_output=True, text=True)
        lines = [l for l in r.stderr.strip().splitlines() if l.startswith("interop:")]
        if r.returncode == 0 or len(lines) != 1 or "garbage.h5ad" not in lines[0]:
            fail("garbage input", f"status {r.returncode}, stderr {r.stderr!r}")
        if os.path.exists(out) or any(n.startswith(".never.h5ad") for n in os.listdir(tmp)):
            fail("garbage input", "output or temporary file left behind")

    check("corrupt input fails cleanly, no output left", bad)

    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    n_ok = sum(results)
    n_bad = len(results) - n_ok
    print(f"interop: {n_ok} passed, {n_bad} failed")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
