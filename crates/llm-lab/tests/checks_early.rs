//! Lessons 01–03's checks: each accepts the right answer (and equally valid ones), reports
//! `todo!()` as not done, and rejects at least five typical wrong answers with the hint that
//! names that mistake (not a neighbouring one).

use candle_core::{Device, Tensor, D};
use llm_lab::check::{self, Report, Status};
use llm_lab::model::{Config, WeightShapes};
use llm_lab::scratch::{self, HeadWeights, Mlp};
use llm_lab::Result;

fn hint(r: &Report) -> String {
    match &r.status {
        Status::Failed { hint } => hint.clone(),
        other => panic!("{}: expected a failure, got {other:?}", r.exercise),
    }
}

#[track_caller]
fn assert_rejected(r: Report, words: &str) {
    let h = hint(&r);
    assert!(
        h.contains(words),
        "{}: hint {h:?} should mention {words:?}",
        r.exercise
    );
    assert!(r.plain_line().ends_with("= failed"));
}

#[track_caller]
fn assert_passed(r: Report) {
    assert!(r.passed(), "{r}");
}

// ---- counting from the weights' shapes ------------------------------------------------------

fn smollm2() -> Config {
    let mut c = Config::llama_3_2_1b();
    c.name = "SmolLM2".into();
    (c.n_layers, c.n_heads, c.n_kv_heads, c.d_head, c.d_model) = (30, 9, 3, 64, 576);
    (c.d_mlp, c.d_vocab) = (1536, 49_152);
    c
}

const Q: &str = "blk.0.attn_q.weight";
const K: &str = "blk.0.attn_k.weight";

