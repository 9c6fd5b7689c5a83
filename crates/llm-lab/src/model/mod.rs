//! The glass-box Llama: load it, run it, look inside.

mod attend;
pub mod cache;
pub mod config;
pub(crate) mod forward;
mod gelu;
mod gemma3;
pub mod intervene;
mod q4_1;
mod q5_0;
mod q8_0;
mod row_group;
mod save;
pub mod schema;
pub mod shapes;
mod simd;

/// The product kernel this process uses for its own formats (Q4_1, Q5_0, Q8_0): `Scalar`, `Avx2`,
/// `AvxVnni` or `Avx512Vnni`, the fastest the CPU runs, or the one `LLM_LAB_KERNEL` names.
///
/// ```
/// assert!(!llm_lab::model::q4_1_kernel().is_empty());
/// ```
pub fn q4_1_kernel() -> String {
    format!("{:?}", simd::Kernel::best())
}

/// Runs `f` on the `f32` storage of a CPU tensor and its layout, without copying: this crate's
/// own kernels (Q4_1 products, single-token attention) read tensors in place.
pub(crate) fn with_cpu_f32<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32], &candle_core::Layout) -> R,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => Ok(f(cpu.as_slice::<f32>()?, layout)),
        _ => candle_core::bail!("llm-lab's own kernels run on the CPU only"),
    }
}
mod single_token;
mod summary;
pub mod trace;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

pub use cache::KvCache;
pub use config::{Activation, Architecture, Config, RopeScaling};
pub use intervene::Interventions;
pub use shapes::WeightShapes;
pub use trace::{AsHook, Hook, Trace, TraceOptions};
pub use weights::{
    AttentionWeights, BlockWeights, Linear, MlpWeights, Param, RopeStyle, WeightFormat, Weights,
};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// A Llama-family language model whose every internal can be inspected.
///
/// ```no_run
/// use llm_lab::prelude::*;
/// let model = Model::load_default()?;
/// println!("{} layers, {} heads", model.config.n_layers, model.config.n_heads);
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub struct Model {
    /// The model's shape.
    pub config: Config,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its parameters.
    pub weights: Weights,
    /// The file or folder it was loaded from.
    pub source: PathBuf,
}

impl Model {
    /// The course's default model (SmolLM2-135M-Instruct), fetched on first use.
    pub fn load_default() -> Result<Self> {
        Self::load(crate::models::fetch(crate::models::DEFAULT_MODEL)?)
    }

