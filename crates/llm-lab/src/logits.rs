//! Logits: the model's raw score for every token of the vocabulary, and the ways to turn them
//! into probabilities — softmax, with or without a temperature.
//!
//! The lecture's formula: `p_i = exp(z_i / T) / Σ_j exp(z_j / T)`.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::{Interventions, KvCache, Model, ModelInput};
use crate::tokenizer::Tokenizer;

/// `softmax(z)_i = exp(z_i) / Σ_j exp(z_j)`, computed as `exp(z_i − max z)` so that logits in the
/// thousands do not overflow.
///
/// Total on every input: `+∞` logits share all the probability (the limit of a very large
/// logit), `−∞` logits get 0; if every logit is `−∞` every probability is 0 (no token can be
/// chosen), and a NaN anywhere makes every probability NaN, so broken numbers stay visible.
///
/// ```
/// let p = llm_lab::logits::softmax(&[1.0, 2.0, 3.0]);
/// assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// assert!(p[2] > p[1] && p[1] > p[0]);
/// let big = llm_lab::logits::softmax(&[1000.0, 999.0]);
/// assert!((big[0] - 0.7310586).abs() < 1e-6);
/// assert_eq!(llm_lab::logits::softmax(&[f32::INFINITY, 0.0, f32::INFINITY]), vec![0.5, 0.0, 0.5]);
/// ```
pub fn softmax(z: &[f32]) -> Vec<f32> {
    scaled_softmax(z, 1.0)
}

/// `softmax(z / t)` for `t > 0`, in f64 from `z_i − max z` so that no temperature, however small,
/// overflows: as `t → 0` the probability goes to the largest logits, shared among ties.
pub(crate) fn scaled_softmax(z: &[f32], t: f64) -> Vec<f32> {
    if z.iter().any(|x| x.is_nan()) {
        return vec![f32::NAN; z.len()];
    }
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; z.len()];
    }
    if max == f32::INFINITY {
        let n = z.iter().filter(|&&x| x == max).count();
        return z
            .iter()
            .map(|&x| if x == max { 1.0 / n as f32 } else { 0.0 })
            .collect();
    }
    let e: Vec<f64> = z
        .iter()
        .map(|&x| ((x as f64 - max as f64) / t).exp())
        .collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|&x| (x / sum) as f32).collect()
}

/// `softmax(z / T)`. `T = 0` puts all the probability on the largest logit (greedy); a `T` so
/// small that `z / T` would overflow gives that limit too, never NaN. `T < 0`, `T = ∞` or NaN,
/// a NaN logit, and logits that are all `−∞` are errors.
///
/// ```
/// use llm_lab::logits::softmax_with_temperature as soft;
/// let z = [2.0, 1.0, 0.1];
/// let cold = soft(&z, 0.5)?;
/// let hot = soft(&z, 2.0)?;
/// assert!(cold[0] > hot[0]); // low temperature sharpens, high temperature flattens
/// assert_eq!(soft(&z, 0.0)?, vec![1.0, 0.0, 0.0]);
/// assert_eq!(soft(&z, 1e-40)?, vec![1.0, 0.0, 0.0]);
/// assert!(soft(&z, -1.0).is_err());
/// assert!(soft(&[f32::NAN, 1.0], 1.0).is_err());
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn softmax_with_temperature(z: &[f32], temperature: f32) -> Result<Vec<f32>> {
    check_temperature(temperature)?;
    check_logits(z)?;
    if temperature == 0.0 {
        let best = argmax(z);
        return Ok((0..z.len())
            .map(|i| if Some(i) == best { 1.0 } else { 0.0 })
            .collect());
    }
    Ok(scaled_softmax(z, temperature as f64))
}

/// NaN logits, or logits that leave no token possible, are the model's or the caller's bug.
pub(crate) fn check_logits(z: &[f32]) -> Result<()> {
    if let Some(i) = z.iter().position(|x| x.is_nan()) {
        return Err(Error::invalid(format!(
            "logit {i} is NaN: the model produced invalid numbers; reload the model file (it may be corrupt)"
        )));
    }
    if !z.is_empty() && z.iter().all(|&x| x == f32::NEG_INFINITY) {
        return Err(Error::invalid(
            "every logit is -inf: no token can be chosen; check the mask or the penalties applied to the logits",
        ));
    }
    Ok(())
}