fn block_indices(s: &WeightShapes) -> Vec<usize> {
    let mut v: Vec<usize> = s
        .names()
        .filter_map(|n| n.strip_prefix("blk.")?.split('.').next()?.parse().ok())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn count_heads_from_shapes() {
    let c = smollm2();
    assert_passed(check::count_heads(&c, |s, d| s.rows(Q) / d));
    assert_eq!(
        check::count_heads(&c, |_, _| todo!()).status,
        Status::NotDone
    );
    assert_rejected(check::count_heads(&c, |s, d| s.cols(Q) / d), "colunas");
    assert_rejected(
        check::count_heads(&c, |s, _| s.rows(Q) / s.cols(Q)),
        "dividiu as linhas por d_model",
    );
    assert_rejected(check::count_heads(&c, |s, d| s.rows(K) / d), "chave/valor");
    assert_rejected(
        check::count_heads(&c, |s, _| s.rows(Q)),
        "divida pela largura",
    );
    assert_rejected(check::count_heads(&c, |_, _| 9), "Não fixe");
    assert_rejected(
        check::count_heads(&c, |s, d| s.rows("blk.0.attn_q") / d),
        "nome do tensor",
    );
    assert_rejected(
        check::count_heads(&c, |s, _| block_indices(s).len()),
        "camadas",
    );
}

#[test]
fn count_kv_heads_from_shapes() {
    let c = smollm2();
    assert_passed(check::count_kv_heads(&c, |s, d| s.rows(K) / d));
    // W_V has the same rows: as right.
    assert_passed(check::count_kv_heads(&c, |s, d| {
        s.rows("blk.3.attn_v.weight") / d
    }));
    assert_rejected(check::count_kv_heads(&c, |s, d| s.rows(Q) / d), "consulta");
    assert_rejected(check::count_kv_heads(&c, |s, d| s.cols(K) / d), "colunas");
    assert_rejected(
        check::count_kv_heads(&c, |s, _| s.rows(Q) / s.rows(K)),
        "compartilham",
    );
    assert_rejected(
        check::count_kv_heads(&c, |s, _| s.rows(K) / s.cols(K)),
        "dividiu as linhas por d_model",
    );
    assert_rejected(check::count_kv_heads(&c, |_, _| 3), "Não fixe");
    assert_rejected(
        check::count_kv_heads(&c, |s, _| s.rows(K)),
        "divida pela largura",
    );
}

#[test]
fn count_layers_from_names() {
    let c = smollm2();
    // Three equally valid ways.
    assert_passed(check::count_layers(&c, |s| block_indices(s).len()));
    assert_passed(check::count_layers(&c, |s| {
        block_indices(s).last().map_or(0, |m| m + 1)
    }));
    assert_passed(check::count_layers(&c, |s| {
        s.names().filter(|n| n.ends_with(".attn_q.weight")).count()
    }));
    assert_eq!(check::count_layers(&c, |_| todo!()).status, Status::NotDone);
    assert_rejected(
        check::count_layers(&c, |s| block_indices(s).last().copied().unwrap_or(0)),
        "maior índice",
    );
    assert_rejected(
        check::count_layers(&c, |s| s.names().filter(|n| n.starts_with("blk.")).count()),
        "contou tensores",
    );
    assert_rejected(check::count_layers(&c, |s| s.len()), "contou tensores");
    // The largest name as text: "blk.9" > "blk.29".
    assert_rejected(
        check::count_layers(&c, |s| {
            let max = s.names().filter(|n| n.starts_with("blk.")).max().unwrap();
            max[4..]
                .split('.')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
                + 1
        }),
        "como texto",
    );
    assert_rejected(check::count_layers(&c, |_| 30), "Não fixe");
    assert_rejected(check::count_layers(&c, |s| s.rows(Q) / 64), "conta cabeças");
}

#[test]
fn counting_on_a_gemma_config() {
    // Gemma 3 270M's numbers: H·d (1024) ≠ D (640), one KV head.
    let mut c = smollm2();
    c.name = "Gemma 3 270M".into();
    c.architecture = llm_lab::model::Architecture::Gemma3;
    (c.n_layers, c.n_heads, c.n_kv_heads, c.d_head, c.d_model) = (18, 4, 1, 256, 640);
    assert_passed(check::count_heads(&c, |s, d| s.rows(Q) / d));
    assert_passed(check::count_kv_heads(&c, |s, d| s.rows(K) / d));
    assert_passed(check::count_layers(&c, |s| block_indices(s).len()));
    let r = check::count_heads(&c, |s, d| s.cols(Q) / d);
    assert!(hint(&r).contains("Gemma 3 270M sua resposta foi 2"), "{r}");
}

// ---- the causal mask --------------------------------------------------------------------------

/// Adds `fill` where `past(i, j)` is false, then (optionally) the softmax per row.
fn masked(
    s: &Tensor,
    past: impl Fn(usize, usize) -> bool,
    fill: f32,
    softmax: bool,
) -> Result<Tensor> {
    let n = s.dim(0)?;
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .map(|(i, j)| if past(i, j) { 0.0 } else { fill })
        .collect();
    let m = s.broadcast_add(&Tensor::from_vec(mask, (n, n), &Device::Cpu)?)?;
    Ok(if softmax {
        candle_nn::ops::softmax_last_dim(&m)?
    } else {
        m
    })
}

const NEG: f32 = f32::NEG_INFINITY;

#[test]
fn causal_mask_check() {
    assert_passed(check::causal_mask(|s| masked(s, |i, j| j <= i, NEG, true)));
    // A very large finite number is as good as −∞ in f32.
    assert_passed(check::causal_mask(|s| masked(s, |i, j| j <= i, -1e9, true)));
    assert_passed(check::causal_mask(|s| {
        masked(s, |i, j| j <= i, f32::MIN, true)
    }));
    assert_eq!(check::causal_mask(|_| todo!()).status, Status::NotDone);

    assert_rejected(
        check::causal_mask(|s| masked(s, |i, j| j >= i, NEG, true)),
        "transposta",
    );
    assert_rejected(
        check::causal_mask(|s| masked(s, |i, j| j < i, NEG, true)),
        "diagonal",
    );
    // Softmax first, then the future set to 0.
    assert_rejected(
        check::causal_mask(|s| {
            let w = candle_nn::ops::softmax_last_dim(s)?;
            let n = s.dim(0)?;
            let keep: Vec<f32> = (0..n * n)
                .map(|k| if k % n <= k / n { 1.0 } else { 0.0 })
                .collect();
            Ok((w * Tensor::from_vec(keep, (n, n), &Device::Cpu)?)?)
        }),
        "depois do softmax",
    );
    assert_rejected(
        check::causal_mask(|s| masked(s, |i, j| j <= i, 0.0, true)),
        "não teve efeito",
    );
    // The future's scores replaced by 0 (a mask multiplied instead of added).
    assert_rejected(
        check::causal_mask(|s| {
            let n = s.dim(0)?;
            let keep: Vec<f32> = (0..n * n)
                .map(|k| if k % n <= k / n { 1.0 } else { 0.0 })
                .collect();
            let z = (s * Tensor::from_vec(keep, (n, n), &Device::Cpu)?)?;
            Ok(candle_nn::ops::softmax_last_dim(&z)?)
        }),
        "exp(0) = 1",
    );
    assert_rejected(
        check::causal_mask(|s| masked(s, |i, j| j <= i, -10.0, true)),
        "sobrou peso no futuro",
    );
    assert_rejected(
        check::causal_mask(|s| masked(s, |i, j| j <= i, NEG, false)),
        "falta o softmax",
    );
    assert_rejected(
        check::causal_mask(|s| {
            let m = masked(s, |i, j| j <= i, NEG, false)?;
            Ok(candle_nn::ops::softmax(&m, 0)?)
        }),
        "dimensão errada",
    );
    assert_rejected(
        check::causal_mask(|s| Ok(masked(s, |i, j| j <= i, NEG, true)?.unsqueeze(0)?)),
        "forma",
    );
}

// ---- the lecture's block ----------------------------------------------------------------------

/// How a student might wire the block; `right` is the lecture's.
#[derive(Clone, Copy)]
enum Wiring {
    Right,
    PreNorm,
    NoResidualAttn,
    ResidualAfterNorm,
    MlpOnX,
    OneNormAtEnd,
    OneNormAtStart,
    NoResidualMlp,
    SecondResidualX,
    NoMlp,
}

fn block(wiring: Wiring) -> impl Fn(&Tensor, &[HeadWeights], &Tensor, &Mlp, f64) -> Result<Tensor> {
    move |x, heads, w_o, mlp, eps| {
        let ln = |t: &Tensor| scratch::layer_norm(t, eps);
        let mha = |t: &Tensor| scratch::multi_head_attention(t, heads, w_o, false);
        let z = ln(&(mha(x)? + x)?)?;
        Ok(match wiring {
            Wiring::Right => ln(&(mlp.forward(&z)? + &z)?)?,
            Wiring::PreNorm => {
                let z = (x + mha(&ln(x)?)?)?;
                (&z + mlp.forward(&ln(&z)?)?)?
            }
            Wiring::NoResidualAttn => {
                let z = ln(&mha(x)?)?;
                ln(&(mlp.forward(&z)? + &z)?)?
            }
            Wiring::ResidualAfterNorm => {
                let z = (ln(&mha(x)?)? + x)?;
                (ln(&mlp.forward(&z)?)? + &z)?
            }
            Wiring::MlpOnX => ln(&(mlp.forward(x)? + &z)?)?,
            Wiring::OneNormAtEnd => {
                let z = (mha(x)? + x)?;
                ln(&(mlp.forward(&z)? + &z)?)?
            }
            Wiring::OneNormAtStart => (mlp.forward(&z)? + &z)?,
            Wiring::NoResidualMlp => ln(&mlp.forward(&z)?)?,
            Wiring::SecondResidualX => ln(&(mlp.forward(&z)? + x)?)?,
            Wiring::NoMlp => z,
        })
    }
}

#[test]
fn block_check() {
    assert_passed(check::block(block(Wiring::Right)));
    assert_passed(check::block(|x, h, w_o, mlp, eps| {
        scratch::transformer_block(x, h, w_o, mlp, eps)
    }));
    assert_eq!(
        check::block(|_, _, _, _, _| todo!()).status,
        Status::NotDone
    );
    let wrong = [
        (Wiring::PreNorm, "pré-norma"),
        (Wiring::NoResidualAttn, "residual da atenção"),
        (Wiring::ResidualAfterNorm, "depois da normalização"),
        (Wiring::MlpOnX, "aplicado à entrada X"),
        (Wiring::OneNormAtEnd, "só no fim"),
        (Wiring::OneNormAtStart, "só Z"),
        (Wiring::NoResidualMlp, "residual do MLP"),
        (Wiring::SecondResidualX, "soma Z"),
        (Wiring::NoMlp, "metade do MLP"),
    ];
    for (w, words) in wrong {
        assert_rejected(check::block(block(w)), words);
    }
    // Causal attention inside.
    assert_rejected(
        check::block(|x, heads, w_o, mlp, eps| {
            let ln = |t: &Tensor| scratch::layer_norm(t, eps);
            let z = ln(&(scratch::multi_head_attention(x, heads, w_o, true)? + x)?)?;
            ln(&(mlp.forward(&z)? + &z)?)
        }),
        "máscara causal",
    );
    // RMSNorm instead of LayerNorm: not a wiring mistake, the general hint.
    assert_rejected(
        check::block(|x, heads, w_o, mlp, eps| {
            let d = x.dim(1)?;
            let ones = Tensor::ones(d, candle_core::DType::F32, &Device::Cpu)?;
            let ln = |t: &Tensor| scratch::rms_norm(t, &ones, eps);
            let z = ln(&(scratch::multi_head_attention(x, heads, w_o, false)? + x)?)?;
            ln(&(mlp.forward(&z)? + &z)?)
        }),
        "sua layer_norm",
    );
}

// ---- attention, multi-head, layer norm, positions -----------------------------------------------

/// Attention with a chosen scale (`None`: none), softmax axis, and whether the softmax is there.
fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, scale: Option<f64>, axis: usize) -> Result<Tensor> {
    let s = q.matmul(&k.t()?)?;
    let s = match scale {
        Some(c) => (s * c)?,
        None => s,
    };
    Ok(candle_nn::ops::softmax(&s, axis)?.matmul(v)?)
}

