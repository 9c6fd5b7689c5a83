//! Lesson 04: the next-token loss of self-supervised training; choosing the next token
//! (temperature and top-p).

use candle_core::{Device, Tensor};

use super::diagnose::{close, diagnose};
use super::runner::{report, Case, Outcome};
use super::Report;
use crate::error::Result;
use crate::logits::{softmax, softmax_with_temperature};

/// What a student is told, per mistake.
pub mod hints {
    pub const ONE_PER_LOGIT: &str = "devolva uma probabilidade por logit.";
    pub const OVERFLOW: &str = "apareceu NaN ou infinito: exp(1000) estoura o f32. Subtraia o \
        maior logit antes da exponencial (o resultado não muda).";
    pub const PROBS_DIVIDED: &str = "você dividiu as probabilidades por T; a temperatura divide \
        os logits, antes do softmax: exp(z_i / T) / Σ_j exp(z_j / T).";
    pub const PROBS_POWER: &str = "você elevou as probabilidades a T (e elas não somam 1): a \
        temperatura divide os logits, antes do softmax: exp(z_i / T) / Σ_j exp(z_j / T).";
    pub const POWER_NOT_RENORMALISED: &str = "p_i^(1/T) tem a forma certa, mas falta \
        renormalizar: divida pela soma — ou, mais simples, calcule softmax(z / T).";
    pub const NOT_NORMALISED: &str =
        "as probabilidades não somam 1: divida cada exponencial pela soma de todas.";
    pub const MULTIPLIED: &str =
        "você multiplicou pela temperatura; a fórmula divide: exp(z_i / T).";
    pub const NO_EFFECT: &str =
        "a temperatura não teve efeito: divida cada logit por T antes do softmax.";
    pub const TEMPERATURE_FORMULA: &str =
        "compare com a fórmula p_i = exp(z_i / T) / Σ_j exp(z_j / T).";
    pub const INDICES: &str = "devolva índices de tokens (posições no vetor).";
    pub const MISSING_CROSSING: &str = "faltou o token que faz a soma passar de p: o conjunto \
        precisa somar *pelo menos* p, então inclua o token que cruza a linha.";
    pub const NOT_SORTED: &str =
        "o tamanho está certo, mas não os tokens: ordene do mais provável \
        para o menos provável antes de acumular.";
    pub const THRESHOLD: &str =
        "top-p não filtra tokens com probabilidade ≥ p: ele acumula os mais \
        prováveis até a soma chegar a p.";
    pub const TOO_MANY: &str = "há tokens demais: pare assim que a soma acumulada chegar a p (o \
        *menor* conjunto).";
    pub const TOP_P_RULE: &str =
        "ordene por probabilidade decrescente e acumule até a soma chegar a p.";

    // The loss hints start with a capital: the report puts them after a full sentence.
    pub const LOSS_NO_SHIFT: &str = "Você comparou a linha i com o token i. Essa linha foi \
        calculada lendo os tokens até i e prevê o seguinte: compare-a com o token da posição \
        seguinte, não com o que ela acabou de ler.";
    pub const LOSS_NOT_FINITE: &str = "Apareceu NaN ou infinito: exp de logits grandes estoura o \
        f32, e uma probabilidade minúscula vira 0 (log 0 = −∞). Calcule o log direto, \
        log softmax(z)_t = z_t − log Σ_j exp(z_j), depois de subtrair de z o maior logit da \
        linha (nada muda).";
    pub const LOSS_SUM: &str = "Esse valor é a soma das perdas de todas as posições; a perda do \
        texto é a média, que não cresce com o comprimento.";
    pub const LOSS_LAST_POSITION: &str = "Conte quantas perdas você somou: a última linha dos \
        logits não tem próximo token no texto, então ela não entra nem na soma nem na contagem \
        da média.";
    pub const LOSS_WRONG_AXIS: &str = "O softmax foi feito na dimensão errada: cada linha (uma \
        posição) deve virar uma distribuição sobre o vocabulário. Normalize dentro de cada \
        linha (a última dimensão), não entre posições.";
    pub const LOSS_PROBABILITY: &str = "Você usou a probabilidade do próximo token (ou 1 − p) \
        como perda; a perda é o logaritmo dessa probabilidade, com o sinal que a deixa positiva.";
    pub const LOSS_SIGN: &str = "O sinal está trocado: log p ≤ 0 (pois p ≤ 1), e a perda mede o \
        erro, então não pode ser negativa.";
    pub const LOSS_LOG_BASE: &str = "A base do logaritmo está errada (2 ou 10?): use o \
        logaritmo natural (ln, base e), o inverso da exp usada no softmax.";
    pub const LOSS_FORMULA: &str = "Releia a definição: para cada posição que tem um próximo \
        token, calcule −log da probabilidade que o modelo deu a esse token; a perda é a média \
        desses valores.";
}

