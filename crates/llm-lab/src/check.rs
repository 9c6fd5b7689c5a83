//! One check per exercise. Each runs the student's function on visible and hidden cases, survives
//! a panic (a `todo!()` means "not done yet"), and reports ✅ or ❌ with a hint in Portuguese that
//! names the mistake. The report also prints one plain line for tooling:
//! `llm-lab check: <exercício> = passed | failed | not done yet`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_core::Tensor;

use crate::display::{html_escape, rich_html};
use crate::generate::LanguageModel;
use crate::logits::{softmax, softmax_with_temperature, Logits};
use crate::model::Config;
use crate::scratch::{self, HeadWeights};
use crate::testing::ScriptedModel;

/// How an exercise went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Every case passed.
    Passed,
    /// A case failed; the hint says why.
    Failed { hint: String },
    /// The function still holds `todo!()`.
    NotDone,
}

/// The result of one check, shown as ✅/❌ in a notebook.
#[derive(Debug, Clone)]
pub struct Report {
    /// Exercise name.
    pub exercise: String,
    /// Outcome.
    pub status: Status,
    /// How many cases ran (visible and hidden).
    pub cases: usize,
}

impl Report {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.status == Status::Passed
    }

    /// The line tooling reads.
    pub fn plain_line(&self) -> String {
        let s = match self.status {
            Status::Passed => "passed",
            Status::Failed { .. } => "failed",
            Status::NotDone => "not done yet",
        };
        format!("llm-lab check: {} = {s}", self.exercise)
    }

    /// The report as HTML.
    pub fn to_html(&self) -> String {
        let (mark, colour, text) = match &self.status {
            Status::Passed => (
                "✅",
                "#e8f5e9",
                format!("Correto! {} casos verificados.", self.cases),
            ),
            Status::Failed { hint } => ("❌", "#ffebee", format!("Ainda não. Dica: {hint}")),
            Status::NotDone => (
                "⏳",
                "#fff8e1",
                "Ainda não feito: substitua o <code>todo!()</code> pela sua implementação.".into(),
            ),
        };
        let text = if matches!(self.status, Status::NotDone) {
            text
        } else {
            html_escape(&text)
        };
        format!(
            "<div style=\"background:{colour};padding:8px;border-radius:4px\"><b>{mark} {}</b> — {text}</div>",
            html_escape(&self.exercise)
        )
    }

    /// evcxr's rich display hook: the HTML report, and the plain line (plus, on failure, a
    /// `llm-lab hint:` line) on stdout.
    pub fn evcxr_display(&self) {
        println!("{}", self.plain_line());
        if let Status::Failed { hint } = &self.status {
            println!("llm-lab hint: {} = {hint}", self.exercise);
        }
        rich_html(&self.to_html());
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.status {
            Status::Failed { hint } => write!(f, "{}\n❌ {hint}", self.plain_line()),
            _ => write!(f, "{}", self.plain_line()),
        }
    }
}

/// What one case found.
enum Outcome {
    Ok,
    Wrong(String),
    Todo,
    Panicked(String),
}

/// Runs `f`, turning a panic into an outcome; the panic message is kept, not printed.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Outcome> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    r.map_err(|e| {
        let msg = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if msg.starts_with("not yet implemented") || msg.starts_with("not implemented") {
            Outcome::Todo
        } else {
            Outcome::Panicked(msg)
        }
    })
}

