//! Weight shapes: the same from a config, from loaded weights and from a GGUF header, for both
//! architectures, so the Llama 3.2 shapes the course ships (derived from the config) are the
//! ones a loaded model of that config would show.

use std::collections::BTreeMap;

use llm_lab::model::WeightShapes;
use llm_lab::testing::{tiny_model, TinySpec};

fn as_map(s: &WeightShapes) -> BTreeMap<String, Vec<usize>> {
    s.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect()
}

#[test]
fn config_loaded_weights_and_header_agree() {
    let specs = [
        TinySpec::default(),
        TinySpec::gemma(),
        TinySpec {
            untied_output: true,
            n_layers: 12,
            ..Default::default()
        },
    ];
    for spec in specs {
        let (dir, model) = tiny_model(&spec).unwrap();
        let loaded = model.weight_shapes();
        let derived = WeightShapes::from_config(&model.config);
        assert_eq!(loaded, derived, "{spec:?}");
        let header = WeightShapes::read_gguf(dir.path().join("tiny.gguf")).unwrap();
        assert_eq!(as_map(&header), as_map(&loaded), "{spec:?}");
        // Blocks in numeric order: blk.10 after blk.9.
        let blocks: Vec<usize> = header
            .names()
            .filter_map(|n| n.strip_prefix("blk.")?.split('.').next()?.parse().ok())
            .collect();
        assert!(blocks.windows(2).all(|w| w[0] <= w[1]), "{blocks:?}");
        let c = &model.config;
        assert_eq!(
            loaded.rows("blk.0.attn_q.weight"),
            c.n_heads * c.d_head,
            "{spec:?}"
        );
        assert_eq!(loaded.cols("blk.0.attn_q.weight"), c.d_model);
        assert_eq!(loaded.rows("blk.0.attn_k.weight"), c.n_kv_heads * c.d_head);
        assert_eq!(
            loaded.get("output.weight").is_some(),
            !c.tied_embeddings,
            "{spec:?}"
        );
    }
}

#[test]
fn llama_3_2_shapes_follow_the_published_config() {
    let one = WeightShapes::from_config(&llm_lab::Config::llama_3_2_1b());
    assert_eq!(one.get("token_embd.weight"), Some(&[128_256, 2048][..]));
    assert_eq!(one.get("blk.15.attn_q.weight"), Some(&[2048, 2048][..]));
    assert_eq!(one.get("blk.15.attn_v.weight"), Some(&[512, 2048][..]));
    assert_eq!(one.get("blk.15.ffn_up.weight"), Some(&[8192, 2048][..]));
    assert!(one.get("blk.16.attn_q.weight").is_none());
    let three = WeightShapes::from_config(&llm_lab::Config::llama_3_2_3b());
    assert_eq!(three.get("blk.27.attn_q.weight"), Some(&[3072, 3072][..]));
    assert_eq!(three.get("blk.27.attn_k.weight"), Some(&[1024, 3072][..]));
    assert!(three.get("blk.28.attn_q.weight").is_none());
    assert_eq!(three.len(), 2 + 28 * 9);
}

#[test]
fn a_missing_or_bad_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = WeightShapes::read_gguf(dir.path().join("nope.gguf")).unwrap_err();
    assert!(!e.to_string().is_empty());
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"not a gguf file at all, just text").unwrap();
    let e = WeightShapes::read_gguf(&bad).unwrap_err().to_string();
    assert!(e.contains("GGUF"), "{e}");
}