fn sqrt_d(q: &Tensor) -> f64 {
    (q.dim(1).unwrap() as f64).sqrt()
}

#[test]
fn attention_check_names_each_mistake() {
    assert_passed(check::attention(|q, k, v| {
        sdpa(q, k, v, Some(1.0 / sqrt_d(q)), 1)
    }));
    assert_rejected(check::attention(|q, k, v| sdpa(q, k, v, None, 1)), "√d");
    assert_rejected(
        check::attention(|q, k, v| sdpa(q, k, v, Some(1.0 / sqrt_d(q)), 0)),
        "dimensão errada",
    );
    assert_rejected(
        check::attention(|q, k, v| sdpa(q, k, v, Some(1.0 / q.dim(1)? as f64), 1)),
        "dividiu os escores por d",
    );
    assert_rejected(
        check::attention(|q, k, v| sdpa(q, k, v, Some(sqrt_d(q)), 1)),
        "multiplicou",
    );
    assert_rejected(
        check::attention(|q, k, v| sdpa(q, k, v, Some(1.0 / (v.dim(1)? as f64).sqrt()), 1)),
        "não a largura de V",
    );
    assert_rejected(
        check::attention(|q, k, v| Ok(((q.matmul(&k.t()?)? / sqrt_d(q))?.matmul(v))?)),
        "faltou o softmax",
    );
    // Forgot V: the weights have the wrong shape.
    assert_rejected(
        check::attention(|q, k, _| {
            Ok(candle_nn::ops::softmax_last_dim(
                &(q.matmul(&k.t()?)? / sqrt_d(q))?,
            )?)
        }),
        "Multiplique os pesos",
    );
}

