//! Choosing the next token from the logits.
//!
//! The stages run in Hugging Face's order (the lecture's Colab uses `transformers.generate`):
//!
//! 1. repetition penalty on tokens seen in the last `repetition_window` tokens
//! 2. ÷ temperature (T = 0: greedy, skip the rest)
//! 3. top-k: keep the k highest logits
//! 4. top-p: keep the smallest set of most likely tokens whose probability adds up to ≥ p
//! 5. min-p: keep tokens whose probability is ≥ min_p × the highest probability
//! 6. softmax over what is kept, and one draw from a seeded, portable random generator

use crate::error::{Error, Result};
use crate::logits::{argmax, check_logits, check_temperature, scaled_softmax};

pub use crate::rng::Rng;

/// The sampler's settings. `Default` is greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// T: 0 = greedy, 1 = the model's own distribution, > 1 flatter, < 1 sharper.
    pub temperature: f32,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens until their probability adds up to p, in (0, 1].
    pub top_p: Option<f32>,
    /// Keep tokens at least `min_p` times as likely as the best one, in [0, 1].
    pub min_p: Option<f32>,
    /// > 1 discourages repeating recent tokens (1 = off).
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repetition_window: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 42,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Sampling at temperature `t` with `seed`.
    pub fn with_temperature(t: f32, seed: u64) -> Self {
        SamplerConfig {
            temperature: t,
            seed,
            ..Self::default()
        }
    }

    /// Checks every parameter, with a message that says the allowed range.
    pub fn validate(&self) -> Result<()> {
        check_temperature(self.temperature)?;
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid(format!(
                    "top_p must be in (0, 1] (1 keeps every token), got {p}"
                )));
            }
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid(
                "top_k must be at least 1 (use None to keep every token)",
            ));
        }
        if let Some(m) = self.min_p {
            if !(0.0..=1.0).contains(&m) {
                return Err(Error::invalid(format!("min_p must be in [0, 1], got {m}")));
            }
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(Error::invalid(format!(
                "repetition_penalty must be a finite number > 0 (1 = off), got {}",
                self.repetition_penalty
            )));
        }
        Ok(())
    }
}

/// What each stage of one sampling step did, for lessons that show the pipeline.
#[derive(Debug, Clone)]
pub struct SamplingSteps {
    /// The logits as given.
    pub logits: Vec<f32>,
    /// After the repetition penalty.
    pub penalized: Vec<f32>,
    /// After ÷ T (±∞ where T is so small that the quotient overflows; the probabilities are
    /// computed without overflow).
    pub scaled: Vec<f32>,
    /// Which tokens survived top-k, top-p and min-p.
    pub kept: Vec<bool>,
    /// Probabilities over the kept tokens (0 elsewhere).
    pub probs: Vec<f32>,
    /// The uniform number drawn (None for greedy).
    pub draw: Option<f64>,
    /// The chosen token.
    pub token: u32,
}

/// Picks tokens according to a [`SamplerConfig`].
///
/// ```
/// use llm_lab::sampling::{Sampler, SamplerConfig};
/// let logits = [1.0, 3.0, 2.0];
/// let mut greedy = Sampler::new(SamplerConfig::greedy())?;
/// assert_eq!(greedy.sample(&logits, &[])?, 1);
/// let mut hot = Sampler::new(SamplerConfig { temperature: 1.0, top_k: Some(2), ..Default::default() })?;
/// assert_ne!(hot.sample(&logits, &[])?, 0); // token 0 is outside the top 2
/// # Ok::<(), llm_lab::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
}

impl Sampler {
    /// A sampler; invalid settings are an error.
    pub fn new(config: SamplerConfig) -> Result<Self> {
        config.validate()?;
        let rng = Rng::new(config.seed);
        Ok(Sampler { config, rng })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The next token after `history`.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        Ok(self.explain(logits, history)?.token)
    }

    /// Like [`Sampler::sample`], returning what every stage did.
    pub fn explain(&mut self, logits: &[f32], history: &[u32]) -> Result<SamplingSteps> {
        if logits.is_empty() {
            return Err(Error::invalid("cannot sample from an empty logits vector"));
        }
        check_logits(logits)?;
        let c = &self.config;
        let penalized =
            repetition_penalty(logits, history, c.repetition_penalty, c.repetition_window);
        check_logits(&penalized)?;
        if c.temperature == 0.0 {
            let token =
                argmax(&penalized).ok_or_else(|| Error::invalid("no logit to choose from"))?;
            let mut probs = vec![0.0; logits.len()];
            probs[token] = 1.0;
            let kept = probs.iter().map(|&p| p > 0.0).collect();
            return Ok(SamplingSteps {
                logits: logits.to_vec(),
                scaled: penalized.clone(),
                penalized,
                kept,
                probs,
                draw: None,
                token: token as u32,
            });
        }
        // Shown to students; may hold ±∞ when T is tiny. Ranks and probabilities come from the
        // penalized logits and T directly (same order, no overflow).
        let scaled: Vec<f32> = penalized.iter().map(|&x| x / c.temperature).collect();
        let t = c.temperature as f64;
        let mut kept: Vec<bool> = penalized.iter().map(|x| *x > f32::NEG_INFINITY).collect();
        if let Some(k) = c.top_k {
            keep_top_k(&penalized, k, &mut kept);
        }
        if let Some(p) = c.top_p {
            keep_top_p(&penalized, t, p, &mut kept);
        }
        if let Some(m) = c.min_p {
            keep_min_p(&penalized, t, m, &mut kept);
        }
        let probs = masked_softmax(&penalized, t, &kept);
        let draw = self.rng.next_f64();
        let token = draw_from(&probs, draw);
        Ok(SamplingSteps {
            logits: logits.to_vec(),
            penalized,
            scaled,
            kept,
            probs,
            draw: Some(draw),
            token,
        })
    }
}

