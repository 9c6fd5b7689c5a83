//! Scripted language models: logits designed by a function of the tokens shown, for testing the
//! autoregressive loop and the checks without a real model. Each remembers every sequence it was
//! asked about, so a check can verify what a student's loop fed it.

use crate::error::{Error, Result};
use crate::generate::LanguageModel;
use crate::logits::Logits;

/// Logits for the next token as a function of the tokens shown.
pub type Script = Box<dyn Fn(&[u32]) -> Vec<f32>>;

/// A language model whose logits come from a function of the tokens it is shown: for testing
/// loops and checks on designed logits. It records every sequence it was asked about.
pub struct ScriptedModel {
    /// Text of each token id.
    pub vocab: Vec<String>,
    /// Logits for the next token, given the tokens shown.
    pub script: Script,
    /// Tokens that end the text.
    pub stop_tokens: Vec<u32>,
    /// Longest sequence accepted.
    pub context_length: usize,
    /// Every sequence the model was shown, in order.
    pub calls: std::cell::RefCell<Vec<Vec<u32>>>,
    /// Refuse (with an error) any call beyond this many: a loop that never stops ends instead
    /// of hanging the check.
    pub max_calls: Option<usize>,
}

impl ScriptedModel {
    /// A model over `vocab` whose logits are `script(tokens)`.
    pub fn new(vocab: &[&str], script: impl Fn(&[u32]) -> Vec<f32> + 'static) -> Self {
        ScriptedModel {
            vocab: vocab.iter().map(|s| s.to_string()).collect(),
            script: Box::new(script),
            stop_tokens: vec![],
            context_length: 1024,
            calls: Default::default(),
            max_calls: None,
        }
    }

    /// A model that always puts logit 10 on `next(last token)` and 0 elsewhere.
    pub fn counting(n_vocab: usize, next: impl Fn(u32) -> u32 + 'static) -> Self {
        let vocab: Vec<String> = (0..n_vocab).map(|i| format!("<{i}>")).collect();
        let refs: Vec<&str> = vocab.iter().map(String::as_str).collect();
        Self::new(&refs, move |t| {
            let mut l = vec![0.0; n_vocab];
            l[next(*t.last().unwrap_or(&0)) as usize % n_vocab] = 10.0;
            l
        })
    }
}

impl LanguageModel for ScriptedModel {
    fn next_token_logits(&self, tokens: &[u32]) -> Result<Logits> {
        if tokens.len() > self.context_length {
            return Err(Error::invalid(format!(
                "{} tokens exceed the context of {}",
                tokens.len(),
                self.context_length
            )));
        }
        if let Some(max) = self.max_calls {
            if self.calls.borrow().len() >= max {
                return Err(Error::invalid(format!(
                    "the model was asked {max} times already: the loop does not stop at its token \
                     budget"
                )));
            }
        }
        self.calls.borrow_mut().push(tokens.to_vec());
        Logits::new((self.script)(tokens))
    }
    fn stop_tokens(&self) -> Vec<u32> {
        self.stop_tokens.clone()
    }
    fn context_length(&self) -> usize {
        self.context_length
    }
    fn decode(&self, tokens: &[u32]) -> String {
        tokens
            .iter()
            .map(|&t| {
                self.vocab
                    .get(t as usize)
                    .map(String::as_str)
                    .unwrap_or("?")
            })
            .collect()
    }
}
