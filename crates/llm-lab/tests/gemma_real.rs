//! The real Gemma 3 270M (Q4_K_M GGUF) against llama.cpp: its tokenizer's ids and its greedy
//! continuations, recorded from llama.cpp (the one vendored in `llama_cpp_python` 0.3.36) in
//! `tests/data/gemma3_*.json`, so these run without llama.cpp. The file comes from
//! `$LLM_LAB_GEMMA` or the registry (`llm_lab::testing::real_gemma`); without it each test says
//! SKIPPED on stderr and passes.

use llm_lab::model::{Architecture, WeightFormat};
use llm_lab::testing::real_gemma;
use llm_lab::{KvCache, Model};
use serde_json::Value;

fn data(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn config_and_tree_match_the_published_numbers() {
    let Some(path) = real_gemma("config_and_tree_match_the_published_numbers") else {
        return;
    };
    let model = Model::load(path).unwrap();
    let c = &model.config;
    assert_eq!(c.architecture, Architecture::Gemma3);
    assert_eq!(
        (c.n_layers, c.n_heads, c.n_kv_heads, c.d_head),
        (18, 4, 1, 256)
    );
    assert_eq!(
        (c.d_model, c.d_mlp, c.d_vocab, c.n_ctx),
        (640, 2048, 262_144, 32_768)
    );
    assert_eq!((c.rope_theta, c.rope_theta_local), (1e6, 1e4));
    assert_eq!(c.sliding_window, Some(512));
    let global: Vec<usize> = (0..18).filter(|&l| !c.is_local(l)).collect();
    assert_eq!(global, [5, 11, 17]);
    assert!((c.rms_norm_eps - 1e-6).abs() < 1e-12);
    assert_eq!(c.bos_token_id, Some(2));
    assert!(c.eos_token_ids.contains(&1) && c.eos_token_ids.contains(&106));
    assert!(c.add_bos_token && c.tied_embeddings && c.chat_template.is_none());
    let tree = model.to_string();
    for line in ["layers: 18", "heads: 4", "kv heads: 1", "Gemma3ForCausalLM"] {
        assert!(tree.contains(line), "no `{line}` in\n{tree}");
    }
}

/// llama.cpp's `llama-tokenize` ids (BOS included) on the lecture and on mixed text: accents,
/// digits, code, emoji, runs of spaces, tabs and newlines, and text that looks like special
/// tokens. Control tokens (`<start_of_turn>`, `<eos>`, `<unused0>`) and user-defined ones
/// (Gemma's `\n\n`, HTML tags) written in the text become those tokens, as llama.cpp's
/// `parse_special` does; `<0x41>` is a byte token's name, not special, so it is spelled out.
#[test]
fn tokenizer_gives_llama_cpp_ids_and_decodes_back() {
    let Some(path) = real_gemma("tokenizer_gives_llama_cpp_ids_and_decodes_back") else {
        return;
    };
    let model = Model::load(path).unwrap();
    let cases = data("gemma3_tokenizer_ids.json");
    for case in cases["cases"].as_array().unwrap() {
        let (name, text) = (
            case["name"].as_str().unwrap(),
            case["text"].as_str().unwrap(),
        );
        let want = ids(&case["ids"]);
        let got = model.encode(text).unwrap();
        assert_eq!(got, want, "{name}: ids differ from llama.cpp's");
        assert_eq!(model.decode(&got[1..]).unwrap(), text, "{name}: decoding");
    }
}

/// Greedy continuations of seven prompts (Portuguese, English, code), 24 tokens each, against
/// llama.cpp's `llama-completion --temp 0` on the same file.
///
/// Gemma 3 270M meets near ties often: the exact maths of these weights (f32) themselves leave
/// llama.cpp's path on five of the seven prompts, each time where the two best logits are
/// within 0.22 of each other. So the check walks llama.cpp's 24 tokens through our KV cache
/// (our generation path, the file's quantized weights) and requires, at every position, that
/// llama.cpp's token be our top token or within `TIE` of it, and that it be our top token at
/// ≥ 90 % of the positions. Measured: 161 of 168 positions agree, the largest gap 0.20 (logits
/// are ~20–40); `def fibonacci(n):` continues identically, token for token. The largest gap is
/// itself sensitive: activations are rounded to 8 bits before every product, so a change in the
/// last bits of one number can flip a rounding. It was 0.26 with candle's GELU and ties rounded
/// away from zero, 0.39 with this crate's vectorised GELU, 0.20 (161 agreeing) once activations
/// were rounded exactly as llama.cpp's x86 quantizer rounds them.
#[test]
fn greedy_continuations_match_llama_cpp() {
    const TIE: f32 = 0.3;
    let Some(path) = real_gemma("greedy_continuations_match_llama_cpp") else {
        return;
    };
    let model = Model::load(path).unwrap();
    let reference = data("gemma3_greedy.json");
    let (mut agree, mut total) = (0, 0);
    for case in reference["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let want_text = case["continuation"].as_str().unwrap();
        let tokens = model.encode(prompt).unwrap();
        // llama.cpp's tokens, re-read from its text: the prompt's tokens must come first
        // unchanged, and the rest must spell the continuation.
        let joint = model.encode(&format!("{prompt}{want_text}")).unwrap();
        assert_eq!(
            joint[..tokens.len()],
            tokens[..],
            "{prompt:?}: tokens cross the boundary"
        );
        let want = &joint[tokens.len()..];
        assert_eq!(model.decode(want).unwrap(), want_text);

        let mut cache = KvCache::new();
        let mut logits = model.step(&tokens, &mut cache).unwrap();
        for (i, &w) in want.iter().enumerate() {
            let row = logits.to_vec1::<f32>().unwrap();
            let top = argmax(&row);
            let gap = row[top as usize] - row[w as usize];
            assert!(
                gap <= TIE,
                "{prompt:?}, token {i}: llama.cpp's {:?} is {gap} below our {:?}",
                model.decode(&[w]).unwrap(),
                model.decode(&[top]).unwrap()
            );
            agree += usize::from(top == w);
            total += 1;
            logits = model.step(&[w], &mut cache).unwrap();
        }
    }
    eprintln!("our top token is llama.cpp's at {agree} of {total} positions");
    assert!(
        agree * 10 >= total * 9,
        "only {agree} of {total} positions agree"
    );
}

/// `def fibonacci(n):` has no near tie on its path: our own greedy loop writes exactly
/// llama.cpp's 24 tokens.
#[test]
fn greedy_code_continuation_is_identical() {
    let Some(path) = real_gemma("greedy_code_continuation_is_identical") else {
        return;
    };
    let model = Model::load(path).unwrap();
    let reference = data("gemma3_greedy.json");
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["prompt"] == "def fibonacci(n):")
        .unwrap();
    let tokens = model.encode("def fibonacci(n):").unwrap();
    let mut cache = KvCache::new();
    let mut logits = model.step(&tokens, &mut cache).unwrap();
    let mut ours = vec![];
    for _ in 0..24 {
        let next = argmax(&logits.to_vec1::<f32>().unwrap());
        ours.push(next);
        logits = model.step(&[next], &mut cache).unwrap();
    }
    assert_eq!(
        model.decode(&ours).unwrap(),
        case["continuation"].as_str().unwrap()
    );
}

