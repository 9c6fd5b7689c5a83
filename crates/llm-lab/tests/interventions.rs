//! Interventions (zero ablation of heads and sub-layers) on tiny random models of both
//! architectures, checked against the same computation done by hand from a clean trace, and the
//! per-token loss against softmax by hand.

use candle_core::quantized::GgmlDType;
use candle_core::{IndexOp, Tensor};
use llm_lab::logits::{next_token_losses, softmax};
use llm_lab::model::{Architecture, Interventions};
use llm_lab::testing::{tiny_model, TinySpec};
use llm_lab::{Hook, Model, TraceOptions};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    llm_lab::testing::max_abs_diff(a, b).unwrap()
}

fn tokens() -> Vec<u32> {
    vec![2, 17, 200, 3, 99, 42, 42, 7, 130, 1, 255, 64]
}

fn specs() -> Vec<TinySpec> {
    vec![
        TinySpec::default(),
        TinySpec {
            format: GgmlDType::Q4_1,
            embed_format: GgmlDType::Q8_0,
            d_model: 128,
            ..TinySpec::default()
        },
        TinySpec::gemma(),
    ]
}

const QKV: TraceOptions = TraceOptions { qkv: true };

#[test]
fn no_intervention_is_the_plain_forward_pass() {
    for spec in specs() {
        let (_dir, model) = tiny_model(&spec).unwrap();
        let plain = model.run(&tokens()).unwrap();
        let none = model.run_with(&tokens(), &Interventions::new()).unwrap();
        assert_eq!(max_abs_diff(&plain, &none), 0.0, "{:?}", spec.architecture);
        let (traced, trace) = model
            .forward(&tokens())
            .trace(QKV)
            .interventions(&Interventions::new())
            .logits()
            .and_then(|o| o.traced())
            .unwrap();
        let (_, clean_trace) = model.run_with_trace(&tokens(), QKV).unwrap();
        assert_eq!(max_abs_diff(&plain, &traced), 0.0);
        assert_eq!(trace.names(), clean_trace.names());
        for hook in trace.hooks() {
            assert_eq!(
                max_abs_diff(&trace[hook], &clean_trace[hook]),
                0.0,
                "{hook}"
            );
        }
    }
}

/// What W_O receives in layer `l` of the clean pass, with head `h` zeroed by hand, then W_O.
fn attention_by_hand(model: &Model, clean: &llm_lab::Trace, l: usize, h: usize) -> Tensor {
    let z = clean.get(Hook::Z(l)).unwrap(); // [H, seq, d]
    let (n_heads, seq, d) = z.dims3().unwrap();
    let heads: Vec<Tensor> = (0..n_heads)
        .map(|i| {
            let zi = z.i(i).unwrap();
            if i == h {
                zi.zeros_like().unwrap()
            } else {
                zi
            }
        })
        .collect();
    let concat = Tensor::cat(&heads, 1).unwrap(); // [seq, H·d], head-major as the model concatenates
    assert_eq!(concat.dims(), &[seq, n_heads * d]);
    model.weights.blocks[l].attn.w_o.forward(&concat).unwrap() // [seq, D]
}

