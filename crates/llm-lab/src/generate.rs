//! The autoregressive loop: predict a token, append it, repeat — until an end-of-text token, a
//! stop string, or the token budget. Only the last L tokens (the context window) are fed back.

use std::cell::RefCell;
use std::io::Write;

use crate::error::{Error, Result};
use crate::logits::{Logits, TokenProb};
use crate::model::{KvCache, Model};
use crate::sampling::{Sampler, SamplerConfig};

/// Anything that scores the next token after a sequence: the real model, or a scripted one.
/// Exercises take `&dyn LanguageModel`, so the same loop runs on both.
pub trait LanguageModel {
    /// Logits for the token that follows `tokens`.
    fn next_token_logits(&self, tokens: &[u32]) -> Result<Logits>;
    /// Tokens that end the text (end-of-text, end-of-turn).
    fn stop_tokens(&self) -> Vec<u32>;
    /// The longest sequence the model accepts (L).
    fn context_length(&self) -> usize;
    /// Text of a token sequence.
    fn decode(&self, tokens: &[u32]) -> String;
}

impl<M: LanguageModel + ?Sized> LanguageModel for &M {
    fn next_token_logits(&self, tokens: &[u32]) -> Result<Logits> {
        (**self).next_token_logits(tokens)
    }
    fn stop_tokens(&self) -> Vec<u32> {
        (**self).stop_tokens()
    }
    fn context_length(&self) -> usize {
        (**self).context_length()
    }
    fn decode(&self, tokens: &[u32]) -> String {
        (**self).decode(tokens)
    }
}

/// Without a cache: every call runs the whole sequence, exactly as the lecture's loop does.
impl LanguageModel for Model {
    fn next_token_logits(&self, tokens: &[u32]) -> Result<Logits> {
        self.logits(tokens)
    }
    fn stop_tokens(&self) -> Vec<u32> {
        self.config.eos_token_ids.clone()
    }
    fn context_length(&self) -> usize {
        self.config.n_ctx
    }
    fn decode(&self, tokens: &[u32]) -> String {
        self.tokenizer.decode(tokens).unwrap_or_default()
    }
}

/// The model with a KV cache: when the new sequence extends the previous one, only the new tokens
/// are run; otherwise (the window slid, positions changed) the cache is rebuilt.
pub struct CachedModel<'a> {
    model: &'a Model,
    /// The cache and the tokens it holds.
    state: RefCell<(KvCache, Vec<u32>)>,
}

impl<'a> CachedModel<'a> {
    /// Wraps `model` with an empty cache.
    pub fn new(model: &'a Model) -> Self {
        CachedModel {
            model,
            state: RefCell::new((KvCache::new(), vec![])),
        }
    }
}

impl LanguageModel for CachedModel<'_> {
    fn next_token_logits(&self, tokens: &[u32]) -> Result<Logits> {
        let mut state = self.state.borrow_mut();
        let (cache, seen) = &mut *state;
        if tokens.len() <= seen.len() || !tokens.starts_with(seen) {
            cache.clear();
            seen.clear();
        }
        let logits = self
            .model
            .step(&tokens[seen.len()..], cache)
            .and_then(|t| self.model.to_logits(&t));
        // A failed step may have left the cache half-written: start afresh next time.
        if logits.is_err() {
            cache.clear();
            seen.clear();
        } else {
            *seen = tokens.to_vec();
        }
        logits
    }
    fn stop_tokens(&self) -> Vec<u32> {
        self.model.stop_tokens()
    }
    fn context_length(&self) -> usize {
        self.model.context_length()
    }
    fn decode(&self, tokens: &[u32]) -> String {
        LanguageModel::decode(self.model, tokens)
    }
}

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The token budget: at most this many new tokens.
    pub max_new_tokens: usize,
    /// How to pick each token.
    pub sampler: SamplerConfig,
    /// Stop as soon as the text contains one of these (it is cut before the stop string).
    pub stop_strings: Vec<String>,
    /// The window L: only the last L tokens are fed to the model (default: the model's context).
    pub context_window: Option<usize>,
    /// Record this many alternatives per step.
    pub top_alternatives: usize,
    /// Print the text as it is generated.
    pub stream: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 64,
            sampler: SamplerConfig::greedy(),
            stop_strings: vec![],
            context_window: None,
            top_alternatives: 0,
            stream: false,
        }
    }
}

