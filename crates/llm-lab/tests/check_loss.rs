//! The next-token loss check: every equally valid way passes, every named mistake gets its
//! own hint (removing a mistake from the check makes its test here fail).

use candle_core::{DType, IndexOp, Tensor, D};
use llm_lab::check::{self, lesson04::hints};
use llm_lab::Result;

fn rows(logits: &Tensor) -> Vec<Vec<f32>> {
    logits.to_vec2::<f32>().unwrap()
}

/// `ln Σ exp(row)`, stable.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max
}

/// A student's answer built from `per_position(row, target)` over the rows `range` picks, then
/// `reduce(values, n_rows)`.
fn answer(
    shift: usize,
    all_rows: bool,
    per_position: impl Fn(&[f32], usize) -> f32,
    reduce: impl Fn(&[f32]) -> f32,
) -> impl Fn(&Tensor, &[u32]) -> Result<f32> {
    move |logits, tokens| {
        let z = rows(logits);
        let n = if all_rows { z.len() } else { z.len() - 1 };
        let v: Vec<f32> = (0..n)
            .map(|i| per_position(&z[i], tokens[(i + shift).min(tokens.len() - 1)] as usize))
            .collect();
        Ok(reduce(&v))
    }
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

fn stable(row: &[f32], t: usize) -> f32 {
    log_sum_exp(row) - row[t]
}

fn prob(row: &[f32], t: usize) -> f32 {
    (-stable(row, t)).exp()
}

/// A student's loss function.
type Answer = Box<dyn Fn(&Tensor, &[u32]) -> Result<f32>>;

fn hint_of(r: &llm_lab::check::Report) -> String {
    assert!(!r.passed(), "a wrong answer passed");
    r.hint().unwrap_or("").to_string()
}

#[test]
fn every_valid_way_passes() {
    // A loop in f32 with the max subtracted.
    assert!(check::next_token_loss(answer(1, false, stable, mean)).passed());
    // In f64.
    let f64_loop = |logits: &Tensor, tokens: &[u32]| -> Result<f32> {
        let z = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let mut total = 0.0;
        for (row, &t) in z.iter().zip(&tokens[1..]) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = row.iter().map(|x| (x - max).exp()).sum::<f64>().ln() + max;
            total += lse - row[t as usize];
        }
        Ok((total / (tokens.len() - 1) as f64) as f32)
    };
    assert!(check::next_token_loss(f64_loop).passed());
    // With tensors: candle's log-softmax, the targets gathered, the mean.
    let tensors = |logits: &Tensor, tokens: &[u32]| -> Result<f32> {
        let n = tokens.len() - 1;
        let logp = candle_nn::ops::log_softmax(&logits.i(..n)?, D::Minus1)?; // [n, V]
        let targets = Tensor::new(&tokens[1..], logits.device())?.unsqueeze(1)?; // [n, 1]
        let picked = logp.gather(&targets, 1)?; // [n, 1]
        Ok(picked.mean_all()?.neg()?.to_scalar::<f32>()?)
    };
    assert!(check::next_token_loss(tensors).passed());
    // The library's own per-token losses, averaged.
    let library = |logits: &Tensor, tokens: &[u32]| -> Result<f32> {
        let l = llm_lab::logits::next_token_losses(logits, tokens)?;
        Ok(l.iter().sum::<f32>() / l.len() as f32)
    };
    assert!(check::next_token_loss(library).passed());
}

#[test]
fn todo_is_not_done_yet() {
    let r = check::next_token_loss(|_: &Tensor, _: &[u32]| -> Result<f32> { todo!() });
    assert_eq!(r.status, check::Status::NotDone);
}

#[test]
fn each_named_mistake_gets_its_hint() {
    let naive = |row: &[f32], t: usize| {
        // exp without the max subtracted: overflows near 1000.
        let sum: f32 = row.iter().map(|x| x.exp()).sum();
        -(row[t].exp() / sum).ln()
    };
    let log_of_softmax = |row: &[f32], t: usize| -prob(row, t).ln(); // 0 in f32 → ∞
    let sum = |v: &[f32]| v.iter().sum::<f32>();
    let cases: Vec<(Answer, &str, &str)> = vec![
        (
            Box::new(answer(0, false, stable, mean)),
            hints::LOSS_NO_SHIFT,
            "no shift",
        ),
        (
            Box::new(answer(0, true, stable, mean)),
            hints::LOSS_NO_SHIFT,
            "current token, every row",
        ),
        (
            Box::new(answer(1, false, naive, mean)),
            hints::LOSS_NOT_FINITE,
            "exp overflows",
        ),
        (
            Box::new(answer(1, false, log_of_softmax, mean)),
            hints::LOSS_NOT_FINITE,
            "log of a softmax",
        ),
        (
            Box::new(answer(1, false, stable, sum)),
            hints::LOSS_SUM,
            "sum",
        ),
        (
            Box::new(answer(1, false, stable, move |v: &[f32]| {
                sum(v) / (v.len() + 1) as f32
            })),
            hints::LOSS_LAST_POSITION,
            "divided by seq",
        ),
        (
            Box::new(answer(1, false, prob, mean)),
            hints::LOSS_PROBABILITY,
            "probability",
        ),
        (
            Box::new(answer(1, false, |r, t| -prob(r, t), mean)),
            hints::LOSS_PROBABILITY,
            "−probability",
        ),
        (
            Box::new(answer(1, false, |r, t| -stable(r, t), mean)),
            hints::LOSS_SIGN,
            "sign",
        ),
        (
            Box::new(answer(
                1,
                false,
                |r, t| stable(r, t) / std::f32::consts::LN_2,
                mean,
            )),
            hints::LOSS_LOG_BASE,
            "log2",
        ),
    ];
    for (f, want, what) in cases {
        let h = hint_of(&check::next_token_loss(f));
        assert!(h.ends_with(want), "{what}: {h}");
    }
    // The softmax over the positions, with tensors.
    let wrong_axis = |logits: &Tensor, tokens: &[u32]| -> Result<f32> {
        let n = tokens.len() - 1;
        let logp = candle_nn::ops::log_softmax(logits, 0)?.i(..n)?; // normalised down the columns
        let targets = Tensor::new(&tokens[1..], logits.device())?.unsqueeze(1)?;
        Ok(logp
            .gather(&targets, 1)?
            .mean_all()?
            .neg()?
            .to_scalar::<f32>()?)
    };
    let h = hint_of(&check::next_token_loss(wrong_axis));
    assert!(h.ends_with(hints::LOSS_WRONG_AXIS), "wrong axis: {h}");
    // A target for the last position reads past the end: the panic is reported, not raised.
    let past_the_end = |logits: &Tensor, tokens: &[u32]| -> Result<f32> {
        let z = rows(logits);
        Ok(mean(
            &(0..z.len())
                .map(|i| stable(&z[i], tokens[i + 1] as usize))
                .collect::<Vec<_>>(),
        ))
    };
    let h = hint_of(&check::next_token_loss(past_the_end));
    assert!(h.contains("índice fora do intervalo"), "{h}");
}

#[test]
fn a_failure_never_shows_the_expected_loss() {
    let r = check::next_token_loss(answer(1, false, stable, |v: &[f32]| v.iter().sum()));
    let h = hint_of(&r);
    assert!(h.contains("obtido") && !h.contains("esperado"), "{h}");
}
