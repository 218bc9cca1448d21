//! PNG scatter plots of 2-D coordinates coloured by a categorical or numeric vector.
//!
//! Text is drawn with the bundled DejaVu Sans font (see `assets/DejaVuSans-LICENSE.txt`),
//! so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use sclm_data::Dense;

use crate::error::{check_len, invalid, EvalError, Result};
use crate::labels::encode;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn ensure_font() {
    REGISTER.call_once(|| {
        // The bundled font is valid; a failure would only leave text unrendered.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// What the points are coloured by.
#[derive(Debug, Clone, PartialEq)]
pub enum ColorBy {
    /// One colour for all points.
    None,
    /// A category per point, drawn with a legend (categories sorted).
    Categorical(Vec<String>),
    /// A number per point, drawn with a viridis colour bar (NaN drawn grey).
    Numeric(Vec<f64>),
}

/// Matplotlib's tab20 colours, dark shades first (a categorical palette).
const PALETTE: [(u8, u8, u8); 20] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0xd6, 0x27, 0x28),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
    (0xae, 0xc7, 0xe8),
    (0xff, 0xbb, 0x78),
    (0x98, 0xdf, 0x8a),
    (0xff, 0x98, 0x96),
    (0xc5, 0xb0, 0xd5),
    (0xc4, 0x9c, 0x94),
    (0xf7, 0xb6, 0xd2),
    (0xc7, 0xc7, 0xc7),
    (0xdb, 0xdb, 0x8d),
    (0x9e, 0xda, 0xe5),
];

/// Colour of category `i` of `k`: the palette, then evenly spaced hues beyond 20.
pub fn category_color(i: usize, k: usize) -> RGBColor {
    if k <= PALETTE.len() {
        let (r, g, b) = PALETTE[i];
        return RGBColor(r, g, b);
    }
    let h = i as f64 / k as f64;
    let c = HSLColor(h, 0.65, if i.is_multiple_of(2) { 0.45 } else { 0.62 });
    let rgb = c.to_rgba();
    RGBColor(rgb.0, rgb.1, rgb.2)
}

/// Viridis colour map at `t` in [0, 1] (piecewise-linear through 9 anchors).
pub fn viridis(t: f64) -> RGBColor {
    const A: [(f64, f64, f64); 9] = [
        (68., 1., 84.),
        (71., 44., 122.),
        (59., 81., 139.),
        (44., 113., 142.),
        (33., 144., 141.),
        (39., 173., 129.),
        (92., 200., 99.),
        (170., 220., 50.),
        (253., 231., 37.),
    ];
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) } * 8.0;
    let i = (t.floor() as usize).min(7);
    let f = t - i as f64;
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(mix(A[i].0, A[i + 1].0), mix(A[i].1, A[i + 1].1), mix(A[i].2, A[i + 1].2))
}

fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Io { path: path.display().to_string(), msg: e.to_string() }
}

