//! Gemma 3 on tiny random models written as real GGUF files: every code path of the Gemma
//! forward pass (q/k norms, post-norms, GELU, local and global layers, the sliding window on a
//! prompt and through the KV cache, the trace) without the download, plus candle-transformers'
//! `quantized_gemma3` as a reference where it computes the same thing.

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::quantized_gemma3::ModelWeights;
use llm_lab::model::{Activation, Architecture};
use llm_lab::testing::{tiny_model, write_tiny_gguf, TinySpec};
use llm_lab::{Hook, KvCache, Model, TraceOptions};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    llm_lab::testing::max_abs_diff(a, b).unwrap()
}

/// Twelve tokens: longer than the tiny window (4), so local layers hide part of the past.
fn tokens() -> Vec<u32> {
    vec![2, 17, 200, 3, 99, 42, 42, 7, 130, 1, 255, 300]
}

/// candle's `quantized_gemma3` differs from Gemma 3 (and llama.cpp) in three places, all
/// visible in its source: its MLP uses SiLU where Gemma uses GELU; its sliding window lets a
/// query see `window + 1` positions (`j + window < i` masked) where llama.cpp's sees `window`;
/// and it applies no window at all to a single new token. Everything else is compared here:
/// our forward pass with the activation switched to SiLU, on prompts no longer than the
/// window, must give candle's logits. (`gelu_is_what_gemma_uses` shows the switch matters.)
fn assert_matches_candle(spec: TinySpec, n_tokens: usize, tolerance: f32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, &spec).unwrap();
    let mut model = Model::load(&path).unwrap();
    model.config.mlp_activation = Activation::Silu;
    let tokens = &tokens()[..n_tokens];
    let ours = model.run(tokens).unwrap();

    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    // Token by token through candle's cache: each position in turn.
    for (pos, &t) in tokens.iter().enumerate() {
        let input = Tensor::new(&[t], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs = reference.forward(&input, pos).unwrap().squeeze(0).unwrap();
        let diff = max_abs_diff(&ours.i(pos).unwrap(), &theirs);
        assert!(diff <= tolerance, "position {pos} differs by {diff}");
    }
    // The whole prompt at once (candle's masked path) gives the same last row.
    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    let input = Tensor::new(tokens, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let last = reference.forward(&input, 0).unwrap().squeeze(0).unwrap();
    let diff = max_abs_diff(&ours.i(n_tokens - 1).unwrap(), &last);
    assert!(
        diff <= tolerance,
        "whole prompt: last position differs by {diff}"
    );
}

#[test]
fn f32_matches_quantized_gemma3_with_silu() {
    let spec = TinySpec {
        sliding_window: 8,
        ..TinySpec::gemma()
    };
    assert_matches_candle(spec, 8, 1e-4);
}

#[test]
fn q8_0_untied_two_kv_heads_matches_quantized_gemma3_with_silu() {
    let spec = TinySpec {
        format: GgmlDType::Q8_0,
        embed_format: GgmlDType::Q8_0,
        untied_output: true,
        n_kv_heads: 2,
        sliding_window: 8,
        ..TinySpec::gemma()
    };
    assert_matches_candle(spec, 8, 1e-4);
}

/// The real file's formats (Q5_0, Q4_K, Q6_K need rows of 256 for the K-quants) go through
/// candle's quantized products on both sides.
#[test]
fn k_quants_match_quantized_gemma3_with_silu() {
    for format in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q5_0] {
        let spec = TinySpec {
            d_model: 256,
            d_mlp: 256,
            d_head: Some(64),
            format,
            embed_format: GgmlDType::Q8_0,
            sliding_window: 8,
            ..TinySpec::gemma()
        };
        assert_matches_candle(spec, 8, 1e-3);
    }
}

/// candle's prompt mask lets a local query see `window + 1` positions (it masks only
/// `j + window < i`), where llama.cpp's rule (ours) shows `window`: on a prompt longer than the
/// window, candle's last logits are ours for a window one wider, not ours.
#[test]
fn candles_window_is_one_position_wider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, &TinySpec::gemma()).unwrap();
    let mut model = Model::load(&path).unwrap();
    model.config.mlp_activation = Activation::Silu;
    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    let input = Tensor::new(tokens().as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let theirs = reference.forward(&input, 0).unwrap().squeeze(0).unwrap();
    let last = |m: &Model| m.run(&tokens()).unwrap().i(tokens().len() - 1).unwrap();
    assert!(max_abs_diff(&last(&model), &theirs) > 1e-3);
    model.config.sliding_window = Some(5);
    assert!(max_abs_diff(&last(&model), &theirs) < 1e-4);
}

