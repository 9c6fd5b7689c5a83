//! Lesson 05, autoregressive generation: the loop, and the loop with temperature.

use super::runner::{report, Case, Outcome};
use super::Report;
use crate::generate::{GenerateOptions, Generation, LanguageModel};
use crate::logits::{softmax, softmax_with_temperature};
use crate::scripted::ScriptedModel;

/// What a student is told, per mistake.
pub mod hints {
    pub const ONE_TOO_MANY: &str = "gerou um token a mais: pare quando tiver exatamente \
        max_new_tokens tokens novos.";
    pub const PAST_END: &str = "passou do token de fim de texto: pare assim que o modelo escolher \
        um deles (e não o inclua).";
    pub const NOT_APPENDED: &str = "todos os tokens são iguais: acrescente cada token escolhido à \
        sequência antes de pedir o próximo.";
    pub const PROMPT_RETURNED: &str = "devolva só os tokens novos, sem o prompt.";
    pub const ONE_TOO_FEW: &str =
        "parou um token cedo: o laço deve rodar até max_new_tokens tokens novos.";
    pub const LOOP_RULE: &str =
        "a cada passo: logits = model.next_token_logits(&tokens)?, escolha \
        o argmax, pare se for fim de texto, senão acrescente e repita.";
    pub const WHOLE_SEQUENCE: &str = "os tokens saíram certos, mas o modelo não viu a sequência \
        inteira a cada passo: passe o prompt e todos os tokens já gerados (o modelo só conhece o \
        que recebe).";
    pub const GREEDY_AT_ZERO: &str = "Temperatura 0 significa sempre o argmax.";
    pub const ZERO_IS_GREEDY: &str = "Trate T = 0 como guloso.";
    pub const SEED: &str = "crie o amostrador com a semente recebida (SamplerConfig { seed, .. }).";
    pub const ARGMAX: &str = "sempre o mesmo token: você está usando o argmax; sorteie de \
        softmax(z / T).";
    pub const MULTIPLIED: &str = "você multiplicou pela temperatura; divida os logits por T.";
    pub const NO_EFFECT: &str =
        "a temperatura não teve efeito: divida os logits por T antes de sortear.";
    pub const SAMPLE_RULE: &str = "sorteie o próximo token de softmax(logits / T).";
}

/// A scripted model whose greedy continuation after token `t` is `(t + 1) % n`.
fn counting(n: usize, stop: Vec<u32>) -> ScriptedModel {
    let mut m = ScriptedModel::counting(n, move |t| (t + 1) % n as u32);
    m.stop_tokens = stop;
    m
}

/// Exercise 1: the autoregressive loop, greedy, stopping at the token budget or at an end token.
/// `f(model, prompt, max_new_tokens)` returns only the generated tokens.
pub fn generation_loop(
    f: impl Fn(&dyn LanguageModel, &[u32], usize) -> crate::Result<Vec<u32>>,
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
        .map(|(n, stop, prompt, budget)| -> Case<'_> {
            Box::new(move || loop_case(f, n, stop, &prompt, budget))
        })
        .collect();
    report("laço autorregressivo", cases)
}

/// The student's loop: `f(model, prompt, max_new_tokens)`.
type LoopFn<'a> = &'a dyn Fn(&dyn LanguageModel, &[u32], usize) -> crate::Result<Vec<u32>>;

fn loop_case(f: LoopFn<'_>, n: usize, stop: Vec<u32>, prompt: &[u32], budget: usize) -> Outcome {
    let reference = counting(n, stop.clone());
    let want = Generation::new(&reference, prompt, GenerateOptions::greedy(budget))
        .and_then(|g| g.finish())
        .map(|g| g.tokens());
    let Ok(want) = want else {
        return Outcome::Wrong("erro interno da verificação; avise quem mantém o curso.".into());
    };
    let model = counting(n, stop.clone());
    let got = match f(&model, prompt, budget) {
        Ok(t) => t,
        Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
    };
    if got == want {
        // Right tokens; were they computed the lecture's way, from the whole sequence?
        if *model.calls.borrow() == *reference.calls.borrow() {
            return Outcome::Ok;
        }
        let shown = format!(
            "prompt {prompt:?}: o modelo devia ver {:?}, viu {:?}.",
            reference.calls.borrow(),
            model.calls.borrow()
        );
        return Outcome::Wrong(format!("{shown} {}", hints::WHOLE_SEQUENCE));
    }
    let shown = format!(
        "prompt {prompt:?}, limite {budget}, fim de texto {stop:?}: esperado {want:?}, obtido {got:?}."
    );
    let hint = if got.len() == budget + 1 && got.starts_with(&want) {
        hints::ONE_TOO_MANY
    } else if got.len() > want.len() && got.iter().any(|t| stop.contains(t)) {
        hints::PAST_END
    } else if !got.is_empty() && got.iter().all(|&t| t == got[0]) && want.len() > 1 {
        hints::NOT_APPENDED
    } else if got.starts_with(prompt) && got.len() > prompt.len() {
        hints::PROMPT_RETURNED
    } else if got.len() + 1 == want.len() && want.starts_with(&got) {
        hints::ONE_TOO_FEW
    } else {
        hints::LOOP_RULE
    };
    Outcome::Wrong(format!("{shown} {hint}"))
}

