//! Lesson 01, multi-head attention: counting heads, scaled dot-product attention, multi-head
//! attention.

use candle_core::Tensor;

use super::diagnose::{close, diagnose_tensor, tensor_close, NOT_FINITE, TOL};
use super::runner::{report, Case, Outcome};
use super::Report;
use crate::model::{Config, WeightShapes};
use crate::scratch::{self, HeadWeights};

/// What a student is told, per mistake.
pub mod hints {
    pub const KV_NOT_QUERY: &str = "Esse é o número de cabeças de chave/valor (KV): você leu W_K \
        (attn_k) ou W_V. As cabeças de consulta estão nas linhas de W_Q (attn_q).";
    pub const QUERY_NOT_KV: &str = "Esse é o número de cabeças de consulta (linhas de W_Q / \
        d_head). Em atenção agrupada (GQA) há menos cabeças de chave/valor: leia W_K (attn_k).";
    pub const COLUMNS_NOT_ROWS: &str = "Você dividiu as colunas (a segunda dimensão, d_model) \
        por d_head. A matriz é guardada como [saída, entrada]: as cabeças empilhadas estão nas \
        linhas, a primeira dimensão. Os dois números só coincidem quando H·d_head = d_model.";
    pub const DIVIDED_BY_D_MODEL: &str = "Você dividiu as linhas por d_model; cada cabeça ocupa \
        d_head linhas, então divida por d_head.";
    pub const NOT_DIVIDED: &str = "Esse é o número de linhas da matriz (H·d_head), não de \
        cabeças: divida pela largura de uma cabeça, d_head.";
    pub const GROUP_SIZE: &str = "Esse é quantas cabeças de consulta compartilham cada cabeça \
        KV (H / H_KV), não o número de cabeças KV.";
    pub const LAYERS_NOT_HEADS: &str = "Esse é o número de camadas, não de cabeças.";
    pub const WIDTH_NOT_COUNT: &str = "Isso é uma largura (dimensão), não uma contagem de cabeças.";
    pub const MISSING_TENSOR: &str = "Sua função deu 0: o nome do tensor existe? Use o nome \
        completo, como `blk.0.attn_q.weight` (veja `shapes.names()`); `rows` dá 0 para um nome \
        que não existe.";
    pub const HARD_CODED: &str = "Não fixe o número no código: calcule-o das formas recebidas, \
        que mudam de modelo para modelo.";
    pub const COUNT_FORMULA: &str = "Cada cabeça ocupa d_head linhas da matriz de projeção: \
        conte as cabeças como linhas / d_head.";
    pub const UNSCALED: &str = "faltou dividir os escores por √d antes do softmax.";
    pub const DIVIDED_BY_D: &str = "você dividiu os escores por d; a escala é √d (a raiz da \
        largura das consultas e chaves).";
    pub const SCALE_MULTIPLIED: &str = "você multiplicou os escores por √d; divida por √d.";
    pub const SCALE_BY_DV: &str = "a escala usa a largura das consultas e chaves, d = \
        q.dim(1), não a largura de V.";
    pub const NO_SOFTMAX: &str = "faltou o softmax: os pesos são softmax(Q·Kᵀ/√d), cada linha \
        somando 1, e só então multiplicam V.";
    pub const SOFTMAX_AXIS: &str = "o softmax foi feito na dimensão errada: cada linha (uma \
        consulta) deve somar 1 sobre as chaves.";
    pub const ATTENTION_FORMULA: &str = "siga a fórmula: escores = Q·Kᵀ / √d, pesos = softmax \
        por linha, saída = pesos·V.";
    pub const MASK_SHAPE: &str = "os pesos devem ter a forma dos escores, [n, n]: uma linha por \
        consulta, uma coluna por chave.";
    pub const MASK_NO_SOFTMAX: &str = "você devolveu os escores mascarados: falta o softmax por \
        linha depois da máscara (as posições com −∞ viram peso 0).";
    pub const MASK_DIAGONAL: &str = "você mascarou também a diagonal: a consulta i pode ver a \
        chave i (ela mesma) e todas antes dela, j ≤ i; só o futuro, j > i, é bloqueado. Com a \
        diagonal mascarada o primeiro token não vê nada (linha toda −∞ vira NaN).";
    pub const MASK_TRANSPOSED: &str =
        "a máscara está transposta: você bloqueou o passado e deixou \
        o futuro. A linha i (consulta) pode ver as colunas j ≤ i (chaves anteriores).";
    pub const MASK_AFTER_SOFTMAX: &str = "você zerou o futuro depois do softmax: as linhas não \
        somam mais 1. Aplique a máscara nos escores, antes do softmax, somando −∞ no futuro.";
    pub const MASK_NO_EFFECT: &str = "a máscara não teve efeito: os pesos são os da atenção sem \
        máscara. Somar 0 não bloqueia nada; some −∞ (f32::NEG_INFINITY) onde j > i.";
    pub const MASK_ZEROED_SCORES: &str = "você trocou os escores do futuro por 0, mas exp(0) = 1: \
        o futuro continua recebendo peso. Use −∞ (f32::NEG_INFINITY), que vira peso 0 no softmax.";
    pub const MASK_LEAK: &str = "sobrou peso no futuro (j > i): um número finito como −10 ou \
        −100 não basta quando os escores são grandes. Use f32::NEG_INFINITY.";
    pub const MASK_FORMULA: &str = "some −∞ aos escores onde j > i (0 onde j ≤ i) e aplique o \
        softmax em cada linha.";
    pub const NO_W_O: &str = "você concatenou as cabeças mas esqueceu de multiplicar por W_O.";
    pub const SUMMED_HEADS: &str = "as cabeças foram somadas; elas devem ser concatenadas lado a \
        lado (N × H·d) e então multiplicadas por W_O.";
    pub const W_O_TRANSPOSED: &str = "W_O foi transposto: ele já tem forma [H·d, D], então \
        concatenação [N, H·d] · W_O dá [N, D] sem .t().";
    pub const HEADS_REVERSED: &str = "as cabeças foram concatenadas em outra ordem: a cabeça 0 \
        ocupa as primeiras colunas, depois a 1, e assim por diante.";
    pub const MULTI_HEAD_CAUSAL: &str = "você usou máscara causal; neste exercício a atenção de \
        cada cabeça é a sua attention, sem máscara.";
    pub const MULTI_HEAD_FORMULA: &str = "para cada cabeça: atenção(X·W_Q, X·W_K, X·W_V); depois \
        concatene as saídas (dimensão 1) e multiplique por W_O.";
}