/// Writes a PNG scatter plot of the first two columns of `coords`, coloured by `color`,
/// with `title` on top (categorical legend or colour bar on the right).
pub fn scatter_png(coords: &Dense<f32>, color: &ColorBy, title: &str, path: &Path) -> Result<()> {
    if coords.ncols < 2 {
        return invalid(format!("scatter plot needs 2 coordinate columns, got {}", coords.ncols));
    }
    let n = coords.nrows;
    if n == 0 {
        return invalid("scatter plot: no points");
    }
    match color {
        ColorBy::Categorical(v) => check_len("scatter colours", n, v.len())?,
        ColorBy::Numeric(v) => check_len("scatter colours", n, v.len())?,
        ColorBy::None => {}
    }
    if coords.data.iter().any(|v| !v.is_finite()) {
        return invalid("scatter plot: coordinates contain non-finite values");
    }
    ensure_font();
    let pts: Vec<(f64, f64)> = (0..n).map(|i| (coords.get(i, 0) as f64, coords.get(i, 1) as f64)).collect();
    let range = |f: fn(&(f64, f64)) -> f64| {
        let lo = pts.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.04).max(1e-6);
        (lo - pad)..(hi + pad)
    };
    let (xr, yr) = (range(|p| p.0), range(|p| p.1));

    let (cats, codes) = match color {
        ColorBy::Categorical(v) => {
            let (c, k) = encode(v);
            (k, c)
        }
        _ => (Vec::new(), Vec::new()),
    };
    let side_w: u32 = match color {
        ColorBy::Categorical(_) => {
            let longest = cats.iter().map(|c| c.chars().count()).max().unwrap_or(0) as u32;
            let cols = cats.len().div_ceil(32) as u32;
            (longest * 8 + 40) * cols + 20
        }
        ColorBy::Numeric(_) => 110,
        ColorBy::None => 10,
    };
    let (w, h) = (760 + side_w, 720u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| io_err(path, e))?;
    let (main, side) = root.split_horizontally(w - side_w);
    let mut chart = ChartBuilder::on(&main)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(xr, yr)
        .map_err(|e| io_err(path, e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(6)
        .y_labels(6)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| io_err(path, e))?;
    let radius = if n <= 2000 {
        3
    } else if n <= 20000 {
        2
    } else {
        1
    };
    let num = if let ColorBy::Numeric(v) = color { Some(v) } else { None };
    let (nlo, nhi) = num.map_or((0.0, 1.0), |v| {
        let f = v.iter().copied().filter(|x| x.is_finite());
        let lo = f.clone().fold(f64::INFINITY, f64::min);
        let hi = f.fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() {
            (lo, hi)
        } else {
            (0.0, 1.0)
        }
    });
    let colour_of = |i: usize| -> RGBColor {
        match color {
            ColorBy::Categorical(_) => category_color(codes[i], cats.len()),
            ColorBy::Numeric(v) if v[i].is_finite() => {
                viridis(if nhi > nlo { (v[i] - nlo) / (nhi - nlo) } else { 0.5 })
            }
            ColorBy::Numeric(_) => RGBColor(200, 200, 200),
            ColorBy::None => RGBColor(0x1f, 0x77, 0xb4),
        }
    };
    // Numeric: draw low values first so high values stay visible.
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(v) = num {
        order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    }
    chart
        .draw_series(order.iter().map(|&i| Circle::new(pts[i], radius, colour_of(i).mix(0.85).filled())))
        .map_err(|e| io_err(path, e))?;

    match color {
        ColorBy::Categorical(_) => {
            let font = ("sans-serif", 14).into_font();
            let col_w = (side_w - 20) / cats.len().div_ceil(32).max(1) as u32;
            for (c, name) in cats.iter().enumerate() {
                let (col, row) = ((c / 32) as i32, (c % 32) as i32);
                let (x, y) = (10 + col * col_w as i32, 50 + row * 20);
                side.draw(&Circle::new((x + 6, y + 8), 5, category_color(c, cats.len()).filled()))
                    .map_err(|e| io_err(path, e))?;
                side.draw(&Text::new(name.clone(), (x + 16, y), font.clone())).map_err(|e| io_err(path, e))?;
            }
        }
        ColorBy::Numeric(_) => {
            let (top, bottom) = (60i32, h as i32 - 80);
            for y in top..bottom {
                let t = 1.0 - (y - top) as f64 / (bottom - top) as f64;
                side.draw(&Rectangle::new([(12, y), (36, y + 1)], viridis(t).filled())).map_err(|e| io_err(path, e))?;
            }
            let font = ("sans-serif", 13).into_font();
            for k in 0..=4 {
                let t = k as f64 / 4.0;
                let y = bottom - ((bottom - top) as f64 * t) as i32;
                let v = nlo + (nhi - nlo) * t;
                side.draw(&Text::new(tick_label(v), (42, y - 7), font.clone())).map_err(|e| io_err(path, e))?;
            }
        }
        ColorBy::None => {}
    }
    root.present().map_err(|e| io_err(path, e))?;
    Ok(())
}