impl GenerateOptions {
    /// Greedy, at most `n` new tokens.
    pub fn greedy(n: usize) -> Self {
        GenerateOptions {
            max_new_tokens: n,
            ..Default::default()
        }
    }

    /// Sampling at temperature `t` with `seed`, at most `n` new tokens.
    pub fn sampled(n: usize, t: f32, seed: u64) -> Self {
        GenerateOptions {
            max_new_tokens: n,
            sampler: SamplerConfig::with_temperature(t, seed),
            ..Default::default()
        }
    }
}

/// One generated token.
#[derive(Debug, Clone)]
pub struct Step {
    /// Token id.
    pub token: u32,
    /// Text this step added (may be empty while a multi-byte character is incomplete).
    pub text: String,
    /// Probability the sampler gave it (1 for greedy).
    pub prob: f32,
    /// Probability the model itself gave it (softmax at T = 1).
    pub model_prob: f32,
    /// The most likely tokens at this step, if requested.
    pub alternatives: Vec<TokenProb>,
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end token (not included in the text).
    EndOfText(u32),
    /// The text reached a stop string.
    StopString(String),
    /// `max_new_tokens` were generated.
    MaxTokens,
}

/// The autoregressive loop as an iterator of [`Step`]s.
pub struct Generation<M: LanguageModel> {
    model: M,
    sampler: Sampler,
    options: GenerateOptions,
    tokens: Vec<u32>,
    prompt_len: usize,
    emitted: usize,
    final_text: Option<String>,
    stop: Option<StopReason>,
    stops: Vec<u32>,
    window: usize,
}

impl<M: LanguageModel> Generation<M> {
    /// Starts generating after `prompt` (token ids).
    pub fn new(model: M, prompt: &[u32], options: GenerateOptions) -> Result<Self> {
        let sampler = Sampler::new(options.sampler.clone())?;
        if prompt.is_empty() {
            return Err(Error::invalid(
                "the prompt is empty: give at least one token",
            ));
        }
        let window = options
            .context_window
            .unwrap_or_else(|| model.context_length());
        // Without an explicit window the prompt must fit: sliding it silently would drop its
        // beginning. With one, keeping the last L tokens is the point.
        if options.context_window.is_none() && prompt.len() >= model.context_length() {
            return Err(Error::PromptTooLong {
                tokens: prompt.len().saturating_add(1),
                context: model.context_length(),
            });
        }
        if window == 0 || window > model.context_length() {
            return Err(Error::invalid(format!(
                "context_window must be in 1..={}, got {window}",
                model.context_length()
            )));
        }
        let stops = model.stop_tokens();
        Ok(Generation {
            model,
            sampler,
            options,
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            emitted: 0,
            final_text: None,
            stop: None,
            stops,
            window,
        })
    }

    /// Why it stopped (None while it runs).
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// Prompt and generated tokens so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Generated tokens so far.
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// The text generated so far (cut before a stop string once one is reached).
    pub fn text(&self) -> String {
        self.final_text
            .clone()
            .unwrap_or_else(|| self.model.decode(self.generated()))
    }

