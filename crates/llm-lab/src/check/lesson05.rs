//! Lesson 05, autoregressive generation. Exercise 1: the loop with its window L, budget and stop
//! tokens, checked on the exact sequence the model is shown at every step. Exercise 2: sampling by
//! hand — an inverse-CDF draw, top-p on top of it, and the loop with temperature, checked on the
//! frequencies of every step.
//!
//! The checks compare behaviour, never code: a student who calls the library's `Sampler` or
//! `softmax_with_temperature` passes too. The exercise notebooks ask for the student's own
//! functions, and that is the only place where it can be asked.

use super::runner::{guarded, report, Case, Outcome};
use super::Report;
use crate::generate::{GenerateOptions, Generation, LanguageModel};
use crate::logits::{softmax, softmax_with_temperature};
use crate::sampling::{draw_from, top_p_set};
use crate::scripted::ScriptedModel;

/// What a student is told, per mistake.
pub mod hints {
    // Exercise 1: the loop.
    pub const ONE_TOO_MANY: &str = "gerou um token a mais: pare quando tiver exatamente \
        max_new_tokens tokens novos.";
    pub const PAST_END: &str = "passou do token de fim de texto: pare assim que o modelo escolher \
        um deles (e não o inclua).";
    pub const INCLUDES_STOP: &str =
        "parou no lugar certo, mas incluiu o token de fim de texto: ele \
        marca o fim, não é texto; pare sem acrescentá-lo.";
    pub const ONLY_FIRST_STOP: &str =
        "passou por um token de fim de texto que não era o primeiro da \
        lista: pare em qualquer um deles (stop.contains(&next)).";
    pub const IGNORES_BUDGET: &str =
        "o laço não parou no limite de tokens: conte os tokens novos e \
        pare quando chegar a max_new_tokens (com max_new_tokens = 0, nenhum).";
    pub const NOT_APPENDED: &str = "o modelo viu a mesma sequência duas vezes: acrescente cada \
        token escolhido à sequência antes de pedir o próximo.";
    pub const PROMPT_RETURNED: &str = "devolva só os tokens novos, sem o prompt.";
    pub const ONE_TOO_FEW: &str =
        "parou um token cedo: o laço deve rodar até max_new_tokens tokens novos.";
    pub const LOOP_RULE: &str = "a cada passo: logits = model.next_token_logits(janela)?, escolha \
        o argmax, pare se for fim de texto, senão acrescente e repita.";
    pub const WHOLE_SEQUENCE: &str = "os tokens saíram certos, mas o modelo não viu a sequência \
        inteira a cada passo: passe o prompt e todos os tokens já gerados (o modelo só conhece o \
        que recebe).";
    pub const LAST_ONLY: &str =
        "você passou ao modelo só o último token: ele precisa da sequência \
        inteira (até L tokens) para prever o próximo — o prompt e tudo o que já foi gerado.";
    pub const FORGOT_PROMPT: &str = "o modelo não viu o prompt: a sequência começa com os tokens \
        do prompt e cresce com os tokens gerados.";
    pub const FIRST_L: &str = "você guardou os *primeiros* L tokens; a janela desliza: o modelo \
        vê os *últimos* L (tokens[tokens.len() - L..]).";
    pub const WINDOW_OFF_BY_ONE: &str =
        "a janela tem um token a mais ou a menos: o modelo deve ver \
        exatamente os últimos L tokens (ou todos, enquanto houver menos de L).";
    pub const IGNORES_WINDOW: &str =
        "a sequência passou de L tokens e o modelo viu todos: passe só \
        os últimos L.";
    pub const WINDOW_UNDERFLOW: &str = "pânico ao cortar a janela enquanto a sequência ainda tem \
        menos de L tokens: comece em tokens.len().saturating_sub(L), que dá 0 nesse caso.";

