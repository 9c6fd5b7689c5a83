//! Text ↔ token ids. A model's tokenizer is rebuilt from its GGUF metadata — byte-level BPE
//! (`tokenizer.ggml.model = gpt2`, SmolLM2, Llama 3) as a [`tokenizers::Tokenizer`], or
//! SentencePiece (`llama`, Gemma) with llama.cpp's algorithm in [`spm`] — or read from a Hugging
//! Face `tokenizer.json`.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::Gguf;

pub mod spm;
mod train;
use spm::{Spm, TokenKind};
pub use train::END_OF_TEXT;

/// Llama 3's pre-tokenizer pattern: contractions, words with one leading non-letter, numbers in
/// groups of up to three digits, punctuation runs, newlines, other whitespace.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the few facts about special tokens that generation needs.
///
/// Cloning is cheap: every `Logits` names its tokens with it, and a copy of the vocabulary per
/// step would cost more than the step.
#[derive(Clone)]
pub struct Tokenizer {
    kind: Kind,
    /// Set when a byte-level vocabulary lacks some of the 256 byte symbols: the BPE model then
    /// drops those bytes without a word (as llama.cpp does), so [`Tokenizer::encode`] checks
    /// that its ids give the text back.
    incomplete_bytes: bool,
    /// The `tokenizer.*` metadata of the GGUF file it was rebuilt from, which a saved model
    /// writes back unchanged (see [`Tokenizer::gguf_metadata`]).
    gguf_metadata: Option<Arc<Vec<(String, Value)>>>,
}

#[derive(Clone)]
enum Kind {
    /// A Hugging Face tokenizer (byte-level BPE from GGUF, or any tokenizer.json).
    Hf(Arc<tokenizers::Tokenizer>),
    /// A SentencePiece vocabulary from GGUF, encoded as llama.cpp does.
    Spm(Arc<Spm>),
}