/// Runs the cases in order and stops at the first that is not Ok.
fn report(exercise: &str, cases: Vec<Box<dyn FnOnce() -> Outcome + '_>>) -> Report {
    let n = cases.len();
    for case in cases {
        let outcome = match guarded(case) {
            Ok(o) => o,
            Err(o) => o,
        };
        let status = match outcome {
            Outcome::Ok => continue,
            Outcome::Todo => Status::NotDone,
            Outcome::Wrong(hint) => Status::Failed { hint },
            Outcome::Panicked(msg) => Status::Failed { hint: format!("sua função entrou em pânico ({msg}). Leia a mensagem: um índice fora do intervalo ou um unwrap() em erro?") },
        };
        return Report {
            exercise: exercise.to_string(),
            status,
            cases: n,
        };
    }
    Report {
        exercise: exercise.to_string(),
        status: Status::Passed,
        cases: n,
    }
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

fn tensor_close(a: &Tensor, b: &Tensor, tol: f32) -> Option<bool> {
    if a.dims() != b.dims() {
        return Some(false);
    }
    Some(crate::testing::max_abs_diff(a, b).ok()? <= tol)
}

// ---- counting -------------------------------------------------------------------------------

/// Configs the counting checks try: the loaded model's, then the Llama 3.2 family and a made-up one
/// (so that a hard-coded number cannot pass).
fn counting_configs(visible: &Config) -> Vec<Config> {
    let mut made_up = Config::llama_3_2_1b();
    made_up.name = "modelo inventado".into();
    made_up.n_layers = 7;
    made_up.n_heads = 12;
    made_up.n_kv_heads = 4;
    made_up.d_head = 48;
    made_up.d_model = 576;
    vec![
        visible.clone(),
        Config::llama_3_2_1b(),
        Config::llama_3_2_3b(),
        made_up,
    ]
}

fn counting_check(
    exercise: &str,
    config: &Config,
    f: impl Fn(&Config) -> usize,
    truth: fn(&Config) -> usize,
    hint: fn(&Config, usize) -> String,
) -> Report {
    let f = &f;
    let cases = counting_configs(config)
        .into_iter()
        .map(|c| -> Box<dyn FnOnce() -> Outcome + '_> {
            Box::new(move || {
                let got = f(&c);
                if got == truth(&c) {
                    Outcome::Ok
                } else {
                    Outcome::Wrong(format!(
                        "para {} sua resposta foi {got}. {}",
                        c.name,
                        hint(&c, got)
                    ))
                }
            })
        })
        .collect();
    report(exercise, cases)
}

fn count_hint(c: &Config, got: usize) -> String {
    if got == c.n_kv_heads && c.n_kv_heads != c.n_heads {
        "Esse é o número de cabeças de chave/valor (KV): várias cabeças de consulta compartilham cada uma. Conte as cabeças de consulta.".into()
    } else if got == c.n_layers {
        "Esse é o número de camadas, não de cabeças.".into()
    } else if got == c.d_head || got == c.d_model {
        "Isso é uma largura (dimensão), não uma contagem de cabeças.".into()
    } else {
        "Não fixe o número no código: leia-o da configuração recebida, que muda de modelo para modelo.".into()
    }
}

/// Exercise: how many attention heads (query heads) per layer.
pub fn count_heads(config: &Config, f: impl Fn(&Config) -> usize) -> Report {
    counting_check("quantas cabeças", config, f, |c| c.n_heads, count_hint)
}

/// Exercise: how many key/value heads per layer.
pub fn count_kv_heads(config: &Config, f: impl Fn(&Config) -> usize) -> Report {
    counting_check(
        "quantas cabeças KV",
        config,
        f,
        |c| c.n_kv_heads,
        |c, got| {
            if got == c.n_heads {
                "Esse é o número de cabeças de consulta. Em atenção agrupada (GQA) há menos cabeças de chave/valor.".into()
            } else {
                count_hint(c, got)
            }
        },
    )
}

/// Exercise: how many layers (transformer blocks).
pub fn count_layers(config: &Config, f: impl Fn(&Config) -> usize) -> Report {
    counting_check(
        "quantas camadas",
        config,
        f,
        |c| c.n_layers,
        |c, got| {
            if got == c.n_heads || got == c.n_kv_heads {
                "Isso conta cabeças; as camadas são os blocos empilhados (atenção + MLP).".into()
            } else if got + 1 == c.n_layers || got == c.n_layers + 1 {
                "Quase: confira se não contou uma camada a mais ou a menos.".into()
            } else {
                "Não fixe o número no código: leia-o da configuração recebida.".into()
            }
        },
    )
}

