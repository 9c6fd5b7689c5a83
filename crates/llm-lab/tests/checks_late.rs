//! Mutation tests of lessons 04–05's checks: for each check, the right answer (and equally valid
//! variants) passes, and at least five typical wrong answers fail with the hint of that mistake.

use llm_lab::check::lesson04::hints as h4;
use llm_lab::check::lesson05::hints as h5;
use llm_lab::check::{self, Report, Status};
use llm_lab::generate::LanguageModel;
use llm_lab::logits::softmax;
use llm_lab::rng::Rng;
use llm_lab::sampling::draw_from;
use llm_lab::{Error, Result};

fn hint(r: &Report) -> String {
    match &r.status {
        Status::Failed { hint } => hint.clone(),
        other => panic!("{}: expected a failure, got {other:?}", r.exercise),
    }
}

#[track_caller]
fn rejected(r: Report, want: &str) {
    let h = hint(&r);
    assert!(
        h.contains(want),
        "{}: hint {h:?}\nshould hold {want:?}",
        r.exercise
    );
}

#[track_caller]
fn passed(r: Report) {
    assert!(r.passed(), "{r}");
}

// ---- lesson 04: temperature -------------------------------------------------------------------

fn stable_softmax(z: &[f32]) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|x| (x - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn scaled(z: &[f32], k: f32) -> Vec<f32> {
    z.iter().map(|x| x * k).collect()
}

#[test]
fn temperature_mutants() {
    passed(check::temperature(|z, t| {
        stable_softmax(&scaled(z, 1.0 / t))
    }));
    rejected(
        check::temperature(|z, t| stable_softmax(&scaled(z, t))),
        h4::MULTIPLIED,
    );
    rejected(check::temperature(|z, _| stable_softmax(z)), h4::NO_EFFECT);
    rejected(
        check::temperature(|z, t| softmax(z).iter().map(|p| p / t).collect()),
        h4::PROBS_DIVIDED,
    );
    rejected(
        check::temperature(|z, t| softmax(z).iter().map(|p| p.powf(t)).collect()),
        h4::PROBS_POWER,
    );
    rejected(
        check::temperature(|z, t| softmax(z).iter().map(|p| p.powf(1.0 / t)).collect()),
        h4::POWER_NOT_RENORMALISED,
    );
    // exp without subtracting the largest logit: exp(1000) is ∞.
    rejected(
        check::temperature(|z, t| {
            let e: Vec<f32> = z.iter().map(|x| (x / t).exp()).collect();
            let s: f32 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        }),
        h4::OVERFLOW,
    );
    rejected(
        check::temperature(|z, t| z.iter().map(|x| (x / t).exp()).collect()),
        h4::NOT_NORMALISED,
    );
    rejected(
        check::temperature(|z, t| stable_softmax(&scaled(&z[1..], 1.0 / t))),
        h4::ONE_PER_LOGIT,
    );
}

// ---- lesson 04: top-p -------------------------------------------------------------------------

fn by_probability(p: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    idx
}

fn nucleus(probs: &[f32], p: f32) -> Vec<usize> {
    let mut sum = 0.0;
    let mut out = vec![];
    for i in by_probability(probs) {
        out.push(i);
        sum += probs[i];
        if sum >= p {
            break;
        }
    }
    out
}

#[test]
fn top_p_mutants() {
    passed(check::top_p(nucleus));
    // Ties broken towards the last index: as valid.
    passed(check::top_p(|probs: &[f32], p: f32| {
        let mut idx: Vec<usize> = (0..probs.len()).rev().collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let mut sum = 0.0;
        let mut out = vec![];
        for i in idx {
            out.push(i);
            sum += probs[i];
            if sum >= p {
                break;
            }
        }
        out
    }));
    // Stops before the token that crosses p.
    rejected(
        check::top_p(|probs: &[f32], p: f32| {
            let mut sum = 0.0;
            let mut out = vec![];
            for i in by_probability(probs) {
                if sum + probs[i] >= p {
                    break;
                }
                sum += probs[i];
                out.push(i);
            }
            out
        }),
        h4::MISSING_CROSSING,
    );
    // Accumulates in id order.
    let h = hint(&check::top_p(|probs: &[f32], p: f32| {
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
    }));
    assert!(
        h.contains(h4::NOT_SORTED) || h.contains(h4::TOO_MANY),
        "{h}"
    );
    rejected(
        check::top_p(|probs: &[f32], p: f32| (0..probs.len()).filter(|&i| probs[i] >= p).collect()),
        h4::THRESHOLD,
    );
    rejected(
        check::top_p(|probs: &[f32], _| (0..probs.len()).collect()),
        h4::TOO_MANY,
    );
    // Positions in the sorted order instead of token ids.
    rejected(
        check::top_p(|probs: &[f32], p: f32| (0..nucleus(probs, p).len()).collect()),
        h4::NOT_SORTED,
    );
    // Stops only once the sum is strictly above p.
    rejected(
        check::top_p(|probs: &[f32], p: f32| {
            let mut sum = 0.0;
            let mut out = vec![];
            for i in by_probability(probs) {
                out.push(i);
                sum += probs[i];
                if sum > p {
                    break;
                }
            }
            out
        }),
        h4::TOO_MANY,
    );
}

// ---- lesson 05, exercise 1: the loop with its window ------------------------------------------

/// A loop with one knob per typical mistake.
#[derive(Clone, Copy, Default)]
struct Loop {
    /// Which tokens are fed: 0 = the last L (right), 1 = only the last token, 2 = the generated
    /// tokens only, 3 = the first L, 4 = all, 5 = last L − 1, 6 = last L + 1, 7 = the prompt.
    feed: u8,
    /// 0 = stop at any stop token (right), 1 = never, 2 = include it, 3 = only the first one.
    stop: u8,
    /// Budget added to max_new_tokens (−1, 0, +1), or no budget at all.
    extra: i64,
    no_budget: bool,
    /// `tokens.len() - l` without saturating.
    underflow: bool,
    /// Returns the prompt in front of the new tokens.
    with_prompt: bool,
    /// Asks the model once more after the last token (wasteful but right).
    extra_call: bool,
}

impl Loop {
    fn run(
        self,
        m: &dyn LanguageModel,
        prompt: &[u32],
        n: usize,
        stop: &[u32],
        l: usize,
    ) -> Result<Vec<u32>> {
        let mut tokens = prompt.to_vec();
        let mut new: Vec<u32> = vec![];
        let budget = (n as i64 + self.extra).max(0) as usize;
        loop {
            if !self.no_budget && new.len() >= budget && !self.extra_call {
                break;
            }
            let len = tokens.len();
            let start = if self.underflow {
                len.wrapping_sub(l)
            } else {
                len.saturating_sub(l)
            };
            let fed: Vec<u32> = match self.feed {
                0 => tokens[start..].to_vec(),
                1 => tokens[len - 1..].to_vec(),
                2 => new[new.len().saturating_sub(l)..].to_vec(),
                3 => tokens[..l.min(len)].to_vec(),
                4 => tokens.clone(),
                5 => tokens[len.saturating_sub(l - 1)..].to_vec(),
                6 => tokens[len.saturating_sub(l + 1)..].to_vec(),
                _ => prompt.to_vec(),
            };
            let next = m.next_token_logits(&fed)?.argmax();
            if !self.no_budget && new.len() >= budget {
                break; // the extra call's result is thrown away
            }
            let is_stop = match self.stop {
                1 => false,
                3 => stop.first() == Some(&next),
                _ => stop.contains(&next),
            };
            if is_stop {
                if self.stop == 2 {
                    new.push(next);
                }
                break;
            }
            tokens.push(next);
            new.push(next);
        }
        Ok(if self.with_prompt { tokens } else { new })
    }
}

fn window(l: Loop) -> Report {
    check::window_loop(move |m, p, n, s, w| l.run(m, p, n, s, w))
}

#[test]
fn window_loop_right_answers_pass() {
    passed(window(Loop::default()));
    passed(window(Loop {
        extra_call: true,
        ..Loop::default()
    }));
    assert_eq!(
        check::window_loop(|_, _, _, _, _| todo!()).status,
        Status::NotDone
    );
}

#[test]
fn window_loop_names_what_the_model_was_fed() {
    let feed = |feed| {
        window(Loop {
            feed,
            ..Loop::default()
        })
    };
    rejected(feed(1), h5::LAST_ONLY);
    rejected(feed(2), h5::FORGOT_PROMPT);
    rejected(feed(3), h5::FIRST_L);
    rejected(feed(4), h5::IGNORES_WINDOW);
    rejected(feed(5), h5::WINDOW_OFF_BY_ONE);
    rejected(feed(6), h5::WINDOW_OFF_BY_ONE);
    rejected(feed(7), h5::NOT_APPENDED);
    rejected(
        window(Loop {
            underflow: true,
            ..Loop::default()
        }),
        h5::WINDOW_UNDERFLOW,
    );
}

#[test]
fn window_loop_names_stops_and_budget() {
    let stop = |stop| {
        window(Loop {
            stop,
            ..Loop::default()
        })
    };
    rejected(stop(1), h5::PAST_END);
    rejected(stop(2), h5::INCLUDES_STOP);
    rejected(stop(3), h5::ONLY_FIRST_STOP);
    let extra = |extra| {
        window(Loop {
            extra,
            ..Loop::default()
        })
    };
    rejected(extra(1), h5::ONE_TOO_MANY);
    rejected(extra(-1), h5::ONE_TOO_FEW);
    rejected(
        window(Loop {
            no_budget: true,
            ..Loop::default()
        }),
        h5::IGNORES_BUDGET,
    );
    rejected(
        window(Loop {
            with_prompt: true,
            ..Loop::default()
        }),
        h5::PROMPT_RETURNED,
    );
}

#[test]
fn generation_loop_mutants() {
    let run = |l: Loop| {
        check::generation_loop(move |m, p, n| l.run(m, p, n, &m.stop_tokens(), usize::MAX))
    };
    passed(run(Loop::default()));
    rejected(
        run(Loop {
            feed: 1,
            ..Loop::default()
        }),
        h5::LAST_ONLY,
    );
    rejected(
        run(Loop {
            feed: 7,
            ..Loop::default()
        }),
        h5::NOT_APPENDED,
    );
    rejected(
        run(Loop {
            stop: 1,
            ..Loop::default()
        }),
        h5::PAST_END,
    );
    rejected(
        run(Loop {
            stop: 2,
            ..Loop::default()
        }),
        h5::INCLUDES_STOP,
    );
    rejected(
        run(Loop {
            extra: 1,
            ..Loop::default()
        }),
        h5::ONE_TOO_MANY,
    );
    rejected(
        run(Loop {
            no_budget: true,
            ..Loop::default()
        }),
        h5::IGNORES_BUDGET,
    );
}

// ---- lesson 05, exercise 2a: the inverse-CDF draw ---------------------------------------------

fn right_draw(p: &[f32], u: f64) -> usize {
    let mut sum = 0.0f64;
    let mut last = 0;
    for (i, &x) in p.iter().enumerate() {
        if x > 0.0 {
            sum += x as f64;
            last = i;
            if u < sum {
                return i;
            }
        }
    }
    last
}

#[test]
fn inverse_cdf_mutants() {
    passed(check::inverse_cdf(right_draw));
    passed(check::inverse_cdf(|p, u| draw_from(p, u) as usize));
    assert_eq!(check::inverse_cdf(|_, _| todo!()).status, Status::NotDone);
    // u against each probability, not the running sum.
    rejected(
        check::inverse_cdf(|p, u| p.iter().position(|&x| u < x as f64).unwrap_or(p.len() - 1)),
        h5::NOT_CUMULATIVE,
    );
    // ≤ instead of <.
    rejected(
        check::inverse_cdf(|p, u| {
            let mut sum = 0.0f64;
            for (i, &x) in p.iter().enumerate() {
                sum += x as f64;
                if u <= sum {
                    return i;
                }
            }
            p.len() - 1
        }),
        h5::LESS_OR_EQUAL,
    );
    // The classic while loop that returns one past (and runs off the end on rounding).
    rejected(
        check::inverse_cdf(|p, u| {
            let (mut i, mut sum) = (0, 0.0f64);
            while sum <= u {
                sum += p[i] as f64;
                i += 1;
            }
            i
        }),
        h5::ONE_PAST,
    );
    rejected(
        check::inverse_cdf(|p, _| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap()),
        h5::IGNORES_U,
    );
    // Sorted from the most likely first: the right distribution, not the asked order.
    rejected(
        check::inverse_cdf(|p, u| {
            let idx = by_probability(p);
            let sorted: Vec<f32> = idx.iter().map(|&i| p[i]).collect();
            idx[right_draw(&sorted, u)]
        }),
        h5::SORTED_WALK,
    );
    // Walking off the end when rounding leaves the total below u.
    rejected(
        check::inverse_cdf(|p, u| {
            let mut sum = 0.0f64;
            for (i, &x) in p.iter().enumerate() {
                sum += x as f64;
                if x > 0.0 && u < sum {
                    return i;
                }
            }
            p.len()
        }),
        h5::ROUNDING,
    );
}

// ---- lesson 05, exercise 2c: top-p in the draw ------------------------------------------------

fn renormalised(p: &[f32], keep: &[usize]) -> Vec<f32> {
    let total: f32 = keep.iter().map(|&i| p[i]).sum();
    (0..p.len())
        .map(|i| if keep.contains(&i) { p[i] / total } else { 0.0 })
        .collect()
}

#[test]
fn top_p_sample_mutants() {
    passed(check::top_p_sample(|probs, p, u| {
        right_draw(&renormalised(probs, &nucleus(probs, p)), u)
    }));
    // Ties broken towards the last index: another valid nucleus.
    passed(check::top_p_sample(|probs, p, u| {
        let mut idx: Vec<usize> = (0..probs.len()).rev().collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let mut keep = vec![];
        let mut sum = 0.0;
        for i in idx {
            keep.push(i);
            sum += probs[i];
            if sum >= p {
                break;
            }
        }
        right_draw(&renormalised(probs, &keep), u)
    }));
    rejected(
        check::top_p_sample(|probs, p, u| {
            let keep = nucleus(probs, p);
            let kept: Vec<f32> = (0..probs.len())
                .map(|i| if keep.contains(&i) { probs[i] } else { 0.0 })
                .collect();
            right_draw(&kept, u)
        }),
        h5::NOT_RENORMALISED,
    );
    rejected(
        check::top_p_sample(|probs, _, u| right_draw(probs, u)),
        h5::IGNORES_TOP_P,
    );
    rejected(
        check::top_p_sample(|probs, p, u| {
            let q = renormalised(probs, &nucleus(probs, p));
            let idx = by_probability(&q);
            let sorted: Vec<f32> = idx.iter().map(|&i| q[i]).collect();
            idx[right_draw(&sorted, u)]
        }),
        h5::SORTED_WALK,
    );
    rejected(
        check::top_p_sample(|probs, p, u| {
            let mut keep = nucleus(probs, p);
            if keep.len() > 1 {
                keep.pop();
            }
            right_draw(&renormalised(probs, &keep), u)
        }),
        h4::MISSING_CROSSING,
    );
    rejected(
        check::top_p_sample(|probs, p, u| {
            right_draw(&renormalised(probs, &nucleus(probs, p)), u) + probs.len()
        }),
        h5::ROUNDING,
    );
}

// ---- lesson 05, exercise 2b: the loop with temperature ----------------------------------------

/// A sampling loop by hand with one knob per typical mistake.
#[derive(Clone, Copy)]
struct Sampling {
    /// Weights the draw walks over, from the logits and T.
    weights: fn(&[f32], f32) -> Vec<f32>,
    /// How the random generator is made: 0 = once with the seed (right), 1 = again at every
    /// step, 2 = a fixed seed, 3 = a new seed at every call.
    rng: u8,
    /// The draw: the exact inverse CDF, or off the end of the vector when u is above the total.
    off_the_end: bool,
    /// u from 24 random bits instead of next_f64: right, but not the library's draws.
    coarse_u: bool,
    /// T = 0 handled as greedy.
    greedy_at_zero: bool,
    /// Panics on T < 0 / unwraps the model's error.
    panics: bool,
}

fn right_weights(z: &[f32], t: f32) -> Vec<f32> {
    stable_softmax(&scaled(z, 1.0 / t))
}

impl Sampling {
    fn new(weights: fn(&[f32], f32) -> Vec<f32>) -> Self {
        Sampling {
            weights,
            rng: 0,
            off_the_end: false,
            coarse_u: false,
            greedy_at_zero: true,
            panics: false,
        }
    }

    fn run(
        self,
        m: &dyn LanguageModel,
        prompt: &[u32],
        n: usize,
        t: f32,
        seed: u64,
    ) -> Result<Vec<u32>> {
        if self.panics {
            assert!(t >= 0.0, "T must be ≥ 0");
        } else if t < 0.0 {
            return Err(Error::InvalidParameter("T deve ser ≥ 0".into()));
        }
        // A new seed at every call, whatever the seed given (deterministic, unlike a clock).
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
        let clock = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fresh = || match self.rng {
            2 => Rng::new(7),
            3 => Rng::new(clock),
            _ => Rng::new(seed),
        };
        let mut rng = fresh();
        let mut tokens = prompt.to_vec();
        let mut new = vec![];
        while new.len() < n {
            let logits = if self.panics {
                m.next_token_logits(&tokens).unwrap()
            } else {
                m.next_token_logits(&tokens)?
            };
            let next = if t == 0.0 && self.greedy_at_zero {
                logits.argmax() as usize
            } else {
                if self.rng == 1 {
                    rng = fresh();
                }
                let u = if self.coarse_u {
                    (rng.next_u64() >> 40) as f64 / (1u64 << 24) as f64
                } else {
                    rng.next_f64()
                };
                let w = (self.weights)(logits.values(), t);
                if self.off_the_end {
                    let mut sum = 0.0f64;
                    w.iter()
                        .position(|&x| {
                            sum += x as f64;
                            u < sum
                        })
                        .unwrap_or(w.len())
                } else {
                    right_draw(&w, u)
                }
            };
            let next = next as u32;
            if m.stop_tokens().contains(&next) {
                break;
            }
            tokens.push(next);
            new.push(next);
        }
        Ok(new)
    }
}

fn sampled(s: Sampling) -> Report {
    check::temperature_loop(move |m, p, n, t, seed| s.run(m, p, n, t, seed))
}

#[test]
fn temperature_loop_right_answers_pass() {
    passed(sampled(Sampling::new(right_weights)));
    // Another source of u: the same distribution, other draws; judged by frequencies.
    passed(sampled(Sampling {
        coarse_u: true,
        ..Sampling::new(right_weights)
    }));
    assert_eq!(
        check::temperature_loop(|_, _, _, _, _| todo!()).status,
        Status::NotDone
    );
}

#[test]
fn temperature_loop_names_the_formula_mistakes() {
    rejected(
        sampled(Sampling::new(|z, t| stable_softmax(&scaled(z, t)))),
        h5::MULTIPLIED,
    );
    rejected(
        sampled(Sampling::new(|z, _| stable_softmax(z))),
        h5::NO_EFFECT,
    );
    rejected(
        sampled(Sampling::new(|z, t| {
            stable_softmax(z).iter().map(|p| p / t).collect()
        })),
        h5::PROBS_DIVIDED,
    );
    rejected(
        sampled(Sampling::new(|z, t| {
            stable_softmax(z).iter().map(|p| p.powf(t)).collect()
        })),
        h5::PROBS_POWER,
    );
    rejected(
        sampled(Sampling {
            off_the_end: true,
            ..Sampling::new(|z, t| stable_softmax(z).iter().map(|p| p / t).collect())
        }),
        h5::OUT_OF_VOCABULARY,
    );
    // argmax whatever T.
    rejected(
        sampled(Sampling::new(|z, _| {
            let best = llm_lab::logits::argmax(z).unwrap_or(0);
            (0..z.len())
                .map(|i| if i == best { 1.0 } else { 0.0 })
                .collect()
        })),
        h5::ARGMAX,
    );
    // T = 0 divided like any other T: NaN weights, never the greedy answer.
    rejected(
        sampled(Sampling {
            greedy_at_zero: false,
            ..Sampling::new(right_weights)
        }),
        h5::GREEDY_AT_ZERO,
    );
}

#[test]
fn temperature_loop_names_the_generator_mistakes() {
    let rng = |rng| {
        sampled(Sampling {
            rng,
            ..Sampling::new(right_weights)
        })
    };
    rejected(rng(1), h5::NEW_SAMPLER_EACH_STEP);
    rejected(rng(2), h5::SEED_IGNORED);
    rejected(rng(3), h5::SEED);
    rejected(
        sampled(Sampling {
            panics: true,
            ..Sampling::new(right_weights)
        }),
        h5::NEGATIVE_T,
    );
}

#[test]
fn temperature_loop_names_a_panic_on_nan_logits() {
    // Right everywhere, but unwraps the model's error on NaN logits.
    let r = check::temperature_loop(|m, p, n, t, seed| {
        if t < 0.0 {
            return Err(Error::InvalidParameter("T deve ser ≥ 0".into()));
        }
        let s = Sampling::new(right_weights);
        let out = s.run(m, p, n, t, seed);
        Ok(out.unwrap())
    });
    rejected(r, h5::NAN_LOGITS);
}