    // Exercise 2: sampling by hand.
    pub const NOT_CUMULATIVE: &str = "você comparou u com a probabilidade de cada token; compare \
        com a soma *acumulada* p_0 + … + p_i.";
    pub const LESS_OR_EQUAL: &str = "escolheu um token de probabilidade 0 (ou o vizinho numa \
        fronteira): o token i é o primeiro com u < soma acumulada, estritamente menor.";
    pub const ONE_PAST: &str = "devolveu o token seguinte ao certo: devolva o índice do token em \
        que a soma acumulada passa de u, não o próximo.";
    pub const IGNORES_U: &str = "a resposta não depende de u: o sorteio é u, e o token é onde a \
        soma acumulada passa de u.";
    pub const SORTED_WALK: &str = "você ordenou os tokens antes de acumular: a distribuição é a \
        mesma, mas o exercício pede a ordem dos índices (0, 1, 2, …) para que a mesma semente dê o \
        mesmo token que a verificação.";
    pub const ROUNDING: &str =
        "a soma das probabilidades em f32 pode ficar um pouco abaixo de 1 e \
        u acima dela: nesse caso devolva o último token de probabilidade maior que 0 (nunca um \
        índice fora do vetor).";
    pub const ZERO_PROBABILITY: &str = "escolheu um token de probabilidade 0: ele nunca pode sair.";
    pub const DRAW_RULE: &str = "acumule p_0, p_0 + p_1, … na ordem dos índices e devolva o \
        primeiro i em que u < soma.";
    pub const NOT_RENORMALISED: &str =
        "depois do corte top-p, as probabilidades que ficaram somam \
        menos que 1: divida cada uma pela soma delas antes de sortear.";
    pub const IGNORES_TOP_P: &str =
        "sorteou entre todos os tokens: primeiro fique só com o núcleo \
        top-p (o menor conjunto dos mais prováveis que soma pelo menos p).";
    pub const TOP_P_SAMPLE_RULE: &str = "núcleo top-p → renormalize → sorteio por inversão da \
        acumulada, na ordem dos índices, só entre os tokens do núcleo.";
    pub const GREEDY_AT_ZERO: &str = "Temperatura 0 significa sempre o argmax.";
    pub const ZERO_IS_GREEDY: &str = "Trate T = 0 como guloso.";
    pub const SEED: &str = "a mesma semente deve dar a mesma sequência: crie o gerador com a \
        semente recebida (Rng::new(seed)).";
    pub const ARGMAX: &str = "sempre o mesmo token: você está usando o argmax; sorteie de \
        softmax(z / T).";
    pub const MULTIPLIED: &str = "você multiplicou pela temperatura; divida os logits por T.";
    pub const NO_EFFECT: &str =
        "a temperatura não teve efeito: divida os logits por T antes de sortear.";
    pub const PROBS_DIVIDED: &str =
        "você dividiu as probabilidades por T (e elas não somam mais 1): \
        a temperatura divide os *logits*, antes do softmax.";
    pub const PROBS_POWER: &str = "você elevou as probabilidades a T sem renormalizar: a \
        temperatura divide os logits antes do softmax, softmax(z / T).";
    pub const OUT_OF_VOCABULARY: &str = "saiu um token fora do vocabulário: a soma acumulada não \
        chegou a u — as probabilidades que você sorteia somam 1?";
    pub const SAMPLE_RULE: &str = "sorteie o próximo token de softmax(logits / T).";
    pub const STEP_FREQUENCIES: &str = "o primeiro passo pode estar certo, mas este não: a cada \
        passo sorteie de softmax(z / T) com um novo u do mesmo gerador.";
    pub const SEED_IGNORED: &str = "sementes diferentes deram exatamente a mesma sequência: a \
        semente recebida não foi usada. Crie o gerador com ela (Rng::new(seed)).";
    pub const NEW_SAMPLER_EACH_STEP: &str = "em cada geração todos os tokens saíram iguais: você \
        cria um amostrador novo (com a mesma semente) a cada passo, então todo passo tira o mesmo \
        número aleatório. Crie o gerador uma vez, antes do laço, e use-o em todos os passos.";
    pub const NEGATIVE_T: &str = "T < 0 fez sua função entrar em pânico: devolva um erro \
        (Err(Error::InvalidParameter(...))) em vez disso.";
    pub const NAN_LOGITS: &str = "o modelo devolveu um erro (logits NaN) e sua função entrou em \
        pânico: repasse o erro com `?`.";
}

/// A scripted model whose greedy continuation after token `t` is `(t + 1) % n`.
fn counting(n: usize, stop: &[u32]) -> ScriptedModel {
    let mut m = ScriptedModel::counting(n, move |t| (t + 1) % n as u32);
    m.stop_tokens = stop.to_vec();
    m
}

/// The student's loop of exercise 1: `f(model, prompt, max_new_tokens, stop_tokens, window)`.
type WindowLoop<'a> =
    &'a dyn Fn(&dyn LanguageModel, &[u32], usize, &[u32], usize) -> crate::Result<Vec<u32>>;

/// One case of the loop: a counting model over `n` tokens.
#[derive(Clone)]
struct LoopCase {
    n: usize,
    stop: Vec<u32>,
    prompt: Vec<u32>,
    budget: usize,
    /// None: the whole sequence (the model's context is never reached).
    window: Option<usize>,
}

fn case(n: usize, stop: &[u32], prompt: &[u32], budget: usize, window: Option<usize>) -> LoopCase {
    LoopCase {
        n,
        stop: stop.to_vec(),
        prompt: prompt.to_vec(),
        budget,
        window,
    }
}