// ---- temperature ----------------------------------------------------------------------------

/// The lecture's sample logit vector.
pub const SAMPLE_LOGITS: [f32; 5] = [2.0, 1.0, 0.5, -1.0, 0.1];

/// Exercise: `softmax(z / T)` on a sample logit vector.
pub fn temperature(f: impl Fn(&[f32], f32) -> Vec<f32>) -> Report {
    let f = &f;
    let mut cases: Vec<(Vec<f32>, f32)> = [0.5f32, 1.0, 2.0]
        .iter()
        .map(|&t| (SAMPLE_LOGITS.to_vec(), t))
        .collect();
    cases.push((vec![3.0, 3.0, 3.0, 3.0], 0.7));
    cases.push((vec![1000.0, 999.0, 998.5, 990.0], 1.0));
    cases.push((vec![-2.0, 5.0, 0.0], 0.25));
    let cases = cases
        .into_iter()
        .map(|(z, t)| -> Box<dyn FnOnce() -> Outcome + '_> {
            Box::new(move || {
                let got = f(&z, t);
                let want = softmax_with_temperature(&z, t).expect("valid case");
                if close(&got, &want, 1e-4) {
                    return Outcome::Ok;
                }
                let shown = format!("logits {z:?}, T = {t}: esperado {want:.3?}, obtido {got:.3?}.");
                let hint = if got.len() != z.len() {
                    "devolva uma probabilidade por logit.".to_string()
                } else if got.iter().any(|x| !x.is_finite()) {
                    "apareceu NaN ou infinito: exp(1000) estoura o f32. Subtraia o maior logit antes da exponencial (o resultado não muda).".into()
                } else if (got.iter().sum::<f32>() - 1.0).abs() > 1e-3 {
                    "as probabilidades não somam 1: divida cada exponencial pela soma de todas.".into()
                } else if t != 1.0 && close(&got, &softmax(&z.iter().map(|x| x * t).collect::<Vec<_>>()), 1e-4) {
                    "você multiplicou pela temperatura; a fórmula divide: exp(z_i / T).".into()
                } else if t != 1.0 && close(&got, &softmax(&z), 1e-4) {
                    "a temperatura não teve efeito: divida cada logit por T antes do softmax.".into()
                } else {
                    "compare com a fórmula p_i = exp(z_i / T) / Σ_j exp(z_j / T).".into()
                };
                Outcome::Wrong(format!("{shown} {hint}"))
            })
        })
        .collect();
    report("temperatura", cases)
}

// ---- top-p ----------------------------------------------------------------------------------