// ---- counting -------------------------------------------------------------------------------

/// The configs the counting checks try: the loaded model's, Llama 3.2 1B and 3B (shapes derived
/// from their published configs), and two made-up models, one with H·d ≠ D and 7 layers, one
/// without grouped KV heads (H·d = D) and with 12 layers, so that neither a hard-coded number nor a
/// formula that happens to hold for one model passes.
fn counting_configs(visible: &Config) -> Vec<Config> {
    let mut made_up = Config::llama_3_2_1b();
    made_up.name = "modelo inventado A".into();
    made_up.n_layers = 7;
    made_up.n_heads = 12;
    made_up.n_kv_heads = 4;
    made_up.d_head = 48;
    made_up.d_model = 640;
    made_up.d_mlp = 1024;
    made_up.d_vocab = 1000;
    let mut no_gqa = made_up.clone();
    no_gqa.name = "modelo inventado B".into();
    no_gqa.n_layers = 12;
    no_gqa.n_heads = 8;
    no_gqa.n_kv_heads = 8;
    no_gqa.d_head = 32;
    no_gqa.d_model = 256;
    vec![
        visible.clone(),
        Config::llama_3_2_1b(),
        Config::llama_3_2_3b(),
        made_up,
        no_gqa,
    ]
}

/// A typical wrong count: what it gives for a model (its shapes and config), and its hint.
pub(crate) type Miscount = (fn(&WeightShapes, &Config) -> usize, &'static str);

/// A check that `f` counts `truth` from the weight shapes of every model it is given. The
/// diagnosis looks at the answers for all models together: the first known mistake that gives
/// every one of them names the error; else the first that gives the first wrong one.
pub(crate) fn counting_check(
    exercise: &str,
    config: &Config,
    f: impl Fn(&WeightShapes, &Config) -> usize,
    truth: fn(&Config) -> usize,
    mistakes: &[Miscount],
    fallback: &'static str,
) -> Report {
    let configs = counting_configs(config);
    let n = configs.len();
    let case: Case<'_> = Box::new(|| {
        let models: Vec<(WeightShapes, &Config)> = configs
            .iter()
            .map(|c| (WeightShapes::from_config(c), c))
            .collect();
        let answers: Vec<usize> = models.iter().map(|(s, c)| f(s, c)).collect();
        let Some(i) = (0..n).find(|&i| answers[i] != truth(models[i].1)) else {
            return Outcome::Ok;
        };
        let (got, want, name) = (answers[i], truth(models[i].1), &models[i].1.name);
        let gives = |m: &Miscount, j: usize| m.0(&models[j].0, models[j].1) == answers[j];
        let constant = answers.iter().all(|&a| a == answers[0]);
        let hint = mistakes
            .iter()
            .find(|m| (0..n).all(|j| gives(m, j)))
            .map(|m| m.1)
            .or_else(|| (got == 0).then_some(hints::MISSING_TENSOR))
            .or_else(|| (constant && answers[0] == truth(models[0].1)).then_some(hints::HARD_CODED))
            .or_else(|| mistakes.iter().find(|m| gives(m, i)).map(|m| m.1))
            .unwrap_or(if constant {
                hints::HARD_CODED
            } else {
                fallback
            });
        Outcome::Wrong(format!(
            "para {name} sua resposta foi {got}, mas são {want}. {hint}"
        ))
    });
    let mut r = report(exercise, vec![case]);
    r.cases = n;
    r
}

