//! Each check accepts the right answer, reports `todo!()` as not done, survives panics, and rejects
//! typical wrong answers with the hint that names the mistake.

use candle_core::{Tensor, D};
use llm_lab::check::{self, Report, Status};
use llm_lab::generate::LanguageModel;
use llm_lab::logits::softmax;
use llm_lab::sampling::{Sampler, SamplerConfig};
use llm_lab::scratch::{self, HeadWeights};
use llm_lab::Result;

fn hint(r: &Report) -> String {
    match &r.status {
        Status::Failed { hint } => hint.clone(),
        other => panic!("{}: expected a failure, got {other:?}", r.exercise),
    }
}

fn assert_rejected(r: Report, words: &str) {
    let h = hint(&r);
    assert!(
        h.contains(words),
        "{}: hint {h:?} should mention {words:?}",
        r.exercise
    );
    assert!(r.plain_line().ends_with("= failed"));
}

#[test]
fn reports_have_a_plain_line_and_html() {
    let r = check::temperature(|z, t| llm_lab::logits::softmax_with_temperature(z, t).unwrap());
    assert!(r.passed(), "{r}");
    assert_eq!(r.plain_line(), "llm-lab check: temperatura = passed");
    assert!(r.to_html().contains("✅"));
    let r = check::temperature(|_, _| todo!());
    assert_eq!(r.status, Status::NotDone);
    assert_eq!(r.plain_line(), "llm-lab check: temperatura = not done yet");
    let r = check::temperature(|z, _| vec![z[99]]);
    assert!(hint(&r).contains("pânico"), "{r}");
}

// Counting heads, KV heads and layers: tests/checks_early.rs.

// ---- temperature ----------------------------------------------------------------------------