/// Exercise: the tokens kept by top-p — the smallest set of most likely tokens whose probability
/// adds up to at least p. `f(probabilities, p)` returns their ids, in any order.
pub fn top_p(f: impl Fn(&[f32], f32) -> Vec<usize>) -> Report {
    let f = &f;
    let cases: Vec<(Vec<f32>, f32)> = vec![
        (vec![0.1, 0.5, 0.05, 0.3, 0.05], 0.7),
        (vec![0.1, 0.5, 0.05, 0.3, 0.05], 0.5),
        (vec![0.25, 0.25, 0.25, 0.25], 0.6),
        (vec![0.05, 0.05, 0.6, 0.1, 0.2], 0.9),
        (vec![0.9, 0.05, 0.05], 0.1),
        (vec![0.2, 0.3, 0.5], 1.0),
    ];
    let cases = cases
        .into_iter()
        .map(|(probs, p)| -> Box<dyn FnOnce() -> Outcome + '_> {
            Box::new(move || {
                let mut got = f(&probs, p);
                got.sort();
                got.dedup();
                let want = crate::sampling::top_p_set(&probs, p);
                if got == want {
                    return Outcome::Ok;
                }
                let shown = format!("probabilidades {probs:?}, p = {p}: esperado {want:?}, obtido {got:?}.");
                let kept: f32 = got.iter().filter_map(|&i| probs.get(i)).sum();
                let hint = if got.iter().any(|&i| i >= probs.len()) {
                    "devolva índices de tokens (posições no vetor).".to_string()
                } else if kept < p - 1e-6 && got.len() + 1 == want.len() {
                    "faltou o token que faz a soma passar de p: o conjunto precisa somar *pelo menos* p, então inclua o token que cruza a linha.".into()
                } else if got.len() == want.len() {
                    "o tamanho está certo, mas não os tokens: ordene do mais provável para o menos provável antes de acumular.".into()
                } else if got.iter().all(|&i| probs[i] >= p) {
                    "top-p não filtra tokens com probabilidade ≥ p: ele acumula os mais prováveis até a soma chegar a p.".into()
                } else if kept >= p && got.len() > want.len() {
                    "há tokens demais: pare assim que a soma acumulada chegar a p (o *menor* conjunto).".into()
                } else {
                    "ordene por probabilidade decrescente e acumule até a soma chegar a p.".into()
                };
                Outcome::Wrong(format!("{shown} {hint}"))
            })
        })
        .collect();
    report("top-p", cases)
}

// ---- attention, multi-head, layer norm, positions ---------------------------------------------

/// Exercise: scaled dot-product attention `softmax(Q Kᵀ / √d) V` (no mask).
pub fn attention(f: impl Fn(&Tensor, &Tensor, &Tensor) -> crate::Result<Tensor>) -> Report {
    let f = &f;
    let shapes = [
        (3usize, 4usize, 2usize, 1u64),
        (5, 8, 3, 2),
        (1, 16, 16, 3),
        (6, 2, 5, 4),
    ];
    let cases = shapes
        .into_iter()
        .map(|(n, d, dv, seed)| -> Box<dyn FnOnce() -> Outcome + '_> {
            Box::new(move || {
                let q = (scratch::random_matrix(n, d, seed).unwrap() * 3.0).unwrap();
                let k = (scratch::random_matrix(n + 1, d, seed + 10).unwrap() * 3.0).unwrap();
                let v = scratch::random_matrix(n + 1, dv, seed + 20).unwrap();
                let want = scratch::attention(&q, &k, &v, false).unwrap();
                let got = match f(&q, &k, &v) {
                    Ok(t) => t,
                    Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}. Confira as formas: Q [n, d], K [m, d], V [m, dv].")),
                };
                if tensor_close(&got, &want, 1e-4) == Some(true) {
                    return Outcome::Ok;
                }
                let shape = format!("Q {:?}, K {:?}, V {:?}", q.dims(), k.dims(), v.dims());
                if got.dims() != want.dims() {
                    return Outcome::Wrong(format!("com {shape} a saída deve ter forma {:?}, mas tem {:?}. Multiplique os pesos [n, m] por V [m, dv].", want.dims(), got.dims()));
                }
                let unscaled = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t().unwrap()).unwrap()).unwrap().matmul(&v).unwrap();
                let wrong_axis = candle_nn::ops::softmax(&(q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap(), 0).unwrap().matmul(&v).unwrap();
                let hint = if tensor_close(&got, &unscaled, 1e-4) == Some(true) {
                    "faltou dividir os escores por √d antes do softmax."
                } else if tensor_close(&got, &wrong_axis, 1e-4) == Some(true) {
                    "o softmax foi feito na dimensão errada: cada linha (uma consulta) deve somar 1 sobre as chaves."
                } else {
                    "siga a fórmula: escores = Q·Kᵀ / √d, pesos = softmax por linha, saída = pesos·V."
                };
                Outcome::Wrong(format!("com {shape}: {hint}"))
            })
        })
        .collect();
    report("atenção", cases)
}