#[test]
fn gelu_is_what_gemma_uses() {
    let (_dir, model) = tiny_model(&TinySpec::gemma()).unwrap();
    assert_eq!(model.config.mlp_activation, Activation::GeluTanh);
    let mut silu = Model::load(&model.source).unwrap();
    silu.config.mlp_activation = Activation::Silu;
    let diff = max_abs_diff(
        &model.run(&tokens()).unwrap(),
        &silu.run(&tokens()).unwrap(),
    );
    assert!(
        diff > 1e-2,
        "the activation changed the logits by only {diff}"
    );
}

#[test]
fn config_and_module_tree_name_gemma_parts() {
    let (_dir, model) = tiny_model(&TinySpec::gemma()).unwrap();
    let c = &model.config;
    assert_eq!(c.architecture, Architecture::Gemma3);
    assert_eq!(c.sliding_window, Some(4));
    assert_eq!((c.rope_theta, c.rope_theta_local), (1e6, 1e4));
    assert!((c.embedding_scale - 8.0).abs() < 1e-6, "√64 = 8");
    assert_eq!(
        (0..3).map(|l| c.is_local(l)).collect::<Vec<_>>(),
        [true, true, false]
    );
    let tree = model.to_string();
    for part in [
        "Gemma3ForCausalLM",
        "(q_norm): Gemma3RMSNorm((32,)",
        "(post_feedforward_layernorm)",
        "(act_fn): GELUTanh()",
        "global: layers 2; the others local (window 4)",
        "rotary_emb_local",
        "layers: 3",
        "heads: 4",
        "kv heads: 1",
    ] {
        assert!(tree.contains(part), "no `{part}` in\n{tree}");
    }
    // Embeddings, per block 2 + 2 + 4 norms and 7 matrices, the final norm; output tied.
    let per_block = 4 * 64 + 2 * 32 + 128 * 64 + 2 * 32 * 64 + 64 * 128 + 3 * 64 * 128;
    assert_eq!(model.n_params(), 321 * 64 + 3 * per_block + 64);
}

/// Step by step through the KV cache, past the window: every step equals the row of a
/// full forward pass (local layers read only the last `window` cached positions).
#[test]
fn the_cache_honours_the_window() {
    let (_dir, model) = tiny_model(&TinySpec::gemma()).unwrap();
    let all = model.run(&tokens()).unwrap();
    let mut cache = KvCache::new();
    let mut logits = model.step(&tokens()[..3], &mut cache).unwrap();
    assert!(max_abs_diff(&logits, &all.i(2).unwrap()) < 1e-4);
    for (pos, &t) in tokens().iter().enumerate().skip(3) {
        logits = model.step(&[t], &mut cache).unwrap();
        let diff = max_abs_diff(&logits, &all.i(pos).unwrap());
        assert!(diff < 1e-4, "position {pos}: {diff}");
    }
    // A second chunk of several tokens after a cached past (masked path with past > 0).
    let mut cache = KvCache::new();
    model.step(&tokens()[..7], &mut cache).unwrap();
    let last = model.step(&tokens()[7..], &mut cache).unwrap();
    assert!(max_abs_diff(&last, &all.i(11).unwrap()) < 1e-4);
}

/// With every layer local (pattern 0 → no global layer), position p depends on at most
/// `layers · (window − 1) + 1` positions: changing a token further back leaves its logits
/// exactly as they were, changing one inside changes them.
#[test]
fn local_layers_see_only_their_window() {
    let (_dir, model) = tiny_model(&TinySpec {
        sliding_window_pattern: 0,
        ..TinySpec::gemma()
    })
    .unwrap();
    assert!((0..3).all(|l| model.config.is_local(l)));
    let reach = 3 * (4 - 1) + 1; // 10 positions
    let last = |tokens: &[u32]| model.run(tokens).unwrap().i(tokens.len() - 1).unwrap();
    let base = last(&tokens());
    let mut far = tokens();
    far[11 - reach] = 50; // position 1: out of reach of position 11
    far[0] = 60;
    assert_eq!(max_abs_diff(&base, &last(&far)), 0.0);
    let mut near = tokens();
    near[11 - reach + 1] = 50; // position 2: just in reach
    assert!(max_abs_diff(&base, &last(&near)) > 1e-4);
}

