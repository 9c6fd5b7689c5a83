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
//! let stream = trace.get(Hook::ResidPre(3))?; // [seq, d_model]
//! # Ok::<(), llm_lab::Error>(())
//! ```

// The crate in layers; each imports only from the layers above it in this list (tests/layers.rs
// keeps it true). `error`, `models` (the registry and fetching), `rng`, `compare` and `threads` serve every layer.
//
// 1. The model and its tokenizer: the GGUF reader, the forward pass, weights, cache, trace.
pub mod gguf;
pub mod model;
pub mod tokenizer;
// 2. Logits and what is done with them: probabilities, sampling, the autoregressive loop.
pub mod chat;
pub mod generate;
pub mod logits;
pub mod sampling;
// 3. The lecture from scratch, and the exercises' checks (with the scripted models they run on).
pub mod check;
pub mod scratch;
pub mod scripted;
pub mod testing;
pub mod train;
// 4. Presentation: HTML and charts for the notebooks, on top of everything else.
pub mod display;
pub mod explorer;
pub mod plot;

pub mod compare;
pub mod error;
pub mod models;
pub mod rng;
mod threads;

/// The tensor library, for notebooks that need more than the prelude.
pub use candle_core;
pub use candle_nn;
pub use error::{Error, Result};
pub use model::{Config, Hook, KvCache, Model, Trace, TraceOptions};

/// Everything a notebook needs, in one `use llm_lab::prelude::*;`.
pub mod prelude {
    pub use crate::chat::Message;
    pub use crate::check;
    pub use crate::compare::max_abs_diff;
    pub use crate::error::{Error, Result};
    pub use crate::explorer::Explorer;
    pub use crate::generate::{
        CachedModel, GenerateOptions, Generated, Generation, LanguageModel, StopReason,
    };
    pub use crate::logits::{next_token_losses, softmax, softmax_with_temperature, Logits};
    pub use crate::model::{Config, Hook, KvCache, Model, Trace, TraceOptions};
    pub use crate::model::{Interventions, WeightFormat};
    pub use crate::models;
    pub use crate::plot::{self, Figure};
    pub use crate::rng::Rng;
    pub use crate::sampling::{Sampler, SamplerConfig};
    pub use crate::scratch::{self, softmax_last_dim, HeadWeights};
    pub use crate::tokenizer::Tokenizer;
    pub use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
}