/// Exercise: multi-head attention — each head's attention, concatenated, times `W_O`.
/// `f(x, heads, w_o)` with `x: [N, D]`, each head's `W_Q, W_K, W_V: [D, d]`, `w_o: [H·d, D]`.
pub fn multi_head(f: impl Fn(&Tensor, &[HeadWeights], &Tensor) -> crate::Result<Tensor>) -> Report {
    let f = &f;
    let shapes = [
        (4usize, 8usize, 2usize, 4usize, 1u64),
        (3, 6, 3, 2, 2),
        (5, 12, 4, 3, 3),
    ];
    let cases = shapes
        .into_iter()
        .map(|(n, d_model, h, d, seed)| -> Box<dyn FnOnce() -> Outcome + '_> {
            Box::new(move || {
                let m = |r, c, s| scratch::random_matrix(r, c, seed * 100 + s).unwrap();
                let x = m(n, d_model, 0);
                let heads: Vec<HeadWeights> = (0..h as u64).map(|i| HeadWeights { w_q: m(d_model, d, 3 * i + 1), w_k: m(d_model, d, 3 * i + 2), w_v: m(d_model, d, 3 * i + 3) }).collect();
                let w_o = m(h * d, d_model, 99);
                let want = scratch::multi_head_attention(&x, &heads, &w_o, false).unwrap();
                let got = match f(&x, &heads, &w_o) {
                    Ok(t) => t,
                    Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}. A concatenação das {h} cabeças tem forma [N, H·d] = [{n}, {}], e W_O tem [{}, {d_model}].", h * d, h * d)),
                };
                if tensor_close(&got, &want, 1e-4) == Some(true) {
                    return Outcome::Ok;
                }
                let per_head: Vec<Tensor> = heads.iter().map(|w| scratch::attention(&x.matmul(&w.w_q).unwrap(), &x.matmul(&w.w_k).unwrap(), &x.matmul(&w.w_v).unwrap(), false).unwrap()).collect();
                let concat = Tensor::cat(&per_head, 1).unwrap();
                let summed = per_head.iter().skip(1).fold(per_head[0].clone(), |a, b| (a + b).unwrap());
                let hint = if got.dims() == concat.dims() && tensor_close(&got, &concat, 1e-4) == Some(true) {
                    "você concatenou as cabeças mas esqueceu de multiplicar por W_O.".to_string()
                } else if got.dims() == summed.dims() && tensor_close(&got, &summed, 1e-4) == Some(true) {
                    "as cabeças foram somadas; elas devem ser concatenadas lado a lado (N × H·d) e então multiplicadas por W_O.".into()
                } else if got.dims() != want.dims() {
                    format!("a saída deve ter forma {:?} (N × D), mas tem {:?}. Concatene na dimensão 1.", want.dims(), got.dims())
                } else {
                    "para cada cabeça: atenção(X·W_Q, X·W_K, X·W_V); depois concatene as saídas (dimensão 1) e multiplique por W_O.".into()
                };
                Outcome::Wrong(hint)
            })
        })
        .collect();
    report("atenção multicabeças", cases)
}