/// Shortcuts for the mistakes' formulas.
fn q_rows(c: &Config) -> usize {
    c.n_heads.saturating_mul(c.d_head)
}
fn kv_rows(c: &Config) -> usize {
    c.n_kv_heads.saturating_mul(c.d_head)
}

/// The query-head count's typical mistakes.
const HEAD_MISTAKES: [Miscount; 6] = [
    (|_, c| c.d_model / c.d_head.max(1), hints::COLUMNS_NOT_ROWS),
    (
        |_, c| q_rows(c) / c.d_model.max(1),
        hints::DIVIDED_BY_D_MODEL,
    ),
    (|_, c| c.n_kv_heads, hints::KV_NOT_QUERY),
    (|_, c| q_rows(c), hints::NOT_DIVIDED),
    (|_, c| c.n_layers, hints::LAYERS_NOT_HEADS),
    (|_, c| c.d_head, hints::WIDTH_NOT_COUNT),
];

/// The KV-head count's typical mistakes.
const KV_MISTAKES: [Miscount; 7] = [
    (|_, c| c.n_heads, hints::QUERY_NOT_KV),
    (|_, c| c.d_model / c.d_head.max(1), hints::COLUMNS_NOT_ROWS),
    (
        |_, c| kv_rows(c) / c.d_model.max(1),
        hints::DIVIDED_BY_D_MODEL,
    ),
    (|_, c| c.n_heads / c.n_kv_heads.max(1), hints::GROUP_SIZE),
    (|_, c| kv_rows(c), hints::NOT_DIVIDED),
    (|_, c| c.n_layers, hints::LAYERS_NOT_HEADS),
    (|_, c| c.d_head, hints::WIDTH_NOT_COUNT),
];

/// Exercise: how many attention heads (query heads) per layer, from the weights' shapes:
/// `f(shapes, d_head)`, checked on the loaded model (`config`), Llama 3.2 1B and 3B and two
/// made-up models.
pub fn count_heads(config: &Config, f: impl Fn(&WeightShapes, usize) -> usize) -> Report {
    counting_check(
        "quantas cabeças",
        config,
        |s, c| f(s, c.d_head),
        |c| c.n_heads,
        &HEAD_MISTAKES,
        hints::COUNT_FORMULA,
    )
}

