//! The from-scratch pieces agree with the model's own computation; charts carry their labels.

use candle_core::{IndexOp, Tensor};
use llm_lab::model::Config;
use llm_lab::testing::{tiny_model, TinySpec};
use llm_lab::{scratch, Hook, Model, TraceOptions};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    llm_lab::testing::max_abs_diff(a, b).unwrap()
}

fn tiny() -> (tempfile::TempDir, Model) {
    tiny_model(&TinySpec::default()).unwrap()
}

#[test]
fn scratch_attention_reproduces_every_traced_head() {
    let (_d, model) = tiny();
    let tokens = [3u32, 9, 27, 81, 243, 7];
    let (_, trace) = model
        .run_with_trace(&tokens, TraceOptions { qkv: true })
        .unwrap();
    for layer in 0..model.config.n_layers {
        let (q, k, v) = (
            trace.get(Hook::RotQ(layer)).unwrap(),
            trace.get(Hook::RotK(layer)).unwrap(),
            trace.get(Hook::V(layer)).unwrap(),
        );
        let pattern = trace.pattern(layer).unwrap();
        let mut heads = vec![];
        for h in 0..model.config.n_heads {
            let w = scratch::attention_weights(&q.i(h).unwrap(), &k.i(h).unwrap(), true).unwrap();
            assert!(
                max_diff(&w, &pattern.i(h).unwrap()) < 1e-5,
                "layer {layer} head {h}"
            );
            heads.push(
                scratch::attention(&q.i(h).unwrap(), &k.i(h).unwrap(), &v.i(h).unwrap(), true)
                    .unwrap(),
            );
        }
        // Concatenate the heads and apply W_O: the model's attention output.
        let concat = Tensor::cat(&heads, 1).unwrap();
        let w_o = model.weights.blocks[layer].attn.w_o.weight().unwrap();
        let out = concat.matmul(&w_o.t().unwrap()).unwrap();
        assert!(
            max_diff(&out, &trace[Hook::AttnOut(layer)]) < 1e-4,
            "layer {layer}"
        );
    }
}

#[test]
fn scratch_rms_norm_matches_the_model_and_layer_norm_is_centered() {
    let (_d, model) = tiny();
    let (_, trace) = model
        .run_with_trace(&[1, 2, 3], TraceOptions::default())
        .unwrap();
    let x = trace.residual(1).unwrap();
    let g = &model.weights.blocks[1].attn.norm;
    let ours = scratch::rms_norm(x, g, model.config.rms_norm_eps).unwrap();
    let candle = candle_nn::ops::rms_norm(x, g, model.config.rms_norm_eps as f32).unwrap();
    assert!(max_diff(&ours, &candle) < 1e-5);
    let ln = scratch::layer_norm(x, 1e-5).unwrap();
    let means = ln
        .mean_keepdim(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(means.iter().all(|m| m.abs() < 1e-5));
}

#[test]
fn without_positions_attention_is_permutation_equivariant() {
    // Swapping two input rows swaps the same output rows: no notion of order.
    let x = scratch::random_matrix(5, 8, 1).unwrap();
    let heads = vec![scratch::HeadWeights {
        w_q: scratch::random_matrix(8, 4, 2).unwrap(),
        w_k: scratch::random_matrix(8, 4, 3).unwrap(),
        w_v: scratch::random_matrix(8, 4, 4).unwrap(),
    }];
    let w_o = scratch::random_matrix(4, 8, 5).unwrap();
    let perm = Tensor::new(&[1u32, 0, 2, 4, 3], &candle_core::Device::Cpu).unwrap();
    let y = scratch::multi_head_attention(&x, &heads, &w_o, false).unwrap();
    let y_perm =
        scratch::multi_head_attention(&x.index_select(&perm, 0).unwrap(), &heads, &w_o, false)
            .unwrap();
    assert!(max_diff(&y.index_select(&perm, 0).unwrap(), &y_perm) < 1e-5);
    // With sinusoidal positions added, it is not.
    let pe = scratch::sinusoidal_positions(5, 8).unwrap();
    let a = scratch::multi_head_attention(&(&x + &pe).unwrap(), &heads, &w_o, false).unwrap();
    let b = scratch::multi_head_attention(
        &(x.index_select(&perm, 0).unwrap() + &pe).unwrap(),
        &heads,
        &w_o,
        false,
    )
    .unwrap();
    assert!(max_diff(&a.index_select(&perm, 0).unwrap(), &b) > 1e-3);
}

#[test]
fn rope_frequencies_follow_llama3_scaling() {
    let c = Config::llama_3_2_1b();
    let f = c.rope_inv_freqs();
    assert_eq!(f.len(), 32);
    assert_eq!(f[0], 1.0, "highest frequency untouched");
    let unscaled = 1.0 / 500_000f32.powf(62.0 / 64.0);
    assert!(
        (f[31] - unscaled / 32.0).abs() < 1e-12,
        "lowest frequency divided by the factor"
    );
}

#[test]
fn charts_carry_titles_and_token_labels() {
    let (_d, model) = tiny();
    let tokens = model.encode("abc d").unwrap();
    let (_, trace) = model
        .run_with_trace(&tokens, TraceOptions::default())
        .unwrap();
    // The trace keeps the tokens' text: plots need no labels passed in.
    assert_eq!(trace.labels, model.token_strings(&tokens));
    let fig = trace.attention_figure(0, 1).unwrap();
    assert!(fig.svg.contains("<svg") && fig.svg.contains("camada 0, cabeça 1"));
    assert!(
        fig.svg.contains("\n␣\n") && fig.svg.contains("\nd\n"),
        "token labels, spaces made visible"
    );
    assert!(fig.svg.contains("consulta") && fig.svg.contains("chave"));
    let grid = trace.attention_grid(1).unwrap();
    // One SVG holding one per head; the live chart has one view per head.
    assert_eq!(grid.svg.matches("<svg").count(), model.config.n_heads + 1);
    let live = grid.vega_lite.as_ref().expect("attention grids are live");
    assert_eq!(
        live["concat"].as_array().map(Vec::len),
        Some(model.config.n_heads)
    );
    let pe = scratch::sinusoidal_positions(16, 8)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!(llm_lab::plot::positions("codificação posicional", &pe)
        .unwrap()
        .svg
        .contains("posição"));
    let bars = llm_lab::plot::bars("p", &["x".into()], &[0.5]).unwrap();
    assert!(bars.svg.contains("<rect"));
    assert!(llm_lab::plot::bars("p", &["x".into()], &[]).is_err());
    let logits = model.logits(&tokens).unwrap();
    let ex = llm_lab::explorer::Explorer::new(&logits, 8);
    // No script and nothing loaded from the network: a Vega-Lite spec (its schema URL is only
    // a name) and an SVG.
    let bundle = ex.bundle().to_evcxr();
    assert!(!bundle.contains("<script") && bundle.matches("http").count() <= 2);
    assert_eq!(ex.spec["params"][0]["bind"]["input"], "range");
}