/// Exercise 1 of the first edition: the loop without a window, stop tokens from the model.
/// `f(model, prompt, max_new_tokens)` returns only the generated tokens.
pub fn generation_loop(
    f: impl Fn(&dyn LanguageModel, &[u32], usize) -> crate::Result<Vec<u32>>,
) -> Report {
    let f = &f;
    let adapted = move |m: &dyn LanguageModel, p: &[u32], n: usize, _: &[u32], _: usize| f(m, p, n);
    let cases = vec![
        case(50, &[], &[3], 5, None),
        case(50, &[8], &[3, 4], 20, None),
        case(10, &[7], &[1], 3, None),
        case(50, &[], &[0], 0, None),
        case(6, &[5, 2], &[0], 10, None),
    ];
    run_loop_cases("laço autorregressivo", &adapted, cases)
}

/// Exercise 1: the lecture's loop with its window L. `f(model, prompt, max_new_tokens,
/// stop_tokens, window)` generates greedily, feeding the model at most the last `window` tokens
/// at every step, and stops after `max_new_tokens` new tokens or when it picks one of
/// `stop_tokens` (which it does not return). It returns only the new tokens.
///
/// The check runs it on scripted models and compares both the tokens and the exact sequence the
/// model was shown at every step; one extra call after the last token is tolerated.
///
/// ```
/// use llm_lab::check;
/// use llm_lab::generate::LanguageModel;
/// let right = |m: &dyn LanguageModel, prompt: &[u32], n: usize, stop: &[u32], l: usize|
///  -> llm_lab::Result<Vec<u32>> {
///     let mut tokens = prompt.to_vec();
///     let mut new = vec![];
///     while new.len() < n {
///         let start = tokens.len().saturating_sub(l);
///         let next = m.next_token_logits(&tokens[start..])?.argmax();
///         if stop.contains(&next) {
///             break;
///         }
///         tokens.push(next);
///         new.push(next);
///     }
///     Ok(new)
/// };
/// assert!(check::window_loop(right).passed());
/// ```
pub fn window_loop(
    f: impl Fn(&dyn LanguageModel, &[u32], usize, &[u32], usize) -> crate::Result<Vec<u32>>,
) -> Report {
    let cases = vec![
        case(50, &[], &[3, 4, 5], 5, Some(64)),
        // The window is exceeded from the first step, and again as tokens are added.
        case(50, &[], &[1, 2, 3, 4], 6, Some(3)),
        // The sequence grows past L mid-way: L − 1 and L + 1 show here.
        case(50, &[], &[1, 2], 6, Some(4)),
        // Several stop tokens; the first one reached is not the first of the list.
        case(50, &[12, 9], &[5], 20, Some(64)),
        // A stop token as the very first output.
        case(10, &[4], &[3], 5, Some(64)),
        // Budget 0.
        case(50, &[], &[7], 0, Some(64)),
        // Stop and window together.
        case(6, &[5, 2], &[0, 4, 5, 0], 10, Some(2)),
    ];
    run_loop_cases("laço com janela L", &f, cases)
}