/// CTRL's penalty, as Hugging Face applies it: positive logits ÷ penalty, negative × penalty.
fn repetition_penalty(logits: &[f32], history: &[u32], penalty: f32, window: usize) -> Vec<f32> {
    let mut out = logits.to_vec();
    if penalty == 1.0 {
        return out;
    }
    let mut seen = std::collections::HashSet::new();
    for &t in history.iter().rev().take(window) {
        let i = t as usize;
        if i < out.len() && seen.insert(i) {
            out[i] = if out[i] > 0.0 {
                out[i] / penalty
            } else {
                out[i] * penalty
            };
        }
    }
    out
}

/// Token ids by decreasing score (ties: smaller id first), only those still kept.
fn ranked(scores: &[f32], kept: &[bool]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).filter(|&i| kept[i]).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

fn keep_top_k(scores: &[f32], k: usize, kept: &mut [bool]) {
    for &i in ranked(scores, kept).iter().skip(k) {
        kept[i] = false;
    }
}

/// Top-p over probabilities: the smallest set of most likely token ids whose probability adds up
/// to at least `p` (the token that crosses the line is kept), sorted by id. At the edges: `p ≤ 0`
/// keeps the single most likely token, `p ≥ 1` keeps every token up to a total of 1.
///
/// ```
/// use llm_lab::sampling::top_p_set;
/// assert_eq!(top_p_set(&[0.1, 0.5, 0.1, 0.3], 0.7), vec![1, 3]);
/// assert_eq!(top_p_set(&[0.1, 0.5, 0.1, 0.3], 0.0), vec![1]);
/// assert_eq!(top_p_set(&[0.1, 0.5, 0.1, 0.3], 1.0), vec![0, 1, 2, 3]);
/// ```
pub fn top_p_set(probs: &[f32], p: f32) -> Vec<usize> {
    let all = vec![true; probs.len()];
    let mut kept = vec![];
    let mut cumulative = 0.0f64;
    for i in ranked(probs, &all) {
        kept.push(i);
        cumulative += probs[i] as f64;
        // A hair of tolerance so that p = 1 keeps every token despite rounding.
        if cumulative >= p as f64 - 1e-6 {
            break;
        }
    }
    kept.sort_unstable();
    kept
}

/// Probabilities `softmax(scores / t)` of the still-kept tokens (0 for the others).
fn masked_softmax(scores: &[f32], t: f64, kept: &[bool]) -> Vec<f32> {
    scaled_softmax(
        &scores
            .iter()
            .zip(kept)
            .map(|(&x, &k)| if k { x } else { f32::NEG_INFINITY })
            .collect::<Vec<_>>(),
        t,
    )
}

fn keep_top_p(scores: &[f32], t: f64, p: f32, kept: &mut [bool]) {
    let probs = masked_softmax(scores, t, kept);
    let nucleus = top_p_set(&probs, p);
    for (i, k) in kept.iter_mut().enumerate() {
        *k = *k && nucleus.binary_search(&i).is_ok();
    }
}

fn keep_min_p(scores: &[f32], t: f64, min_p: f32, kept: &mut [bool]) {
    let probs = masked_softmax(scores, t, kept);
    let top = probs.iter().copied().fold(0.0f32, f32::max);
    for (i, k) in kept.iter_mut().enumerate() {
        if probs[i] < min_p * top {
            *k = false;
        }
    }
}

/// The token where the cumulative probability first exceeds `u` (inverse-CDF sampling): walk the
/// tokens in id order, summing their probabilities, and stop at the first whose running sum is
/// above `u`. Tokens of probability 0 are never chosen; when rounding leaves the total a hair
/// below `u`, the last token of positive probability is chosen.
///
/// ```
/// use llm_lab::sampling::draw_from;
/// let p = [0.1, 0.2, 0.3, 0.4];
/// assert_eq!(draw_from(&p, 0.05), 0);
/// assert_eq!(draw_from(&p, 0.25), 1); // 0.1 ≤ 0.25 < 0.1 + 0.2
/// assert_eq!(draw_from(&[0.0, 1.0], 0.0), 1); // never a token of probability 0
/// assert_eq!(draw_from(&[0.5, 0.4999, 0.0], 0.99995), 1);
/// ```
pub fn draw_from(probs: &[f32], u: f64) -> u32 {
    let mut cumulative = 0.0f64;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cumulative += p as f64;
            last = i;
            if u < cumulative {
                return i as u32;
            }
        }
    }
    last as u32
}
