//! The glass-box Gemma 3 against candle-transformers' `quantized_gemma3` on the real file, with
//! the rounding of activations taken out: both sides dequantize the same weights to f32
//! (`WeightFormat::F32` here, `CANDLE_DEQUANTIZE_ALL` there). A separate binary, since the
//! variable changes all of candle's quantized products in the process.
//!
//! candle's `quantized_gemma3` is not Gemma 3 in one place that matters on short prompts: its
//! MLP uses SiLU where Gemma uses GELU (tanh), as llama.cpp's gemma3 graph (`LLM_FFN_GELU`) and
//! Hugging Face's config (`hidden_activation = gelu_pytorch_tanh`) do. So the comparison runs
//! ours with the activation switched to SiLU, which must then give candle's logits, and shows
//! that GELU, not SiLU, is the model: only GELU continues the lecture's sentence as llama.cpp
//! does (`gemma_real.rs` checks five prompts against llama.cpp). Prompts stay below the 512
//! window, where candle's other two differences (a window one position wider, none at all
//! for a single new token) do not show.

use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::quantized_gemma3::ModelWeights;
use llm_lab::model::{Activation, WeightFormat};
use llm_lab::testing::{max_abs_diff, real_gemma};
use llm_lab::{KvCache, Model};

fn candle_exact(path: &std::path::Path) -> ModelWeights {
    // Read by candle once per thread, when it first builds a quantized product.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let mut f = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap()
}

fn argmax(t: &Tensor) -> u32 {
    t.argmax(0).unwrap().to_scalar::<u32>().unwrap()
}

fn greedy(model: &Model, prompt: &str, n: usize) -> String {
    let tokens = model.encode(prompt).unwrap();
    let mut cache = KvCache::new();
    let mut logits = model.step(&tokens, &mut cache).unwrap();
    let mut out = vec![];
    for _ in 0..n {
        let next = argmax(&logits);
        out.push(next);
        logits = model.step(&[next], &mut cache).unwrap();
    }
    model.decode(&out).unwrap()
}

#[test]
fn with_silu_the_logits_are_candles_and_gelu_is_the_model() {
    let Some(path) = real_gemma("with_silu_the_logits_are_candles_and_gelu_is_the_model") else {
        return;
    };
    let mut reference = candle_exact(&path);
    let mut model = Model::load_with(&path, WeightFormat::F32).unwrap();
    let gelu = greedy(&model, "Certa vez, ele resolveu que não seria", 8);
    model.config.mlp_activation = Activation::Silu;
    let silu = greedy(&model, "Certa vez, ele resolveu que não seria", 8);
    assert!(gelu.starts_with(" mais um problema"), "GELU: {gelu:?}");
    assert_ne!(gelu, silu, "SiLU should not continue as llama.cpp does");

    for prompt in [
        "Certa vez, ele resolveu que não seria",
        "Once upon a time",
        "fn main() { println!(\"hi\"); }",
    ] {
        let tokens = model.encode(prompt).unwrap();
        let ours = model.run(&tokens).unwrap();
        // quantized_gemma3 returns the last position only: feed growing prefixes (at position
        // 0 it starts its cache afresh).
        for n in [1, tokens.len() / 2, tokens.len()]
            .into_iter()
            .filter(|&n| n > 0)
        {
            let input = Tensor::new(&tokens[..n], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let theirs = reference.forward(&input, 0).unwrap().squeeze(0).unwrap();
            let diff = max_abs_diff(&ours.i(n - 1).unwrap(), &theirs).unwrap();
            assert!(diff <= 1e-3, "{prompt:?}, position {}: {diff}", n - 1);
        }
    }
}