#[test]
fn trace_records_gemma_internals_with_the_shared_names() {
    let (_dir, model) = tiny_model(&TinySpec::gemma()).unwrap();
    let (logits, trace) = model
        .run_with_trace(&tokens(), TraceOptions { qkv: true })
        .unwrap();
    assert!(max_abs_diff(&logits, &model.run(&tokens()).unwrap()) < 1e-5);
    let eps = model.config.rms_norm_eps;
    for l in 0..3 {
        let b = &model.weights.blocks[l];
        // attn_out is what joins the stream: the post-norm of the raw attention output.
        let raw = trace.get(Hook::AttnBeforePostNorm(l)).unwrap();
        let normed =
            candle_nn::ops::rms_norm(raw, b.attn.post_norm.as_ref().unwrap(), eps as f32).unwrap();
        assert!(max_abs_diff(&normed, trace.attn_out(l).unwrap()) < 1e-5);
        let mid = (trace.resid_pre(l).unwrap() + trace.attn_out(l).unwrap()).unwrap();
        assert!(max_abs_diff(&mid, trace.resid_mid(l).unwrap()) < 1e-5);
        assert!(trace
            .get(format!("blocks.{l}.mlp.before_post_norm"))
            .is_ok());
        // Patterns: rows sum to 1, nothing in the future, nothing outside a local window.
        let p = trace.attention(l, 1).unwrap();
        for (i, row) in p.iter().enumerate() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            for (j, &x) in row.iter().enumerate() {
                let hidden = j > i || (model.config.is_local(l) && i - j >= 4);
                assert!(!hidden || x == 0.0, "layer {l}: query {i} sees key {j}");
            }
        }
    }
    // Embeddings are scaled by √d_model before the first layer.
    let raw = model
        .weights
        .embed
        .embedding(&Tensor::new(&tokens()[..], &Device::Cpu).unwrap())
        .unwrap();
    let scaled = (raw * 8.0).unwrap();
    assert!(max_abs_diff(&scaled, trace.get(Hook::Embed).unwrap()) < 1e-5);
}

/// One generated token on a local layer reads only the window, and its pattern still has one
/// column per cached position, zero outside the window.
#[test]
fn a_traced_step_pads_the_local_pattern() {
    let (_dir, model) = tiny_model(&TinySpec::gemma()).unwrap();
    let mut cache = KvCache::new();
    model.step(&tokens()[..9], &mut cache).unwrap();
    let (_, trace) = model
        .forward(&[5])
        .cache(&mut cache)
        .trace(TraceOptions::default())
        .next()
        .and_then(|o| o.traced())
        .unwrap();
    let local = trace.attention(0, 0).unwrap();
    assert_eq!(local[0].len(), 10);
    assert!(local[0][..6].iter().all(|&x| x == 0.0));
    assert!((local[0][6..].iter().sum::<f32>() - 1.0).abs() < 1e-5);
    let global = trace.attention(2, 0).unwrap();
    assert!(global[0][..6].iter().any(|&x| x > 0.0));
}

#[test]
fn the_sentencepiece_vocabulary_round_trips() {
    let (_dir, model) = tiny_model(&TinySpec::gemma()).unwrap();
    for text in [
        "the theater",
        "a\n\nb ção",
        "<start_of_turn>oi<end_of_turn>",
        "  x\ty",
    ] {
        let ids = model.encode(text).unwrap();
        assert_eq!(ids[0], 2, "BOS first, as the file asks");
        assert_eq!(model.decode(&ids[1..]).unwrap(), text);
    }
    // llama.cpp's order: "th" (the best score) twice, leftmost first, then "er". "▁the" is a
    // piece too, but its "t" went into "th" first, and "▁" + "th" is no piece.
    let ids = model.encode("the theater").unwrap();
    assert_eq!(
        model.token_strings(&ids[1..]),
        ["th", "e", " ", "th", "e", "a", "t", "er"]
    );
}

#[test]
fn missing_gemma_tensor_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    let spec = TinySpec {
        skip: vec!["blk.1.post_ffw_norm.weight".into()],
        ..TinySpec::gemma()
    };
    write_tiny_gguf(&path, &spec).unwrap();
    let err = Model::load(&path).expect_err("a file without a norm must not load");
    assert!(
        err.to_string().contains("blk.1.post_ffw_norm.weight"),
        "{err}"
    );
}
