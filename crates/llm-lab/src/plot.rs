//! Charts for the lessons, drawn with plotters as SVG: probability bars, attention and
//! positional-encoding heatmaps, lines. Every chart is a [`Figure`], which a notebook shows inline
//! (no script or font from the network). Charts where hovering teaches something (attention:
//! which token looks at which, with the weight) also carry a Vega-Lite spec, which JupyterLab
//! draws live even in a notebook opened from the repository; the SVG stays in the same output for
//! renderers without Vega (a forge, nbconvert).

use plotters::prelude::*;
use serde_json::{json, Value};

use crate::display::{html_escape, rich_html, MimeBundle, VEGA_LITE_MIME};
use crate::error::{Error, Result};

/// The Vega-Lite schema the specs declare (JupyterLab 4 ships Vega-Lite 5).
pub const VEGA_LITE_SCHEMA: &str = "https://vega.github.io/schema/vega-lite/v5.json";

/// Heatmaps with more cells than this stay static: the live chart would carry every cell's data.
const MAX_LIVE_CELLS: usize = 64 * 64;

/// A chart: SVG (or HTML for tables and rows), and for interactive charts a Vega-Lite spec.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The SVG document (HTML for [`table`] and for rows of static charts).
    pub svg: String,
    /// The live version of the chart, when it has one; `svg` is then a pure SVG document.
    pub vega_lite: Option<Value>,
}

impl Figure {
    fn from_markup(svg: String) -> Figure {
        Figure {
            svg,
            vega_lite: None,
        }
    }

    /// What the notebook receives: the Vega-Lite chart with its SVG fallback and a text line,
    /// or the static HTML/SVG alone.
    pub fn bundle(&self) -> MimeBundle {
        match &self.vega_lite {
            Some(spec) => MimeBundle::new()
                .with(VEGA_LITE_MIME, spec.to_string())
                .with("image/svg+xml", self.svg.as_str())
                .with("text/plain", plain_description(spec)),
            None => MimeBundle::new().with("text/html", self.svg.as_str()),
        }
    }

    /// evcxr's rich display hook.
    pub fn evcxr_display(&self) {
        match &self.vega_lite {
            Some(_) => self.bundle().emit(),
            None => rich_html(&self.svg),
        }
    }

    /// Writes the SVG to a file.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        std::fs::write(path.as_ref(), &self.svg)
            .map_err(|e| Error::io("cannot write", path.as_ref(), e))
    }

    /// Several figures side by side in one output (a notebook cell shows only its last rich output).
    /// Live figures stay live: a grid of Vega-Lite charts, over a grid of their SVGs.
    pub fn row(figures: &[Figure]) -> Figure {
        if !figures.is_empty() && figures.iter().all(|f| f.vega_lite.is_some()) {
            let columns = figures.len().min(3);
            let specs: Vec<Value> = figures
                .iter()
                .filter_map(|f| f.vega_lite.clone())
                .map(|mut spec| {
                    if let Some(o) = spec.as_object_mut() {
                        o.remove("$schema");
                    }
                    spec
                })
                .collect();
            let svgs: Vec<&str> = figures.iter().map(|f| f.svg.as_str()).collect();
            return Figure {
                svg: svg_grid(&svgs, columns),
                vega_lite: Some(json!({
                    "$schema": VEGA_LITE_SCHEMA,
                    "columns": columns,
                    "concat": specs,
                    "resolve": {"scale": {"color": "independent"}},
                })),
            };
        }
        let inner: String = figures
            .iter()
            .map(|f| {
                format!(
                    "<div style=\"display:inline-block;vertical-align:top\">{}</div>",
                    f.svg
                )
            })
            .collect();
        Figure::from_markup(format!("<div>{inner}</div>"))
    }
}

/// The text/plain line of a live chart: its title, for terminals and text-only views.
fn plain_description(spec: &Value) -> String {
    let title = spec["title"]
        .as_str()
        .or_else(|| spec["title"]["text"].as_str())
        .unwrap_or("gráfico");
    format!("{title} (gráfico interativo Vega-Lite; sem Vega, a versão SVG)")
}

/// Width and height of a plotters SVG, from its root element.
fn svg_size(svg: &str) -> (u32, u32) {
    let head = svg.find('>').map_or(svg, |end| &svg[..end]);
    let attr = |name: &str| {
        head.find(&format!(" {name}=\""))
            .map(|i| &head[i + name.len() + 3..])
            .and_then(|rest| rest.split('"').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v.clamp(0.0, 100_000.0) as u32)
    };
    (attr("width"), attr("height"))
}

