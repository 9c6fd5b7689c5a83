//! The live views (Vega-Lite with an SVG fallback in the same output): what the notebook
//! receives, and that the numbers the charts carry are the library's own.

use llm_lab::display::{MimeBundle, VEGA_LITE_MIME};
use llm_lab::explorer::Explorer;
use llm_lab::logits::Logits;
use llm_lab::rng::Rng;
use llm_lab::sampling::{top_p_set, Sampler, SamplerConfig};
use llm_lab::testing::{tiny_model, TinySpec};
use llm_lab::TraceOptions;
use serde_json::Value;

/// The blocks evcxr reads, parsed back as evcxr 0.22 does: one (MIME type, content) per block.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mime = line
            .strip_prefix("EVCXR_BEGIN_CONTENT ")
            .unwrap_or_else(|| panic!("unexpected line outside a block: {line:?}"));
        let mut content = vec![];
        for l in lines.by_ref() {
            if l == "EVCXR_END_CONTENT" {
                break;
            }
            content.push(l);
        }
        out.push((mime.to_string(), content.join("\n")));
    }
    out
}

fn random_logits(n: usize, seed: u64) -> Logits {
    let mut rng = Rng::new(seed);
    // A spread like a model's: a few high logits, a long tail.
    let v = (0..n)
        .map(|_| {
            let u = rng.next_f64() as f32;
            12.0 * u * u * u - 4.0
        })
        .collect();
    Logits::new(v).unwrap()
}

#[test]
fn bundles_are_one_output_with_each_format_once() {
    let b = MimeBundle::new()
        .with("text/plain", "a")
        .with("image/svg+xml", "<svg>\nEVCXR_END_CONTENT\n</svg>")
        .with("text/plain", "b");
    assert_eq!(b.mime_types(), ["text/plain", "image/svg+xml"]);
    let parsed = blocks(&b.to_evcxr());
    assert_eq!(parsed.len(), 2, "a content line never ends the block early");
    assert_eq!(parsed[0], ("text/plain".into(), "b".into()));
    assert!(parsed[1].1.starts_with("<svg>") && parsed[1].1.ends_with("</svg>"));
}

#[test]
fn explorer_bundle_has_vega_lite_svg_and_text() {
    let logits = random_logits(500, 7);
    let ex = Explorer::new(&logits, 12);
    let parsed = blocks(&ex.bundle().to_evcxr());
    let mimes: Vec<&str> = parsed.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(mimes, [VEGA_LITE_MIME, "image/svg+xml", "text/plain"]);
    let spec: Value = serde_json::from_str(&parsed[0].1).expect("the chart is valid JSON");
    assert_eq!(parsed[0].1, ex.spec.to_string());
    assert_eq!(
        spec["$schema"],
        "https://vega.github.io/schema/vega-lite/v5.json"
    );
    let names: Vec<&str> = spec["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["T", "P"]);
    for p in spec["params"].as_array().unwrap() {
        assert_eq!(p["bind"]["input"], "range", "{p}");
    }
    let svg = &parsed[1].1;
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("T = 1"), "the fallback says what it shows");
    assert!(
        svg.matches("<rect").count() >= 12,
        "one bar per shown token"
    );
    // Tooltips name the token, its logit and both probabilities.
    let tooltip = spec["vconcat"][0]["layer"][0]["encoding"]["tooltip"].to_string();
    for field in ["token", "logit", "\"p\"", "\"q\""] {
        assert!(tooltip.contains(field), "{field} in {tooltip}");
    }
}

#[test]
fn explorer_carries_full_vocabulary_probabilities_and_the_samplers_top_p() {
    let logits = random_logits(2000, 11);
    let k = 10;
    let ex = Explorer::new(&logits, k);
    let shown: Vec<usize> = logits.top_k(k).iter().map(|t| t.id as usize).collect();
    let grid = ex.grid();
    assert_eq!(grid.len(), 61, "T = 0, 0.05, …, 3");
    for point in &grid {
        let full = logits.softmax_with_temperature(point.t).unwrap();
        let expected: Vec<f32> = shown.iter().map(|&i| full[i]).collect();
        assert_eq!(point.probs, expected, "T = {}", point.t);
        assert_eq!(point.nucleus.len(), 20);
        for (j, &(n, mass)) in point.nucleus.iter().enumerate() {
            let p = (j + 1) as f32 * 0.05;
            let set = top_p_set(&full, p);
            assert_eq!(n, set.len(), "T = {}, p = {p}", point.t);
            let m: f64 = set.iter().map(|&i| full[i] as f64).sum();
            assert!((mass - m).abs() < 1e-9, "T = {}, p = {p}", point.t);
            // The bars: the sampler's own probabilities after top-p, for the shown tokens.
            if point.t > 0.0 {
                let mut sampler = Sampler::new(SamplerConfig {
                    temperature: point.t,
                    top_p: Some(p),
                    ..SamplerConfig::default()
                })
                .unwrap();
                let steps = sampler.explain(logits.values(), &[]).unwrap();
                for (r, &i) in shown.iter().enumerate() {
                    let bar = if r < n {
                        point.probs[r] as f64 / mass
                    } else {
                        0.0
                    };
                    assert!(
                        (bar - steps.probs[i] as f64).abs() < 1e-5,
                        "T = {}, p = {p}, token {i}: chart {bar}, sampler {}",
                        point.t,
                        steps.probs[i]
                    );
                }
            }
        }
    }
    // T = 0 is greedy: all the probability on the best token.
    assert_eq!(grid[0].probs[0], 1.0);
    assert!(grid[0].nucleus.iter().all(|&(n, _)| n == 1));
}

#[test]
fn attention_plots_are_live_with_token_labels_and_an_svg_fallback() {
    let (_dir, model) = tiny_model(&TinySpec::default()).unwrap();
    let tokens = model.encode("abc d").unwrap();
    let (_, trace) = model
        .run_with_trace(&tokens, TraceOptions::default())
        .unwrap();
    let fig = trace.attention_figure(0, 1).unwrap();
    let parsed = blocks(&fig.bundle().to_evcxr());
    let mimes: Vec<&str> = parsed.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(mimes, [VEGA_LITE_MIME, "image/svg+xml", "text/plain"]);
    let spec: Value = serde_json::from_str(&parsed[0].1).unwrap();
    assert!(parsed[1].1.starts_with("<svg") && parsed[1].1.contains("camada 0, cabeça 1"));
    let pattern = trace.attention(0, 1).unwrap();
    let values = spec["data"]["values"].as_array().unwrap();
    assert_eq!(values.len(), tokens.len() * tokens.len());
    for v in values {
        let (q, k) = (
            v["q"].as_u64().unwrap() as usize,
            v["k"].as_u64().unwrap() as usize,
        );
        assert_eq!(v["w"].as_f64().unwrap() as f32, pattern[q][k]);
        let label = llm_lab::plot::token_label(&trace.labels[q]);
        assert_eq!(v["consulta"], format!("{q}: {label}"));
    }
    let tooltip: Vec<&str> = spec["encoding"]["tooltip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["field"].as_str().unwrap())
        .collect();
    assert_eq!(tooltip, ["consulta", "chave", "w"]);
    // Too large to ship live: the static heatmap alone, as HTML.
    let big = vec![vec![0.01f32; 100]; 100];
    let fig = llm_lab::plot::attention("grande", &big, &[]).unwrap();
    assert!(fig.vega_lite.is_none());
    assert_eq!(fig.bundle().mime_types(), ["text/html"]);
}