/// Exercise: layer normalisation over the last dimension (no gain or bias), with ε.
pub fn layer_norm(f: impl Fn(&Tensor, f64) -> crate::Result<Tensor>) -> Report {
    let f = &f;
    let cases = [(2usize, 8usize, 1u64, 1e-5f64), (4, 16, 2, 1e-5), (3, 5, 3, 0.1)]
        .into_iter()
        .map(|(rows, cols, seed, eps)| -> Box<dyn FnOnce() -> Outcome + '_> {
            Box::new(move || {
                let x = ((scratch::random_matrix(rows, cols, seed).unwrap() * 4.0).unwrap() + 2.0).unwrap();
                let want = scratch::layer_norm(&x, eps).unwrap();
                let got = match f(&x, eps) {
                    Ok(t) => t,
                    Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
                };
                if tensor_close(&got, &want, 1e-4) == Some(true) {
                    return Outcome::Ok;
                }
                let ones = Tensor::ones(cols, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
                let rms = scratch::rms_norm(&x, &ones, eps).unwrap();
                let hint = if tensor_close(&got, &rms, 1e-4) == Some(true) {
                    "isso é RMSNorm (a do Llama): a LayerNorm também subtrai a média de cada linha."
                } else if {
                    let n = cols as f64;
                    let centered = x.broadcast_sub(&x.mean_keepdim(1).unwrap()).unwrap();
                    let var = (centered.sqr().unwrap().sum_keepdim(1).unwrap() / (n - 1.0)).unwrap();
                    tensor_close(&got, &centered.broadcast_div(&(var + eps).unwrap().sqrt().unwrap()).unwrap(), 1e-4) == Some(true)
                } {
                    "a variância usa divisão por n (variância populacional), não por n − 1."
                } else if got.dims() != want.dims() {
                    "a saída deve ter a mesma forma da entrada."
                } else if tensor_close(&got, &scratch::layer_norm(&x.t().unwrap(), eps).unwrap().t().unwrap(), 1e-4) == Some(true) {
                    "normalizou na dimensão errada: cada linha (um token) é normalizada sobre suas colunas."
                } else {
                    "para cada linha: subtraia a média e divida por sqrt(variância + ε)."
                };
                Outcome::Wrong(format!("entrada {:?}, ε = {eps}: {hint}", x.dims()))
            })
        })
        .collect();
    report("normalização de camada", cases)
}

/// Exercise: sinusoidal positional encoding `[n, d]`.
pub fn positional_encoding(f: impl Fn(usize, usize) -> crate::Result<Tensor>) -> Report {
    let f = &f;
    let cases = [(4usize, 6usize), (10, 16), (50, 8), (3, 2)]
        .into_iter()
        .map(|(n, d)| -> Box<dyn FnOnce() -> Outcome + '_> {
            Box::new(move || {
                let want = scratch::sinusoidal_positions(n, d).unwrap();
                let got = match f(n, d) {
                    Ok(t) => t,
                    Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
                };
                if tensor_close(&got, &want, 1e-4) == Some(true) {
                    return Outcome::Ok;
                }
                if got.dims() != want.dims() {
                    return Outcome::Wrong(format!("para n = {n}, d = {d} a forma deve ser {:?}, mas é {:?}.", want.dims(), got.dims()));
                }
                let variant = |g: &dyn Fn(usize, usize) -> f64| -> Tensor {
                    let v: Vec<f32> = (0..n).flat_map(|p| (0..d).map(move |j| (p, j))).map(|(p, j)| g(p, j) as f32).collect();
                    Tensor::from_vec(v, (n, d), &candle_core::Device::Cpu).unwrap()
                };
                let angle = |p: usize, e: f64| p as f64 / 10_000f64.powf(e);
                let swapped = variant(&|p, j| { let a = angle(p, 2.0 * (j / 2) as f64 / d as f64); if j % 2 == 0 { a.cos() } else { a.sin() } });
                let no_pair = variant(&|p, j| { let a = angle(p, j as f64 / d as f64); if j % 2 == 0 { a.sin() } else { a.cos() } });
                let hint = if tensor_close(&got, &swapped, 1e-4) == Some(true) {
                    "seno e cosseno trocados: colunas pares (2i) usam seno, ímpares (2i+1) cosseno."
                } else if tensor_close(&got, &no_pair, 1e-4) == Some(true) {
                    "o expoente usa o índice do par: colunas 2i e 2i+1 compartilham a mesma frequência 1/10000^(2i/d)."
                } else {
                    "PE[p, 2i] = sin(p / 10000^(2i/d)) e PE[p, 2i+1] = cos(p / 10000^(2i/d))."
                };
                Outcome::Wrong(format!("n = {n}, d = {d}: {hint}"))
            })
        })
        .collect();
    report("codificação posicional", cases)
}

