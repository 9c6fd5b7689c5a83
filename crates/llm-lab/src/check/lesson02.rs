//! Lesson 02, layers: counting layers, layer normalisation.

use candle_core::{DType, Device, Tensor};

use super::diagnose::{diagnose_tensor, tensor_close, TOL};
use super::lesson01::{counting_check, internal};
use super::runner::{report, Case, Outcome};
use super::Report;
use crate::model::Config;
use crate::scratch;

/// What a student is told, per mistake.
pub mod hints {
    pub const HEADS_NOT_LAYERS: &str =
        "Isso conta cabeças; as camadas são os blocos empilhados (atenção + MLP).";
    pub const OFF_BY_ONE: &str = "Quase: confira se não contou uma camada a mais ou a menos.";
    pub const HARD_CODED: &str = "Não fixe o número no código: leia-o da configuração recebida.";
    pub const RMS_NOT_LAYER: &str = "isso é RMSNorm (a do Llama): a LayerNorm também subtrai a \
        média de cada linha.";
    pub const SAMPLE_VARIANCE: &str = "a variância usa divisão por n (variância populacional), \
        não por n − 1.";
    pub const WRONG_AXIS: &str = "normalizou na dimensão errada: cada linha (um token) é \
        normalizada sobre suas colunas.";
    pub const NO_EPSILON: &str = "faltou o ε: divida por sqrt(variância + ε), não por \
        sqrt(variância).";
    pub const FORMULA: &str = "para cada linha: subtraia a média e divida por sqrt(variância + ε).";
}

/// Exercise: how many layers (transformer blocks).
pub fn count_layers(config: &Config, f: impl Fn(&Config) -> usize) -> Report {
    counting_check(
        "quantas camadas",
        config,
        f,
        |c| c.n_layers,
        |c, got| {
            if got == c.n_heads || got == c.n_kv_heads {
                hints::HEADS_NOT_LAYERS
            } else if got + 1 == c.n_layers || got == c.n_layers + 1 {
                hints::OFF_BY_ONE
            } else {
                hints::HARD_CODED
            }
        },
    )
}

/// Exercise: layer normalisation over the last dimension (no gain or bias), with ε.
pub fn layer_norm(f: impl Fn(&Tensor, f64) -> crate::Result<Tensor>) -> Report {
    let f = &f;
    let cases = [
        (2usize, 8usize, 1u64, 1e-5f64),
        (4, 16, 2, 1e-5),
        (3, 5, 3, 0.1),
    ]
    .into_iter()
    .map(|(rows, cols, seed, eps)| -> Case<'_> {
        Box::new(move || layer_norm_case(f, rows, cols, seed, eps).unwrap_or_else(internal))
    })
    .collect();
    report("normalização de camada", cases)
}

fn layer_norm_case(
    f: &dyn Fn(&Tensor, f64) -> crate::Result<Tensor>,
    rows: usize,
    cols: usize,
    seed: u64,
    eps: f64,
) -> crate::Result<Outcome> {
    let x = ((scratch::random_matrix(rows, cols, seed)? * 4.0)? + 2.0)?;
    let want = scratch::layer_norm(&x, eps)?;
    let got = match f(&x, eps) {
        Ok(t) => t,
        Err(e) => return Ok(Outcome::Wrong(format!("sua função devolveu um erro: {e}"))),
    };
    if tensor_close(&got, &want, TOL) {
        return Ok(Outcome::Ok);
    }
    let shown = format!("entrada {:?}, ε = {eps}", x.dims());
    if got.dims() != want.dims() {
        return Ok(Outcome::Wrong(format!(
            "{shown}: a saída deve ter a mesma forma da entrada."
        )));
    }
    let ones = Tensor::ones(cols, DType::F32, &Device::Cpu)?;
    let centered = x.broadcast_sub(&x.mean_keepdim(1)?)?;
    let sample_var = (centered.sqr()?.sum_keepdim(1)? / (cols as f64 - 1.0))?;
    let var = centered.sqr()?.mean_keepdim(1)?;
    let mistakes = [
        (scratch::rms_norm(&x, &ones, eps)?, hints::RMS_NOT_LAYER),
        (
            centered.broadcast_div(&(sample_var + eps)?.sqrt()?)?,
            hints::SAMPLE_VARIANCE,
        ),
        (scratch::layer_norm(&x.t()?, eps)?.t()?, hints::WRONG_AXIS),
        (centered.broadcast_div(&var.sqrt()?)?, hints::NO_EPSILON),
    ];
    let hint = diagnose_tensor(&got, &mistakes, hints::FORMULA);
    Ok(Outcome::Wrong(format!("{shown}: {hint}")))
}