    /// A registry name (see [`crate::models::registry`]) or a path.
    pub fn load_named(name_or_path: &str) -> Result<Self> {
        let p = Path::new(name_or_path);
        if p.exists() {
            Self::load(p)
        } else if crate::models::spec(name_or_path).is_ok() {
            Self::load(crate::models::fetch(name_or_path)?)
        } else {
            Err(Error::invalid(format!(
                "`{name_or_path}` is neither a file, a folder, nor a known model ({})",
                crate::models::registry()
                    .iter()
                    .map(|m| m.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// Loads a Llama GGUF file, or a Hugging Face folder (config.json, *.safetensors, tokenizer.json).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, WeightFormat::default())
    }

    /// Like [`Model::load`], keeping the weights in `format`.
    pub fn load_with(path: impl AsRef<Path>, format: WeightFormat) -> Result<Self> {
        let mut model = Self::load_as_stored(path.as_ref())?;
        model.weights.convert(format)?;
        Ok(model)
    }

    fn load_as_stored(path: &Path) -> Result<Self> {
        crate::threads::settle();
        let device = Device::Cpu;
        if path.is_dir() {
            return Self::load_hf_folder(path, &device);
        }
        let mut g = crate::gguf::Gguf::open(path)?;
        let config = Config::from_gguf(&mut g)?;
        // Weights first: reading a tensor briefly holds two copies of it (Gemma's embedding
        // table is 178 MB), and the tokenizer built from 262,144 pieces need not be there then.
        let weights = Weights::from_gguf(&mut g, &config, &device)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        Ok(Model {
            config,
            tokenizer,
            weights,
            source: path.to_path_buf(),
        })
    }

    fn load_hf_folder(dir: &Path, device: &Device) -> Result<Self> {
        let config = Config::from_hf_json(&dir.join("config.json"))?;
        let mut config = config;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(Error::model_file(dir, "has no tokenizer.json; a Hugging Face model folder needs config.json, tokenizer.json and *.safetensors"));
        }
        let tokenizer = Tokenizer::from_file(&tok_path)?;
        if let Ok(text) = crate::gguf::read_regular_to_string(&dir.join("tokenizer_config.json")) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                config.chat_template = v
                    .get("chat_template")
                    .and_then(|t| t.as_str())
                    .map(str::to_string);
                if let Some(b) = v.get("add_bos_token").and_then(|b| b.as_bool()) {
                    config.add_bos_token = b;
                }
            }
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("cannot list", dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::model_file(
                dir,
                "has no *.safetensors file; download the model's weights into it",
            ));
        }
        let weights = Weights::from_safetensors(&files, &config, device)?;
        Ok(Model {
            config,
            tokenizer,
            weights,
            source: dir.to_path_buf(),
        })
    }

    /// Loads a model from a Hugging Face hub cache folder (as `huggingface-cli download` leaves it),
    /// without any network access.
    pub fn load_from_hub_cache(cache_dir: impl AsRef<Path>, repo_id: &str) -> Result<Self> {
        let cache = hf_hub::Cache::new(cache_dir.as_ref().to_path_buf());
        let repo = cache.model(repo_id.to_string());
        let config = repo.get("config.json").ok_or_else(|| {
            Error::model_file(
                cache_dir.as_ref(),
                format!("holds no snapshot of `{repo_id}` with a config.json; download it first"),
            )
        })?;
        let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::load(dir)
    }

    /// Downloads `repo_id` from the Hugging Face hub (needs the `hub` feature, network access and,
    /// for gated models such as meta-llama, a token in `HF_TOKEN`).
    #[cfg(feature = "hub")]
    pub fn load_from_hub(repo_id: &str) -> Result<Self> {
        let api = hf_hub::api::sync::Api::new().map_err(|e| Error::Fetch {
            what: repo_id.into(),
            problem: e.to_string(),
        })?;
        let repo = api.model(repo_id.to_string());
        let get = |f: &str| {
            repo.get(f).map_err(|e| Error::Fetch {
                what: format!("{repo_id}/{f}"),
                problem: format!("{e}; check your token and network"),
            })
        };
        let config = get("config.json")?;
        get("tokenizer.json")?;
        let _ = get("tokenizer_config.json");
        get("model.safetensors")?;
        Self::load(config.parent().unwrap_or(Path::new(".")))
    }

    /// Text → token ids, with the BOS token in front when the model expects one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.config.add_bos_token {
            ids.extend(self.config.bos_token_id);
        }
        ids.extend(self.tokenizer.encode(text)?);
        Ok(ids)
    }