#[test]
fn ablating_a_head_equals_zeroing_its_z_by_hand() {
    for spec in specs() {
        let (_dir, model) = tiny_model(&spec).unwrap();
        let (clean_logits, clean) = model.run_with_trace(&tokens(), QKV).unwrap();
        let n_layers = model.config.n_layers;
        for (l, h) in [(0, 1), (n_layers - 1, model.config.n_heads - 1)] {
            let iv = Interventions::new().ablate_head(l, h);
            let (logits, ablated) = model
                .forward(&tokens())
                .trace(QKV)
                .interventions(&iv)
                .logits()
                .and_then(|o| o.traced())
                .unwrap();
            // The same logits as the untraced intervened pass.
            let untraced = model.run_with(&tokens(), &iv).unwrap();
            assert_eq!(max_abs_diff(&logits, &untraced), 0.0);
            // Nothing before layer l moves.
            for before in 0..=l {
                let (a, b) = (
                    &ablated[Hook::ResidPre(before)],
                    &clean[Hook::ResidPre(before)],
                );
                assert_eq!(max_abs_diff(a, b), 0.0, "resid_pre {before}");
            }
            // z: head h is zeros, every other head is the clean one.
            let z = &ablated[Hook::Z(l)];
            let z_clean = &clean[Hook::Z(l)];
            for i in 0..model.config.n_heads {
                let want = if i == h {
                    z_clean.i(i).unwrap().zeros_like().unwrap()
                } else {
                    z_clean.i(i).unwrap()
                };
                assert_eq!(max_abs_diff(&z.i(i).unwrap(), &want), 0.0, "head {i}");
            }
            // After W_O: the layer's attention output is the hand computation.
            let by_hand = attention_by_hand(&model, &clean, l, h);
            let model_out = match spec.architecture {
                Architecture::Llama => &ablated[Hook::AttnOut(l)],
                Architecture::Gemma3 => &ablated[Hook::AttnBeforePostNorm(l)],
            };
            let diff = max_abs_diff(model_out, &by_hand);
            assert!(
                diff < 1e-5,
                "{:?} layer {l} head {h}: {diff}",
                spec.architecture
            );
            // And the head mattered.
            assert!(max_abs_diff(&logits, &clean_logits) > 1e-4);
        }
    }
}

#[test]
fn ablating_every_head_of_a_layer_is_ablating_its_attention() {
    for spec in specs() {
        let (_dir, model) = tiny_model(&spec).unwrap();
        let every_head =
            (0..model.config.n_heads).fold(Interventions::new(), |iv, h| iv.ablate_head(1, h));
        let by_heads = model.run_with(&tokens(), &every_head).unwrap();
        let whole = Interventions::new().ablate_attention(1);
        let (by_layer, trace) = model
            .forward(&tokens())
            .trace(TraceOptions::default())
            .interventions(&whole)
            .logits()
            .and_then(|o| o.traced())
            .unwrap();
        let diff = max_abs_diff(&by_heads, &by_layer);
        assert!(diff < 1e-4, "{:?}: {diff}", spec.architecture);
        // The stream skips the attention: resid_mid = resid_pre.
        assert_eq!(
            max_abs_diff(&trace[Hook::ResidMid(1)], &trace[Hook::ResidPre(1)]),
            0.0
        );
    }
}

#[test]
fn ablating_an_mlp_makes_the_stream_skip_it() {
    for spec in specs() {
        let (_dir, model) = tiny_model(&spec).unwrap();
        let (clean_logits, _) = model.run_with_trace(&tokens(), QKV).unwrap();
        let iv = Interventions::new().ablate_mlp(0);
        let (logits, trace) = model
            .forward(&tokens())
            .trace(TraceOptions::default())
            .interventions(&iv)
            .logits()
            .and_then(|o| o.traced())
            .unwrap();
        assert_eq!(
            max_abs_diff(&trace[Hook::ResidPre(1)], &trace[Hook::ResidMid(0)]),
            0.0
        );
        assert_eq!(
            max_abs_diff(
                &trace[Hook::MlpOut(0)],
                &trace[Hook::MlpOut(0)].zeros_like().unwrap()
            ),
            0.0
        );
        assert!(max_abs_diff(&logits, &clean_logits) > 1e-4);
    }
}

