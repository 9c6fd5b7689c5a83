//! Lesson 01, multi-head attention: counting heads, scaled dot-product attention, multi-head
//! attention.

use candle_core::Tensor;

use super::diagnose::{diagnose_tensor, tensor_close, TOL};
use super::runner::{report, Case, Outcome};
use super::Report;
use crate::model::Config;
use crate::scratch::{self, HeadWeights};

/// What a student is told, per mistake.
pub mod hints {
    pub const KV_NOT_QUERY: &str = "Esse é o número de cabeças de chave/valor (KV): várias \
        cabeças de consulta compartilham cada uma. Conte as cabeças de consulta.";
    pub const LAYERS_NOT_HEADS: &str = "Esse é o número de camadas, não de cabeças.";
    pub const WIDTH_NOT_COUNT: &str = "Isso é uma largura (dimensão), não uma contagem de cabeças.";
    pub const HARD_CODED: &str = "Não fixe o número no código: leia-o da configuração recebida, \
        que muda de modelo para modelo.";
    pub const QUERY_NOT_KV: &str = "Esse é o número de cabeças de consulta. Em atenção agrupada \
        (GQA) há menos cabeças de chave/valor.";
    pub const UNSCALED: &str = "faltou dividir os escores por √d antes do softmax.";
    pub const SOFTMAX_AXIS: &str = "o softmax foi feito na dimensão errada: cada linha (uma \
        consulta) deve somar 1 sobre as chaves.";
    pub const ATTENTION_FORMULA: &str = "siga a fórmula: escores = Q·Kᵀ / √d, pesos = softmax \
        por linha, saída = pesos·V.";
    pub const NO_W_O: &str = "você concatenou as cabeças mas esqueceu de multiplicar por W_O.";
    pub const SUMMED_HEADS: &str = "as cabeças foram somadas; elas devem ser concatenadas lado a \
        lado (N × H·d) e então multiplicadas por W_O.";
    pub const MULTI_HEAD_FORMULA: &str = "para cada cabeça: atenção(X·W_Q, X·W_K, X·W_V); depois \
        concatene as saídas (dimensão 1) e multiplique por W_O.";
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

/// A check that a function reads one count (`truth`) from every config it is given.
pub(crate) fn counting_check(
    exercise: &str,
    config: &Config,
    f: impl Fn(&Config) -> usize,
    truth: fn(&Config) -> usize,
    hint: fn(&Config, usize) -> &'static str,
) -> Report {
    let f = &f;
    let cases = counting_configs(config)
        .into_iter()
        .map(|c| -> Case<'_> {
            Box::new(move || {
                let got = f(&c);
                if got == truth(&c) {
                    Outcome::Ok
                } else {
                    let name = &c.name;
                    Outcome::Wrong(format!(
                        "para {name} sua resposta foi {got}. {}",
                        hint(&c, got)
                    ))
                }
            })
        })
        .collect();
    report(exercise, cases)
}

fn count_hint(c: &Config, got: usize) -> &'static str {
    if got == c.n_kv_heads && c.n_kv_heads != c.n_heads {
        hints::KV_NOT_QUERY
    } else if got == c.n_layers {
        hints::LAYERS_NOT_HEADS
    } else if got == c.d_head || got == c.d_model {
        hints::WIDTH_NOT_COUNT
    } else {
        hints::HARD_CODED
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
                hints::QUERY_NOT_KV
            } else {
                count_hint(c, got)
            }
        },
    )
}

// ---- attention ------------------------------------------------------------------------------

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
        .map(|(n, d, dv, seed)| -> Case<'_> {
            Box::new(move || attention_case(f, n, d, dv, seed).unwrap_or_else(internal))
        })
        .collect();
    report("atenção", cases)
}

fn attention_case(
    f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> crate::Result<Tensor>,
    n: usize,
    d: usize,
    dv: usize,
    seed: u64,
) -> crate::Result<Outcome> {
    let q = (scratch::random_matrix(n, d, seed)? * 3.0)?;
    let k = (scratch::random_matrix(n + 1, d, seed + 10)? * 3.0)?;
    let v = scratch::random_matrix(n + 1, dv, seed + 20)?;
    let want = scratch::attention(&q, &k, &v, false)?;
    let shape = format!("Q {:?}, K {:?}, V {:?}", q.dims(), k.dims(), v.dims());
    let got = match f(&q, &k, &v) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Outcome::Wrong(format!(
            "sua função devolveu um erro: {e}. Confira as formas: Q [n, d], K [m, d], V [m, dv]."
        )))
        }
    };
    if tensor_close(&got, &want, TOL) {
        return Ok(Outcome::Ok);
    }
    if got.dims() != want.dims() {
        return Ok(Outcome::Wrong(format!(
            "com {shape} a saída deve ter forma {:?}, mas tem {:?}. Multiplique os pesos [n, m] \
             por V [m, dv].",
            want.dims(),
            got.dims()
        )));
    }
    let scores = q.matmul(&k.t()?)?;
    let unscaled = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
    let wrong_axis = candle_nn::ops::softmax(&(&scores / (d as f64).sqrt())?, 0)?.matmul(&v)?;
    let hint = diagnose_tensor(
        &got,
        &[
            (unscaled, hints::UNSCALED),
            (wrong_axis, hints::SOFTMAX_AXIS),
        ],
        hints::ATTENTION_FORMULA,
    );
    Ok(Outcome::Wrong(format!("com {shape}: {hint}")))
}

