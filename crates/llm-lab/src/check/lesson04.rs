//! Lesson 04, choosing the next token: temperature and top-p.

use super::diagnose::{close, diagnose};
use super::runner::{report, Case, Outcome};
use super::Report;
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