// ---- the autoregressive loop ----------------------------------------------------------------

/// The student's loop: `f(model, prompt, max_new_tokens)` returns only the generated tokens.
pub type LoopFn<'a> = dyn Fn(&mut dyn LanguageModel, &[u32], usize) -> crate::Result<Vec<u32>> + 'a;

/// A scripted model whose greedy continuation after token `t` is `(t + 1) % n`.
fn counting(n: usize, stop: Vec<u32>) -> ScriptedModel {
    let mut m = ScriptedModel::counting(n, move |t| (t + 1) % n as u32);
    m.stop_tokens = stop;
    m
}

/// Exercise 1: the autoregressive loop, greedy, stopping at the token budget or at an end token.
pub fn generation_loop(
    f: impl Fn(&mut dyn LanguageModel, &[u32], usize) -> crate::Result<Vec<u32>>,
) -> Report {
    let f = &f;
    // (vocabulary, end tokens, prompt, budget)
    let cases: Vec<(usize, Vec<u32>, Vec<u32>, usize)> = vec![
        (50, vec![], vec![3], 5),
        (50, vec![8], vec![3, 4], 20),
        (10, vec![7], vec![1], 3),
        (50, vec![], vec![0], 0),
        (6, vec![5, 2], vec![0], 10),
    ];
    let cases = cases
        .into_iter()
        .map(|(n, stop, prompt, budget)| -> Box<dyn FnOnce() -> Outcome + '_> {
            Box::new(move || {
                let model = counting(n, stop.clone());
                let mut m = &model;
                let want = crate::generate::Generation::new(&model, &prompt, crate::generate::GenerateOptions::greedy(budget)).and_then(|g| g.finish()).map(|g| g.tokens()).unwrap();
                model.calls.borrow_mut().clear();
                let got = match f(&mut m, &prompt, budget) {
                    Ok(t) => t,
                    Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
                };
                if got == want {
                    return Outcome::Ok;
                }
                let shown = format!("prompt {prompt:?}, limite {budget}, fim de texto {stop:?}: esperado {want:?}, obtido {got:?}.");
                let hint = if got.len() == budget + 1 && got.starts_with(&want) {
                    "gerou um token a mais: pare quando tiver exatamente max_new_tokens tokens novos.".to_string()
                } else if got.len() > want.len() && got.iter().any(|t| stop.contains(t)) {
                    "passou do token de fim de texto: pare assim que o modelo escolher um deles (e não o inclua).".into()
                } else if !got.is_empty() && got.iter().all(|&t| t == got[0]) && want.len() > 1 {
                    "todos os tokens são iguais: acrescente cada token escolhido à sequência antes de pedir o próximo.".into()
                } else if got.starts_with(&prompt) && got.len() > prompt.len() {
                    "devolva só os tokens novos, sem o prompt.".into()
                } else if got.len() + 1 == want.len() && want.starts_with(&got) {
                    "parou um token cedo: o laço deve rodar até max_new_tokens tokens novos.".into()
                } else {
                    "a cada passo: logits = model.next_token_logits(&tokens)?, escolha o argmax, pare se for fim de texto, senão acrescente e repita.".into()
                };
                Outcome::Wrong(format!("{shown} {hint}"))
            })
        })
        .collect();
    report("laço autorregressivo", cases)
}