fn run_loop_cases(exercise: &str, f: WindowLoop<'_>, cases: Vec<LoopCase>) -> Report {
    let cases = cases
        .into_iter()
        .map(|c| -> Case<'_> { Box::new(move || loop_case(f, &c)) })
        .collect();
    report(exercise, cases)
}

/// The reference run, with the case's stop tokens, budget and window replaced: generated tokens
/// and the sequences the model saw.
fn reference_run(
    c: &LoopCase,
    stop: &[u32],
    budget: usize,
    window: Option<usize>,
) -> Option<(Vec<u32>, Vec<Vec<u32>>)> {
    let model = counting(c.n, stop);
    let options = GenerateOptions {
        context_window: window,
        ..GenerateOptions::greedy(budget)
    };
    let tokens = Generation::new(&model, &c.prompt, options)
        .and_then(|g| g.finish())
        .ok()?
        .tokens();
    let calls = model.calls.borrow().clone();
    Some((tokens, calls))
}

fn loop_case(f: WindowLoop<'_>, c: &LoopCase) -> Outcome {
    let Some((want, want_calls)) = reference_run(c, &c.stop, c.budget, c.window) else {
        return Outcome::Wrong("erro interno da verificação; avise quem mantém o curso.".into());
    };
    let window = c.window.unwrap_or(1024);
    let mut model = counting(c.n, &c.stop);
    let cap = c.budget + 8;
    model.max_calls = Some(cap);
    let result = match guarded(|| f(&model, &c.prompt, c.budget, &c.stop, window)) {
        Ok(r) => r,
        Err(Outcome::Panicked(msg)) if msg.contains("out of range") && c.prompt.len() < window => {
            return Outcome::Wrong(format!(
                "prompt {:?}, L = {window}: {}",
                c.prompt,
                hints::WINDOW_UNDERFLOW
            ))
        }
        Err(other) => return other,
    };
    let calls = model.calls.borrow().clone();
    let shown = format!(
        "prompt {:?}, limite {}, fim de texto {:?}, L = {}:",
        c.prompt,
        c.budget,
        c.stop,
        c.window.map_or("∞".to_string(), |l| l.to_string())
    );
    if calls.len() >= cap {
        return Outcome::Wrong(format!("{shown} {}", hints::IGNORES_BUDGET));
    }
    let got = match result {
        Ok(t) => t,
        Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
    };
    if got == want && same_calls(&calls, &want_calls) {
        return Outcome::Ok;
    }
    // The first step where the model saw something else, and the whole list of what it saw,
    // say most about the mistake.
    if let Some(k) = (0..calls.len().min(want_calls.len())).find(|&k| calls[k] != want_calls[k]) {
        let hint = call_mistake(c, window, &want, &calls, k);
        return Outcome::Wrong(format!(
            "{shown} no passo {k} o modelo devia ver {:?}, viu {:?}. {hint}",
            want_calls[k], calls[k]
        ));
    }
    if got == want {
        // Right tokens, calls a prefix but too few: impossible with a right loop; name the rule.
        return Outcome::Wrong(format!("{shown} {}", hints::WHOLE_SEQUENCE));
    }
    let shown = format!("{shown} esperado {want:?}, obtido {got:?}.");
    Outcome::Wrong(format!("{shown} {}", output_mistake(c, &want, &got)))
}

/// The calls a right loop makes, or those and one more (a loop that asks for logits once
/// after its last token wastes a step but is right).
fn same_calls(calls: &[Vec<u32>], want: &[Vec<u32>]) -> bool {
    calls.starts_with(want) && calls.len() <= want.len() + 1
}

/// Names the mistake behind what the model saw: first the whole list of calls against the
/// windows a wrong loop uses, then the first step that differs.
fn call_mistake(
    c: &LoopCase,
    window: usize,
    want: &[u32],
    calls: &[Vec<u32>],
    k: usize,
) -> &'static str {
    // Windows that keep the last token give the right tokens, so their calls can be replayed.
    let mut windows = vec![(Some(1), hints::LAST_ONLY), (None, hints::IGNORES_WINDOW)];
    if c.window.is_some() {
        windows.push((Some(window + 1), hints::WINDOW_OFF_BY_ONE));
        if window > 1 {
            windows.push((Some(window - 1), hints::WINDOW_OFF_BY_ONE));
        }
    }
    for (w, hint) in windows {
        if w == c.window {
            continue;
        }
        if let Some((_, replay)) = reference_run(c, &c.stop, c.budget, w) {
            if same_calls(calls, &replay) {
                return hint;
            }
        }
    }
    let seen = &calls[k];
    let mut full = c.prompt.clone();
    full.extend(want.iter().take(k));
    let generated = &want[..k.min(want.len())];
    if k > 0 && *seen == calls[k - 1] {
        hints::NOT_APPENDED
    } else if *seen == generated || *seen == generated[generated.len().saturating_sub(window)..] {
        hints::FORGOT_PROMPT
    } else if seen.len() == 1 && full.len() > 1 && window > 1 {
        hints::LAST_ONLY
    } else if full.len() > window && *seen == full[..window] {
        hints::FIRST_L
    } else if full.len() > window && *seen == full {
        hints::IGNORES_WINDOW
    } else {
        hints::WHOLE_SEQUENCE
    }
}

/// Names the mistake behind wrong output tokens (the model saw the right sequences).
fn output_mistake(c: &LoopCase, want: &[u32], got: &[u32]) -> &'static str {
    let simulate =
        |stop: &[u32], budget: usize| reference_run(c, stop, budget, c.window).map(|r| r.0);
    let mut mistakes: Vec<(Vec<u32>, &'static str)> = vec![];
    // The token the reference stopped at, if any.
    let next = reference_run(c, &[], c.budget.saturating_add(1), c.window)
        .and_then(|(t, _)| t.get(want.len()).copied());
    if let Some(s) = next.filter(|s| c.stop.contains(s)) {
        let mut with_stop = want.to_vec();
        with_stop.push(s);
        mistakes.push((with_stop, hints::INCLUDES_STOP));
    }
    if c.stop.len() > 1 {
        mistakes.extend(simulate(&c.stop[..1], c.budget).map(|t| (t, hints::ONLY_FIRST_STOP)));
    }
    mistakes.extend(simulate(&[], c.budget).map(|t| (t, hints::PAST_END)));
    mistakes.extend(simulate(&c.stop, c.budget + 1).map(|t| (t, hints::ONE_TOO_MANY)));
    if c.budget > 0 {
        mistakes.extend(simulate(&c.stop, c.budget - 1).map(|t| (t, hints::ONE_TOO_FEW)));
    }
    if let Some((_, hint)) = mistakes.iter().find(|(w, _)| w.as_slice() == got) {
        return hint;
    }
    if got.starts_with(&c.prompt) && got.len() > c.prompt.len() {
        hints::PROMPT_RETURNED
    } else if got.len() > 1 && got.iter().all(|&t| t == got[0]) {
        hints::NOT_APPENDED
    } else if got.iter().any(|t| c.stop.contains(t)) {
        hints::PAST_END
    } else {
        hints::LOOP_RULE
    }
}

