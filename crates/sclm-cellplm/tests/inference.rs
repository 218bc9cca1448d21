//! The fast CPU inference path (`CellPlm::inference`) against the burn path
//! (`CellPlm::embed_group`) on random models: every latent kind, both norms, positional
//! encoding with present and missing coordinates, library-size scaling, several blocks of the
//! gene bag and a hidden size that is not a multiple of its panel width.
use rand::{Rng, SeedableRng};
use sclm_cellplm::model::to_vec;
use sclm_cellplm::{CellPlm, CellPlmConfig, LatentKind, NormChoice};
use sclm_nn::embedding::CsrRows;

const GENES: usize = 300;
const CELLS: usize = 700;

fn config(latent: LatentKind, norm: NormChoice, pe: bool, normalize_total: Option<f64>) -> CellPlmConfig {
    let genes: Vec<String> = (0..GENES).map(|i| format!("G{i}")).collect();
    let mut c = CellPlmConfig::small(genes);
    c.enc_hid = 80;
    c.enc_head = 4;
    c.enc_layers = 2;
    c.post_latent_dim = 12;
    c.qzyx_hidden = 24;
    c.num_clusters = 5;
    c.dec_hid = 16;
    c.latent_mod = latent;
    c.norm = norm;
    c.positional_encoding = pe;
    c.normalize_total = normalize_total;
    c
}

/// Random counts: about 40 genes per cell (some cells empty), values 1–20.
fn counts() -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut ptr, mut idx, mut val) = (vec![0usize], Vec::new(), Vec::new());
    for r in 0..CELLS {
        if r % 97 != 13 {
            for g in 0..GENES {
                if rng.random_bool(40.0 / GENES as f64) {
                    idx.push(g as u32);
                    val.push(rng.random_range(1..=20) as f32);
                }
            }
        }
        ptr.push(idx.len());
    }
    (ptr, idx, val)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[test]
fn fast_path_equals_the_burn_path() {
    let dev = sclm_nn::cpu_device();
    let (p, i, v) = counts();
    let rows = CsrRows::new(GENES, &p, &i, &v).unwrap();
    // Every fifth cell lacks coordinates.
    let coords: Vec<[f32; 2]> =
        (0..CELLS).map(|r| if r % 5 == 0 { [-1.0, -1.0] } else { [(r % 31) as f32, (r / 31) as f32 * 1.5] }).collect();
    for latent in [LatentKind::Gmvae, LatentKind::Vae, LatentKind::Ae] {
        for norm in [NormChoice::Groupnorm, NormChoice::Layernorm] {
            for (pe, total) in [(false, None), (true, Some(1e4))] {
                sclm_nn::seed_everything(1, &dev);
                let model = CellPlm::new(&config(latent, norm, pe, total), &dev).unwrap();
                let fast = model.inference();
                assert!(fast.is_fast());
                let c = pe.then_some(coords.as_slice());
                let want = to_vec(model.embed_group(&rows, c).unwrap());
                let got = fast.embed_group(&rows, c).unwrap();
                let d = max_diff(&want, &got);
                assert!(d < 1e-4, "{latent:?} {norm:?} pe={pe}: max |difference| {d}");
                let spread = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(spread > 1e-2, "embeddings are not trivially small ({spread})");
                // The same inference object on a smaller group (its layer buffers now larger
                // and holding the last group's values), then on the first group again.
                let small = CsrRows::new(GENES, &p[..=100], &i[..p[100]], &v[..p[100]]).unwrap();
                let cs = c.map(|c| &c[..100]);
                let want_small = to_vec(model.embed_group(&small, cs).unwrap());
                let d = max_diff(&want_small, &fast.embed_group(&small, cs).unwrap());
                assert!(d < 1e-4, "{latent:?} {norm:?} pe={pe}, reused buffers: max |difference| {d}");
                assert_eq!(fast.embed_group(&rows, c).unwrap(), got, "a repeated call differs");
            }
        }
    }
}

#[test]
fn fast_path_falls_back_where_it_does_not_apply() {
    let (p, i, v) = counts();
    let rows = CsrRows::new(GENES, &p, &i, &v).unwrap();
    // A GMVAE that samples its cluster at inference keeps the burn path (and stays random).
    let mut c = config(LatentKind::Gmvae, NormChoice::Groupnorm, false, None);
    c.deterministic = false;
    let model = CellPlm::new(&c, &sclm_nn::cpu_device()).unwrap();
    let fast = model.inference();
    assert!(!fast.is_fast());
    let a = fast.embed_group(&rows, None).unwrap();
    let b = fast.embed_group(&rows, None).unwrap();
    assert!(max_diff(&a, &b) > 1e-6);
    // A model being trained (gradients on) keeps the burn path too.
    let train =
        CellPlm::new(&config(LatentKind::Ae, NormChoice::Groupnorm, false, None), &sclm_nn::train_device()).unwrap();
    assert!(!train.inference().is_fast());
    // Input errors are the model's.
    let model =
        CellPlm::new(&config(LatentKind::Ae, NormChoice::Groupnorm, false, None), &sclm_nn::cpu_device()).unwrap();
    let narrow = CsrRows::new(GENES - 1, &[0, 0], &[], &[]).unwrap();
    assert!(model.inference().embed_group(&narrow, None).unwrap_err().to_string().contains("vocabulary"));
}

/// The same input gives the same bits whatever the thread count and however rayon happens
/// to schedule the work (partial sums are combined in a fixed order).
#[test]
fn fast_path_is_deterministic_across_thread_counts() {
    let (p, i, v) = counts();
    let rows = CsrRows::new(GENES, &p, &i, &v).unwrap();
    let model =
        CellPlm::new(&config(LatentKind::Ae, NormChoice::Layernorm, false, None), &sclm_nn::cpu_device()).unwrap();
    let fast = model.inference();
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let one = pool(1).install(|| fast.embed_group(&rows, None).unwrap());
    let many = pool(5);
    for run in 0..8 {
        let again = many.install(|| fast.embed_group(&rows, None).unwrap());
        assert!(one == again, "run {run} on 5 threads differs from 1 thread by {}", max_diff(&one, &again));
    }
}
