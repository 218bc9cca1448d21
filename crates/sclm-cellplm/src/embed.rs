//! Cell embedding with CellPLM (the published zero-shot pipeline: cells are grouped by an obs
//! key, each group is a sequence for the Flowformer encoder; rows come back in the original
//! cell order). Grouping, gene matching and streaming are the model layer's
//! ([`sclm_model::cells`]); this module runs CellPLM's fast inference over the pieces.
use sclm_data::{CsrMatrix, Dense};
use sclm_model::ModelError;

pub use sclm_model::cells::{for_each_piece, plan_pieces, stream_pieces, CellLabels, PieceOptions, StreamOptions};
pub use sclm_model::{EmbedOptions, GeneMapping};

use crate::error::Result;
use crate::family::CellPlmModel;
use crate::model::CellPlm;

/// Embeds a chunk of CSR rows (cells × dataset genes): `groups` gives each row's group label
/// (`None` = one group), `coords` optional coordinates. Groups are formed within the chunk
/// only. Returns `rows × latent_dim` in row order; `progress` receives the number of rows of
/// this chunk done. Deterministic for a deterministic model. The model layer's
/// [`sclm_model::embed_rows`] on `model` with the default registry.
pub fn embed_chunk(
    model: &CellPlm,
    x: &CsrMatrix,
    groups: Option<&[String]>,
    coords: Option<&[[f32; 2]]>,
    mapping: &GeneMapping,
    opts: &PieceOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Dense<f32>> {
    let m = CellPlmModel::new(model.clone(), Default::default());
    Ok(sclm_model::embed_rows(&m, x, groups, coords, mapping, opts, &mut |n| {
        progress(n);
        Ok(())
    })?)
}

/// Embeds a file too large to hold, reading `X` in row chunks through `read_rows(a, b)` (rows
/// `a..b` as CSR with the dataset's genes as columns, e.g. from `sclm_io::H5adRowReader`).
/// The result is identical to [`embed_chunk`] on the whole matrix; see [`stream_pieces`] for
/// how rows are read and what is held in memory (here, in addition, the output
/// `n_obs × latent_dim`). `progress` receives the number of cells embedded so far. The model
/// layer's [`sclm_model::embed_streaming`] on `model` with the default registry.
pub fn embed_streaming<E: From<ModelError>>(
    model: &CellPlm,
    cells: &CellLabels<'_>,
    mapping: &GeneMapping,
    opts: &PieceOptions,
    stream: &StreamOptions,
    read_rows: &mut dyn FnMut(usize, usize) -> std::result::Result<CsrMatrix, E>,
    progress: &mut dyn FnMut(usize),
) -> std::result::Result<Dense<f32>, E> {
    let m = CellPlmModel::new(model.clone(), Default::default());
    sclm_model::embed_streaming(&m, cells, mapping, opts, stream, read_rows, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::tiny_model;
    use sclm_model::ModelError;

    /// `n` cells × 10 dataset genes (dataset gene k = vocabulary gene k + 1), integer counts.
    fn counts(n: usize) -> CsrMatrix {
        let mut d = Dense::zeros(n, 10);
        for r in 0..n {
            for c in 0..10 {
                if (r * 7 + c * 3) % 4 != 0 {
                    d.data[r * 10 + c] = ((r * 5 + 2 * c) % 7) as f32;
                }
            }
        }
        CsrMatrix::from_dense(&d)
    }

    fn mapping() -> GeneMapping {
        GeneMapping::new((0..12).map(|v| if (1..11).contains(&v) { Some(v - 1) } else { None }).collect(), 10).unwrap()
    }

    fn streamed(
        model: &CellPlm,
        x: &CsrMatrix,
        groups: Option<&[String]>,
        opts: &PieceOptions,
        stream: &StreamOptions,
    ) -> (Dense<f32>, Vec<(usize, usize)>) {
        let mut reads = Vec::new();
        let cells = CellLabels { n_obs: x.nrows, groups, coords: None };
        let mut read = |a: usize, b: usize| -> std::result::Result<CsrMatrix, ModelError> {
            reads.push((a, b));
            Ok(x.select_rows(&(a..b).collect::<Vec<_>>()))
        };
        let mut last = 0;
        let e = embed_streaming(model, &cells, &mapping(), opts, stream, &mut read, &mut |d| last = d).unwrap();
        assert_eq!(last, x.nrows);
        (e, reads)
    }

    #[test]
    fn streaming_equals_in_memory_embedding() {
        let model = tiny_model(2);
        let x = counts(23);
        let m = mapping();
        // Contiguous groups, interleaved groups, and one group larger than max_cells.
        let contiguous: Vec<String> = (0..23).map(|r| if r < 9 { "a".into() } else { "b".into() }).collect();
        let interleaved: Vec<String> = (0..23).map(|r| ["x", "y", "z"][r % 3].to_string()).collect();
        for (groups, max_cells) in
            [(Some(&contiguous), 100), (Some(&interleaved), 100), (None, 5), (Some(&interleaved), 3)]
        {
            let opts = PieceOptions { max_cells_per_forward: max_cells, ..Default::default() };
            let g = groups.map(|g| g.as_slice());
            let expected = embed_chunk(&model, &x, g, None, &m, &opts, &mut |_| {}).unwrap();
            for (chunk, pending) in [(1, 1000), (4, 1000), (7, 5), (100, 1)] {
                let stream = StreamOptions { chunk_rows: chunk, max_pending_cells: pending };
                let (e, reads) = streamed(&model, &x, g, &opts, &stream);
                assert_eq!(e, expected, "groups {g:?}, max_cells {max_cells}, chunk {chunk}, pending {pending}");
                assert!(reads.iter().all(|(a, b)| b - a <= chunk && a < b));
            }
        }
        // Interleaved groups with a small budget are read in several passes; contiguous ones in one.
        let opts = PieceOptions { max_cells_per_forward: 8, ..Default::default() };
        let stream = StreamOptions { chunk_rows: 4, max_pending_cells: 8 };
        let (_, reads) = streamed(&model, &x, Some(&interleaved), &opts, &stream);
        assert!(reads.iter().map(|(a, b)| b - a).sum::<usize>() > 23, "{reads:?}");
        let opts = PieceOptions { max_cells_per_forward: 9, ..Default::default() };
        let stream = StreamOptions { chunk_rows: 4, max_pending_cells: 9 };
        let (_, reads) = streamed(&model, &x, Some(&contiguous), &opts, &stream);
        assert_eq!(reads.iter().map(|(a, b)| b - a).sum::<usize>(), 23, "{reads:?}");
    }

    #[test]
    fn streaming_passes_read_errors_and_bad_counts_through() {
        let model = tiny_model(2);
        let x = counts(6);
        let cells = CellLabels { n_obs: 6, groups: None, coords: None };
        let mut failing = |a: usize, _b: usize| -> std::result::Result<CsrMatrix, ModelError> {
            Err(ModelError::Input(format!("disk gone at row {a}")))
        };
        let e = embed_streaming(
            &model,
            &cells,
            &mapping(),
            &PieceOptions::default(),
            &StreamOptions::default(),
            &mut failing,
            &mut |_| {},
        );
        assert!(e.unwrap_err().to_string().contains("disk gone at row 0"));
        let mut frac = x.clone();
        frac.data[frac.indptr[4]] = 0.5;
        let mut read = |a: usize, b: usize| -> std::result::Result<CsrMatrix, ModelError> {
            Ok(frac.select_rows(&(a..b).collect::<Vec<_>>()))
        };
        let stream = StreamOptions { chunk_rows: 2, ..Default::default() };
        let e = embed_streaming(&model, &cells, &mapping(), &PieceOptions::default(), &stream, &mut read, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("cell 4"), "{e}");
    }
}