/// Exercise 2: the loop with temperature sampling. `f(model, prompt, max_new_tokens, temperature,
/// seed)`. T = 0 must be greedy, frequencies must follow softmax(z / T), a seed must reproduce.
pub fn temperature_loop(
    f: impl Fn(&mut dyn LanguageModel, &[u32], usize, f32, u64) -> crate::Result<Vec<u32>>,
) -> Report {
    let f = &f;
    let z = vec![2.0f32, 1.0, 0.0, -1.0];
    let zz = z.clone();
    let model = ScriptedModel::new(&["a", "b", "c", "d"], move |_| zz.clone());
    let model = &model;
    let first_tokens = move |t: f32| -> crate::Result<Vec<f64>> {
        let mut counts = vec![0f64; 4];
        for seed in 0..1500u64 {
            let mut m = model;
            let out = f(&mut m, &[0], 1, t, seed)?;
            if let Some(&tok) = out.first() {
                counts[tok as usize % 4] += 1.0;
            }
        }
        Ok(counts)
    };
    let chi = |obs: &[f64], p: &[f32]| -> f64 {
        let n: f64 = obs.iter().sum();
        obs.iter()
            .zip(p)
            .map(|(&o, &p)| (o - n * p as f64).powi(2) / (n * p as f64).max(1e-9))
            .sum()
    };
    let cases: Vec<Box<dyn FnOnce() -> Outcome + '_>> = vec![
        Box::new(move || {
            let greedy = counting(20, vec![]);
            let mut m = &greedy;
            match f(&mut m, &[2], 6, 0.0, 1) {
                Ok(t) if t == [3, 4, 5, 6, 7, 8] => Outcome::Ok,
                Ok(t) => Outcome::Wrong(format!("com T = 0 o resultado deve ser o guloso [3, 4, 5, 6, 7, 8], obtido {t:?}. Temperatura 0 significa sempre o argmax.")),
                Err(e) => Outcome::Wrong(format!("com T = 0 sua função devolveu um erro: {e}. Trate T = 0 como guloso.")),
            }
        }),
        Box::new(move || {
            let mut m = model;
            let a = f(&mut m, &[0], 8, 1.0, 42);
            let b = f(&mut m, &[0], 8, 1.0, 42);
            match (a, b) {
                (Ok(a), Ok(b)) if a == b && a.len() == 8 => Outcome::Ok,
                (Ok(a), Ok(b)) if a.len() != 8 => Outcome::Wrong(format!("pedi 8 tokens e recebi {} ({b:?}).", a.len())),
                (Ok(a), Ok(b)) => Outcome::Wrong(format!("a mesma semente deu {a:?} e {b:?}: crie o amostrador com a semente recebida (SamplerConfig {{ seed, .. }}).")),
                (Err(e), _) | (_, Err(e)) => Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
            }
        }),
        Box::new(move || {
            for t in [0.5f32, 2.0] {
                let obs = match first_tokens(t) {
                    Ok(o) => o,
                    Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
                };
                let want = softmax_with_temperature(&z, t).unwrap();
                if chi(&obs, &want) < 16.3 {
                    continue;
                }
                let shown = format!(
                    "com T = {t}, 1500 sementes deram as frequências {:?}; esperado ≈ {:?}.",
                    obs,
                    want.iter()
                        .map(|p| (p * 1500.0).round())
                        .collect::<Vec<_>>()
                );
                let hint = if obs.iter().filter(|&&c| c > 0.0).count() == 1 {
                    "sempre o mesmo token: você está usando o argmax; sorteie de softmax(z / T)."
                } else if chi(&obs, &softmax(&z.iter().map(|x| x * t).collect::<Vec<_>>())) < 16.3 {
                    "você multiplicou pela temperatura; divida os logits por T."
                } else if chi(&obs, &softmax(&z)) < 16.3 {
                    "a temperatura não teve efeito: divida os logits por T antes de sortear."
                } else {
                    "sorteie o próximo token de softmax(logits / T)."
                };
                return Outcome::Wrong(format!("{shown} {hint}"));
            }
            Outcome::Ok
        }),
    ];
    report("temperaturas no laço", cases)
}

/// Logits of the lecture's sample vector, for the temperature exercise's display.
pub fn sample_logits() -> Logits {
    Logits::new(SAMPLE_LOGITS.to_vec()).expect("finite")
}
