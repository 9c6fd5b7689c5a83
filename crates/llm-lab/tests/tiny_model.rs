//! The glass-box forward pass against candle-transformers' `quantized_llama` on tiny random
//! models written as real GGUF files, plus the cache, the trace and the Hugging Face path.

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use llm_lab::testing::{tiny_model, write_tiny_gguf, write_tiny_hf_folder, TinySpec};
use llm_lab::{Hook, KvCache, Model, TraceOptions};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    llm_lab::testing::max_abs_diff(a, b).unwrap()
}

fn tokens() -> Vec<u32> {
    vec![5, 17, 200, 3, 99, 42, 42, 7, 130, 1, 255, 64]
}

/// Our logits at every position vs `quantized_llama`, which returns only the last position:
/// feed it one token at a time so it returns each position in turn.
fn assert_matches_reference(spec: TinySpec) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, &spec).unwrap();
    let model = Model::load(&path).unwrap();
    let ours = model.run(&tokens()).unwrap();

    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    for (pos, &t) in tokens().iter().enumerate() {
        let input = Tensor::new(&[t], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs = reference.forward(&input, pos).unwrap().squeeze(0).unwrap();
        let diff = max_abs_diff(&ours.i(pos).unwrap(), &theirs);
        assert!(diff <= 1e-4, "{spec:?}: position {pos} differs by {diff}");
    }
    // The whole prompt at once (masked attention) gives the same last row too.
    reference.clear_kv_cache();
    let input = Tensor::new(tokens().as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let last = reference.forward(&input, 0).unwrap().squeeze(0).unwrap();
    let diff = max_abs_diff(&ours.i(tokens().len() - 1).unwrap(), &last);
    assert!(
        diff <= 1e-4,
        "{spec:?}: full-prompt last position differs by {diff}"
    );
}

#[test]
fn f32_tied_matches_quantized_llama() {
    assert_matches_reference(TinySpec::default());
}

#[test]
fn q8_0_untied_matches_quantized_llama() {
    assert_matches_reference(TinySpec {
        format: GgmlDType::Q8_0,
        embed_format: GgmlDType::Q8_0,
        untied_output: true,
        ..Default::default()
    });
}

#[test]
fn q4_1_with_q8_0_embeddings_matches_quantized_llama() {
    assert_matches_reference(TinySpec {
        format: GgmlDType::Q4_1,
        embed_format: GgmlDType::Q8_0,
        n_kv_heads: 1,
        seed: 7,
        ..Default::default()
    });
}

#[test]
fn the_comparison_can_fail() {
    // Different weights must not pass the tolerance: the parity test above is not vacuous.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    write_tiny_gguf(&a, &TinySpec::default()).unwrap();
    write_tiny_gguf(
        &b,
        &TinySpec {
            seed: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let la = Model::load(&a).unwrap().run(&tokens()).unwrap();
    let lb = Model::load(&b).unwrap().run(&tokens()).unwrap();
    assert!(max_abs_diff(&la, &lb) > 1e-2);
}

#[test]
fn incremental_decoding_equals_full_forward() {
    let (_dir, model) = tiny_model(&TinySpec {
        format: GgmlDType::Q8_0,
        ..Default::default()
    })
    .unwrap();
    let full = model.run(&tokens()).unwrap();
    let mut cache = KvCache::new();
    // A 5-token prompt, then one token at a time.
    let first = model.step(&tokens()[..5], &mut cache).unwrap();
    assert!(max_abs_diff(&first, &full.i(4).unwrap()) <= 1e-4);
    for pos in 5..tokens().len() {
        let step = model.step(&tokens()[pos..pos + 1], &mut cache).unwrap();
        let diff = max_abs_diff(&step, &full.i(pos).unwrap());
        assert!(diff <= 1e-4, "position {pos} differs by {diff}");
    }
    assert_eq!(cache.len(), tokens().len());
}

#[test]
fn attention_rows_sum_to_one_and_never_look_ahead() {
    let (_dir, model) = tiny_model(&TinySpec::default()).unwrap();
    let (logits, trace) = model
        .run_with_trace(&tokens(), TraceOptions::default())
        .unwrap();
    assert!(
        max_abs_diff(&logits, &model.run(&tokens()).unwrap()) == 0.0,
        "tracing must not change the result"
    );
    assert_eq!(trace.n_layers(), 2);
    for layer in 0..2 {
        for head in 0..4 {
            let p = trace.attention(layer, head).unwrap();
            assert_eq!(p.len(), tokens().len());
            for (q, row) in p.iter().enumerate() {
                let sum: f32 = row.iter().sum();
                assert!(
                    (sum - 1.0).abs() < 1e-5,
                    "layer {layer} head {head} row {q} sums to {sum}"
                );
                assert!(
                    row[q + 1..].iter().all(|&x| x == 0.0),
                    "row {q} attends to the future"
                );
                assert!(row[..=q].iter().all(|&x| x > 0.0));
            }
        }
    }
    assert!(trace.attention(0, 4).is_err(), "head 4 does not exist");
}

#[test]
fn trace_names_are_stable() {
    let (_dir, model) = tiny_model(&TinySpec {
        n_layers: 1,
        ..Default::default()
    })
    .unwrap();
    let (_, trace) = model
        .run_with_trace(&tokens()[..3], TraceOptions::default())
        .unwrap();
    assert_eq!(
        trace.names(),
        [
            "embed",
            "blocks.0.resid_pre",
            "blocks.0.attn.pattern",
            "blocks.0.attn_out",
            "blocks.0.resid_mid",
            "blocks.0.mlp_out",
            "final.resid"
        ]
    );
    // Every way of naming a hook reaches the same tensor, and every name parses back.
    assert_eq!(
        max_abs_diff(&trace[Hook::Pattern(0)], trace.pattern(0).unwrap()),
        0.0
    );
    for name in trace.names() {
        let hook: Hook = name.parse().unwrap();
        assert_eq!(hook.to_string(), name);
        assert!(trace.get(hook).is_ok() && trace.get(name.as_str()).is_ok());
    }
    let missing = trace.get(Hook::RotQ(0)).unwrap_err().to_string();
    assert!(missing.contains("qkv"), "{missing}");
    let beyond = trace.get(Hook::Pattern(5)).unwrap_err().to_string();
    assert!(beyond.contains("0..1"), "{beyond}");
    assert!(trace.get("blocks.0.attn.patern").is_err());
    assert_eq!(trace.labels.len(), 3);
    assert_eq!(
        trace.get("blocks.0.attn.pattern").unwrap().dims(),
        &[4, 3, 3]
    );
    assert_eq!(trace.get("blocks.0.resid_pre").unwrap().dims(), &[3, 64]);
    let (_, trace) = model
        .run_with_trace(&tokens()[..3], TraceOptions { qkv: true })
        .unwrap();
    for n in [
        "blocks.0.attn.q",
        "blocks.0.attn.k",
        "blocks.0.attn.v",
        "blocks.0.attn.rot_q",
        "blocks.0.attn.rot_k",
        "blocks.0.attn.z",
    ] {
        assert_eq!(trace.get(n).unwrap().dims(), &[4, 3, 16], "{n}");
    }
    // RoPE leaves position 0 alone and turns the others: the names say which side of it.
    let (q, rot_q) = (&trace[Hook::Q(0)], &trace[Hook::RotQ(0)]);
    let at = |t: &Tensor, p: usize| t.narrow(1, p, 1).unwrap();
    assert_eq!(max_abs_diff(&at(q, 0), &at(rot_q, 0)), 0.0);
    assert!(max_abs_diff(&at(q, 2), &at(rot_q, 2)) > 1e-3);
    // The residual stream adds up: resid_mid = resid_pre + attn_out, final = resid_mid + mlp_out.
    let g = |n: &str| trace.get(n).unwrap().clone();
    assert!(
        max_abs_diff(
            &(g("blocks.0.resid_pre") + g("blocks.0.attn_out")).unwrap(),
            &g("blocks.0.resid_mid")
        ) < 1e-5
    );
    assert!(
        max_abs_diff(
            &(g("blocks.0.resid_mid") + g("blocks.0.mlp_out")).unwrap(),
            &g("final.resid")
        ) < 1e-5
    );
}

#[test]
fn hugging_face_folder_gives_the_same_logits_as_gguf() {
    for untied in [false, true] {
        let spec = TinySpec {
            untied_output: untied,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("tiny.gguf");
        write_tiny_gguf(&gguf, &spec).unwrap();
        let hf = dir.path().join("hf");
        write_tiny_hf_folder(&hf, &spec).unwrap();
        let a = Model::load(&gguf).unwrap();
        let b = Model::load(&hf).unwrap();
        assert_eq!(a.config.n_layers, b.config.n_layers);
        assert_eq!(a.config.tied_embeddings, b.config.tied_embeddings);
        assert_eq!(
            a.encode("héllo, world").unwrap(),
            b.encode("héllo, world").unwrap()
        );
        let diff = max_abs_diff(&a.run(&tokens()).unwrap(), &b.run(&tokens()).unwrap());
        assert!(diff <= 1e-4, "untied={untied}: {diff}");
    }
}

#[test]
fn hub_cache_layout_loads_offline() {
    let spec = TinySpec::default();
    let cache = tempfile::tempdir().unwrap();
    let repo = cache
        .path()
        .join("models--meta-llama--Llama-3.2-1B-Instruct");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    write_tiny_hf_folder(&repo.join("snapshots").join(rev), &spec).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    let model =
        Model::load_from_hub_cache(cache.path(), "meta-llama/Llama-3.2-1B-Instruct").unwrap();
    assert_eq!(model.config.n_heads, 4);
    let err = Model::load_from_hub_cache(cache.path(), "someone/else")
        .unwrap_err()
        .to_string();
    assert!(err.contains("download it first"), "{err}");
}

#[test]
fn summary_prints_like_pytorch() {
    let (_dir, model) = tiny_model(&TinySpec {
        format: GgmlDType::Q8_0,
        ..Default::default()
    })
    .unwrap();
    let s = model.to_string();
    assert!(s.contains("(layers): 2 × LlamaDecoderLayer("), "{s}");
    assert!(
        s.contains("(q_proj): Linear(in_features=64, out_features=64, bias=False)  [Q8_0]"),
        "{s}"
    );
    assert!(
        s.contains("(k_proj): Linear(in_features=64, out_features=32, bias=False)"),
        "{s}"
    );
    assert!(s.contains("[tied to embed_tokens]"));
    assert!(
        s.lines().any(|l| l == "layers: 2")
            && s.lines().any(|l| l == "heads: 4")
            && s.lines().any(|l| l == "kv heads: 2")
    );
    // 258·64 embeddings + 2 × (64·64·2 + 32·64·2 + 3·64·128 + 2·64) + 64
    assert_eq!(
        model.n_params(),
        258 * 64 + 2 * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 128 + 2 * 64) + 64
    );
    assert!(model.summary_html().starts_with("<pre"));
}

#[test]
fn embed_unembed_and_every_position_agree_with_the_forward_pass() {
    let (_dir, model) = tiny_model(&TinySpec {
        format: GgmlDType::Q8_0,
        embed_format: GgmlDType::Q8_0,
        ..Default::default()
    })
    .unwrap();
    let t = tokens();
    let (logits, trace) = model.run_with_trace(&t, TraceOptions::default()).unwrap();
    assert_eq!(
        max_abs_diff(
            &model.embed(&t).unwrap(),
            trace.get("blocks.0.resid_pre").unwrap()
        ),
        0.0
    );
    let last = trace.get("final.resid").unwrap().get(t.len() - 1).unwrap();
    let lens = model.unembed(&last).unwrap();
    let want = logits.get(t.len() - 1).unwrap().to_vec1::<f32>().unwrap();
    assert!(lens
        .values()
        .iter()
        .zip(&want)
        .all(|(a, b)| (a - b).abs() < 1e-4));
    let row = model.to_logits(&logits.get(3).unwrap()).unwrap();
    assert_eq!(
        row.argmax(),
        logits
            .get(3)
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap()
    );
    assert!(model.embed(&[100_000]).is_err());
}
