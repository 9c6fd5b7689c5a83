//! GELU with the tanh approximation, the activation of Gemma's gated MLP, in operations the
//! compiler vectorises: a library `tanhf` per element cost more than the MLP's products on a
//! prompt. The lecture's formula is the doc comment; the tests hold the code to it.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// GELU, tanh approximation: `½·x·(1 + tanh(u))`, `u = √(2/π)·(x + 0.044715·x³)`, written as
/// `x·σ(2u)` (the same number: `1 + tanh(u) = 2σ(2u)`), with an `exp` the compiler vectorises:
/// a library `tanhf` per element cost more than the MLP's products on a prompt.
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let mut v = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    const K: f32 = 0.797_884_6; // √(2/π)
    for x in v.iter_mut() {
        let u = K * (*x + 0.044_715 * *x * *x * *x);
        // Below u = −44, σ(2u) < 10⁻³⁸: the limit, 0, also for an x so large that x·σ is not.
        *x = if u < -44.0 {
            0.0
        } else {
            *x / (1.0 + exp(-2.0 * u))
        };
    }
    Ok(Tensor::from_vec(v, dims, x.device())?)
}

/// `eˣ` within 2 ulp, in operations that vectorise: `eˣ = 2ⁿ·eᶠ` with `n = round(x·log₂e)`,
/// `|f| ≤ ln2/2`, `eᶠ` by its Taylor series to degree 7. Clamped to f32's normal range.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Adding and subtracting 1.5·2²³ rounds to an integer without a (slow to vectorise) call.
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    // ln 2 in two parts, so that n·ln2 is subtracted exactly.
    let f = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f / 5040.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_is_within_two_ulp_over_f32s_range() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert!(exp(-1000.0) > 0.0 && exp(1000.0).is_finite());
    }

    #[test]
    fn gelu_agrees_with_the_tanh_formula() {
        let xs: Vec<f32> = (-20_000..=20_000)
            .map(|i| i as f32 * 1e-3)
            .chain([-1e30, 1e30, 0.0])
            .collect();
        let got = gelu_tanh(&Tensor::new(xs.as_slice(), &Device::Cpu).unwrap()).unwrap();
        for (&x, g) in xs.iter().zip(got.to_vec1::<f32>().unwrap()) {
            let x64 = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let want = 0.5 * x64 * (1.0 + u.tanh());
            assert!(
                (g as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "gelu({x}) = {g}, not {want}"
            );
        }
    }
}