fn softmax_naive(z: &[f32]) -> Vec<f32> {
    let e: Vec<f32> = z.iter().map(|x| x.exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

#[test]
fn temperature_check() {
    assert!(
        check::temperature(|z, t| softmax(&z.iter().map(|x| x / t).collect::<Vec<_>>())).passed()
    );
    // Multiplied instead of divided.
    assert_rejected(
        check::temperature(|z, t| softmax(&z.iter().map(|x| x * t).collect::<Vec<_>>())),
        "multiplicou",
    );
    // No max subtraction: exp(1000) overflows.
    assert_rejected(
        check::temperature(|z, t| softmax_naive(&z.iter().map(|x| x / t).collect::<Vec<_>>())),
        "Subtraia o maior logit",
    );
    // Not normalised.
    assert_rejected(
        check::temperature(|z, t| z.iter().map(|x| (x / t).exp()).collect()),
        "somam 1",
    );
    // Temperature ignored.
    assert_rejected(check::temperature(|z, _| softmax(z)), "não teve efeito");
}

// ---- top-p ----------------------------------------------------------------------------------

fn ranked(p: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    idx
}

#[test]
fn top_p_check() {
    let right = |probs: &[f32], p: f32| {
        let mut sum = 0.0;
        let mut out = vec![];
        for i in ranked(probs) {
            out.push(i);
            sum += probs[i];
            if sum >= p {
                break;
            }
        }
        out
    };
    assert!(check::top_p(right).passed());
    // Stops before the token that crosses p.
    let before = |probs: &[f32], p: f32| {
        let mut sum = 0.0;
        let mut out = vec![];
        for i in ranked(probs) {
            if sum + probs[i] > p {
                break;
            }
            sum += probs[i];
            out.push(i);
        }
        out
    };
    assert_rejected(check::top_p(before), "cruza a linha");
    // Accumulates in id order instead of probability order.
    let unsorted = |probs: &[f32], p: f32| {
        let mut sum = 0.0;
        let mut out = vec![];
        for (i, &x) in probs.iter().enumerate() {
            out.push(i);
            sum += x;
            if sum >= p {
                break;
            }
        }
        out
    };
    let h = hint(&check::top_p(unsorted));
    assert!(h.contains("ordene") || h.contains("tokens demais"), "{h}");
    // Keeps tokens whose own probability is at least p.
    let threshold = |probs: &[f32], p: f32| (0..probs.len()).filter(|&i| probs[i] >= p).collect();
    let h = hint(&check::top_p(threshold));
    assert!(h.contains("não filtra") || h.contains("cruza"), "{h}");
    // Keeps everything.
    assert_rejected(
        check::top_p(|probs: &[f32], _| (0..probs.len()).collect()),
        "tokens demais",
    );
}

// ---- attention, multi-head, layer norm, positions ---------------------------------------------

fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, scale: bool, dim: usize) -> Result<Tensor> {
    let d = q.dim(D::Minus1)? as f64;
    let s = q.matmul(&k.t()?)?;
    let s = if scale { (s / d.sqrt())? } else { s };
    Ok(candle_nn::ops::softmax(&s, dim)?.matmul(v)?)
}

#[test]
fn attention_check() {
    assert!(check::attention(|q, k, v| sdpa(q, k, v, true, 1)).passed());
    assert_rejected(check::attention(|q, k, v| sdpa(q, k, v, false, 1)), "√d");
    assert_rejected(
        check::attention(|q, k, v| sdpa(q, k, v, true, 0)),
        "dimensão errada",
    );
    // Forgot V: returns the weights.
    assert_rejected(
        check::attention(|q, k, _| {
            Ok(candle_nn::ops::softmax_last_dim(
                &(q.matmul(&k.t()?)? / (q.dim(1)? as f64).sqrt())?,
            )?)
        }),
        "forma",
    );
    assert_eq!(check::attention(|_, _, _| todo!()).status, Status::NotDone);
}

fn heads_out(x: &Tensor, heads: &[HeadWeights]) -> Vec<Tensor> {
    heads
        .iter()
        .map(|h| {
            scratch::attention(
                &x.matmul(&h.w_q).unwrap(),
                &x.matmul(&h.w_k).unwrap(),
                &x.matmul(&h.w_v).unwrap(),
                false,
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn multi_head_check() {
    assert!(
        check::multi_head(|x, h, w_o| Ok(Tensor::cat(&heads_out(x, h), 1)?.matmul(w_o)?)).passed()
    );
    assert_rejected(
        check::multi_head(|x, h, _| Ok(Tensor::cat(&heads_out(x, h), 1)?)),
        "W_O",
    );
    let summed = |x: &Tensor, h: &[HeadWeights], _: &Tensor| {
        let o = heads_out(x, h);
        Ok(o.iter().skip(1).try_fold(o[0].clone(), |a, b| a + b)?)
    };
    assert_rejected(check::multi_head(summed), "somadas");
    // Concatenated along rows: the matmul with W_O fails or has the wrong shape.
    let h = hint(&check::multi_head(|x, h, w_o| {
        Ok(Tensor::cat(&heads_out(x, h), 0)?.matmul(w_o)?)
    }));
    assert!(h.contains("erro") || h.contains("forma"), "{h}");
}

#[test]
fn layer_norm_check() {
    assert!(check::layer_norm(|x, eps| {
        let mean = x.mean_keepdim(D::Minus1)?;
        let c = x.broadcast_sub(&mean)?;
        let var = c.sqr()?.mean_keepdim(D::Minus1)?;
        Ok(c.broadcast_div(&(var + eps)?.sqrt()?)?)
    })
    .passed());
    // RMSNorm instead.
    assert_rejected(
        check::layer_norm(|x, eps| {
            Ok(x.broadcast_div(&(x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?)?)
        }),
        "RMSNorm",
    );
    // Sample variance.
    assert_rejected(
        check::layer_norm(|x, eps| {
            let n = x.dim(D::Minus1)? as f64;
            let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
            let var = (c.sqr()?.sum_keepdim(D::Minus1)? / (n - 1.0))?;
            Ok(c.broadcast_div(&(var + eps)?.sqrt()?)?)
        }),
        "n − 1",
    );
    // Wrong axis.
    assert_rejected(
        check::layer_norm(|x, eps| {
            let c = x.broadcast_sub(&x.mean_keepdim(0)?)?;
            let var = c.sqr()?.mean_keepdim(0)?;
            Ok(c.broadcast_div(&(var + eps)?.sqrt()?)?)
        }),
        "dimensão errada",
    );
}

fn pe(n: usize, d: usize, swap: bool, pair: bool) -> Result<Tensor> {
    let mut v = vec![];
    for p in 0..n {
        for j in 0..d {
            let e = if pair {
                2.0 * (j / 2) as f64 / d as f64
            } else {
                j as f64 / d as f64
            };
            let a = p as f64 / 10_000f64.powf(e);
            v.push(if (j % 2 == 0) != swap {
                a.sin()
            } else {
                a.cos()
            } as f32);
        }
    }
    Ok(Tensor::from_vec(v, (n, d), &candle_core::Device::Cpu)?)
}

#[test]
fn positional_encoding_check() {
    assert!(check::positional_encoding(|n, d| pe(n, d, false, true)).passed());
    assert_rejected(
        check::positional_encoding(|n, d| pe(n, d, true, true)),
        "trocados",
    );
    assert_rejected(
        check::positional_encoding(|n, d| pe(n, d, false, false)),
        "índice do par",
    );
    assert_rejected(
        check::positional_encoding(|n, d| pe(n, d.max(1) - 1, false, true)),
        "forma",
    );
}

// ---- the loop -------------------------------------------------------------------------------

fn greedy_loop(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_new: usize,
    overshoot: bool,
    ignore_end: bool,
    append: bool,
) -> Result<Vec<u32>> {
    let mut tokens = prompt.to_vec();
    let mut out = vec![];
    let budget = if overshoot { max_new + 1 } else { max_new };
    while out.len() < budget {
        let next = model.next_token_logits(&tokens)?.argmax();
        if !ignore_end && model.stop_tokens().contains(&next) {
            break;
        }
        out.push(next);
        if append {
            tokens.push(next);
        }
    }
    Ok(out)
}

#[test]
fn generation_loop_check() {
    assert!(check::generation_loop(|m, p, n| greedy_loop(m, p, n, false, false, true)).passed());
    assert_rejected(
        check::generation_loop(|m, p, n| greedy_loop(m, p, n, true, false, true)),
        "um token a mais",
    );
    assert_rejected(
        check::generation_loop(|m, p, n| greedy_loop(m, p, n, false, true, true)),
        "fim de texto",
    );
    assert_rejected(
        check::generation_loop(|m, p, n| greedy_loop(m, p, n, false, false, false)),
        "acrescente",
    );
    assert_eq!(
        check::generation_loop(|_, _, _| todo!()).status,
        Status::NotDone
    );
}

fn sampled_loop(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_new: usize,
    t: f32,
    seed: u64,
    transform: fn(f32, f32) -> f32,
) -> Result<Vec<u32>> {
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: if t == 0.0 { 0.0 } else { 1.0 },
        seed,
        ..Default::default()
    })?;
    let mut tokens = prompt.to_vec();
    let mut out = vec![];
    while out.len() < max_new {
        let logits: Vec<f32> = model
            .next_token_logits(&tokens)?
            .values()
            .iter()
            .map(|&z| if t == 0.0 { z } else { transform(z, t) })
            .collect();
        let next = sampler.sample(&logits, &tokens)?;
        if model.stop_tokens().contains(&next) {
            break;
        }
        out.push(next);
        tokens.push(next);
    }
    Ok(out)
}

#[test]
fn temperature_loop_check() {
    assert!(
        check::temperature_loop(|m, p, n, t, s| sampled_loop(m, p, n, t, s, |z, t| z / t)).passed()
    );
    assert_rejected(
        check::temperature_loop(|m, p, n, t, s| sampled_loop(m, p, n, t, s, |z, t| z * t)),
        "multiplicou",
    );
    assert_rejected(
        check::temperature_loop(|m, p, n, t, s| sampled_loop(m, p, n, t, s, |z, _| z)),
        "não teve efeito",
    );
    // Always greedy.
    assert_rejected(
        check::temperature_loop(|m, p, n, _, s| sampled_loop(m, p, n, 0.0, s, |z, _| z)),
        "argmax",
    );
    // Ignores the seed (a different seed every call). A counter, not the clock: two calls in
    // the same clock tick would get the same seed and pass as seeded.
    let calls = std::sync::atomic::AtomicU64::new(1);
    let unseeded = |m: &dyn LanguageModel, p: &[u32], n: usize, t: f32, _s: u64| {
        let seed = calls.fetch_add(7_919, std::sync::atomic::Ordering::Relaxed);
        sampled_loop(m, p, n, t, seed, |z, t| z / t)
    };
    assert_rejected(check::temperature_loop(unseeded), "semente");
}

// ---- mistakes the second reading of the checks names ------------------------------------------

#[test]
fn temperature_dividing_the_probabilities_is_named() {
    let divided = |z: &[f32], t: f32| softmax(z).iter().map(|p| p / t).collect::<Vec<_>>();
    assert_rejected(check::temperature(divided), "dividiu as probabilidades");
}

#[test]
fn top_p_accepts_any_of_equally_likely_tokens() {
    // With four tokens of 0.25 and p = 0.6, any three of them are the smallest set.
    let last_three = |p: &[f32], top: f32| {
        if p == [0.25; 4] && top == 0.6 {
            vec![1, 2, 3]
        } else {
            llm_lab::sampling::top_p_set(p, top)
        }
    };
    let r = check::top_p(last_three);
    assert!(r.passed(), "{r}");
}

#[test]
fn multi_head_with_w_o_transposed_fails_where_h_times_d_differs_from_d() {
    let transposed = |x: &Tensor, heads: &[HeadWeights], w_o: &Tensor| {
        let concat = Tensor::cat(&heads_out(x, heads), 1)?;
        Ok(concat.matmul(&w_o.t()?.t()?.t()?)?)
    };
    assert_rejected(check::multi_head(transposed), "W_O");
}

#[test]
fn nan_answers_never_pass() {
    let nan = |q: &Tensor, _: &Tensor, v: &Tensor| {
        Ok(Tensor::full(f32::NAN, (q.dim(0)?, v.dim(1)?), q.device())?)
    };
    assert_rejected(check::attention(nan), "NaN");
    let nan_norm = |x: &Tensor, _eps: f64| Ok((x * f64::NAN)?);
    assert_rejected(check::layer_norm(nan_norm), "NaN");
}

#[test]
fn layer_norm_without_epsilon_is_named() {
    let no_eps = |x: &Tensor, _eps: f64| {
        let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        Ok(centered.broadcast_div(&var.sqrt()?)?)
    };
    assert_rejected(check::layer_norm(no_eps), "ε");
}

#[test]
fn a_loop_that_feeds_only_the_last_token_is_caught() {
    let last_only = |m: &dyn LanguageModel, p: &[u32], n: usize| -> Result<Vec<u32>> {
        let mut out: Vec<u32> = vec![];
        let mut last = *p.last().unwrap();
        while out.len() < n {
            let next = m.next_token_logits(&[last])?.argmax();
            if m.stop_tokens().contains(&next) {
                break;
            }
            out.push(next);
            last = next;
        }
        Ok(out)
    };
    assert_rejected(check::generation_loop(last_only), "sequência");
}

#[test]
fn temperature_loop_names_a_fresh_sampler_every_step_and_a_fixed_seed() {
    // A new sampler (same seed) at every step: every step draws the same random number.
    let fresh_each_step = |m: &dyn LanguageModel, p: &[u32], n: usize, t: f32, seed: u64| {
        let mut tokens = p.to_vec();
        let mut out = vec![];
        while out.len() < n {
            let mut sampler = Sampler::new(SamplerConfig {
                temperature: t,
                seed,
                ..Default::default()
            })?;
            let next = sampler.sample(m.next_token_logits(&tokens)?.values(), &tokens)?;
            out.push(next);
            tokens.push(next);
        }
        Ok(out)
    };
    assert_rejected(check::temperature_loop(fresh_each_step), "amostrador novo");
    // The seed ignored for a fixed one: every seed gives the same text, which is not argmax.
    let fixed_seed = |m: &dyn LanguageModel, p: &[u32], n: usize, t: f32, _seed: u64| {
        sampled_loop(m, p, n, t, 7, |z, t| z / t)
    };
    assert_rejected(
        check::temperature_loop(fixed_seed),
        "semente recebida não foi usada",
    );
}
