//! `cargo xtask lab --no-browser` starts JupyterLab and serves the course, as root and as a normal
//! user; its own settings turn the news pop-up off. Needs the lab installed (`cargo xtask setup`);
//! without it the tests say why and pass (fail under `CI=true`).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A JupyterLab started by `cargo xtask lab`, stopped (its whole process group) on drop.
struct Served {
    child: Child,
    url: String,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: plain system call on the group this test created.
            unsafe {
                libc::killpg(pgid, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `cmd` (which runs `xtask lab --no-browser --port N`) and waits for the URL it prints.
fn serve(mut cmd: Command) -> Served {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    // Only the readers hold senders now: the channel ends when JupyterLab's output does.
    drop(tx);
    let mut seen = vec![];
    let url = loop {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(line) => {
                let url = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://127.0.0.1:") && w.contains("token="))
                    .map(str::to_string);
                seen.push(line);
                if let Some(url) = url {
                    break url;
                }
            }
            Err(_) => panic!("JupyterLab printed no URL:\n{}", seen.join("\n")),
        }
    };
    Served {
        child,
        url,
        log: rx,
        seen,
    }
}

/// A plain HTTP/1.0 GET; returns the status code and the whole response (headers, body).
fn get(url: &str) -> (u16, String) {
    request("GET", url, "")
}

/// The body of a response from [`request`].
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A plain HTTP/1.0 request with a JSON body (none if empty).
fn request(method: &str, url: &str, json: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    // JupyterLab prints its URL a moment before it listens.
    let mut tries = 0;
    let mut s = loop {
        match TcpStream::connect(host) {
            Ok(s) => break s,
            Err(e) if tries < 120 => {
                tries += 1;
                eprintln!("{url}: {e}, retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{url}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{json}",
        json.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, response)
}

/// The lab answers on its URL, opens on the first lesson, and its settings hold no news.
fn assert_serves(served: &mut Served) {
    eprintln!("{}", served.seen.join("\n"));
    let (code, page) = get(&served.url);
    assert_eq!(code, 200, "{}: {page}", served.url);
    let token = served.url.split("token=").nth(1).unwrap().to_string();
    let base = served.url.split("/lab").next().unwrap().to_string();
    let lesson = format!("{base}/lab/tree/notebooks/01_atencao_multicabecas.ipynb?token={token}");
    assert_eq!(get(&lesson).0, 200, "{lesson}");
    // The server's front page sends the browser to the first lesson.
    let (code, front) = get(&format!("{base}/?token={token}"));
    assert!(
        (300..400).contains(&code)
            && front
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("location:")
                    && l.contains("/lab/tree/notebooks/01_atencao_multicabecas.ipynb")),
        "{front}"
    );
    let (code, response) = get(&format!(
        "{base}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}"
    ));
    assert_eq!(code, 200, "{response}");
    let body = body(&response);
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        v["schema"]["properties"]["fetchNews"]["default"], "false",
        "the news pop-up is still on: {body}"
    );
    served.seen.extend(served.log.try_iter());
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn lab_serves_as_the_current_user() {
    if let Some(why) = support::lab_missing() {
        support::missing(&why);
        return;
    }
    let tag = support::tag("lab");
    let mut cmd = support::xtask(&tag);
    cmd.args(["lab", "--no-browser", "--port", &free_port().to_string()]);
    let mut served = serve(cmd);
    assert_serves(&mut served);
    if is_root() {
        assert!(
            served
                .seen
                .iter()
                .any(|l| l.contains("running as root: passing --allow-root")),
            "{}",
            served.seen.join("\n")
        );
    }
}

/// The lab's server warms a spare kernel for the lessons as it starts (its extension,
/// `llm_lab_spares.py`): once it is warm (the student reads the lesson's start), the kernel
/// JupyterLab starts for the first lesson is that spare, and runs the lesson's first cells.
#[test]
fn the_first_lessons_kernel_is_the_spare_warmed_as_the_lab_starts() {
    if let Some(why) = support::lab_missing() {
        support::missing(&why);
        return;
    }
    let tag = support::tag("lab-first-kernel");
    let mut cmd = support::xtask(&tag);
    cmd.args(["lab", "--no-browser", "--port", &free_port().to_string()]);
    let mut served = serve(cmd);
    assert_serves(&mut served);
    let token = served.url.split("token=").nth(1).unwrap().to_string();
    let base = served.url.split("/lab").next().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while !served
        .seen
        .iter()
        .any(|l| l.contains("llm-lab: spare kernel") && l.contains(" warm in "))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match served.log.recv_timeout(left) {
            Ok(line) => served.seen.push(line),
            Err(_) => panic!(
                "the server's spare for the lessons did not warm:\n{}",
                served.seen.join("\n")
            ),
        }
    }
    // What JupyterLab does when it opens a notebook: a session, which starts its kernel.
    let (code, response) = request(
        "POST",
        &format!("{base}/api/sessions?token={token}"),
        r#"{"path": "notebooks/01_atencao_multicabecas.ipynb", "type": "notebook", "name": "",
            "kernel": {"name": "llm-lab"}}"#,
    );
    assert_eq!(code, 201, "{response}");
    let session: serde_json::Value = serde_json::from_str(body(&response)).unwrap();
    let kernel = session["kernel"]["id"].as_str().unwrap();
    // JupyterLab's side: the kernel's channels on the server's websocket, the lesson's cells.
    let out = Command::new(support::root().join(".venv/bin/python"))
        .arg("-c")
        .arg(LESSON_CLIENT)
        .arg(base.trim_start_matches("http://"))
        .arg(&token)
        .arg(kernel)
        .arg(format!(
            "{}, {OVERFLOW_CELL}]",
            FIRST_CELLS.trim_end().trim_end_matches(']')
        ))
        .current_dir(support::root().join("crates/xtask/src"))
        .output()
        .unwrap();
    served.seen.extend(served.log.try_iter());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let log = served.seen.join("\n");
    assert!(out.status.success(), "{stdout}\n{stderr}\n{log}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let errors = report["errors"].as_array().unwrap();
    assert!(
        errors[..3].iter().all(serde_json::Value::is_null),
        "{report}\n{log}"
    );
    // The student's own cells keep Rust's overflow checks (the dependencies build without).
    assert!(
        errors[3].to_string().contains("overflow")
            || report["outputs"][3].to_string().contains("overflow"),
        "a u8 overflow did not panic in the student's cell: {report}"
    );
    assert!(
        report["output"].as_str().unwrap().contains(" Paris"),
        "{report}"
    );
    assert!(
        log.contains(&format!("llm-lab: kernel {kernel} is the warm spare")),
        "the lesson's kernel started cold:\n{log}"
    );
}

/// The lessons' first cells (the course crate, the model, the first logits), a JSON list for the
/// kernel clients below.
const FIRST_CELLS: &str = r#"[":dep llm-lab = { path = \"../crates/llm-lab\" }\nuse llm_lab::prelude::*;",
 "let model = Model::load_default()?;",
 "let logits = model.logits(\"The capital of France is\")?;\nprintln!(\"{:?}\", logits.top_k(3));"]"#;

/// A student's cell whose `u8` overflows at run time (the compiler cannot see it).
const OVERFLOW_CELL: &str = r#""let o: u8 = \"255\".parse().unwrap();\no + 1""#;

/// The client of `the_first_lessons_kernel_is_the_spare_warmed_as_the_lab_starts`: BASE
/// TOKEN KERNEL_ID CELLS; the benchmark's websocket client runs CELLS; one JSON line.
const LESSON_CLIENT: &str = r#"
import json, sys
from bench_notebook import WebsocketKernel
import websocket

base, token, kernel = sys.argv[1:4]
cells = json.loads(sys.argv[4])
ws = websocket.create_connection(f"ws://{base}/api/kernels/{kernel}/channels",
                                 header=[f"Authorization: token {token}"], timeout=600)
k = WebsocketKernel(ws)
k.ready()
results = [k.run(cell, 600) for cell in cells]
print(json.dumps({"errors": [r[1] for r in results], "outputs": [r[2] for r in results],
                  "output": "".join(r[2] for r in results)}))
"#;

/// A normal user of the test's own (`support::test_user`), who can reach the repository, the
/// lab's Python (its `.venv` links to the interpreter it was made from) and cargo's folders. None
/// when the test cannot run here: not root (the current-user test covers that case); a missing
/// lab, `useradd` or `runuser`, or a folder on the way closed to others fail the test under
/// `CI=true` (`support::missing`).
fn normal_user(name: &str) -> Option<(support::TestUser, std::path::PathBuf)> {
    if let Some(why) = support::lab_missing() {
        support::missing(&why);
        return None;
    }
    if !is_root() {
        eprintln!("not root: lab_serves_as_the_current_user covers a normal user");
        return None;
    }
    let user = match support::test_user(name) {
        Ok(user) => user,
        Err(why) => {
            support::missing(&why);
            return None;
        }
    };
    let root = support::root();
    let python = std::fs::canonicalize(root.join(".venv/bin/python")).unwrap();
    let cargo_home = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo")
        });
    for needed in [
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_xtask")),
        python.clone(),
        cargo_home.join("bin"),
    ] {
        let reachable = match Command::new("runuser")
            .args(["-u", &user.name, "--", "test", "-x"])
            .arg(&needed)
            .status()
        {
            Ok(status) => status.success(),
            Err(e) => {
                support::missing(&format!(
                    "cannot run runuser ({e}; it is in /usr/sbin on Debian)"
                ));
                return None;
            }
        };
        if !reachable {
            support::missing(&format!(
                "the user {} cannot reach {} (a folder on its path is closed to others; e.g. \
                 `chmod o+x /root` opens /root for traversal only)",
                user.name,
                needed.display()
            ));
            return None;
        }
    }
    Some((user, cargo_home))
}