    /// The text of each token, for labelling charts.
    pub fn token_strings(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| self.tokenizer.token_text(i)).collect()
    }

    /// Token ids → text.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    /// The one place every forward pass checks its input: at least one token, every id in the
    /// vocabulary, and everything (cached and new) within the context window.
    fn check_tokens(&self, tokens: &[u32], cache: &KvCache) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::invalid(
                "no tokens to run: give the model at least one token",
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.d_vocab) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary (0..{})",
                self.config.d_vocab
            )));
        }
        let total = cache.len().saturating_add(tokens.len());
        if total > self.config.n_ctx {
            return Err(Error::PromptTooLong {
                tokens: total,
                context: self.config.n_ctx,
            });
        }
        Ok(())
    }

    /// The one entry of every forward pass: `tokens` run with the options set on the returned
    /// [`Pass`] (a trace, interventions, a cache to continue), then `.logits()` for every
    /// position or `.next()` for the token that comes next. [`Model::run`], [`Model::step`],
    /// [`Model::run_with_trace`] and [`Model::run_with`] are its common cases.
    ///
    /// ```
    /// use llm_lab::prelude::*;
    /// use llm_lab::testing::{tiny_model, TinySpec};
    /// let (_dir, model) = tiny_model(&TinySpec::default())?;
    /// let mut cache = KvCache::new();
    /// let without_head = Interventions::new().ablate_head(0, 1);
    /// // Generation with a head switched off, recording the step's attention:
    /// let out = model
    ///     .forward(&[1, 2, 3])
    ///     .cache(&mut cache)
    ///     .interventions(&without_head)
    ///     .trace(TraceOptions::default())
    ///     .next()?;
    /// assert_eq!(out.logits.dims(), &[model.config.d_vocab]);
    /// assert_eq!(out.trace.unwrap().pattern(0)?.dims(), &[4, 3, 3]); // [H, seq, ctx]
    /// assert_eq!(cache.len(), 3);
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn forward<'a>(&'a self, tokens: &'a [u32]) -> Pass<'a> {
        Pass {
            model: self,
            tokens,
            trace: None,
            interventions: &intervene::NONE,
            cache: None,
        }
    }

    /// Logits at every position of `tokens`: `[seq, d_vocab]`, row `i` predicting token `i + 1`
    /// (what training compares with the real next token).
    ///
    /// ```
    /// use llm_lab::testing::{tiny_model, TinySpec};
    /// let (_dir, model) = tiny_model(&TinySpec::default())?;
    /// let logits = model.run(&[1, 2, 3])?;
    /// assert_eq!(logits.dims(), &[3, model.config.d_vocab]);
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn run(&self, tokens: &[u32]) -> Result<Tensor> {
        Ok(self.forward(tokens).logits()?.logits)
    }

    /// Like [`Model::run`], also recording the internals named in [`trace`] (attention
    /// patterns, the residual stream, and with `options.qkv` queries, keys and values).
    pub fn run_with_trace(&self, tokens: &[u32], options: TraceOptions) -> Result<(Tensor, Trace)> {
        self.forward(tokens).trace(options).logits()?.traced()
    }

    /// Like [`Model::run`], with parts of the model switched off (see [`intervene`]): logits
    /// `[seq, d_vocab]` of the forward pass where the heads and sub-layers `interventions` names
    /// add nothing. An empty set gives exactly [`Model::run`]'s logits; a layer or head the
    /// model does not have is an error. With a trace, an ablated head's `attn.z` is recorded as
    /// the zeros W_O received, an ablated sub-layer's `attn_out`/`mlp_out` as zeros.
    ///
    /// ```
    /// use llm_lab::prelude::*;
    /// use llm_lab::testing::{tiny_model, TinySpec};
    /// let (_dir, model) = tiny_model(&TinySpec::default())?;
    /// let without_mlp_0 = model.run_with(&[1, 2, 3], &Interventions::new().ablate_mlp(0))?;
    /// assert_eq!(without_mlp_0.dims(), &[3, model.config.d_vocab]);
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn run_with(&self, tokens: &[u32], interventions: &Interventions) -> Result<Tensor> {
        Ok(self
            .forward(tokens)
            .interventions(interventions)
            .logits()?
            .logits)
    }

    /// One step of incremental decoding: reads `tokens` after what `cache` holds, adds them to
    /// it, and returns the logits `[d_vocab]` for the token that comes next.
    ///
    /// ```
    /// use llm_lab::prelude::*;
    /// use llm_lab::testing::{tiny_model, TinySpec};
    /// let (_dir, model) = tiny_model(&TinySpec::default())?;
    /// let mut cache = KvCache::new();
    /// let first = model.to_logits(&model.step(&[1, 2], &mut cache)?)?;
    /// let next = model.step(&[first.argmax()], &mut cache)?; // only the new token is run
    /// assert_eq!(cache.len(), 3);
    /// let whole = model.run(&[1, 2, first.argmax()])?.get(2)?;
    /// assert!(max_abs_diff(&next, &whole)? < 1e-4);
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn step(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.forward(tokens).cache(cache).next()?.logits)
    }

    /// The forward pass of this model's architecture.
    fn forward_pass(
        &self,
        tokens: &[u32],
        st: forward::PassState<'_>,
        positions: forward::Positions,
    ) -> Result<Tensor> {
        let (c, w) = (&self.config, &self.weights);
        match c.architecture {
            Architecture::Llama => forward::forward(c, w, tokens, st, positions),
            Architecture::Gemma3 => gemma3::forward(c, w, tokens, st, positions),
        }
    }

    /// The first step of the forward pass on its own: token embeddings `[seq, d_model]`.
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        self.check_tokens(tokens, &KvCache::new())?;
        forward::embed(&self.config, &self.weights, tokens)
    }

    /// A trace keeps every layer's attention pattern, `[H, seq, ctx]` floats each: refuse the
    /// ones that would not fit in memory instead of swapping for minutes.
    fn check_trace_size(&self, seq: usize, past: usize) -> Result<()> {
        let floats = (past.saturating_add(seq))
            .saturating_mul(seq)
            .saturating_mul(self.config.n_heads)
            .saturating_mul(self.config.n_layers);
        if floats > MAX_TRACE_FLOATS {
            return Err(Error::invalid(format!(
                "tracing {seq} tokens would keep {} GB of attention patterns; trace a shorter text (a few hundred tokens), or use run() without a trace",
                floats.saturating_mul(4) / 1_000_000_000
            )));
        }
        Ok(())
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.weights.n_params(&self.config)
    }
}