/// The forward pass without quantized activations (weights dequantized to f32) picks the same
/// greedy tokens on the lecture's sentence: what the 4-bit file and the exact maths agree on.
#[test]
fn exact_maths_continue_the_lecture_sentence() {
    let Some(path) = real_gemma("exact_maths_continue_the_lecture_sentence") else {
        return;
    };
    let model = Model::load_with(path, WeightFormat::F32).unwrap();
    let tokens = model
        .encode("Certa vez, ele resolveu que não seria")
        .unwrap();
    let mut cache = KvCache::new();
    let mut logits = model.step(&tokens, &mut cache).unwrap();
    let mut out = vec![];
    for _ in 0..8 {
        let next = argmax(&logits.to_vec1::<f32>().unwrap());
        out.push(next);
        logits = model.step(&[next], &mut cache).unwrap();
    }
    let text = model.decode(&out).unwrap();
    assert!(text.starts_with(" mais um problema"), "{text:?}");
}

/// Incremental decoding through the KV cache gives the logits of a full forward pass over the
/// same tokens, on the real shapes (heads of 256, one KV head). With exact maths (f32): with
/// the file's quantized weights, candle's products round activations differently for one row
/// and for many (its kernels depend on the row count), which moves logits by up to ~0.8.
#[test]
fn the_cache_gives_the_full_pass_logits() {
    let Some(path) = real_gemma("the_cache_gives_the_full_pass_logits") else {
        return;
    };
    let model = Model::load_with(path, WeightFormat::F32).unwrap();
    let tokens = model
        .encode("Once upon a time, there was a little girl")
        .unwrap();
    let all = model.run(&tokens).unwrap();
    let mut cache = KvCache::new();
    model.step(&tokens[..4], &mut cache).unwrap();
    for (pos, &t) in tokens.iter().enumerate().skip(4) {
        let step = model.step(&[t], &mut cache).unwrap();
        let diff = llm_lab::testing::max_abs_diff(&step, &all.get(pos).unwrap()).unwrap();
        assert!(diff < 1e-3, "position {pos}: {diff}");
    }
}

/// The same with the file's quantized weights, as students run the model. Here the two paths
/// cannot agree to float rounding: every product first rounds its input to 8 bits per block of
/// 32, and the prompt's and the step's sums run in different orders (attention over many queries
/// or one; `row_group`'s groups or the tiles), so a last-bit difference can move one activation
/// across a rounding boundary (1 % of its block's largest value), which the layers above carry
/// on. Measured on this sentence: 1.19, then 1.38 once activations were rounded as llama.cpp's
/// x86 quantizer rounds them (the same sensitivity, elsewhere), on logits of ~20–40; bound 2.
#[test]
fn the_cache_gives_the_full_pass_logits_with_the_files_weights() {
    let Some(path) = real_gemma("the_cache_gives_the_full_pass_logits_with_the_files_weights")
    else {
        return;
    };
    let model = Model::load(path).unwrap();
    let tokens = model
        .encode("Certa vez, ele resolveu que não seria mais um problema para ele")
        .unwrap();
    let all = model.run(&tokens).unwrap();
    let mut cache = KvCache::new();
    model.step(&tokens[..4], &mut cache).unwrap();
    let mut worst = 0f32;
    for (pos, &t) in tokens.iter().enumerate().skip(4) {
        let step = model.step(&[t], &mut cache).unwrap();
        let diff = llm_lab::testing::max_abs_diff(&step, &all.get(pos).unwrap()).unwrap();
        worst = worst.max(diff);
    }
    assert!(
        worst < 2.0,
        "a step's logits differ from the full pass's by {worst}"
    );
}