#[test]
fn layers_and_heads_the_model_lacks_are_clear_errors() {
    for spec in specs() {
        let (_dir, model) = tiny_model(&spec).unwrap();
        let (n_layers, n_heads) = (model.config.n_layers, model.config.n_heads);
        let cases = [
            (
                Interventions::new().ablate_head(n_layers, 0),
                format!("layers 0..{n_layers}"),
            ),
            (
                Interventions::new().ablate_head(0, n_heads),
                format!("heads 0..{n_heads}"),
            ),
            (
                Interventions::new().ablate_attention(n_layers + 5),
                format!("layers 0..{n_layers}"),
            ),
            (
                Interventions::new().ablate_mlp(usize::MAX),
                format!("layers 0..{n_layers}"),
            ),
        ];
        for (iv, want) in cases {
            let err = model.run_with(&tokens(), &iv).unwrap_err().to_string();
            assert!(err.contains(&want), "`{err}` should say `{want}`");
            let err = model
                .forward(&tokens())
                .trace(QKV)
                .interventions(&iv)
                .logits()
                .and_then(|o| o.traced())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&want), "`{err}` should say `{want}`");
            assert!(model.token_losses(&tokens(), &iv).is_err());
        }
    }
}

#[test]
fn token_losses_are_minus_log_softmax_of_the_next_token() {
    for spec in specs() {
        let (_dir, model) = tiny_model(&spec).unwrap();
        let t = tokens();
        let losses = model.token_losses(&t, &Interventions::new()).unwrap();
        assert_eq!(losses.len(), t.len() - 1);
        let logits = model.run(&t).unwrap();
        for (i, &loss) in losses.iter().enumerate() {
            let p = softmax(&logits.i(i).unwrap().to_vec1::<f32>().unwrap());
            let by_hand = -(p[t[i + 1] as usize] as f64).ln() as f32;
            assert!(
                (loss - by_hand).abs() < 1e-4,
                "position {i}: {loss} vs {by_hand}"
            );
        }
        // The logits of all `t` score the same first positions (the last row has no target).
        let from_all = next_token_losses(&logits, &t).unwrap();
        assert_eq!(from_all.len(), t.len() - 1);
        for (a, b) in losses.iter().zip(&from_all) {
            assert!((a - b).abs() < 1e-5);
        }
        // Ablating a layer's attention changes the losses.
        let ablated = model
            .token_losses(&t, &Interventions::new().ablate_attention(0))
            .unwrap();
        assert!(losses
            .iter()
            .zip(&ablated)
            .any(|(a, b)| (a - b).abs() > 1e-4));
        assert!(model.token_losses(&t[..1], &Interventions::new()).is_err());
        assert!(next_token_losses(&logits, &t[..3]).is_err());
        assert!(next_token_losses(&logits.i(..2).unwrap(), &[1, 2, 100_000]).is_err());
    }
}

/// Generation with a head switched off: each cached step gives the logits the whole intervened
/// pass gives at that position, and differs from the clean step.
#[test]
fn an_intervened_step_continues_the_intervened_pass() {
    for spec in specs() {
        let (_dir, model) = tiny_model(&spec).unwrap();
        let iv = Interventions::new().ablate_head(1, 0).ablate_mlp(0);
        let t = tokens();
        let whole = model.run_with(&t, &iv).unwrap(); // [seq, V]
        let mut cache = llm_lab::KvCache::new();
        let split = t.len() - 3;
        let first = model
            .forward(&t[..split])
            .cache(&mut cache)
            .interventions(&iv)
            .next()
            .unwrap()
            .logits;
        assert!(max_abs_diff(&first, &whole.i(split - 1).unwrap()) < 1e-4);
        for (i, &tok) in t.iter().enumerate().skip(split) {
            let step = model
                .forward(&[tok])
                .cache(&mut cache)
                .interventions(&iv)
                .next()
                .unwrap()
                .logits;
            assert!(
                max_abs_diff(&step, &whole.i(i).unwrap()) < 1e-4,
                "position {i}"
            );
        }
        let clean = model.run(&t).unwrap();
        let last = t.len() - 1;
        assert!(max_abs_diff(&clean.i(last).unwrap(), &whole.i(last).unwrap()) > 1e-3);
        // A head the model lacks is refused on a step too, before the cache changes.
        let before = cache.len();
        let bad = Interventions::new().ablate_head(0, 99);
        assert!(model
            .forward(&[1])
            .cache(&mut cache)
            .interventions(&bad)
            .next()
            .is_err());
        assert_eq!(cache.len(), before);
    }
}