fn heads_out(x: &Tensor, heads: &[HeadWeights], causal: bool) -> Result<Vec<Tensor>> {
    heads
        .iter()
        .map(|h| {
            scratch::attention(
                &x.matmul(&h.w_q)?,
                &x.matmul(&h.w_k)?,
                &x.matmul(&h.w_v)?,
                causal,
            )
        })
        .collect()
}

#[test]
fn multi_head_check_names_each_mistake() {
    assert_passed(check::multi_head(|x, h, w_o| {
        Ok(Tensor::cat(&heads_out(x, h, false)?, 1)?.matmul(w_o)?)
    }));
    // Each head's share of W_O applied separately, then summed: the same product.
    assert_passed(check::multi_head(|x, h, w_o| {
        let d = h[0].w_v.dim(1)?;
        let mut acc: Option<Tensor> = None;
        for (i, o) in heads_out(x, h, false)?.iter().enumerate() {
            let part = o.matmul(&w_o.narrow(0, i * d, d)?)?;
            acc = Some(match acc {
                Some(a) => (a + part)?,
                None => part,
            });
        }
        Ok(acc.unwrap())
    }));
    assert_rejected(
        check::multi_head(|x, h, _| Ok(Tensor::cat(&heads_out(x, h, false)?, 1)?)),
        "W_O",
    );
    let sum = |x: &Tensor, h: &[HeadWeights]| -> Result<Tensor> {
        let o = heads_out(x, h, false)?;
        Ok(o.iter().skip(1).try_fold(o[0].clone(), |a, b| a + b)?)
    };
    assert_rejected(check::multi_head(|x, h, _| sum(x, h)), "somadas");
    assert_rejected(
        check::multi_head(|x, h, _| Ok((sum(x, h)? / h.len() as f64)?)),
        "somadas",
    );
    assert_rejected(
        check::multi_head(|x, h, w_o| {
            let mut o = heads_out(x, h, false)?;
            o.reverse();
            Ok(Tensor::cat(&o, 1)?.matmul(w_o)?)
        }),
        "outra ordem",
    );
    assert_rejected(
        check::multi_head(|x, h, w_o| {
            Ok(Tensor::cat(&heads_out(x, h, false)?, 1)?.matmul(&w_o.t()?)?)
        }),
        "transposto",
    );
    assert_rejected(
        check::multi_head(|x, h, w_o| Ok(Tensor::cat(&heads_out(x, h, true)?, 1)?.matmul(w_o)?)),
        "máscara causal",
    );
}

