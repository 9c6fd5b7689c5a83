//! Comparing a result with its reference.

use candle_core::Tensor;

/// The largest `|a − b|` over all elements of two tensors of one shape: how far a result is
/// from its reference. A NaN, or an infinity where the reference differs, counts as infinitely
/// far (a plain maximum would skip NaN and call a broken answer close).
///
/// ```
/// use llm_lab::candle_core::{Device, Tensor};
/// use llm_lab::compare::max_abs_diff;
/// let a = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu)?;
/// let b = Tensor::new(&[1f32, 2.5, 2.0], &Device::Cpu)?;
/// assert_eq!(max_abs_diff(&a, &b)?, 1.0);
/// let nan = Tensor::new(&[1f32, f32::NAN, 3.0], &Device::Cpu)?;
/// assert_eq!(max_abs_diff(&nan, &a)?, f32::INFINITY);
/// let masked = Tensor::new(&[f32::NEG_INFINITY, 0.0], &Device::Cpu)?;
/// assert_eq!(max_abs_diff(&masked, &masked)?, 0.0);
/// # Ok::<(), llm_lab::candle_core::Error>(())
/// ```
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    if a.dims() != b.dims() {
        candle_core::bail!(
            "cannot compare tensors of shapes {:?} and {:?}",
            a.dims(),
            b.dims()
        );
    }
    let a = a
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    let b = b
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    Ok(a.iter().zip(&b).fold(0f32, |worst, (&x, &y)| {
        let d = if x == y {
            0.0
        } else if x.is_finite() && y.is_finite() {
            (x - y).abs()
        } else {
            f32::INFINITY
        };
        worst.max(d)
    }))
}

/// Whether every element is a finite number.
///
/// ```
/// use llm_lab::candle_core::{Device, Tensor};
/// assert!(llm_lab::compare::all_finite(&Tensor::new(&[1f32, 2.0], &Device::Cpu)?)?);
/// assert!(!llm_lab::compare::all_finite(&Tensor::new(&[1f32, f32::NAN], &Device::Cpu)?)?);
/// # Ok::<(), llm_lab::candle_core::Error>(())
/// ```
pub fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    let v = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    Ok(v.iter().all(|x| x.is_finite()))
}