// ---- exercise 2: sampling by hand ----------------------------------------------------------

/// The student's inverse-CDF draw: `f(probabilities, u)` with u in [0, 1).
type DrawFn<'a> = &'a dyn Fn(&[f32], f64) -> usize;

/// `(probabilities, u)` of the draw cases: inside intervals, at u = 0 before a token of
/// probability 0, on a boundary, and above a total that rounding left below 1.
fn draw_cases() -> Vec<(Vec<f32>, f64)> {
    let quarter = vec![0.1, 0.2, 0.3, 0.4];
    let mut v: Vec<(Vec<f32>, f64)> = [0.0, 0.05, 0.15, 0.25, 0.35, 0.65, 0.95]
        .iter()
        .map(|&u| (quarter.clone(), u))
        .collect();
    v.push((vec![0.7, 0.2, 0.1], 0.75));
    v.push((vec![0.7, 0.2, 0.1], 0.95));
    v.push((vec![0.0, 0.5, 0.0, 0.5], 0.0));
    v.push((vec![0.0, 0.5, 0.0, 0.5], 0.5));
    v.push((vec![0.5, 0.4999, 0.0], 0.99995));
    v
}

/// Exercise 2a: inverse-CDF sampling. `f(probs, u)` walks the tokens in id order, summing their
/// probabilities, and returns the first whose running sum is above `u` (never a token of
/// probability 0; the last token of positive probability when rounding leaves the total below u).
/// Every case has one exact answer, the one the library's sampler draws.
pub fn inverse_cdf(f: impl Fn(&[f32], f64) -> usize) -> Report {
    let f = &f;
    let cases: Vec<Case<'_>> = vec![Box::new(move || inverse_cdf_cases(f))];
    report("sorteio pela acumulada", cases)
}

fn inverse_cdf_cases(f: DrawFn<'_>) -> Outcome {
    let cases = draw_cases();
    let want: Vec<usize> = cases
        .iter()
        .map(|(p, u)| draw_from(p, *u) as usize)
        .collect();
    // A panic in the last case (u above a total that rounding left below 1) is one mistake among
    // others: keep going, and name it only if nothing else explains the answers.
    let mut got: Vec<Option<usize>> = vec![];
    for (p, u) in &cases {
        match guarded(|| f(p, *u)) {
            Ok(i) => got.push(Some(i)),
            Err(Outcome::Panicked(_)) if *u > 0.999 => got.push(None),
            Err(other) => return other,
        }
    }
    if got.iter().zip(&want).all(|(g, w)| *g == Some(*w)) {
        return Outcome::Ok;
    }
    let k = (0..got.len())
        .find(|&k| got[k] != Some(want[k]))
        .unwrap_or(0);
    let (p, u) = &cases[k];
    let shown = match got[k] {
        Some(g) => format!(
            "probabilidades {p:?}, u = {u}: esperado o token {}, obtido {g}.",
            want[k]
        ),
        None => format!("probabilidades {p:?}, u = {u}: sua função entrou em pânico."),
    };
    let simulate = |pick: &dyn Fn(&[f32], f64) -> usize| -> Vec<usize> {
        cases.iter().map(|(p, u)| pick(p, *u)).collect()
    };
    // A mistake explains the answers when it matches every case that did not panic.
    let explains = |w: &Vec<usize>| got.iter().zip(w).all(|(g, w)| g.is_none_or(|g| g == *w));
    let mistakes: Vec<(Vec<usize>, &'static str)> = vec![
        (simulate(&not_cumulative), hints::NOT_CUMULATIVE),
        (simulate(&less_or_equal), hints::LESS_OR_EQUAL),
        (
            simulate(&|p, u| draw_from(p, u) as usize + 1),
            hints::ONE_PAST,
        ),
        (simulate(&|p, _| argmax_of(p)), hints::IGNORES_U),
        (simulate(&sorted_walk), hints::SORTED_WALK),
    ];
    let answers: Vec<(usize, &Vec<f32>)> = got
        .iter()
        .zip(&cases)
        .filter_map(|(g, (p, _))| g.map(|g| (g, p)))
        .collect();
    // The same probabilities with different u and always the same answer: u is not used.
    let ignores_u = (0..cases.len()).all(|a| {
        (0..cases.len()).all(|b| {
            cases[a].0 != cases[b].0 || got[a].is_none() || got[b].is_none() || got[a] == got[b]
        })
    });
    let hint = if let Some((_, h)) = mistakes.iter().find(|(w, _)| explains(w)) {
        h
    } else if ignores_u {
        hints::IGNORES_U
    } else if got.iter().any(Option::is_none) || answers.iter().any(|&(i, p)| i >= p.len()) {
        hints::ROUNDING
    } else if answers.iter().any(|&(i, p)| p[i] == 0.0) {
        hints::ZERO_PROBABILITY
    } else if answers.iter().all(|&(i, _)| i == answers[0].0) {
        hints::IGNORES_U
    } else {
        hints::DRAW_RULE
    };
    Outcome::Wrong(format!("{shown} {hint}"))
}

