//! The model commands' arguments. `cargo xtask` parses them with these very types, so a
//! misspelt option is refused before anything is compiled, then hands the command line to the
//! `llm-lab` binary (crate `llm-lab-cli`): xtask itself links neither candle nor the model,
//! which keeps the first `cargo xtask lab` on a new machine short.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// The model a command loads when none is given (`llm_lab::models::DEFAULT_MODEL`, checked by a
/// test of the `llm-lab` binary).
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// The commands that load a model or fetch one.
#[derive(Subcommand, Debug, Clone)]
pub enum ModelCommand {
    /// Fetch models into the cache (default: all known)
    Fetch {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Print the model's module tree and its numbers
    Inspect(ModelArg),
    /// Print tokens, then their ids as a JSON array on the last line
    Tokenize(TokenizeArgs),
    /// Stream a continuation (or, with --chat, an answer)
    Generate(GenerateArgs),
    /// Tokens/s and peak memory: glass-box (tracing off/on) vs candle's quantized_llama (and llama.cpp)
    Bench(BenchArgs),
    /// Training tokens/s and losses: the course's tiny transformer vs the same model in JAX
    BenchTrain(BenchTrainArgs),
    /// Write the training lesson's Portuguese stories with Gemma 3 270M (about an hour)
    Corpus(CorpusArgs),
}

/// `corpus`: the stories, where they go, and how many.
#[derive(Args, Debug, Clone)]
pub struct CorpusArgs {
    /// The model that writes them
    #[arg(long, value_name = "NAME|PATH", default_value = "gemma-3-270m")]
    pub model: String,
    /// The folder of treino.txt, validacao.txt, PROVENANCE.md
    #[arg(long, value_name = "DIR", default_value = "data/corpus")]
    pub out: PathBuf,
    /// Stop once the kept stories hold this many kilobytes
    #[arg(long, value_name = "KB", default_value_t = 500)]
    pub target_kb: usize,
    /// Only the first N kept stories (a test regenerates them)
    #[arg(long, value_name = "N")]
    pub first: Option<usize>,
    /// Give up after sampling this many stories
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub max_stories: usize,
}

/// `bench-train`: the same model, data, initial weights and optimiser trained by the course's
/// loop and by a peer.
#[derive(Args, Debug, Clone)]
pub struct BenchTrainArgs {
    /// The text to train on: a file, or a folder of notebooks whose Markdown cells are used
    #[arg(long, value_name = "PATH", default_value = "notebooks")]
    pub corpus: PathBuf,
    /// Training steps (the first one, JAX's compilation, is not timed)
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub steps: usize,
    /// Windows per batch
    #[arg(long, value_name = "N", default_value_t = 12)]
    pub batch: usize,
    /// Tokens per window (the model's context)
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub window: usize,
    /// Pieces of the BPE vocabulary learnt from the corpus
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub vocab: usize,
    /// Layers of the model
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub layers: usize,
    /// Width of the model (4 heads)
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub d_model: usize,
    /// Threads for each engine
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub threads: usize,
    /// The Python with JAX that runs the peer (`cargo xtask bench-train` makes one)
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Also write the results as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `--model NAME|PATH`, shared by the commands that load a model.
#[derive(Args, Debug, Clone)]
pub struct ModelArg {
    /// A registered model name or the path of a GGUF file / Hugging Face folder
    #[arg(long, value_name = "NAME|PATH", default_value = DEFAULT_MODEL)]
    pub model: String,
}

#[derive(Args, Debug, Clone)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["text", "file"]))]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The text to tokenize
    #[arg(long, value_name = "T")]
    pub text: Option<String>,
    /// A file whose text to tokenize
    #[arg(long, value_name = "F")]
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The prompt to continue (or, with --chat, the user's message)
    #[arg(long, value_name = "P")]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template
    #[arg(long)]
    pub chat: bool,
    /// At most this many new tokens
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy, 1 = the model's own distribution
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to probability P, in (0, 1]
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Keep tokens at least M times as likely as the best one, in [0, 1]
    #[arg(long, value_name = "M")]
    pub min_p: Option<f32>,
    /// > 1 discourages repeating recent tokens
    #[arg(long, value_name = "R")]
    pub repetition_penalty: Option<f32>,
    /// Seed of the random generator
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Also write the results as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Prompt length in tokens
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Generated tokens per run
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub gen_tokens: usize,
    /// Runs per engine and round (each engine keeps its best)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeats: usize,
    /// Rounds in which the engines take turns
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub rounds: usize,
    /// llama.cpp's llama-bench binary, measured on the same file
    #[arg(long, value_name = "PATH")]
    pub llama_bench: Option<PathBuf>,
    /// Internal: the engine a child process measures
    #[arg(long, hide = true)]
    pub engine: Option<String>,
    /// Internal: the model file a child process loads
    #[arg(long, hide = true)]
    pub model_path: Option<PathBuf>,
    /// Internal: the prompt's token ids as JSON
    #[arg(long, hide = true)]
    pub tokens: Option<String>,
}
