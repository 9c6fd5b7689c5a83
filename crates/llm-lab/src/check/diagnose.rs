//! Telling a right answer from the wrong ones students typically give: compute each known
//! mistake's answer, compare, and name the first that matches.

use candle_core::Tensor;

use crate::compare::max_abs_diff;

/// How close a float answer must be to count as equal.
pub const TOL: f32 = 1e-4;

/// The hint when an answer holds NaN or an infinity: never right, whatever else it matches.
pub const NOT_FINITE: &str =
    "a resposta tem NaN ou infinito: procure uma divisão por zero, a raiz \
                              de um número negativo, ou uma exponencial grande demais (subtraia o \
                              maior valor antes de exp).";

/// Whether two vectors have the same length and are within `tol` everywhere (NaN is never close).
pub fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (x - y).abs() <= tol)
}

/// Whether two tensors have one shape and are within `tol` everywhere (NaN is never close).
pub fn tensor_close(a: &Tensor, b: &Tensor, tol: f32) -> bool {
    a.dims() == b.dims() && max_abs_diff(a, b).is_ok_and(|d| d <= tol)
}

/// Whether any element of `t` is NaN or infinite (or `t` cannot be read).
pub fn not_finite(t: &Tensor) -> bool {
    !crate::compare::all_finite(t).unwrap_or(false)
}

/// The hint of the first known mistake whose answer `got` matches (per `same`), else `fallback`.
///
/// ```
/// use llm_lab::check::diagnose::diagnose;
/// let same = |a: &i32, b: &i32| a == b;
/// let mistakes = [(4, "multiplicou em vez de somar"), (0, "subtraiu")];
/// assert_eq!(diagnose(&4, same, &mistakes, "releia a fórmula"), "multiplicou em vez de somar");
/// assert_eq!(diagnose(&7, same, &mistakes, "releia a fórmula"), "releia a fórmula");
/// ```
pub fn diagnose<T: ?Sized, W>(
    got: &T,
    same: impl Fn(&T, &W) -> bool,
    mistakes: &[(W, &'static str)],
    fallback: &'static str,
) -> &'static str {
    mistakes
        .iter()
        .find(|(wrong, _)| same(got, wrong))
        .map_or(fallback, |(_, hint)| hint)
}

/// [`diagnose`] for tensors: NaN or infinity first, then the known mistakes within [`TOL`].
pub fn diagnose_tensor(
    got: &Tensor,
    mistakes: &[(Tensor, &'static str)],
    fallback: &'static str,
) -> &'static str {
    if not_finite(got) {
        return NOT_FINITE;
    }
    diagnose(got, |a, b| tensor_close(a, b, TOL), mistakes, fallback)
}