fn centered(x: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?)
}

fn variance(x: &Tensor) -> Result<Tensor> {
    Ok(centered(x)?.sqr()?.mean_keepdim(D::Minus1)?)
}

#[test]
fn layer_norm_check_names_each_mistake() {
    assert_passed(check::layer_norm(|x, eps| {
        Ok(centered(x)?.broadcast_div(&(variance(x)? + eps)?.sqrt()?)?)
    }));
    assert_rejected(
        check::layer_norm(|x, eps| {
            Ok(x.broadcast_div(&(x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?)?)
        }),
        "RMSNorm",
    );
    assert_rejected(
        check::layer_norm(|x, eps| {
            let n = x.dim(D::Minus1)? as f64;
            let var = (centered(x)?.sqr()?.sum_keepdim(D::Minus1)? / (n - 1.0))?;
            Ok(centered(x)?.broadcast_div(&(var + eps)?.sqrt()?)?)
        }),
        "n − 1",
    );
    assert_rejected(
        check::layer_norm(|x, eps| Ok(scratch::layer_norm(&x.t()?, eps)?.t()?)),
        "dimensão errada",
    );
    assert_rejected(
        check::layer_norm(|x, _| Ok(centered(x)?.broadcast_div(&variance(x)?.sqrt()?)?)),
        "faltou o ε",
    );
    assert_rejected(
        check::layer_norm(|x, eps| Ok(centered(x)?.broadcast_div(&(variance(x)?.sqrt()? + eps)?)?)),
        "dentro da raiz",
    );
    assert_rejected(
        check::layer_norm(|x, eps| Ok(centered(x)?.broadcast_div(&(variance(x)? + eps)?)?)),
        "dividiu pela variância",
    );
    assert_rejected(check::layer_norm(|x, _| centered(x)), "só subtraiu a média");
}

/// Positional encodings built the lecture's way with one thing changed.
#[derive(Clone, Copy, Default)]
struct Pe {
    swap: bool,
    no_pair: bool,
    from_one: bool,
    multiply: bool,
    no_cos: bool,
    halves: bool,
    missing_two: bool,
}

fn pe(n: usize, d: usize, w: Pe) -> Result<Tensor> {
    let mut v = vec![];
    for p in 0..n {
        for j in 0..d {
            let (i, even) = if w.halves {
                let half = d.div_ceil(2);
                if j < half {
                    (j, true)
                } else {
                    (j - half, false)
                }
            } else {
                (j / 2, j % 2 == 0)
            };
            let e = if w.no_pair {
                j as f64 / d as f64
            } else if w.missing_two {
                i as f64 / d as f64
            } else {
                2.0 * i as f64 / d as f64
            };
            let pos = if w.from_one { p + 1 } else { p } as f64;
            let a = if w.multiply {
                pos * 10_000f64.powf(e)
            } else {
                pos / 10_000f64.powf(e)
            };
            let sine = even != w.swap || w.no_cos;
            v.push(if sine { a.sin() } else { a.cos() } as f32);
        }
    }
    Ok(Tensor::from_vec(v, (n, d), &Device::Cpu)?)
}

#[test]
fn positional_encoding_check_names_each_mistake() {
    let base = Pe::default();
    assert_passed(check::positional_encoding(|n, d| pe(n, d, base)));
    assert_passed(check::positional_encoding(|n, d| {
        scratch::sinusoidal_positions(n, d)
    }));
    let wrong = [
        (Pe { swap: true, ..base }, "trocados"),
        (
            Pe {
                no_pair: true,
                ..base
            },
            "índice do par",
        ),
        (
            Pe {
                from_one: true,
                ..base
            },
            "começam em 0",
        ),
        (
            Pe {
                multiply: true,
                ..base
            },
            "multiplicou a posição",
        ),
        (
            Pe {
                no_cos: true,
                ..base
            },
            "só seno",
        ),
        (
            Pe {
                halves: true,
                ..base
            },
            "metade",
        ),
        (
            Pe {
                missing_two: true,
                ..base
            },
            "não i/d",
        ),
    ];
    for (w, words) in wrong {
        assert_rejected(check::positional_encoding(move |n, d| pe(n, d, w)), words);
    }
    assert_rejected(
        check::positional_encoding(|n, d| pe(n, d.max(1) - 1, base)),
        "forma",
    );
}

/// A correct attention that computes its scores as `(K Qᵀ)ᵀ` hands a transposed view to the
/// prelude's `softmax_last_dim`: it passes, instead of failing with candle's "input has to be
/// contiguous", which names no mistake of the student's.
#[test]
fn attention_with_a_transposed_score_matrix_passes() {
    use llm_lab::prelude::softmax_last_dim;
    assert_passed(check::attention(|q, k, v| {
        let scores = (k.matmul(&q.t()?)?.t()? / sqrt_d(q))?; // a view, not contiguous
        Ok(softmax_last_dim(&scores)?.matmul(v)?)
    }));
    // candle's own kernel refuses that view: the reason the prelude has its own.
    let q = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
    let view = q.matmul(&q.t().unwrap()).unwrap().t().unwrap();
    assert!(candle_nn::ops::softmax_last_dim(&view).is_err());
}