/// `runuser` as `user`, with the lab's cargo and rustup (installed by root, read-only) and the
/// test's tag.
fn as_user(user: &str, cargo_home: &std::path::Path, tag: &(String, String)) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", "env"])
        .arg(format!("{}={}", tag.0, tag.1))
        .arg(format!("CARGO_HOME={}", cargo_home.display()))
        .args(std::env::var("RUSTUP_HOME").map(|h| format!("RUSTUP_HOME={h}")));
    cmd
}

/// As root, the same as a normal user made with `useradd`, through `runuser`.
#[test]
fn lab_serves_as_a_normal_user() {
    let Some((user, cargo_home)) = normal_user("lab") else {
        return;
    };
    let tag = support::tag("lab-user");
    let mut cmd = as_user(&user.name, &cargo_home, &tag);
    cmd.arg(env!("CARGO_BIN_EXE_xtask")).args([
        "lab",
        "--no-browser",
        "--port",
        &free_port().to_string(),
    ]);
    let mut served = serve(cmd);
    assert_serves(&mut served);
    assert!(
        !served.seen.iter().any(|l| l.contains("--allow-root")),
        "{}",
        served.seen.join("\n")
    );
}

/// A student's kernel in a lab root set up (a classroom machine): the user cannot write the lab's
/// build folders, so the launcher copies root's warmed template into the user's own pool
/// (`~/.cache/llm-lab/kernels`) and the kernel builds there without compiling any dependency
/// again; the model comes from root's model cache, read-only. The lesson's first cells give the
/// first logits.
#[test]
fn a_normal_users_kernel_starts_warm_in_its_own_pool() {
    let Some((user, cargo_home)) = normal_user("kernel") else {
        return;
    };
    let root = support::root();
    let home = user.home.display().to_string();
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let script = work.path().join("kernel.py");
    std::fs::write(&script, USER_KERNEL).unwrap();
    let cache = std::env::var("LLM_LAB_CACHE").map_or_else(
        |_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache")
                .join("llm-lab")
        },
        std::path::PathBuf::from,
    );
    let tag = support::tag("kernel-user");
    let out = as_user(&user.name, &cargo_home, &tag)
        .arg(format!("HOME={home}"))
        .arg(format!("LLM_LAB_CACHE={}", cache.display()))
        .arg(format!("PATH={}", std::env::var("PATH").unwrap()))
        .arg("CANDLE_NUM_THREADS=1")
        .arg(root.join(".venv/bin/python"))
        .arg(&script)
        .arg(FIRST_CELLS)
        .current_dir(root.join("notebooks"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // A copy of root's warm template: cargo compiles the cell's crate and nothing else (a failed
    // copy means a temporary folder where every crate is compiled again, as root's registry may
    // not even be readable to the user).
    let compiled: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("Compiling "))
        .filter(|c| !c.starts_with("ctx ") && !c.starts_with("llm-lab "))
        .collect();
    assert!(
        compiled.is_empty(),
        "compiled again: {compiled:?}\n{stderr}"
    );
    let statuses = report["statuses"].to_string();
    assert_eq!(statuses, r#"["ok","ok","ok"]"#, "{report}\n{stderr}");
    assert!(
        report["output"].as_str().unwrap().contains(" Paris"),
        "{report}"
    );
    // The user's own pool, owned by the user (root's stays untouched).
    let pool = std::path::Path::new(&home).join(".cache/llm-lab/kernels");
    let owner = Command::new("stat")
        .args(["-c", "%U"])
        .arg(&pool)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), user.name);
    let slot = std::fs::read_dir(&pool)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("slot-0"))
        .find(|p| p.exists())
        .expect("no build folder in the user's pool");
    assert!(slot.join(".llm-lab-ready").exists(), "{}", slot.display());
    // The kernel ends with the client.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !support::tagged(&tag.0, &tag.1).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(support::tagged(&tag.0, &tag.1), vec![]);
}