/// A case that could not even be set up is the check's fault, not the student's: say so.
pub(crate) fn internal(e: crate::Error) -> Outcome {
    Outcome::Wrong(format!(
        "erro interno da verificação ({e}); avise quem mantém o curso."
    ))
}

// ---- multi-head -----------------------------------------------------------------------------

/// Exercise: multi-head attention — each head's attention, concatenated, times `W_O`.
/// `f(x, heads, w_o)` with `x: [N, D]`, each head's `W_Q, W_K, W_V: [D, d]`, `w_o: [H·d, D]`.
pub fn multi_head(f: impl Fn(&Tensor, &[HeadWeights], &Tensor) -> crate::Result<Tensor>) -> Report {
    let f = &f;
    // The last case has H·d ≠ D, so a transposed W_O cannot pass on shapes alone.
    let shapes = [
        (4usize, 8usize, 2usize, 4usize, 1u64),
        (3, 6, 3, 2, 2),
        (5, 12, 4, 3, 3),
        (4, 10, 2, 3, 4),
    ];
    let cases = shapes
        .into_iter()
        .map(|(n, d_model, h, d, seed)| -> Case<'_> {
            Box::new(move || multi_head_case(f, n, d_model, h, d, seed).unwrap_or_else(internal))
        })
        .collect();
    report("atenção multicabeças", cases)
}

/// The student's multi-head attention: `f(x, heads, w_o)`.
type MultiHeadFn<'a> = &'a dyn Fn(&Tensor, &[HeadWeights], &Tensor) -> crate::Result<Tensor>;

fn multi_head_case(
    f: MultiHeadFn<'_>,
    n: usize,
    d_model: usize,
    h: usize,
    d: usize,
    seed: u64,
) -> crate::Result<Outcome> {
    let m = |r, c, s| scratch::random_matrix(r, c, seed * 100 + s);
    let x = m(n, d_model, 0)?;
    let heads = (0..h as u64)
        .map(|i| {
            Ok(HeadWeights {
                w_q: m(d_model, d, 3 * i + 1)?,
                w_k: m(d_model, d, 3 * i + 2)?,
                w_v: m(d_model, d, 3 * i + 3)?,
            })
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let w_o = m(h * d, d_model, 99)?;
    let want = scratch::multi_head_attention(&x, &heads, &w_o, false)?;
    let got = match f(&x, &heads, &w_o) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Outcome::Wrong(format!(
                "sua função devolveu um erro: {e}. A concatenação das {h} cabeças tem forma \
                 [N, H·d] = [{n}, {}], e W_O tem [{}, {d_model}].",
                h * d,
                h * d
            )))
        }
    };
    if tensor_close(&got, &want, TOL) {
        return Ok(Outcome::Ok);
    }
    let per_head = heads
        .iter()
        .map(|w| {
            scratch::attention(
                &x.matmul(&w.w_q)?,
                &x.matmul(&w.w_k)?,
                &x.matmul(&w.w_v)?,
                false,
            )
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let concat = Tensor::cat(&per_head, 1)?;
    let mut summed = per_head[0].clone();
    for p in &per_head[1..] {
        summed = (summed + p)?;
    }
    if got.dims() != want.dims() && got.dims() != concat.dims() && got.dims() != summed.dims() {
        return Ok(Outcome::Wrong(format!(
            "a saída deve ter forma {:?} (N × D), mas tem {:?}. Concatene na dimensão 1.",
            want.dims(),
            got.dims()
        )));
    }
    let hint = diagnose_tensor(
        &got,
        &[(concat, hints::NO_W_O), (summed, hints::SUMMED_HEADS)],
        hints::MULTI_HEAD_FORMULA,
    );
    Ok(Outcome::Wrong(hint.to_string()))
}