/// Exercise: the next-token loss (cross-entropy) of logits `[seq, V]` computed on `tokens`
/// (`seq` ids): the mean over positions `i < seq − 1` of `−log softmax(z_i)[tokens[i + 1]]`.
/// Any way of computing it passes (f64 or f32, candle's log-softmax or a loop); the known
/// mistakes get their own hint.
///
/// ```
/// use llm_lab::prelude::*;
/// let report = check::next_token_loss(|logits: &Tensor, tokens: &[u32]| {
///     let z = logits.to_vec2::<f32>()?;
///     let mut total = 0.0;
///     for (row, &next) in z.iter().zip(&tokens[1..]) {
///         let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
///         let log_sum = row.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
///         total += log_sum - row[next as usize];
///     }
///     Ok(total / (tokens.len() - 1) as f32)
/// });
/// assert!(report.passed(), "{report}");
/// ```
pub fn next_token_loss(f: impl Fn(&Tensor, &[u32]) -> Result<f32>) -> Report {
    let f = &f;
    let cases = loss_cases()
        .into_iter()
        .map(|(z, tokens)| -> Case<'_> { Box::new(move || loss_case(f, &z, &tokens)) })
        .collect();
    report("perda do próximo token", cases)
}

/// Logits and the tokens they were computed on: a small vocabulary, then logits near 1000 (exp
/// overflows), then a target 150 below the best logit (its probability is 0 in f32), then more
/// positions than vocabulary entries (so the two axes differ).
fn loss_cases() -> Vec<(Vec<Vec<f32>>, Vec<u32>)> {
    let mut rng = crate::rng::Rng::new(2024);
    let mut random = |seq: usize, vocab: usize, scale: f32, shift: f32| -> Vec<Vec<f32>> {
        (0..seq)
            .map(|_| {
                (0..vocab)
                    .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale + shift)
                    .collect()
            })
            .collect()
    };
    let small = random(4, 6, 2.0, 0.0);
    let large = random(3, 5, 3.0, 1000.0);
    let mut spread = random(3, 4, 1.0, 0.0);
    spread[1][2] = -150.0; // position 1 predicts token 2: probability e^-150, 0 in f32
    let long = random(9, 4, 1.5, 0.0);
    vec![
        (small, vec![0, 3, 1, 5]),
        (large, vec![2, 4, 0]),
        (spread, vec![1, 1, 2]),
        (long, vec![3, 0, 1, 1, 2, 0, 3, 2, 1]),
    ]
}

