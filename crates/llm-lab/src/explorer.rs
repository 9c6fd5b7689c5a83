//! The live temperature / top-p view of next-token probabilities.
//!
//! A Vega-Lite chart with two sliders, which JupyterLab draws with its built-in renderer, in a
//! notebook opened from the repository (not trusted, not re-run) as well. Nothing is recomputed in
//! the browser: for every point of the sliders' grid the chart carries the exact probabilities the
//! library computes over the whole vocabulary, and the size and mass of the top-p set, so the
//! bars are what the sampler would draw from.

use serde_json::{json, Value};

use crate::display::{MimeBundle, VEGA_LITE_MIME};
use crate::logits::Logits;
use crate::plot::{self, token_label, Figure, VEGA_LITE_SCHEMA};
use crate::sampling::top_p_set;

/// Temperature slider: 0 to 3 in steps of 0.05 (index × 0.05).
const T_STEPS: usize = 60;
/// Top-p slider: 0.05 to 1 in steps of 0.05 (index × 0.05, index ≥ 1).
const P_STEPS: usize = 20;
const STEP: f32 = 0.05;

/// The temperature of grid index `i`.
fn grid_value(i: usize) -> f32 {
    i as f32 * STEP
}

/// An interactive view of next-token probabilities: sliders for temperature and top-p, the `k`
/// most likely tokens as bars, the probabilities, the top-p set and the logits on hover.
#[derive(Debug, Clone)]
pub struct Explorer {
    /// The Vega-Lite chart, with its data.
    pub spec: Value,
    /// The static chart (T = 1, no top-p) shown where Vega is not available.
    pub fallback: Figure,
}

/// One point of the grid: what the sampler does at temperature `t` and top-p `p`.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPoint {
    /// Temperature.
    pub t: f32,
    /// Probability over the whole vocabulary, at `t`, of each shown token (best first).
    pub probs: Vec<f32>,
    /// For top-p = 0.05, 0.10, …, 1: how many tokens the top-p set keeps, and their total
    /// probability (the sampler renormalises the kept tokens by it).
    pub nucleus: Vec<(usize, f64)>,
}

impl Explorer {
    /// The `k` most likely tokens of `logits` (at least 2), as a live chart.
    pub fn new(logits: &Logits, k: usize) -> Self {
        // Every token ranked once, by the library: the order of the probabilities at any T > 0 too.
        let ranked = logits.top_k(logits.len());
        let shown = &ranked[..k.max(2).min(ranked.len())];
        let grid: Vec<GridPoint> = (0..=T_STEPS)
            .map(|i| grid_point(logits, &ranked, shown.len(), grid_value(i)))
            .collect();
        let fallback = fallback(shown, &grid);
        Explorer {
            spec: spec(shown, logits.len(), &grid),
            fallback,
        }
    }

    /// The grid of exact values the chart carries, one point per temperature step.
    pub fn grid(&self) -> Vec<GridPoint> {
        let mut points: Vec<GridPoint> = (0..=T_STEPS)
            .map(|i| GridPoint {
                t: grid_value(i),
                probs: vec![],
                nucleus: vec![(0, 0.0); P_STEPS],
            })
            .collect();
        for row in self.spec["datasets"]["probs"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let (Some(t), Some(p)) = (row["t"].as_u64(), row["p"].as_f64()) else {
                continue;
            };
            if let Some(point) = points.get_mut(t as usize) {
                point.probs.push(p as f32);
            }
        }
        for row in self.spec["datasets"]["nucleus"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let (Some(key), Some(n), Some(m)) =
                (row["key"].as_u64(), row["n"].as_u64(), row["m"].as_f64())
            else {
                continue;
            };
            let (t, p) = ((key / 100) as usize, (key % 100) as usize);
            if let Some(slot) = points
                .get_mut(t)
                .and_then(|point| point.nucleus.get_mut(p.wrapping_sub(1)))
            {
                *slot = (n as usize, m);
            }
        }
        points
    }