/// Exercise: how many key/value heads per layer, from the weights' shapes: `f(shapes, d_head)`.
pub fn count_kv_heads(config: &Config, f: impl Fn(&WeightShapes, usize) -> usize) -> Report {
    counting_check(
        "quantas cabeças KV",
        config,
        |s, c| f(s, c.d_head),
        |c| c.n_kv_heads,
        &KV_MISTAKES,
        hints::COUNT_FORMULA,
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
    let weighted = |s: Tensor| -> crate::Result<Tensor> {
        Ok(candle_nn::ops::softmax_last_dim(&s)?.matmul(&v)?)
    };
    let mut mistakes = vec![
        (unscaled, hints::UNSCALED),
        (wrong_axis, hints::SOFTMAX_AXIS),
        (weighted((&scores / d as f64)?)?, hints::DIVIDED_BY_D),
        (
            weighted((&scores * (d as f64).sqrt())?)?,
            hints::SCALE_MULTIPLIED,
        ),
        (
            (&scores / (d as f64).sqrt())?.matmul(&v)?,
            hints::NO_SOFTMAX,
        ),
    ];
    if dv != d {
        mistakes.push((
            weighted((&scores / (dv as f64).sqrt())?)?,
            hints::SCALE_BY_DV,
        ));
    }
    let hint = diagnose_tensor(&got, &mistakes, hints::ATTENTION_FORMULA);
    Ok(Outcome::Wrong(format!("com {shape}: {hint}")))
}

/// A case that could not even be set up is the check's fault, not the student's: say so.
pub(crate) fn internal(e: crate::Error) -> Outcome {
    Outcome::Wrong(format!(
        "erro interno da verificação ({e}); avise quem mantém o curso."
    ))
}

// ---- causal mask ----------------------------------------------------------------------------

/// Exercise: the causal mask. `f(scores)` gets the scores `Q·Kᵀ/√d` of a sequence (`[n, n]`)
/// and returns the attention weights where query `i` sees only keys `j ≤ i`: the mask added
/// before a softmax per row.
pub fn causal_mask(f: impl Fn(&Tensor) -> crate::Result<Tensor>) -> Report {
    let f = &f;
    // The last case has large scores, where a finite mask such as −100 still leaks.
    let cases = [
        (4usize, 3.0f64, 1u64),
        (6, 3.0, 2),
        (1, 1.0, 3),
        (8, 300.0, 4),
    ]
    .into_iter()
    .map(|(n, scale, seed)| -> Case<'_> {
        Box::new(move || causal_case(f, n, scale, seed).unwrap_or_else(internal))
    })
    .collect();
    report("máscara causal", cases)
}