    fn step(&mut self) -> Result<Option<Step>> {
        if self.stop.is_some() {
            return Ok(None);
        }
        if self.generated().len() >= self.options.max_new_tokens {
            self.stop = Some(StopReason::MaxTokens);
            return Ok(None);
        }
        // The window: the model sees only the last L tokens.
        let start = self.tokens.len().saturating_sub(self.window);
        let logits = self.model.next_token_logits(&self.tokens[start..])?;
        let steps = self.sampler.explain(logits.values(), &self.tokens)?;
        let token = steps.token;
        let prob = steps.probs[token as usize];
        let model_prob = logits.softmax()[token as usize];
        // top_k sorts the whole vocabulary: only pay for it when alternatives were asked for.
        let alternatives = if self.options.top_alternatives > 0 {
            logits.top_k(self.options.top_alternatives)
        } else {
            vec![]
        };
        if self.stops.contains(&token) {
            self.stop = Some(StopReason::EndOfText(token));
            return Ok(None);
        }
        self.tokens.push(token);
        let text = self.model.decode(self.generated());
        let stop_at = self
            .options
            .stop_strings
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
            .min();
        let safe_end = match stop_at {
            Some((at, s)) => {
                self.stop = Some(StopReason::StopString(s.clone()));
                self.final_text = Some(text[..at].to_string());
                at
            }
            None => self.safe_end(&text),
        };
        let new = text
            .get(self.emitted..safe_end.max(self.emitted))
            .unwrap_or("")
            .to_string();
        self.emitted = self.emitted.max(safe_end);
        if self.options.stream {
            print!("{new}");
            let _ = std::io::stdout().flush();
        }
        if self.stop.is_none() && self.generated().len() >= self.options.max_new_tokens {
            self.stop = Some(StopReason::MaxTokens);
        }
        Ok(Some(Step {
            token,
            text: new,
            prob,
            model_prob,
            alternatives,
        }))
    }

    /// How much of `text` can be shown for good: not a character cut in half between byte
    /// tokens, nor a tail that may be the start of a stop string.
    fn safe_end(&self, text: &str) -> usize {
        if text.ends_with('\u{FFFD}') {
            return self.emitted;
        }
        let mut end = text.len();
        for s in &self.options.stop_strings {
            for (i, _) in s.char_indices().skip(1) {
                if text.ends_with(&s[..i]) {
                    end = end.min(text.len() - i);
                }
            }
        }
        end
    }

    /// Runs to the end and returns everything.
    pub fn finish(mut self) -> Result<Generated> {
        let mut steps = vec![];
        for s in &mut self {
            steps.push(s?);
        }
        if self.options.stream {
            // What was held back as a possible start of a stop string is final now.
            let text = self.text();
            println!("{}", text.get(self.emitted..).unwrap_or(""));
        }
        let text = self.final_text.clone().unwrap_or_else(|| self.text());
        Ok(Generated {
            prompt: self.model.decode(&self.tokens[..self.prompt_len]),
            text,
            steps,
            stop: self.stop.clone().unwrap_or(StopReason::MaxTokens),
        })
    }
}

impl<M: LanguageModel> Iterator for Generation<M> {
    type Item = Result<Step>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(s)) => Some(Ok(s)),
            Ok(None) => None,
            Err(e) => {
                self.stop = Some(StopReason::MaxTokens);
                Some(Err(e))
            }
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The prompt's text.
    pub prompt: String,
    /// The generated text (without the end token or the stop string).
    pub text: String,
    /// Every step.
    pub steps: Vec<Step>,
    /// Why it ended.
    pub stop: StopReason,
}

impl Generated {
    /// The generated token ids.
    pub fn tokens(&self) -> Vec<u32> {
        self.steps.iter().map(|s| s.token).collect()
    }
}

impl Model {
    /// An iterator over the tokens generated after `prompt`.
    pub fn generate_iter(
        &self,
        prompt: &str,
        options: GenerateOptions,
    ) -> Result<Generation<CachedModel<'_>>> {
        let tokens = self.encode(prompt)?;
        Generation::new(CachedModel::new(self), &tokens, options)
    }

    /// Generates after `prompt` and returns the text and every step.
    ///
    /// ```no_run
    /// use llm_lab::prelude::*;
    /// let model = Model::load_default()?;
    /// let out = model.generate("Once upon a time", GenerateOptions::greedy(24))?;
    /// println!("{}", out.text);
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn generate(&self, prompt: &str, options: GenerateOptions) -> Result<Generated> {
        self.generate_iter(prompt, options)?.finish()
    }
}