    /// What the notebook receives: the chart, a static SVG, and a line of text.
    pub fn bundle(&self) -> MimeBundle {
        MimeBundle::new()
            .with(VEGA_LITE_MIME, self.spec.to_string())
            .with("image/svg+xml", self.fallback.svg.as_str())
            .with(
                "text/plain",
                "explorador de temperatura e top-p (gráfico interativo Vega-Lite; sem Vega, o gráfico estático em T = 1)",
            )
    }

    /// evcxr's rich display hook.
    pub fn evcxr_display(&self) {
        self.bundle().emit();
    }
}

/// The exact values at temperature `t`: the shown tokens' probabilities, and the top-p set for
/// every top-p step, both over the whole vocabulary.
fn grid_point(logits: &Logits, ranked: &[crate::logits::TokenProb], k: usize, t: f32) -> GridPoint {
    let probs = logits.softmax_with_temperature(t).unwrap_or_default();
    let at = |id: u32| probs.get(id as usize).copied().unwrap_or(0.0);
    // Best first, so the top-p set is a prefix of the ranking: its size says which bars it keeps.
    let sorted: Vec<f32> = ranked.iter().map(|tok| at(tok.id)).collect();
    let nucleus = (1..=P_STEPS)
        .map(|j| {
            let n = top_p_set(&sorted, grid_value(j)).len();
            (n, sorted[..n].iter().map(|&x| x as f64).sum())
        })
        .collect();
    GridPoint {
        t,
        probs: sorted[..k].to_vec(),
        nucleus,
    }
}

fn labels(shown: &[crate::logits::TokenProb]) -> Vec<String> {
    shown
        .iter()
        .map(|t| {
            if t.text.is_empty() {
                format!("#{}", t.id)
            } else {
                token_label(&t.text)
            }
        })
        .collect()
}

/// The static chart: the full-vocabulary probabilities at T = 1, top-p off.
fn fallback(shown: &[crate::logits::TokenProb], grid: &[GridPoint]) -> Figure {
    let one = &grid[(1.0 / STEP).round() as usize];
    let rest = 1.0 - one.probs.iter().map(|&p| p as f64).sum::<f64>();
    let title = format!(
        "T = 1, sem top-p (estático; fora do gráfico: {:.1} %)",
        rest.max(0.0) * 100.0
    );
    plot::bars(&title, &labels(shown), &one.probs)
        .unwrap_or_else(|e| plot::table(&["erro"], &[vec![e.to_string()]]))
}