/// SVG documents laid out in a grid of `columns`, as one SVG document (nested `<svg>` elements).
fn svg_grid(svgs: &[&str], columns: usize) -> String {
    let columns = columns.max(1);
    let sizes: Vec<(u32, u32)> = svgs.iter().map(|s| svg_size(s)).collect();
    let col_w = sizes.iter().map(|s| s.0).max().unwrap_or(0);
    let row_h = sizes.iter().map(|s| s.1).max().unwrap_or(0);
    let rows = svgs.len().div_ceil(columns);
    let (w, h) = (col_w as usize * columns, row_h as usize * rows);
    let mut out = format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\n"
    );
    for (i, svg) in svgs.iter().enumerate() {
        let (x, y) = (
            (i % columns) * col_w as usize,
            (i / columns) * row_h as usize,
        );
        let body = svg.trim_start();
        let body = body
            .strip_prefix("<svg")
            .map(|rest| format!("<svg x=\"{x}\" y=\"{y}\"{rest}"))
            .unwrap_or_else(|| body.to_string());
        out.push_str(&body);
        out.push('\n');
    }
    out.push_str("</svg>\n");
    out
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("could not draw the chart: {e}"))
}

/// Shortens a token for an axis label and makes spaces and newlines visible.
pub fn token_label(t: &str) -> String {
    let t = t.replace('\n', "⏎").replace(' ', "␣");
    let chars: Vec<char> = t.chars().collect();
    if chars.len() > 10 {
        chars[..9].iter().collect::<String>() + "…"
    } else {
        t
    }
}

/// A bar chart of `values` labelled by `labels` (probabilities of candidate tokens, for example).
///
/// ```
/// let fig = llm_lab::plot::bars("probabilidades", &["a".into(), "b".into()], &[0.7, 0.3])?;
/// assert!(fig.svg.contains("<svg") && fig.svg.contains("probabilidades"));
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn bars(title: &str, labels: &[String], values: &[f32]) -> Result<Figure> {
    bars_scaled(title, labels, values, None)
}

/// Like [`bars`], with the vertical axis running up to `y_max` (when given), so that several charts
/// share one scale. Values in [0, 1] are labelled as percentages.
pub fn bars_scaled(
    title: &str,
    labels: &[String],
    values: &[f32],
    y_max: Option<f32>,
) -> Result<Figure> {
    if labels.len() != values.len() || values.is_empty() {
        return Err(Error::invalid(format!(
            "bars needs one label per value ({} labels, {} values)",
            labels.len(),
            values.len()
        )));
    }
    let mut svg = String::new();
    {
        let width = (120 + 40 * values.len()).clamp(320, 900) as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let max =
            y_max.unwrap_or_else(|| values.iter().copied().fold(0f32, f32::max).max(1e-6) * 1.1);
        let min = values.iter().copied().fold(0f32, f32::min);
        let percent = min >= 0.0 && max <= 1.0;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(50)
            .build_cartesian_2d((0..values.len() - 1).into_segmented(), min..max)
            .map_err(err)?;
        let labels: Vec<String> = labels.iter().map(|l| token_label(l)).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(values.len())
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_labels(6)
            .y_label_formatter(&|y| {
                if percent {
                    format!("{:.0} %", y * 100.0)
                } else {
                    format!("{y:.2}")
                }
            })
            .draw()
            .map_err(err)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), v),
                    ],
                    RGBColor(76, 114, 176).filled(),
                );
                bar.set_margin(0, 0, 6, 6);
                bar
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Figure::from_markup(svg))
}

/// Colour of a value in [0, 1]: white → dark blue.
fn shade(v: f32) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f32, b: f32| (a + (b - a) * v) as u8;
    RGBColor(lerp(255.0, 8.0), lerp(255.0, 48.0), lerp(255.0, 107.0))
}

/// Colour of a value in [-1, 1]: blue → white → red.
fn diverging(v: f32) -> RGBColor {
    let v = v.clamp(-1.0, 1.0);
    if v >= 0.0 {
        RGBColor(255, (255.0 * (1.0 - v)) as u8, (255.0 * (1.0 - v)) as u8)
    } else {
        RGBColor((255.0 * (1.0 + v)) as u8, (255.0 * (1.0 + v)) as u8, 255)
    }
}

