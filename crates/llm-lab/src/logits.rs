//! Logits: the model's raw score for every token of the vocabulary, and the ways to turn them
//! into probabilities — softmax, with or without a temperature.
//!
//! The lecture's formula: `p_i = exp(z_i / T) / Σ_j exp(z_j / T)`.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::{KvCache, Model, ModelInput};
use crate::tokenizer::Tokenizer;

/// `softmax(z)_i = exp(z_i) / Σ_j exp(z_j)`, computed as `exp(z_i − max z)` so that logits in the
/// thousands do not overflow.
///
/// ```
/// let p = llm_lab::logits::softmax(&[1.0, 2.0, 3.0]);
/// assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// assert!(p[2] > p[1] && p[1] > p[0]);
/// let big = llm_lab::logits::softmax(&[1000.0, 999.0]);
/// assert!((big[0] - 0.7310586).abs() < 1e-6);
/// ```
pub fn softmax(z: &[f32]) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; z.len()];
    }
    let e: Vec<f64> = z.iter().map(|&x| ((x - max) as f64).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|&x| (x / sum) as f32).collect()
}

/// `softmax(z / T)`. `T = 0` puts all the probability on the largest logit (greedy); `T < 0` or
/// NaN is an error.
///
/// ```
/// use llm_lab::logits::softmax_with_temperature as soft;
/// let z = [2.0, 1.0, 0.1];
/// let cold = soft(&z, 0.5)?;
/// let hot = soft(&z, 2.0)?;
/// assert!(cold[0] > hot[0]); // low temperature sharpens, high temperature flattens
/// assert_eq!(soft(&z, 0.0)?, vec![1.0, 0.0, 0.0]);
/// assert!(soft(&z, -1.0).is_err());
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn softmax_with_temperature(z: &[f32], temperature: f32) -> Result<Vec<f32>> {
    check_temperature(temperature)?;
    if temperature == 0.0 {
        let best = argmax(z);
        return Ok((0..z.len())
            .map(|i| if Some(i) == best { 1.0 } else { 0.0 })
            .collect());
    }
    let scaled: Vec<f32> = z.iter().map(|&x| x / temperature).collect();
    Ok(softmax(&scaled))
}

pub(crate) fn check_temperature(t: f32) -> Result<()> {
    if t.is_nan() || t < 0.0 || t.is_infinite() {
        return Err(Error::invalid(format!(
            "temperature must be a finite number ≥ 0 (0 means greedy), got {t}"
        )));
    }
    Ok(())
}

/// Index of the largest value (the first one on ties); `None` for an empty slice.
pub fn argmax(z: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &x) in z.iter().enumerate() {
        if best.is_none_or(|b| x > z[b]) {
            best = Some(i);
        }
    }
    best
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
    /// Wraps raw logits; NaN or +∞ anywhere is an error (the model or the input is broken).
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
        if let Some(i) = values
            .iter()
            .position(|x| x.is_nan() || *x == f32::INFINITY)
        {
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

    /// The last step of the forward pass on its own (the "logit lens"): what the model would
    /// predict if the residual stream `resid: [d_model]` (from any layer) went straight to the
    /// final norm and the output layer.
    pub fn unembed(&self, resid: &Tensor) -> Result<Logits> {
        let x = resid.reshape((1, self.config.d_model))?;
        let logits = crate::model::forward::unembed(&self.config, &self.weights, &x)?;
        self.to_logits(&logits.squeeze(0)?)
    }
}