/// Row-wise softmax over the keys `allowed(i, j)` lets through; a row with none is NaN, as
/// softmax over a row of −∞ is.
fn masked_softmax(s: &[Vec<f32>], allowed: impl Fn(usize, usize) -> bool) -> Vec<Vec<f32>> {
    s.iter()
        .enumerate()
        .map(|(i, row)| {
            let kept: Vec<f32> = row
                .iter()
                .enumerate()
                .map(|(j, &x)| if allowed(i, j) { x } else { f32::NEG_INFINITY })
                .collect();
            let max = kept.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = kept.iter().map(|x| (x - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.iter().map(|x| x / sum).collect()
        })
        .collect()
}

fn rows_close(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(x, y, TOL))
}

fn causal_case(
    f: &dyn Fn(&Tensor) -> crate::Result<Tensor>,
    n: usize,
    scale: f64,
    seed: u64,
) -> crate::Result<Outcome> {
    let scores = (scratch::random_matrix(n, n, seed + 40)? * scale)?;
    let shown = format!("escores [{n}, {n}]");
    let got = match f(&scores) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Outcome::Wrong(format!(
                "{shown}: sua função devolveu um erro: {e}. A máscara tem a forma dos escores."
            )))
        }
    };
    if got.dims() != [n, n] {
        return Ok(Outcome::Wrong(format!(
            "{shown}: a saída tem forma {:?}; {}",
            got.dims(),
            hints::MASK_SHAPE
        )));
    }
    let s = scores.to_vec2::<f32>()?;
    let g = got.to_vec2::<f32>()?;
    let want = masked_softmax(&s, |i, j| j <= i);
    if rows_close(&g, &want) {
        return Ok(Outcome::Ok);
    }
    let wrong = |hint: &str| Ok(Outcome::Wrong(format!("{shown}: {hint}")));
    // Returned the masked scores: finite where j ≤ i (the scores), huge negative beyond.
    let no_softmax = g.iter().zip(&s).enumerate().all(|(i, (gr, sr))| {
        gr.iter().zip(sr).enumerate().all(|(j, (&x, &y))| {
            if j <= i {
                (x - y).abs() <= TOL
            } else {
                x <= -1e4
            }
        })
    });
    if no_softmax {
        return wrong(hints::MASK_NO_SOFTMAX);
    }
    let strict = masked_softmax(&s, |i, j| j < i);
    if n > 1 && rows_close(&g[1..], &strict[1..]) {
        return wrong(hints::MASK_DIAGONAL);
    }
    if g.iter().flatten().any(|x| !x.is_finite()) {
        return wrong(NOT_FINITE);
    }
    let full = masked_softmax(&s, |_, _| true);
    let by_column = {
        let masked: Vec<f32> = keep_past(&s, f32::NEG_INFINITY).concat();
        let t = Tensor::from_vec(masked, (n, n), got.device())?;
        candle_nn::ops::softmax(&t, 0)?.to_vec2::<f32>()?
    };
    let after = keep_past(&full, 0.0);
    let zeroed = keep_past(&s, 0.0);
    let mistakes = [
        (masked_softmax(&s, |i, j| j >= i), hints::MASK_TRANSPOSED),
        (after, hints::MASK_AFTER_SOFTMAX),
        (full, hints::MASK_NO_EFFECT),
        (
            masked_softmax(&zeroed, |_, _| true),
            hints::MASK_ZEROED_SCORES,
        ),
        (by_column, hints::SOFTMAX_AXIS),
    ];
    if let Some((_, hint)) = mistakes.iter().find(|(m, _)| rows_close(&g, m)) {
        return wrong(hint);
    }
    let rows_sum_to_one = g
        .iter()
        .all(|r| (r.iter().sum::<f32>() - 1.0).abs() <= 1e-3);
    let future = g
        .iter()
        .enumerate()
        .any(|(i, r)| r[i + 1..].iter().any(|x| x.abs() > TOL));
    if rows_sum_to_one && future {
        return wrong(hints::MASK_LEAK);
    }
    wrong(hints::MASK_FORMULA)
}

/// `m` with `fill` where `j > i` (the future).
fn keep_past(m: &[Vec<f32>], fill: f32) -> Vec<Vec<f32>> {
    m.iter()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .enumerate()
                .map(|(j, &x)| if j <= i { x } else { fill })
                .collect()
        })
        .collect()
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
        // Summed heads are [N, d]: a shape of their own, diagnosed below.
        return Ok(Outcome::Wrong(format!(
            "a saída deve ter forma {:?} (N × D), mas tem {:?}. Concatene na dimensão 1.",
            want.dims(),
            got.dims()
        )));
    }
    let reversed: Vec<Tensor> = per_head.iter().rev().cloned().collect();
    let mut mistakes = vec![
        (concat.clone(), hints::NO_W_O),
        ((&summed / h as f64)?, hints::SUMMED_HEADS),
        (summed, hints::SUMMED_HEADS),
        (
            Tensor::cat(&reversed, 1)?.matmul(&w_o)?,
            hints::HEADS_REVERSED,
        ),
        (
            scratch::multi_head_attention(&x, &heads, &w_o, true)?,
            hints::MULTI_HEAD_CAUSAL,
        ),
    ];
    if h * d == d_model {
        mistakes.push((concat.matmul(&w_o.t()?)?, hints::W_O_TRANSPOSED));
    }
    let hint = diagnose_tensor(&got, &mistakes, hints::MULTI_HEAD_FORMULA);
    Ok(Outcome::Wrong(hint.to_string()))
}