/// A heatmap of `m[row][col]` with labelled axes. `symmetric` colours negative values blue and
/// positive red (positional encodings); otherwise 0 is white and the maximum dark blue
/// (attention probabilities).
pub fn heatmap(
    title: &str,
    m: &[Vec<f32>],
    row_labels: &[String],
    col_labels: &[String],
    x_desc: &str,
    y_desc: &str,
    symmetric: bool,
) -> Result<Figure> {
    let rows = m.len();
    let cols = m.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 || m.iter().any(|r| r.len() != cols) {
        return Err(Error::invalid(
            "heatmap needs a non-empty rectangular matrix",
        ));
    }
    let max = m
        .iter()
        .flatten()
        .fold(0f32, |a, &b| a.max(b.abs()))
        .max(1e-9);
    let cell = (560 / cols.max(rows)).clamp(4, 40) as u32;
    let label_room = if row_labels.is_empty() { 45 } else { 90 };
    let (w, h) = (
        cols as u32 * cell + label_room + 40,
        rows as u32 * cell + label_room + 60,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w.max(300), h.max(200))).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(label_room)
            .y_label_area_size(label_room)
            // A segmented range 0..n has a segment per value *and* one past the end: n - 1 keeps n cells.
            .build_cartesian_2d(
                (0..cols - 1).into_segmented(),
                (0..rows - 1).into_segmented(),
            )
            .map_err(err)?;
        let label = |labels: &[String], v: &SegmentValue<usize>, flip: bool| match v {
            SegmentValue::CenterOf(i) => {
                let i = if flip {
                    (rows - 1).checked_sub(*i)
                } else {
                    Some(*i)
                };
                match i {
                    Some(i) if i < if flip { rows } else { cols } => labels
                        .get(i)
                        .map(|s| token_label(s))
                        .unwrap_or_else(|| i.to_string()),
                    _ => String::new(),
                }
            }
            _ => String::new(),
        };
        let every = |n: usize| if n <= 40 { n } else { 10 };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(every(cols))
            .y_labels(every(rows))
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|x| label(col_labels, x, false))
            .y_label_formatter(&|y| label(row_labels, y, true))
            .x_label_style(
                ("sans-serif", 11)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .y_label_style(("sans-serif", 11))
            .axis_desc_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(m.iter().enumerate().flat_map(|(r, row)| {
                row.iter().enumerate().map(move |(c, &v)| {
                    let colour = if symmetric {
                        diverging(v / max)
                    } else {
                        shade(v / max)
                    };
                    let y = rows - 1 - r; // first row at the top
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(c), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1)),
                        ],
                        colour.filled(),
                    )
                })
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Figure::from_markup(svg))
}

/// One head's attention pattern `[query][key]`, tokens on both axes: live (the query token, the
/// key token and the weight on hover) with the SVG heatmap as fallback.
///
/// ```
/// let p = vec![vec![1.0, 0.0], vec![0.25, 0.75]];
/// let fig = llm_lab::plot::attention("cabeça 0", &p, &["a".into(), "b".into()])?;
/// assert!(fig.svg.starts_with("<svg"));
/// assert_eq!(fig.vega_lite.unwrap()["data"]["values"][3]["w"], 0.75);
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn attention(title: &str, pattern: &[Vec<f32>], tokens: &[String]) -> Result<Figure> {
    attention_with_labels(title, pattern, tokens, tokens)
}

const KEY_AXIS: &str = "chave (token observado)";
const QUERY_AXIS: &str = "consulta (token que observa)";

fn attention_with_labels(
    title: &str,
    pattern: &[Vec<f32>],
    queries: &[String],
    keys: &[String],
) -> Result<Figure> {
    let mut fig = heatmap(title, pattern, queries, keys, KEY_AXIS, QUERY_AXIS, false)?;
    fig.vega_lite = attention_spec(title, pattern, queries, keys);
    Ok(fig)
}