pub(crate) fn check_temperature(t: f32) -> Result<()> {
    if t.is_nan() || t < 0.0 || t.is_infinite() {
        return Err(Error::invalid(format!(
            "temperature must be a finite number ≥ 0 (0 means greedy), got {t}"
        )));
    }
    Ok(())
}

/// Index of the largest value (the first one on ties), NaN values ignored; `None` when there is
/// no number at all (an empty slice, or only NaN).
///
/// ```
/// assert_eq!(llm_lab::logits::argmax(&[f32::NAN, 1.0, 3.0, 3.0]), Some(2));
/// assert_eq!(llm_lab::logits::argmax(&[f32::NAN]), None);
/// ```
pub fn argmax(z: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &x) in z.iter().enumerate() {
        if !x.is_nan() && best.is_none_or(|b| x > z[b]) {
            best = Some(i);
        }
    }
    best
}

/// The training loss at every position: `losses[i] = −ln p(tokens[i + 1] | tokens[..=i])`, the
/// cross-entropy (natural log, in nats) of each next token under `logits: [seq, V]` (row `i`
/// predicting token `i + 1`, as [`Model::run`] returns them). `seq − 1` values: nothing
/// predicts the first token. Its mean is the loss training minimises; `e^loss` is the
/// perplexity.
///
/// ```
/// use llm_lab::candle_core::{Device, Tensor};
/// // Two positions over a vocabulary of 3; the text is [0, 2, 1].
/// let logits = Tensor::new(&[[0.0f32, 0.0, 0.0], [0.0, 10.0, 0.0]], &Device::Cpu)?;
/// let losses = llm_lab::logits::next_token_losses(&logits, &[0, 2, 1])?;
/// assert!((losses[0] - 3f32.ln()).abs() < 1e-6); // uniform: ln 3
/// assert!(losses[1] < 1e-3); // "1" was almost certain
/// assert!(llm_lab::logits::next_token_losses(&logits, &[0]).is_err()); // one token for two rows
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn next_token_losses(logits: &Tensor, tokens: &[u32]) -> Result<Vec<f32>> {
    let (seq, vocab) = logits.dims2()?;
    if tokens.len() != seq + 1 && tokens.len() != seq {
        return Err(Error::invalid(format!(
            "{} tokens for {seq} rows of logits: give the tokens the logits were computed on \
             ({seq}, the last one is not scored) or those plus the token that follows ({})",
            tokens.len(),
            seq + 1
        )));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::invalid(format!(
            "token id {bad} is outside the logits' vocabulary (0..{vocab})"
        )));
    }
    let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    // With `seq` tokens the last row predicts a token we do not have.
    let scored = tokens.len() - 1;
    rows.iter()
        .take(scored)
        .zip(&tokens[1..])
        .map(|(z, &next)| {
            check_logits(z)?;
            // −log softmax(z)[next] = log Σ exp(z − max) − (z[next] − max), in f64.
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let log_sum = z.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            Ok((log_sum - (z[next as usize] as f64 - max)) as f32)
        })
        .collect()
}

/// One candidate token with its score.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenProb {
    /// Token id.
    pub id: u32,
    /// Its text (empty without a tokenizer).
    pub text: String,
    /// Its logit.
    pub logit: f32,
    /// Its probability after softmax (T = 1).
    pub prob: f32,
}

/// The logits of one position, with the tokenizer to name each token.
#[derive(Clone)]
pub struct Logits {
    values: Vec<f32>,
    tokenizer: Option<Tokenizer>,
}

impl std::fmt::Debug for Logits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let top: Vec<String> = self
            .top_k(5)
            .iter()
            .map(|t| format!("{:?} {:.3}", t.text, t.prob))
            .collect();
        write!(
            f,
            "Logits({} tokens; top: {})",
            self.values.len(),
            top.join(", ")
        )
    }
}

impl Logits {
    /// Wraps raw logits; NaN or +∞ anywhere, or only −∞, is an error (the model or the input is
    /// broken).
    ///
    /// ```
    /// let l = llm_lab::logits::Logits::new(vec![0.5, 2.0, -1.0])?;
    /// assert_eq!(l.argmax(), 1);
    /// assert!(llm_lab::logits::Logits::new(vec![f32::NAN]).is_err());
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn new(values: Vec<f32>) -> Result<Self> {
        if values.is_empty() {
            return Err(Error::invalid("empty logits vector"));
        }
        check_logits(&values)?;
        if let Some(i) = values.iter().position(|x| *x == f32::INFINITY) {
            return Err(Error::invalid(format!(
                "logit {i} is {}: the model produced invalid numbers; reload the model file (it may be corrupt)",
                values[i]
            )));
        }
        Ok(Logits {
            values,
            tokenizer: None,
        })
    }