fn argmax_of(p: &[f32]) -> usize {
    crate::logits::argmax(p).unwrap_or(0)
}

fn not_cumulative(p: &[f32], u: f64) -> usize {
    p.iter()
        .position(|&x| u < x as f64)
        .unwrap_or(p.len().saturating_sub(1))
}

fn less_or_equal(p: &[f32], u: f64) -> usize {
    let mut sum = 0.0f64;
    for (i, &x) in p.iter().enumerate() {
        sum += x as f64;
        if u <= sum {
            return i;
        }
    }
    p.len().saturating_sub(1)
}

fn sorted_walk(p: &[f32], u: f64) -> usize {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let sorted: Vec<f32> = idx.iter().map(|&i| p[i]).collect();
    idx[draw_from(&sorted, u) as usize]
}

/// `(probabilities, p, u)` of the top-p draw cases, ties included.
fn top_p_draw_cases() -> Vec<(Vec<f32>, f32, f64)> {
    let a = vec![0.1, 0.5, 0.05, 0.3, 0.05];
    vec![
        (a.clone(), 0.7, 0.3),
        (a.clone(), 0.7, 0.55),
        (a.clone(), 0.7, 0.7),
        (a.clone(), 0.7, 0.99),
        (a.clone(), 1.0, 0.97),
        (a, 0.4, 0.9),
        (vec![0.25, 0.25, 0.25, 0.25], 0.6, 0.5),
        (vec![0.25, 0.25, 0.25, 0.25], 0.6, 0.9),
        (vec![0.05, 0.05, 0.6, 0.1, 0.2], 0.75, 0.8),
        // The nucleus in id order is not its order by probability.
        (vec![0.2, 0.1, 0.6, 0.1], 0.75, 0.1),
    ]
}

/// Every nucleus as good as the library's: sets with the same probabilities, so that ties may
/// be broken either way. Cases are small (at most 8 tokens), so all subsets are tried.
fn valid_nuclei(probs: &[f32], p: f32) -> Vec<Vec<usize>> {
    let key = |ids: &[usize]| {
        let mut v: Vec<f32> = ids.iter().map(|&i| probs[i]).collect();
        v.sort_by(|a, b| b.total_cmp(a));
        v
    };
    let want = key(&top_p_set(probs, p));
    (0u32..(1 << probs.len().min(8)))
        .map(|mask| {
            (0..probs.len())
                .filter(|i| (mask >> i) & 1 == 1)
                .collect::<Vec<_>>()
        })
        .filter(|ids| key(ids) == want)
        .collect()
}

/// `probs` kept on `ids` only, divided by their sum.
fn renormalised(probs: &[f32], ids: &[usize]) -> Vec<f32> {
    let total: f32 = ids.iter().map(|&i| probs[i]).sum();
    (0..probs.len())
        .map(|i| {
            if ids.contains(&i) {
                probs[i] / total
            } else {
                0.0
            }
        })
        .collect()
}

/// The inverse-CDF draw over `ids` only, renormalised or not, in id order.
fn draw_in(probs: &[f32], ids: &[usize], u: f64, renormalise: bool) -> usize {
    let kept: Vec<f32> = if renormalise {
        renormalised(probs, ids)
    } else {
        (0..probs.len())
            .map(|i| if ids.contains(&i) { probs[i] } else { 0.0 })
            .collect()
    };
    draw_from(&kept, u) as usize
}

