//! Lesson 03, positional encoding: the sinusoidal vectors.

use candle_core::{Device, Tensor};

use super::diagnose::{diagnose_tensor, tensor_close, TOL};
use super::lesson01::internal;
use super::runner::{report, Case, Outcome};
use super::Report;
use crate::scratch;

/// What a student is told, per mistake.
pub mod hints {
    pub const SIN_COS_SWAPPED: &str = "seno e cosseno trocados: colunas pares (2i) usam seno, \
        ímpares (2i+1) cosseno.";
    pub const PAIR_INDEX: &str = "o expoente usa o índice do par: colunas 2i e 2i+1 compartilham \
        a mesma frequência 1/10000^(2i/d).";
    pub const FROM_ONE: &str = "as posições começam em 0: a primeira linha é sin(0) = 0 e \
        cos(0) = 1.";
    pub const MULTIPLIED: &str = "você multiplicou a posição por 10000^(2i/d); divida: \
        p / 10000^(2i/d) (frequências cada vez mais lentas).";
    pub const NO_COS: &str = "só seno: as colunas ímpares (2i+1) usam cosseno.";
    pub const HALVES: &str = "você pôs os senos na primeira metade e os cossenos na segunda; a \
        aula intercala: coluna 2i seno, coluna 2i+1 cosseno, do mesmo ângulo.";
    pub const MISSING_TWO: &str = "o expoente é 2i/d (com i = j/2 o índice do par), não i/d.";
    pub const FORMULA: &str =
        "PE[p, 2i] = sin(p / 10000^(2i/d)) e PE[p, 2i+1] = cos(p / 10000^(2i/d)).";
}

/// Exercise: sinusoidal positional encoding `[n, d]`.
pub fn positional_encoding(f: impl Fn(usize, usize) -> crate::Result<Tensor>) -> Report {
    let f = &f;
    let cases = [(4usize, 6usize), (10, 16), (50, 8), (3, 2)]
        .into_iter()
        .map(|(n, d)| -> Case<'_> {
            Box::new(move || positions_case(f, n, d).unwrap_or_else(internal))
        })
        .collect();
    report("codificação posicional", cases)
}

fn positions_case(
    f: &dyn Fn(usize, usize) -> crate::Result<Tensor>,
    n: usize,
    d: usize,
) -> crate::Result<Outcome> {
    let want = scratch::sinusoidal_positions(n, d)?;
    let got = match f(n, d) {
        Ok(t) => t,
        Err(e) => return Ok(Outcome::Wrong(format!("sua função devolveu um erro: {e}"))),
    };
    if tensor_close(&got, &want, TOL) {
        return Ok(Outcome::Ok);
    }
    if got.dims() != want.dims() {
        return Ok(Outcome::Wrong(format!(
            "para n = {n}, d = {d} a forma deve ser {:?}, mas é {:?}.",
            want.dims(),
            got.dims()
        )));
    }
    let variant = |g: &dyn Fn(usize, usize) -> f64| -> crate::Result<Tensor> {
        let v: Vec<f32> = (0..n)
            .flat_map(|p| (0..d).map(move |j| (p, j)))
            .map(|(p, j)| g(p, j) as f32)
            .collect();
        Ok(Tensor::from_vec(v, (n, d), &Device::Cpu)?)
    };
    let angle = |p: usize, e: f64| p as f64 / 10_000f64.powf(e);
    let swapped = variant(&|p, j| {
        let a = angle(p, 2.0 * (j / 2) as f64 / d as f64);
        if j % 2 == 0 {
            a.cos()
        } else {
            a.sin()
        }
    })?;
    let no_pair = variant(&|p, j| {
        let a = angle(p, j as f64 / d as f64);
        if j % 2 == 0 {
            a.sin()
        } else {
            a.cos()
        }
    })?;
    let interleaved = |pos: &dyn Fn(usize) -> f64, e: &dyn Fn(usize) -> f64, odd_cos: bool| {
        variant(&|p, j| {
            let a = pos(p) / 10_000f64.powf(e(j));
            if j % 2 == 0 || !odd_cos {
                a.sin()
            } else {
                a.cos()
            }
        })
    };
    let pair = |j: usize| 2.0 * (j / 2) as f64 / d as f64;
    let half = d.div_ceil(2);
    let halves = variant(&|p, j| {
        let (i, sine) = if j < half {
            (j, true)
        } else {
            (j - half, false)
        };
        let a = angle(p, 2.0 * i as f64 / d as f64);
        if sine {
            a.sin()
        } else {
            a.cos()
        }
    })?;
    let multiplied = variant(&|p, j| {
        let a = p as f64 * 10_000f64.powf(pair(j));
        if j % 2 == 0 {
            a.sin()
        } else {
            a.cos()
        }
    })?;
    let mistakes = [
        (swapped, hints::SIN_COS_SWAPPED),
        (no_pair, hints::PAIR_INDEX),
        (
            interleaved(&|p| (p + 1) as f64, &pair, true)?,
            hints::FROM_ONE,
        ),
        (multiplied, hints::MULTIPLIED),
        (interleaved(&|p| p as f64, &pair, false)?, hints::NO_COS),
        (halves, hints::HALVES),
        (
            interleaved(&|p| p as f64, &|j| (j / 2) as f64 / d as f64, true)?,
            hints::MISSING_TWO,
        ),
    ];
    let hint = diagnose_tensor(&got, &mistakes, hints::FORMULA);
    Ok(Outcome::Wrong(format!("n = {n}, d = {d}: {hint}")))
}