/// The Vega-Lite heatmap of an attention pattern (None when it is too large to ship live).
/// Labels that do not match the pattern's size are replaced by positions.
fn attention_spec(
    title: &str,
    pattern: &[Vec<f32>],
    queries: &[String],
    keys: &[String],
) -> Option<Value> {
    let rows = pattern.len();
    let cols = pattern.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 || rows.checked_mul(cols)? > MAX_LIVE_CELLS {
        return None;
    }
    let names = |labels: &[String], n: usize| -> Vec<String> {
        (0..n)
            .map(|i| match labels.get(i) {
                Some(l) if labels.len() == n => token_label(l),
                _ => i.to_string(),
            })
            .collect()
    };
    let (q_names, k_names) = (names(queries, rows), names(keys, cols));
    let mut values = Vec::with_capacity(rows * cols);
    let mut max = 0f32;
    for (q, row) in pattern.iter().enumerate() {
        for (k, &w) in row.iter().enumerate() {
            let w = if w.is_finite() { w } else { 0.0 };
            max = max.max(w);
            values.push(json!({
                "q": q, "k": k, "w": w,
                "consulta": format!("{q}: {}", q_names[q]),
                "chave": format!("{k}: {}", k_names[k]),
            }));
        }
    }
    let cell = (560 / cols.max(rows)).clamp(4, 40);
    // Axis labels are the tokens, looked up by position (a token may occur twice).
    let label_expr = |names: &[String]| format!("{}[datum.value]", json!(names));
    Some(json!({
        "$schema": VEGA_LITE_SCHEMA,
        "title": title,
        "data": {"values": values},
        "width": cols * cell,
        "height": rows * cell,
        "mark": {"type": "rect", "tooltip": true},
        "encoding": {
            "x": {"field": "k", "type": "ordinal", "title": KEY_AXIS,
                  "axis": {"labelExpr": label_expr(&k_names), "labelAngle": -90}},
            "y": {"field": "q", "type": "ordinal", "title": QUERY_AXIS,
                  "axis": {"labelExpr": label_expr(&q_names)}},
            "color": {"field": "w", "type": "quantitative", "title": "peso",
                      "scale": {"scheme": "blues", "domain": [0.0, max.max(1e-9)]}},
            "tooltip": [
                {"field": "consulta", "type": "nominal", "title": "consulta"},
                {"field": "chave", "type": "nominal", "title": "chave"},
                {"field": "w", "type": "quantitative", "title": "peso", "format": ".3f"},
            ],
        },
    }))
}

/// Positional encodings `[position][dimension]`.
pub fn positions(title: &str, pe: &[Vec<f32>]) -> Result<Figure> {
    heatmap(title, pe, &[], &[], "dimensão", "posição", true)
}

/// Lines `(name, ys)` over x = 0, 1, 2, …
pub fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<f32>)],
) -> Result<Figure> {
    let n = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    if n == 0 {
        return Err(Error::invalid("lines needs at least one point"));
    }
    let lo = series
        .iter()
        .flat_map(|(_, v)| v)
        .copied()
        .fold(f32::INFINITY, f32::min);
    let hi = series
        .iter()
        .flat_map(|(_, v)| v)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f32..(n.max(2) - 1) as f32, (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (k, (name, ys)) in series.iter().enumerate() {
            let colour = Palette99::pick(k).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    ys.iter().enumerate().map(|(i, &y)| (i as f32, y)),
                    colour.stroke_width(2),
                ))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Figure::from_markup(svg))
}

/// A titled HTML table of strings (for side-by-side comparisons).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> Figure {
    let mut s = String::from("<table><thead><tr>");
    for h in headers {
        s.push_str(&format!("<th>{}</th>", html_escape(h)));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            s.push_str(&format!(
                "<td style=\"text-align:left;white-space:pre-wrap\">{}</td>",
                html_escape(c)
            ));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    Figure::from_markup(s)
}

impl crate::model::Trace {
    /// One head's attention pattern as a heatmap, the traced tokens on both axes.
    pub fn attention_figure(&self, layer: usize, head: usize) -> Result<Figure> {
        let pattern = self.attention(layer, head)?;
        let labels = self.labels.clone();
        // With a KV cache the keys include earlier tokens this trace has no text for.
        let keys = if pattern.first().map_or(0, Vec::len) == labels.len() {
            labels.clone()
        } else {
            vec![]
        };
        let queries = if pattern.len() == labels.len() {
            labels
        } else {
            vec![]
        };
        attention_with_labels(
            &format!("camada {layer}, cabeça {head}"),
            &pattern,
            &queries,
            &keys,
        )
    }

    /// Every head of `layer`, side by side.
    pub fn attention_grid(&self, layer: usize) -> Result<Figure> {
        let n = self.pattern(layer)?.dim(0)?;
        let figs = (0..n)
            .map(|h| self.attention_figure(layer, h))
            .collect::<Result<Vec<_>>>()?;
        Ok(Figure::row(&figs))
    }
}
