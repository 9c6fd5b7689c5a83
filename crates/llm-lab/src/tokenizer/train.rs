//! A byte-level BPE tokenizer learnt from a corpus, as GPT-2's and SmolLM's were: start from the
//! 256 bytes, then repeatedly merge the most frequent adjacent pair into a new piece until the
//! vocabulary has the size asked for. The first merges are the corpus's most common letter pairs;
//! later ones are syllables and whole words.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use super::Tokenizer;
use crate::error::{Error, Result};

/// The token that separates texts of the corpus (and ends generation).
pub const END_OF_TEXT: &str = "<|endoftext|>";

impl Tokenizer {
    /// Learns a byte-level BPE tokenizer of `vocab_size` pieces (the 256 bytes, [`END_OF_TEXT`]
    /// and the merges) from `texts`. Deterministic: the same texts give the same tokenizer.
    ///
    /// ```
    /// use llm_lab::tokenizer::Tokenizer;
    /// let texts = ["a casa da avó", "a casa amarela", "casa, casas, casinha"];
    /// let tok = Tokenizer::train_bpe(&texts, 270)?;
    /// assert_eq!(tok.vocab_size(), 270);
    /// let ids = tok.encode("a casa")?;
    /// assert!(ids.len() < "a casa".len()); // "casa" is a piece of its own by now
    /// assert_eq!(tok.decode(&ids)?, "a casa");
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn train_bpe(texts: &[impl AsRef<str> + Sync], vocab_size: usize) -> Result<Self> {
        let alphabet = ByteLevel::alphabet();
        let least = alphabet.len() + 1;
        if vocab_size < least {
            return Err(Error::invalid(format!(
                "a byte-level vocabulary needs at least {least} pieces (256 bytes and {END_OF_TEXT}); asked for {vocab_size}"
            )));
        }
        if vocab_size > 1 << 20 {
            return Err(Error::invalid(format!(
                "a vocabulary of {vocab_size} pieces is more than a notebook can train; ask for a few thousand"
            )));
        }
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(1)
            .initial_alphabet(alphabet.into_iter().collect())
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .show_progress(false)
            .build();
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        // GPT-2's split into words, spaces kept with the word that follows (as `Ġ`); the same
        // pre-tokenizer a GGUF file names `gpt2`, so a saved model reads text the same way.
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, true, true,
        ))));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        inner
            .train(&mut trainer, texts.iter().map(|t| t.as_ref()))
            .map_err(|e| Error::Tokenizer(format!("BPE training failed: {e}")))?;
        Ok(Tokenizer::hf(inner))
    }

    /// The merges a trained byte-level BPE learnt, first to last (`"c a"` → `ca`), with the
    /// byte symbols shown as text (`Ġ` is a space).
    pub fn merges(&self) -> Vec<(String, String)> {
        let Some(hf) = self.as_hf() else {
            return vec![];
        };
        let Ok(json) = hf.to_string(false) else {
            return vec![];
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) else {
            return vec![];
        };
        super::bpe_merges(&v)
    }
}