/// Exercise 2c (optional): sampling with top-p. `f(probs, p, u)` keeps the top-p nucleus,
/// renormalises it and draws with `u` by inverse CDF over the kept tokens in id order. On ties
/// any equally valid nucleus is accepted.
pub fn top_p_sample(f: impl Fn(&[f32], f32, f64) -> usize) -> Report {
    let f = &f;
    let cases = top_p_draw_cases()
        .into_iter()
        .map(|(probs, p, u)| -> Case<'_> { Box::new(move || top_p_draw_case(f, &probs, p, u)) })
        .collect();
    report("top-p no sorteio", cases)
}

fn top_p_draw_case(
    f: &dyn Fn(&[f32], f32, f64) -> usize,
    probs: &[f32],
    p: f32,
    u: f64,
) -> Outcome {
    let got = f(probs, p, u);
    let nuclei = valid_nuclei(probs, p);
    let right: Vec<usize> = nuclei.iter().map(|n| draw_in(probs, n, u, true)).collect();
    if right.contains(&got) {
        return Outcome::Ok;
    }
    let nucleus = top_p_set(probs, p);
    let shown = format!(
        "probabilidades {probs:?}, p = {p}, u = {u}: esperado o token {}, obtido {got}.",
        right.first().copied().unwrap_or(0)
    );
    let all: Vec<usize> = (0..probs.len()).collect();
    // The nucleus without the token that crossed p: its least likely (the last one ranked).
    let crossing = nucleus
        .iter()
        .copied()
        .min_by(|&a, &b| probs[a].total_cmp(&probs[b]).then(b.cmp(&a)));
    let missing_crossing: Vec<usize> = nucleus
        .iter()
        .copied()
        .filter(|&i| Some(i) != crossing)
        .collect();
    let hint = if got >= probs.len() {
        hints::ROUNDING
    } else if nuclei.iter().any(|n| draw_in(probs, n, u, false) == got) {
        hints::NOT_RENORMALISED
    } else if draw_in(probs, &all, u, true) == got {
        hints::IGNORES_TOP_P
    } else if sorted_walk(&renormalised(probs, &nucleus), u) == got {
        hints::SORTED_WALK
    } else if !missing_crossing.is_empty() && draw_in(probs, &missing_crossing, u, true) == got {
        super::lesson04::hints::MISSING_CROSSING
    } else {
        hints::TOP_P_SAMPLE_RULE
    };
    Outcome::Wrong(format!("{shown} {hint}"))
}

/// The student's sampling loop: `f(model, prompt, max_new_tokens, temperature, seed)`.
type SamplingLoop<'a> =
    &'a dyn Fn(&dyn LanguageModel, &[u32], usize, f32, u64) -> crate::Result<Vec<u32>>;

/// Exercise 2b: the loop with temperature sampling. `f(model, prompt, max_new_tokens,
/// temperature, seed)`. T = 0 is greedy; one random generator per generation, seeded with `seed`;
/// the frequencies at every step follow softmax(z / T); T < 0 and NaN logits never panic.
pub fn temperature_loop(
    f: impl Fn(&dyn LanguageModel, &[u32], usize, f32, u64) -> crate::Result<Vec<u32>>,
) -> Report {
    let f: SamplingLoop<'_> = &f;
    let cases: Vec<Case<'_>> = vec![
        Box::new(move || greedy_case(f)),
        Box::new(move || seed_case(f)),
        Box::new(move || frequencies_case(f)),
        Box::new(move || bad_input_case(f)),
    ];
    report("temperaturas no laço", cases)
}

/// The logits of the sampling cases: four tokens, the same after any sequence.
const Z: [f32; 4] = [2.0, 1.0, 0.0, -1.0];

fn fixed_model() -> ScriptedModel {
    ScriptedModel::new(&["a", "b", "c", "d"], |_| Z.to_vec())
}

fn greedy_case(f: SamplingLoop<'_>) -> Outcome {
    let greedy = counting(20, &[]);
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

fn bad_input_case(f: SamplingLoop<'_>) -> Outcome {
    // T < 0: an error is the right answer; any result that does not panic is tolerated.
    let model = fixed_model();
    if let Err(Outcome::Panicked(_)) = guarded(|| f(&model, &[0], 3, -1.0, 1)) {
        return Outcome::Wrong(format!("com T = -1: {}", hints::NEGATIVE_T));
    }
    let nan = ScriptedModel::new(&["a", "b"], |_| vec![f32::NAN, 0.0]);
    match guarded(|| f(&nan, &[0], 3, 1.0, 1)) {
        Err(Outcome::Panicked(_)) => Outcome::Wrong(hints::NAN_LOGITS.to_string()),
        Err(other) => other,
        Ok(_) => Outcome::Ok,
    }
}

/// Pearson's χ² of observed counts against probabilities, merging the least likely bins until
/// each expects at least 5 draws (the χ² law is not trusted below that). Returns (χ², degrees of
/// freedom); a count where nothing was expected gives ∞.
fn chi_square(obs: &[f64], p: &[f32]) -> (f64, usize) {
    let n: f64 = obs.iter().sum();
    let mut bins: Vec<(f64, f64)> = obs
        .iter()
        .zip(p)
        .map(|(&o, &p)| (o, n * p as f64))
        .collect();
    bins.sort_by(|a, b| b.1.total_cmp(&a.1));
    while bins.len() > 1 && bins[bins.len() - 1].1 < 5.0 {
        let (o, e) = bins.pop().unwrap_or_default();
        if let Some(last) = bins.last_mut() {
            last.0 += o;
            last.1 += e;
        }
    }
    let chi = bins
        .iter()
        .map(|&(o, e)| {
            if e > 0.0 {
                (o - e).powi(2) / e
            } else if o > 0.0 {
                f64::INFINITY
            } else {
                0.0
            }
        })
        .sum();
    (chi, bins.len().saturating_sub(1))
}

/// χ² at tail probability 1e-7 for 1, 2 and 3 degrees of freedom: with 2 temperatures × 8 steps,
/// a right sampler whose draws differ from the library's fails with probability below 2e-6
/// (and one that draws u from the same seed as the library matches it exactly and never fails).
fn chi_limit(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1 => 28.37,
        2 => 32.24,
        _ => 35.26,
    }
}