/// `−log softmax(row)[t]`, stable, in f64.
fn nll(row: &[f32], t: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_sum = row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    log_sum - row[t] as f64
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn loss_case(
    f: &dyn Fn(&Tensor, &[u32]) -> Result<f32>,
    z: &[Vec<f32>],
    tokens: &[u32],
) -> Outcome {
    let (seq, vocab) = (z.len(), z[0].len());
    let flat: Vec<f32> = z.iter().flatten().copied().collect();
    let logits = match Tensor::from_vec(flat, (seq, vocab), &Device::Cpu) {
        Ok(t) => t,
        Err(e) => return Outcome::Wrong(format!("erro interno do teste: {e}")),
    };
    let got = match f(&logits, tokens) {
        Ok(x) => x as f64,
        Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
    };
    let t = |i: usize| tokens[i] as usize;
    let losses: Vec<f64> = (0..seq - 1).map(|i| nll(&z[i], t(i + 1))).collect();
    let want = mean(&losses);
    let same = |a: &f64, b: &f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
    if same(&got, &want) {
        return Outcome::Ok;
    }
    let shown = format!("{seq} posições, vocabulário de {vocab} tokens: obtido {got:.4}.");
    if !got.is_finite() {
        return Outcome::Wrong(format!("{shown} {}", hints::LOSS_NOT_FINITE));
    }
    let prob = |i: usize| (-nll(&z[i], t(i + 1))).exp();
    let probs: Vec<f64> = (0..seq - 1).map(prob).collect();
    // Softmax over the positions (axis 0) instead of the vocabulary.
    let column: Vec<f64> = (0..seq - 1)
        .map(|i| {
            let col: Vec<f32> = z.iter().map(|row| row[t(i + 1)]).collect();
            nll(&col, i)
        })
        .collect();
    let mistakes = [
        (
            mean(&(0..seq - 1).map(|i| nll(&z[i], t(i))).collect::<Vec<_>>()),
            hints::LOSS_NO_SHIFT,
        ),
        (
            mean(&(0..seq).map(|i| nll(&z[i], t(i))).collect::<Vec<_>>()),
            hints::LOSS_NO_SHIFT,
        ),
        (losses.iter().sum::<f64>(), hints::LOSS_SUM),
        (
            losses.iter().sum::<f64>() / seq as f64,
            hints::LOSS_LAST_POSITION,
        ),
        (mean(&column), hints::LOSS_WRONG_AXIS),
        (mean(&probs), hints::LOSS_PROBABILITY),
        (-mean(&probs), hints::LOSS_PROBABILITY),
        (
            mean(&probs.iter().map(|p| 1.0 - p).collect::<Vec<_>>()),
            hints::LOSS_PROBABILITY,
        ),
        (-want, hints::LOSS_SIGN),
        (want / std::f64::consts::LN_2, hints::LOSS_LOG_BASE),
        (want / std::f64::consts::LN_10, hints::LOSS_LOG_BASE),
    ];
    let hint = diagnose(&got, same, &mistakes, hints::LOSS_FORMULA);
    Outcome::Wrong(format!("{shown} {hint}"))
}

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
        .map(|(z, t)| -> Case<'_> { Box::new(move || temperature_case(f, &z, t)) })
        .collect();
    report("temperatura", cases)
}

fn temperature_case(f: &dyn Fn(&[f32], f32) -> Vec<f32>, z: &[f32], t: f32) -> Outcome {
    let got = f(z, t);
    let want = softmax_with_temperature(z, t).unwrap_or_default();
    if close(&got, &want, 1e-4) {
        return Outcome::Ok;
    }
    let shown = format!("logits {z:?}, T = {t}: esperado {want:.3?}, obtido {got:.3?}.");
    let hint = if got.len() != z.len() {
        hints::ONE_PER_LOGIT
    } else if got.iter().any(|x| !x.is_finite()) {
        hints::OVERFLOW
    } else {
        let scaled = |k: f32| softmax(&z.iter().map(|x| x * k).collect::<Vec<_>>());
        let mut mistakes = vec![(
            softmax(z).iter().map(|p| p / t).collect(),
            hints::PROBS_DIVIDED,
        )];
        if t != 1.0 {
            let p = softmax(z);
            mistakes.push((scaled(t), hints::MULTIPLIED));
            mistakes.push((p.clone(), hints::NO_EFFECT));
            mistakes.push((p.iter().map(|x| x.powf(t)).collect(), hints::PROBS_POWER));
            mistakes.push((
                p.iter().map(|x| x.powf(1.0 / t)).collect(),
                hints::POWER_NOT_RENORMALISED,
            ));
        }
        let same = |a: &Vec<f32>, b: &Vec<f32>| close(a, b, 1e-4);
        let fallback = if (got.iter().sum::<f32>() - 1.0).abs() > 1e-3 {
            hints::NOT_NORMALISED
        } else {
            hints::TEMPERATURE_FORMULA
        };
        diagnose(&got, same, &mistakes, fallback)
    };
    Outcome::Wrong(format!("{shown} {hint}"))
}

/// Exercise: the tokens kept by top-p — the smallest set of most likely tokens whose probability
/// adds up to at least p. `f(probabilities, p)` returns their ids, in any order; on ties, any of
/// the equally likely tokens is right.
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
        .map(|(probs, p)| -> Case<'_> { Box::new(move || top_p_case(f, &probs, p)) })
        .collect();
    report("top-p", cases)
}

/// The probabilities of a set of tokens, largest first: two sets that differ only by tokens of
/// equal probability look the same.
fn sorted_probs(probs: &[f32], ids: &[usize]) -> Vec<f32> {
    let mut v: Vec<f32> = ids.iter().filter_map(|&i| probs.get(i).copied()).collect();
    v.sort_by(|a, b| b.total_cmp(a));
    v
}

fn top_p_case(f: &dyn Fn(&[f32], f32) -> Vec<usize>, probs: &[f32], p: f32) -> Outcome {
    let mut got = f(probs, p);
    got.sort();
    got.dedup();
    let want = crate::sampling::top_p_set(probs, p);
    let in_range = got.iter().all(|&i| i < probs.len());
    if in_range && sorted_probs(probs, &got) == sorted_probs(probs, &want) {
        return Outcome::Ok;
    }
    let shown = format!("probabilidades {probs:?}, p = {p}: esperado {want:?}, obtido {got:?}.");
    let kept: f32 = got.iter().filter_map(|&i| probs.get(i)).sum();
    let hint = if !in_range {
        hints::INDICES
    } else if kept < p - 1e-6 && got.len() + 1 == want.len() {
        hints::MISSING_CROSSING
    } else if got.len() == want.len() {
        hints::NOT_SORTED
    } else if got.iter().all(|&i| probs[i] >= p) {
        hints::THRESHOLD
    } else if kept >= p && got.len() > want.len() {
        hints::TOO_MANY
    } else {
        hints::TOP_P_RULE
    };
    Outcome::Wrong(format!("{shown} {hint}"))
}