/// The student's sampling loop: `f(model, prompt, max_new_tokens, temperature, seed)`.
type SamplingLoop<'a> =
    &'a dyn Fn(&dyn LanguageModel, &[u32], usize, f32, u64) -> crate::Result<Vec<u32>>;

/// Exercise 2: the loop with temperature sampling. `f(model, prompt, max_new_tokens, temperature,
/// seed)`. T = 0 must be greedy, frequencies must follow softmax(z / T), a seed must reproduce.
pub fn temperature_loop(
    f: impl Fn(&dyn LanguageModel, &[u32], usize, f32, u64) -> crate::Result<Vec<u32>>,
) -> Report {
    let f: SamplingLoop<'_> = &f;
    let cases: Vec<Case<'_>> = vec![
        Box::new(move || greedy_case(f)),
        Box::new(move || seed_case(f)),
        Box::new(move || frequencies_case(f)),
    ];
    report("temperaturas no laço", cases)
}

/// The logits of the sampling cases: four tokens, the same after any sequence.
const Z: [f32; 4] = [2.0, 1.0, 0.0, -1.0];

fn fixed_model() -> ScriptedModel {
    ScriptedModel::new(&["a", "b", "c", "d"], |_| Z.to_vec())
}

fn greedy_case(f: SamplingLoop<'_>) -> Outcome {
    let greedy = counting(20, vec![]);
    match f(&greedy, &[2], 6, 0.0, 1) {
        Ok(t) if t == [3, 4, 5, 6, 7, 8] => Outcome::Ok,
        Ok(t) => Outcome::Wrong(format!(
            "com T = 0 o resultado deve ser o guloso [3, 4, 5, 6, 7, 8], obtido {t:?}. {}",
            hints::GREEDY_AT_ZERO
        )),
        Err(e) => Outcome::Wrong(format!(
            "com T = 0 sua função devolveu um erro: {e}. {}",
            hints::ZERO_IS_GREEDY
        )),
    }
}

fn seed_case(f: SamplingLoop<'_>) -> Outcome {
    let model = fixed_model();
    match (f(&model, &[0], 8, 1.0, 42), f(&model, &[0], 8, 1.0, 42)) {
        (Ok(a), Ok(b)) if a == b && a.len() == 8 => Outcome::Ok,
        (Ok(a), Ok(b)) if a.len() != 8 => {
            Outcome::Wrong(format!("pedi 8 tokens e recebi {} ({b:?}).", a.len()))
        }
        (Ok(a), Ok(b)) => Outcome::Wrong(format!(
            "a mesma semente deu {a:?} e {b:?}: {}",
            hints::SEED
        )),
        (Err(e), _) | (_, Err(e)) => Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
    }
}

/// Pearson's χ² of observed counts against probabilities.
fn chi_square(obs: &[f64], p: &[f32]) -> f64 {
    let n: f64 = obs.iter().sum();
    obs.iter()
        .zip(p)
        .map(|(&o, &p)| (o - n * p as f64).powi(2) / (n * p as f64).max(1e-9))
        .sum()
}

/// χ² with 3 degrees of freedom at p = 0.001.
const CHI2_LIMIT: f64 = 16.3;

fn frequencies_case(f: SamplingLoop<'_>) -> Outcome {
    let model = fixed_model();
    for t in [0.5f32, 2.0] {
        let mut obs = vec![0f64; 4];
        for seed in 0..1500u64 {
            match f(&model, &[0], 1, t, seed) {
                Ok(out) => {
                    if let Some(&tok) = out.first() {
                        obs[tok as usize % 4] += 1.0;
                    }
                }
                Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
            }
        }
        let want = softmax_with_temperature(&Z, t).unwrap_or_default();
        if chi_square(&obs, &want) < CHI2_LIMIT {
            continue;
        }
        let expected: Vec<f32> = want.iter().map(|p| (p * 1500.0).round()).collect();
        let shown = format!(
            "com T = {t}, 1500 sementes deram as frequências {obs:?}; esperado ≈ {expected:?}."
        );
        let multiplied = softmax(&Z.iter().map(|x| x * t).collect::<Vec<_>>());
        let hint = if obs.iter().filter(|&&c| c > 0.0).count() == 1 {
            hints::ARGMAX
        } else if chi_square(&obs, &multiplied) < CHI2_LIMIT {
            hints::MULTIPLIED
        } else if chi_square(&obs, &softmax(&Z)) < CHI2_LIMIT {
            hints::NO_EFFECT
        } else {
            hints::SAMPLE_RULE
        };
        return Outcome::Wrong(format!("{shown} {hint}"));
    }
    Outcome::Ok
}