fn spec(shown: &[crate::logits::TokenProb], vocab: usize, grid: &[GridPoint]) -> Value {
    let names = labels(shown);
    let tokens: Vec<Value> = shown
        .iter()
        .zip(&names)
        .enumerate()
        .map(|(r, (t, name))| json!({"r": r, "token": name, "id": t.id, "logit": t.logit}))
        .collect();
    let mut probs = vec![];
    let mut nucleus = vec![];
    for (ti, point) in grid.iter().enumerate() {
        for (r, &p) in point.probs.iter().enumerate() {
            probs.push(json!({"t": ti, "r": r, "p": p}));
        }
        let shown_mass: f64 = point.probs.iter().map(|&p| p as f64).sum();
        for (j, &(n, m)) in point.nucleus.iter().enumerate() {
            nucleus.push(json!({"key": ti * 100 + j + 1, "n": n, "m": m, "s": shown_mass}));
        }
    }
    // Slider positions in f64 hundredths, so the page shows 0.05, not 0.05000000074505806.
    let step = (STEP as f64 * 100.0).round() / 100.0;
    let slider = |name: &str, label: &str, min: f64, max: f64| {
        json!({"name": name, "value": 1.0,
               "bind": {"input": "range", "min": min, "max": max, "step": step, "name": label}})
    };
    let t_param = slider("T", "temperatura T ", 0.0, step * T_STEPS as f64);
    let p_param = slider("P", "top-p p ", step, step * P_STEPS as f64);
    // The grid point the sliders are on, and the top-p set there.
    let at_grid = json!([
        {"filter": format!("datum.t == round(T / {STEP})")},
        {"calculate": format!("datum.t * 100 + round(P / {STEP})"), "as": "key"},
        {"lookup": "key", "from": {"data": {"name": "nucleus"}, "key": "key",
                                   "fields": ["n", "m", "s"]}},
    ]);
    let mut bar_transform = at_grid.as_array().cloned().unwrap_or_default();
    bar_transform.extend([
        json!({"lookup": "r", "from": {"data": {"name": "tokens"}, "key": "r",
                                         "fields": ["token", "id", "logit"]}}),
        json!({"calculate": "datum.r < datum.n", "as": "kept"}),
        json!({"calculate": "datum.kept ? datum.p / datum.m : 0", "as": "q"}),
        json!({"calculate": "datum.kept ? datum.q : datum.p", "as": "bar"}),
        json!({"calculate": "datum.kept ? 'mantido pelo top-p' : 'cortado pelo top-p'",
               "as": "estado"}),
        json!({"calculate": "datum.kept ? format(datum.q, '.1%') : 'cortado'", "as": "rotulo"}),
    ]);
    let label_expr = format!("{}[datum.value]", json!(names));
    let y = json!({"field": "r", "type": "ordinal", "title": null,
                   "axis": {"labelExpr": label_expr, "labelFontSize": 12}});
    let tooltip = json!([
        {"field": "token", "type": "nominal", "title": "token"},
        {"field": "id", "type": "quantitative", "title": "id"},
        {"field": "logit", "type": "quantitative", "title": "logit", "format": ".2f"},
        {"field": "p", "type": "quantitative", "title": "p (vocabulário inteiro, temperatura T)", "format": ".2%"},
        {"field": "q", "type": "quantitative", "title": "p de sorteio (após o top-p)", "format": ".2%"},
        {"field": "estado", "type": "nominal", "title": "top-p"},
    ]);
    let height = 22 * shown.len();
    let chart = json!({
        "width": 420,
        "height": height,
        "data": {"name": "probs"},
        "transform": bar_transform,
        "encoding": {"y": y},
        "layer": [
            {"mark": {"type": "bar", "tooltip": true},
             "encoding": {
                "x": {"field": "bar", "type": "quantitative", "title": "probabilidade",
                      "axis": {"format": "%"}},
                "color": {"field": "estado", "type": "nominal", "title": null,
                          "scale": {"domain": ["mantido pelo top-p", "cortado pelo top-p"],
                                    "range": ["#4c72b0", "#cccccc"]},
                          "legend": {"orient": "bottom"}},
                "tooltip": tooltip}},
            {"mark": {"type": "text", "align": "left", "dx": 4, "fontSize": 11},
             "encoding": {"x": {"field": "bar", "type": "quantitative"},
                          "text": {"field": "rotulo", "type": "nominal"}}},
        ],
    });
    let mut summary_transform = vec![
        json!({"filter": format!("datum.key == round(T / {STEP}) * 100 + round(P / {STEP})")}),
    ];
    summary_transform.push(json!({"calculate": format!(
        "'T = ' + format(T, '.2f') + ', top-p = ' + format(P, '.2f') + ': o top-p mantém ' + format(datum.n, ',d') + ' de ' + format({vocab}, ',d') + ' tokens (soma ' + format(datum.m, '.1%') + '); os {k} do gráfico somam ' + format(datum.s, '.1%') + ' em T. Barras azuis: probabilidade de sorteio, renormalizada sobre o conjunto do top-p.'",
        vocab = vocab,
        k = shown.len()
    ), "as": "linha"}));
    let summary = json!({
        "width": 420,
        "height": 50,
        "data": {"name": "nucleus"},
        "transform": summary_transform,
        "mark": {"type": "text", "align": "left", "baseline": "middle", "fontSize": 11,
                 "limit": 0, "lineBreak": ". "},
        "encoding": {"text": {"field": "linha", "type": "nominal"},
                     "x": {"value": 0}, "y": {"value": 8}},
    });
    json!({
        "$schema": VEGA_LITE_SCHEMA,
        "title": {"text": "próximo token: temperatura e top-p",
                  "subtitle": "probabilidades sobre o vocabulário inteiro; T = 0 é a busca gulosa"},
        "params": [t_param, p_param],
        "datasets": {"tokens": tokens, "probs": probs, "nucleus": nucleus},
        "vconcat": [chart, summary],
        "config": {"view": {"stroke": null}},
    })
}