/// The client of `a_normal_users_kernel_starts_warm_in_its_own_pool`: the lab's kernel runs
/// CELLS (its one argument); one JSON line.
const USER_KERNEL: &str = r#"
import json, sys
from jupyter_client.manager import start_new_kernel

cells = json.loads(sys.argv[1])
km, kc = start_new_kernel(kernel_name="llm-lab", startup_timeout=600)
out, statuses = [], []
try:
    for cell in cells:
        def keep(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append(msg["content"]["evalue"])
        reply = kc.execute_interactive(cell, timeout=600, output_hook=keep)
        statuses.append(reply["content"]["status"])
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=False)
print(json.dumps({"statuses": statuses, "output": "".join(out)}))
"#;

/// Tests never share a system user by accident: threads racing for two users each get theirs
/// made once (its home folder its own) and hold it one at a time, whatever the order.
#[test]
fn test_users_are_made_once_and_leased_one_test_at_a_time() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    if !is_root() {
        eprintln!("not root: no system user can be made here");
        return;
    }
    let names = ["race-a", "race-b"];
    for name in names {
        support::remove_test_user(name).unwrap();
    }
    let inside = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let most = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let uids: Vec<(usize, u32)> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..6)
            .map(|i| {
                let (inside, most) = (&inside, &most);
                s.spawn(move || {
                    let which = i % 2;
                    let user = support::test_user(names[which]).unwrap();
                    let now = inside[which].fetch_add(1, SeqCst) + 1;
                    most[which].fetch_max(now, SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    inside[which].fetch_sub(1, SeqCst);
                    (which, user.uid)
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for which in 0..2 {
        assert_eq!(
            most[which].load(SeqCst),
            1,
            "{} was leased twice at once",
            names[which]
        );
        let mine: Vec<u32> = uids.iter().filter(|u| u.0 == which).map(|u| u.1).collect();
        assert!(
            mine.windows(2).all(|w| w[0] == w[1]),
            "{}: {mine:?}",
            names[which]
        );
    }
    assert_ne!(uids[0].1, uids[1].1, "two names, one uid");
    for name in names {
        support::remove_test_user(name).unwrap();
    }
}
