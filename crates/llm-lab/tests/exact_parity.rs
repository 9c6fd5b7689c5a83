//! The glass-box against candle-transformers' `quantized_llama` with the rounding of activations
//! taken out: both sides dequantize the same GGUF weights to f32 (`WeightFormat::F32` here,
//! `CANDLE_DEQUANTIZE_ALL` there), so every remaining difference is the order of float additions.
//! This pins the forward pass itself — grouped attention, RoPE, the KV cache and the fused
//! single-token step — tightly. A separate binary, since the variable changes all of candle's
//! quantized products in the process.

use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use llm_lab::model::WeightFormat;
use llm_lab::models::{self, DEFAULT_MODEL};
use llm_lab::testing::max_abs_diff;
use llm_lab::{KvCache, Model};

fn exact_reference() -> ModelWeights {
    // Read by candle once per thread, when it first builds a quantized product.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let path = models::fetch(DEFAULT_MODEL).unwrap();
    let mut f = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap()
}

fn exact_model() -> Model {
    Model::load_with(models::fetch(DEFAULT_MODEL).unwrap(), WeightFormat::F32).unwrap()
}

fn argmax(t: &Tensor) -> u32 {
    t.argmax(0).unwrap().to_scalar::<u32>().unwrap()
}

#[test]
fn logits_match_at_every_position() {
    let mut reference = exact_reference();
    let model = exact_model();
    for prompt in [
        "Once upon a time",
        "Certa vez, ele resolveu que não seria",
        "fn main() { println!(\"hi\"); }",
        "1 + 1 = 2, 2 + 2 =",
    ] {
        let tokens = model.encode(prompt).unwrap();
        let ours = model.run(&tokens).unwrap();
        // quantized_llama returns the last position only: feed growing prefixes.
        for n in [1, tokens.len() / 2, tokens.len()]
            .into_iter()
            .filter(|&n| n > 0)
        {
            reference.clear_kv_cache();
            let input = Tensor::new(&tokens[..n], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let theirs = reference.forward(&input, 0).unwrap().squeeze(0).unwrap();
            let diff = max_abs_diff(&ours.i(n - 1).unwrap(), &theirs).unwrap();
            assert!(
                diff <= 1e-3,
                "{prompt:?}, position {}: max abs difference {diff}",
                n - 1
            );
        }
    }
}

#[test]
fn greedy_48_tokens_identical_with_the_cache() {
    let mut reference = exact_reference();
    let model = exact_model();
    let prompt = model.encode("Once upon a time").unwrap();

    let mut cache = KvCache::new();
    let (mut ours, mut our_logits) = (vec![], vec![]);
    let mut logits = model.step(&prompt, &mut cache).unwrap().squeeze(0).unwrap();
    for _ in 0..48 {
        let next = argmax(&logits);
        ours.push(next);
        our_logits.push(logits.clone());
        logits = model.step(&[next], &mut cache).unwrap().squeeze(0).unwrap();
    }

    let (mut theirs, mut pos, mut input) = (vec![], 0, prompt.clone());
    for (step, ours_at_step) in our_logits.iter().enumerate() {
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let l = reference.forward(&x, pos).unwrap().squeeze(0).unwrap();
        let diff = max_abs_diff(ours_at_step, &l).unwrap();
        assert!(diff <= 1e-3, "step {step}: max abs difference {diff}");
        pos += input.len();
        let next = argmax(&l);
        theirs.push(next);
        input = vec![next];
    }
    assert_eq!(
        ours,
        theirs,
        "ours: {:?}\ntheirs: {:?}",
        model.decode(&ours),
        model.decode(&theirs)
    );
}