fn fits(obs: &[f64], p: &[f32]) -> bool {
    let (chi, df) = chi_square(obs, p);
    chi < chi_limit(df)
}

/// The probabilities an inverse-CDF walk over unnormalised weights gives, with u uniform in
/// [0, 1): each token gets its share of [0, 1), and a total below 1 leaves the rest to the
/// last token (where a loop that walks past the end lands).
fn walk_distribution(w: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    let mut before = 0f32;
    for (i, &x) in w.iter().enumerate() {
        let after = (before + x).min(1.0);
        out[i] = (after - before).max(0.0);
        before = after;
    }
    if let Some(last) = out.last_mut() {
        *last += (1.0 - before).max(0.0);
    }
    out
}

/// Runs of the frequency case: seeds × tokens per run. Every step is tested on its own.
const SEEDS: u64 = 400;
const STEPS: usize = 8;

fn frequencies_case(f: SamplingLoop<'_>) -> Outcome {
    let model = fixed_model();
    // T = 2 first: at T = 0.5, probabilities divided by T put everything on the first token,
    // which would read as argmax.
    for t in [2.0f32, 0.5] {
        let mut runs = Vec::new();
        for seed in 0..SEEDS {
            match f(&model, &[0], STEPS, t, seed) {
                Ok(out) if out.len() == STEPS => runs.push(out),
                Ok(out) => {
                    return Outcome::Wrong(format!(
                        "pedi {STEPS} tokens e recebi {} ({out:?}).",
                        out.len()
                    ))
                }
                Err(e) => return Outcome::Wrong(format!("sua função devolveu um erro: {e}")),
            }
        }
        let exact = (0..SEEDS).all(|seed| {
            Generation::new(
                fixed_model(),
                &[0],
                GenerateOptions::sampled(STEPS, t, seed),
            )
            .and_then(|g| g.finish())
            .is_ok_and(|g| g.tokens() == runs[seed as usize])
        });
        if exact {
            continue;
        }
        let want = softmax_with_temperature(&Z, t).unwrap_or_default();
        let n = SEEDS as f32 * STEPS as f32;
        if runs.iter().flatten().any(|&tok| tok as usize >= Z.len()) {
            return Outcome::Wrong(format!("com T = {t}: {}", hints::OUT_OF_VOCABULARY));
        }
        let mut pooled = vec![0f64; Z.len()];
        let mut per_step = vec![vec![0f64; Z.len()]; STEPS];
        for run in &runs {
            for (s, &tok) in run.iter().enumerate() {
                pooled[tok as usize] += 1.0;
                per_step[s][tok as usize] += 1.0;
            }
        }
        let constant_runs = runs.iter().all(|r| r.iter().all(|&x| x == r[0]));
        let same_everywhere = runs.iter().all(|r| *r == runs[0]);
        let bad_step = per_step.iter().position(|obs| !fits(obs, &want));
        if bad_step.is_none() && !constant_runs && !same_everywhere {
            continue;
        }
        let expected: Vec<f32> = want.iter().map(|p| (p * n).round()).collect();
        let shown = format!(
            "com T = {t}, {SEEDS} sementes × {STEPS} tokens deram as frequências {pooled:?}; \
             esperado ≈ {expected:?}."
        );
        let p1 = softmax(&Z);
        let mistakes: Vec<(Vec<f32>, &'static str)> = vec![
            (
                softmax(&Z.iter().map(|x| x * t).collect::<Vec<_>>()),
                hints::MULTIPLIED,
            ),
            (p1.clone(), hints::NO_EFFECT),
            (
                walk_distribution(&p1.iter().map(|p| p / t).collect::<Vec<_>>()),
                hints::PROBS_DIVIDED,
            ),
            (
                walk_distribution(&p1.iter().map(|p| p.powf(t)).collect::<Vec<_>>()),
                hints::PROBS_POWER,
            ),
        ];
        let hint = if same_everywhere || constant_runs {
            structure_hint(same_everywhere, &pooled)
        } else if let Some((_, h)) = mistakes.iter().find(|(w, _)| fits(&pooled, w)) {
            h.to_string()
        } else if let Some(step) = bad_step.filter(|_| fits(&pooled, &want)) {
            format!("no passo {step}: {}", hints::STEP_FREQUENCIES)
        } else {
            hints::SAMPLE_RULE.to_string()
        };
        return Outcome::Wrong(format!("{shown} {hint}"));
    }
    Outcome::Ok
}

fn structure_hint(same_everywhere: bool, pooled: &[f64]) -> String {
    let hint = if same_everywhere && pooled.iter().filter(|&&c| c > 0.0).count() == 1 {
        hints::ARGMAX
    } else if same_everywhere {
        hints::SEED_IGNORED
    } else {
        hints::NEW_SAMPLER_EACH_STEP
    };
    hint.to_string()
}