impl Tokenizer {
    /// Reads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::gguf::ensure_regular_file(path)?;
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            Error::model_file(
                path,
                format!("is not a usable tokenizer.json ({e}); download it again"),
            )
        })?;
        Ok(Tokenizer::hf(inner))
    }

    fn hf(mut inner: tokenizers::Tokenizer) -> Self {
        // tokenizers' BPE keeps its word cache in a thread-local map keyed by an id from a
        // process-wide counter. evcxr links a copy of the crate, counter included, into every
        // cell, so two tokenizers made in two cells can get the same id and read each other's
        // words (seen: the Llama 3.2 tokenizer returning SmolLM2's ids). With capacity 0 nothing
        // is ever stored, so nothing can be read back wrong; encoding stays fast enough.
        let mut model = inner.get_model().clone();
        model.resize_cache(0);
        inner.with_model(model);
        Tokenizer {
            kind: Kind::Hf(Arc::new(inner)),
            incomplete_bytes: false,
            gguf_metadata: None,
        }
    }

    /// The tokenizer stored in the GGUF file at `path`, without loading the model's weights.
    pub fn from_gguf_file(path: &Path) -> Result<Self> {
        Self::from_gguf(&Gguf::open(path)?)
    }

    /// Rebuilds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let tokenizer = match gguf.meta_str("tokenizer.ggml.model").unwrap_or("") {
            "gpt2" => Self::bpe_from_gguf(gguf)?,
            "llama" => Self::spm_from_gguf(gguf)?,
            model => return Err(Error::model_file(
                &gguf.path,
                format!("has a `{model}` tokenizer; llm-lab rebuilds byte-level BPE (`gpt2`) and SentencePiece (`llama`) tokenizers only — use a Hugging Face folder with tokenizer.json instead"),
            )),
        };
        let mut metadata: Vec<(String, Value)> = gguf
            .content
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Tokenizer {
            gguf_metadata: Some(Arc::new(metadata)),
            ..tokenizer
        })
    }

    /// The `tokenizer.*` metadata a GGUF file needs to rebuild this tokenizer: the file's own
    /// when it came from one; for a byte-level BPE from a tokenizer.json (a Hugging Face folder,
    /// or one trained in a notebook), its tokens, merges and special tokens, with the
    /// pre-tokenizer named as llama.cpp names it. Other tokenizers are an error that says so.
    pub fn gguf_metadata(&self) -> Result<Vec<(String, Value)>> {
        if let Some(m) = &self.gguf_metadata {
            return Ok(m.as_ref().clone());
        }
        let Kind::Hf(hf) = &self.kind else {
            return Err(Error::invalid(
                "this SentencePiece tokenizer has no GGUF metadata to write",
            ));
        };
        let json: serde_json::Value = serde_json::from_str(&hf.to_string(false)?)
            .map_err(|e| Error::Tokenizer(format!("cannot read the tokenizer back ({e})")))?;
        let cannot = |why: &str| {
            Err(Error::invalid(format!(
                "cannot write this tokenizer to GGUF: {why}; llm-lab writes byte-level BPE tokenizers"
            )))
        };
        let model = &json["model"];
        if model["type"] != "BPE" {
            return cannot("its model is not BPE");
        }
        let pre = match &json["pre_tokenizer"] {
            p if p["type"] == "ByteLevel" && p["use_regex"] != false => "gpt2",
            p if p["type"] == "Sequence"
                && p["pretokenizers"][0]["type"] == "Digits"
                && p["pretokenizers"][0]["individual_digits"] == true
                && p["pretokenizers"][1]["type"] == "ByteLevel" =>
            {
                "smollm"
            }
            _ => return cannot("its pre-tokenizer is neither GPT-2's nor SmolLM's"),
        };
        let n = self.vocab_size();
        let mut tokens = vec![String::new(); n];
        for (piece, id) in hf.get_vocab(true) {
            match tokens.get_mut(id as usize) {
                Some(slot) => *slot = piece,
                None => return cannot("its ids are not 0..vocabulary size"),
            }
        }
        if tokens.iter().any(String::is_empty) {
            return cannot("its ids are not 0..vocabulary size");
        }
        let merges: Vec<Value> = bpe_merges(&json)
            .into_iter()
            .map(|(a, b)| Value::String(format!("{a} {b}")))
            .collect();
        let special: std::collections::HashSet<u32> = hf
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let types = (0..n as u32)
            .map(|i| Value::I32(if special.contains(&i) { 3 } else { 1 }))
            .collect();
        Ok(vec![
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(tokens.into_iter().map(Value::String).collect()),
            ),
            ("tokenizer.ggml.token_type".into(), Value::Array(types)),
            ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ])
    }

    /// SentencePiece: pieces, scores and token types, plus the file's `add_space_prefix`.
    fn spm_from_gguf(gguf: &Gguf) -> Result<Self> {
        let path = &gguf.path;
        let tokens = gguf
            .meta_strings("tokenizer.ggml.tokens")
            .ok_or_else(|| Error::model_file(path, "lacks `tokenizer.ggml.tokens`"))?;
        let n = tokens.len();
        let scores = match gguf.meta("tokenizer.ggml.scores") {
            Some(candle_core::quantized::gguf_file::Value::Array(a)) => a
                .iter()
                .map(|v| v.to_f32().ok())
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| Error::model_file(path, "has non-float `tokenizer.ggml.scores`"))?,
            _ => return Err(Error::model_file(path, "lacks `tokenizer.ggml.scores`, which a SentencePiece tokenizer needs; download the file again")),
        };
        let kinds = match gguf.meta_ints("tokenizer.ggml.token_type") {
            Some(types) => types
                .iter()
                .map(|&t| {
                    TokenKind::from_gguf(t).ok_or_else(|| {
                        Error::model_file(path, format!("has an unknown token type {t}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            None => vec![TokenKind::Normal; n],
        };
        // SentencePiece's default (and llama.cpp's) is to prefix a space; Gemma's file says no.
        let add_space_prefix = !matches!(
            gguf.meta("tokenizer.ggml.add_space_prefix"),
            Some(candle_core::quantized::gguf_file::Value::Bool(false))
        );
        let unknown = gguf
            .meta("tokenizer.ggml.unknown_token_id")
            .and_then(crate::gguf::value_as_u64)
            .and_then(|u| u32::try_from(u).ok())
            .filter(|&u| (u as usize) < n);
        let spm = Spm::new(
            tokens.into_iter().map(str::to_string).collect(),
            scores,
            kinds,
            add_space_prefix,
            unknown,
        )
        .map_err(|e| Error::model_file(path, e))?;
        Ok(Tokenizer {
            kind: Kind::Spm(Arc::new(spm)),
            incomplete_bytes: false,
            gguf_metadata: None,
        })
    }

    /// Byte-level BPE: tokens and merges, with the pre-tokenizer llama.cpp uses for `pre`.
    fn bpe_from_gguf(gguf: &Gguf) -> Result<Self> {
        let path = &gguf.path;
        let tokens = gguf
            .meta_strings("tokenizer.ggml.tokens")
            .ok_or_else(|| Error::model_file(path, "lacks `tokenizer.ggml.tokens`"))?;
        let merges = gguf
            .meta_strings("tokenizer.ggml.merges")
            .unwrap_or_default();
        let types = gguf
            .meta_ints("tokenizer.ggml.token_type")
            .unwrap_or_default();
        let pre = gguf.meta_str("tokenizer.ggml.pre").unwrap_or("default");

        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let incomplete_bytes = ByteLevel::alphabet()
            .iter()
            .any(|c| !vocab.contains_key(&c.to_string()));
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        Error::model_file(path, format!("has a malformed BPE merge `{m}`"))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| {
                Error::model_file(path, format!("has an inconsistent BPE vocabulary ({e})"))
            })?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(
            pre_tokenizer(pre).map_err(|p| Error::model_file(path, p))?,
        ));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // Control tokens (type 3) such as <|im_start|> must never be split into pieces.
        let specials: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == 3)
            .filter_map(|(i, _)| tokens.get(i))
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        inner.add_special_tokens(specials)?;
        Ok(Tokenizer {
            incomplete_bytes,
            ..Tokenizer::hf(inner)
        })
    }

    /// The Hugging Face tokenizer underneath, when there is one (not for SentencePiece GGUF
    /// vocabularies, which llm-lab encodes itself).
    pub fn as_hf(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.kind {
            Kind::Hf(t) => Some(t),
            Kind::Spm(_) => None,
        }
    }

    /// The SentencePiece vocabulary, when the tokenizer is one.
    pub fn as_spm(&self) -> Option<&Spm> {
        match &self.kind {
            Kind::Spm(s) => Some(s),
            Kind::Hf(_) => None,
        }
    }

    /// Token ids of `text`, without any special token added.
    ///
    /// ```
    /// # let tok = llm_lab::tokenizer::Tokenizer::byte_level_for_docs();
    /// let ids = tok.encode("ab")?;
    /// assert_eq!(tok.decode(&ids)?, "ab");
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    ///
    /// A text with a byte the vocabulary has no token for is an error naming that character,
    /// where llama.cpp would silently leave the byte out.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.kind {
            Kind::Hf(t) => {
                let ids = t.encode(text, false)?.get_ids().to_vec();
                if self.incomplete_bytes {
                    let back = self.decode(&ids)?;
                    if back != text {
                        let same = text
                            .char_indices()
                            .zip(back.chars())
                            .take_while(|((_, a), b)| a == b)
                            .count();
                        let (at, c) = text.char_indices().nth(same).unwrap_or((text.len(), ' '));
                        return Err(Error::Tokenizer(format!(
                            "this vocabulary has no token for the character {c:?} (bytes {:02x?}) at byte {at} of {text:?}: it cannot encode that text; remove the character or use a model whose vocabulary covers every byte",
                            c.to_string().as_bytes()
                        )));
                    }
                }
                Ok(ids)
            }
            Kind::Spm(s) => s.encode(text).map_err(|e| {
                Error::Tokenizer(format!("the vocabulary {e}; the model file is not usable"))
            }),
        }
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.kind {
            Kind::Hf(t) => Ok(t.decode(ids, false)?),
            Kind::Spm(s) => {
                if let Some(&bad) = ids.iter().find(|&&i| i as usize >= s.len()) {
                    return Err(Error::Tokenizer(format!(
                        "token id {bad} is outside the vocabulary (0..{})",
                        s.len()
                    )));
                }
                Ok(s.decode(ids))
            }
        }
    }

    /// The text of one token, as it appears inside decoded text (spaces as spaces).
    pub fn token_text(&self, id: u32) -> String {
        self.decode(&[id]).unwrap_or_else(|_| format!("<{id}>"))
    }

    /// The vocabulary entry of `id` as stored (byte-level symbols such as `Ġ` for a space).
    pub fn token_piece(&self, id: u32) -> Option<String> {
        match &self.kind {
            Kind::Hf(t) => t.id_to_token(id),
            Kind::Spm(s) => s.piece(id).map(str::to_string),
        }
    }

    /// The id of an exact vocabulary entry, such as `<|im_end|>`.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        match &self.kind {
            Kind::Hf(t) => t.token_to_id(piece),
            Kind::Spm(s) => s.id(piece),
        }
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        match &self.kind {
            Kind::Hf(t) => t.get_vocab_size(true),
            Kind::Spm(s) => s.len(),
        }
    }

    /// A tiny byte-level tokenizer (256 single-byte tokens, no merges), for examples and tests.
    pub fn byte_level_for_docs() -> Self {
        let vocab: Vocab = ByteLevel::alphabet()
            .into_iter()
            .map(|c| c.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .build()
            .expect("a byte vocabulary is valid");
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        Tokenizer::hf(inner)
    }
}