/// At most 1 GiB of attention patterns in one trace.
const MAX_TRACE_FLOATS: usize = 1 << 28;

/// A forward pass being set up: see [`Model::forward`].
#[must_use = "a pass runs only when `.logits()` or `.next()` is called"]
pub struct Pass<'a> {
    model: &'a Model,
    tokens: &'a [u32],
    trace: Option<TraceOptions>,
    interventions: &'a Interventions,
    cache: Option<&'a mut KvCache>,
}

/// What a forward pass returns.
#[derive(Debug)]
pub struct PassOutput {
    /// `[seq, d_vocab]` from `.logits()`, `[d_vocab]` from `.next()`.
    pub logits: Tensor,
    /// The recorded internals, when the pass was asked for a trace.
    pub trace: Option<Trace>,
}

impl PassOutput {
    /// `(logits, trace)` of a pass that kept a trace.
    pub fn traced(self) -> Result<(Tensor, Trace)> {
        let trace = self
            .trace
            .ok_or_else(|| Error::invalid("this pass kept no trace: call .trace(options)"))?;
        Ok((self.logits, trace))
    }
}

impl<'a> Pass<'a> {
    /// Records the internals `options` names (see [`trace`]).
    pub fn trace(mut self, options: TraceOptions) -> Self {
        self.trace = Some(options);
        self
    }

    /// Switches off the heads and sub-layers `interventions` names (see [`intervene`]).
    pub fn interventions(mut self, interventions: &'a Interventions) -> Self {
        self.interventions = interventions;
        self
    }

    /// Runs the tokens after what `cache` holds and adds them to it (incremental decoding);
    /// without a cache the pass starts at position 0 and keeps nothing.
    pub fn cache(mut self, cache: &'a mut KvCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Logits at every position, `[seq, d_vocab]`: row `i` predicts token `i + 1`.
    pub fn logits(self) -> Result<PassOutput> {
        self.run(forward::Positions::All)
    }

    /// Logits of the token that comes next, `[d_vocab]`: what generation samples from.
    pub fn next(self) -> Result<PassOutput> {
        let out = self.run(forward::Positions::Last)?;
        Ok(PassOutput {
            logits: out.logits.squeeze(0)?, // [V]
            trace: out.trace,
        })
    }

    /// Every check in one place: the tokens, the interventions, the trace's size; then the pass.
    fn run(self, positions: forward::Positions) -> Result<PassOutput> {
        let m = self.model;
        let mut fresh = KvCache::new();
        let cache = self.cache.unwrap_or(&mut fresh);
        m.check_tokens(self.tokens, cache)?;
        self.interventions.check(&m.config)?;
        let mut trace = match self.trace {
            Some(options) => {
                m.check_trace_size(self.tokens.len(), cache.len())?;
                Some(Trace::new(
                    options,
                    self.tokens,
                    m.token_strings(self.tokens),
                ))
            }
            None => None,
        };
        let st = forward::PassState {
            cache,
            trace: trace.as_mut(),
            iv: self.interventions,
        };
        let logits = m.forward_pass(self.tokens, st, positions)?;
        Ok(PassOutput { logits, trace })
    }
}

/// What [`Model::logits`] reads: a text (encoded with the model's tokenizer, BOS included when
/// the model wants one) or token ids.
pub trait ModelInput {
    /// The token ids for `model`.
    fn tokens(&self, model: &Model) -> Result<Vec<u32>>;
}

impl ModelInput for &str {
    fn tokens(&self, model: &Model) -> Result<Vec<u32>> {
        model.encode(self)
    }
}

impl ModelInput for &String {
    fn tokens(&self, model: &Model) -> Result<Vec<u32>> {
        model.encode(self)
    }
}

impl ModelInput for &[u32] {
    fn tokens(&self, _: &Model) -> Result<Vec<u32>> {
        Ok(self.to_vec())
    }
}

impl ModelInput for &Vec<u32> {
    fn tokens(&self, _: &Model) -> Result<Vec<u32>> {
        Ok(self.to_vec())
    }
}

impl<const N: usize> ModelInput for &[u32; N] {
    fn tokens(&self, _: &Model) -> Result<Vec<u32>> {
        Ok(self.to_vec())
    }
}
