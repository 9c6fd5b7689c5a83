//! # llm-lab
//!
//! A glass-box Llama for learning how language models work, built for Rust notebooks.
//! Load a real model, count its heads and layers, run it, look at every attention pattern and
//! hidden state, and rebuild each piece from scratch.
//!
//! ```no_run
//! use llm_lab::prelude::*;
//! let model = Model::load_default()?; // SmolLM2-135M-Instruct, fetched on first use
//! let tokens = model.encode("The capital of France is")?;
//! let (logits, trace) = model.run_with_trace(&tokens, TraceOptions::default())?;
//! let pattern = trace.attention(0, 0)?; // layer 0, head 0: [query][key]
//! # Ok::<(), llm_lab::Error>(())
//! ```

pub mod chat;
pub mod check;
pub mod display;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod logits;
pub mod model;
pub mod models;
pub mod plot;
pub mod sampling;
pub mod scratch;
mod silent_panic;
pub mod testing;
mod threads;
pub mod tokenizer;

/// The tensor library, for notebooks that need more than the prelude.
pub use candle_core;
pub use candle_nn;
pub use error::{Error, Result};
pub use model::{Config, KvCache, Model, Trace, TraceOptions};

/// Everything a notebook needs, in one `use llm_lab::prelude::*;`.
pub mod prelude {
    pub use crate::chat::Message;
    pub use crate::check;
    pub use crate::display::Explorer;
    pub use crate::error::{Error, Result};
    pub use crate::generate::{GenerateOptions, Generated, Generation, LanguageModel, StopReason};
    pub use crate::logits::{softmax, softmax_with_temperature, Logits};
    pub use crate::model::WeightFormat;
    pub use crate::model::{Config, KvCache, Model, Trace, TraceOptions};
    pub use crate::models;
    pub use crate::plot::{self, Figure};
    pub use crate::sampling::{Sampler, SamplerConfig};
    pub use crate::scratch::{self, HeadWeights};
    pub use crate::tokenizer::Tokenizer;
    pub use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
    pub use candle_nn::ops::softmax_last_dim;
}