/// The merges of a BPE tokenizer's JSON (`model.merges`), first to last: written `"a b"` by
/// older tokenizers, `["a", "b"]` by newer ones.
fn bpe_merges(json: &serde_json::Value) -> Vec<(String, String)> {
    json["model"]["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            serde_json::Value::String(s) => {
                let (a, b) = s.split_once(' ')?;
                Some((a.to_string(), b.to_string()))
            }
            serde_json::Value::Array(p) => Some((
                p.first()?.as_str()?.to_string(),
                p.get(1)?.as_str()?.to_string(),
            )),
            _ => None,
        })
        .collect()
}

/// The pre-tokenizer llama.cpp uses for a given `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: &str) -> std::result::Result<PreTokenizerWrapper, String> {
    let byte_level =
        |regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
    Ok(match pre {
        // SmolLM: every digit is its own word, then GPT-2's byte-level split.
        "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level(true),
        ])),
        "llama-bpe" | "llama3" => {
            let split = Split::new(SplitPattern::Regex(LLAMA3_PATTERN.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| format!("could not compile the Llama 3 pre-tokenizer ({e})"))?;
            PreTokenizerWrapper::Sequence(Sequence::new(vec![PreTokenizerWrapper::Split(split), byte_level(false)]))
        }
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        other => {
            return Err(format!(
                "uses the pre-tokenizer `{other}`, which llm-lab does not know (known: smollm, llama-bpe, gpt2/default); use a Hugging Face folder with tokenizer.json instead"
            ))
        }
    })
}