    /// Names tokens with `tokenizer` in tables and top-k lists.
    pub fn with_tokenizer(mut self, tokenizer: &Tokenizer) -> Self {
        self.tokenizer = Some(tokenizer.clone());
        self
    }

    /// The raw values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Number of tokens scored.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always false: logits are never empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Probabilities at temperature 1.
    pub fn softmax(&self) -> Vec<f32> {
        softmax(&self.values)
    }

    /// Probabilities at temperature `t` (see [`softmax_with_temperature`]).
    pub fn softmax_with_temperature(&self, t: f32) -> Result<Vec<f32>> {
        softmax_with_temperature(&self.values, t)
    }

    /// The most likely token (greedy choice).
    pub fn argmax(&self) -> u32 {
        argmax(&self.values).unwrap_or(0) as u32
    }

    /// Shannon entropy of the distribution at T = 1, in bits: 0 when certain, log2(V) when uniform.
    pub fn entropy(&self) -> f32 {
        self.softmax()
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| -p * p.log2())
            .sum()
    }

    /// The `k` most likely tokens, best first.
    pub fn top_k(&self, k: usize) -> Vec<TokenProb> {
        let probs = self.softmax();
        let mut idx: Vec<usize> = (0..self.values.len()).collect();
        idx.sort_by(|&a, &b| self.values[b].total_cmp(&self.values[a]).then(a.cmp(&b)));
        idx.truncate(k);
        idx.into_iter()
            .map(|i| TokenProb {
                id: i as u32,
                text: self
                    .tokenizer
                    .as_ref()
                    .map(|t| t.token_text(i as u32))
                    .unwrap_or_default(),
                logit: self.values[i],
                prob: probs[i],
            })
            .collect()
    }
}

/// The model's forward pass, seen at the level of [`Logits`].
impl Model {
    /// Logits for the token that follows `input` (a text, or token ids), from a full forward
    /// pass without a cache.
    ///
    /// ```
    /// use llm_lab::testing::{tiny_model, TinySpec};
    /// let (_dir, model) = tiny_model(&TinySpec::default())?;
    /// let from_ids = model.logits(&[1, 2, 3])?;
    /// assert_eq!(from_ids.len(), model.config.d_vocab);
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn logits(&self, input: impl ModelInput) -> Result<Logits> {
        let tokens = input.tokens(self)?;
        self.to_logits(&self.step(&tokens, &mut KvCache::new())?)
    }

    /// A row of logits `[d_vocab]` (from [`Model::run`], say) as [`Logits`] named by this
    /// model's tokenizer.
    pub fn to_logits(&self, row: &Tensor) -> Result<Logits> {
        Ok(Logits::new(row.to_vec1::<f32>()?)?.with_tokenizer(&self.tokenizer))
    }

    /// The loss at every position of `tokens` (see [`next_token_losses`]) from one forward pass
    /// with `interventions` (an empty [`Interventions`] for the model as it is): `tokens.len() − 1`
    /// values, natural log.
    ///
    /// ```
    /// use llm_lab::prelude::*;
    /// use llm_lab::testing::{tiny_model, TinySpec};
    /// let (_dir, model) = tiny_model(&TinySpec::default())?;
    /// let clean = model.token_losses(&[1, 2, 3, 4], &Interventions::new())?;
    /// let ablated = model.token_losses(&[1, 2, 3, 4], &Interventions::new().ablate_attention(0))?;
    /// assert_eq!((clean.len(), ablated.len()), (3, 3));
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn token_losses(&self, tokens: &[u32], interventions: &Interventions) -> Result<Vec<f32>> {
        if tokens.len() < 2 {
            return Err(Error::invalid(
                "a loss needs at least two tokens: one to read and the next one to predict",
            ));
        }
        let logits = self.run_with(&tokens[..tokens.len() - 1], interventions)?;
        next_token_losses(&logits, tokens)
    }

    /// The last step of the forward pass on its own (the "logit lens"): what the model would
    /// predict if the residual stream `resid: [d_model]` (from any layer) went straight to the
    /// final norm and the output layer.
    pub fn unembed(&self, resid: &Tensor) -> Result<Logits> {
        let x = resid.reshape((1, self.config.d_model))?;
        let logits = crate::model::forward::unembed(&self.config, &self.weights, &x)?;
        self.to_logits(&logits.squeeze(0)?)
    }
}
