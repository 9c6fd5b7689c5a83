//! Lesson 02, layers: counting layers, layer normalisation, the lecture's transformer block.

use candle_core::{DType, Device, Tensor};

use super::diagnose::{diagnose_tensor, tensor_close, TOL};
use super::lesson01::{counting_check, internal, Miscount};
use super::runner::{report, Case, Outcome};
use super::Report;
use crate::model::{Config, WeightShapes};
use crate::scratch::{self, HeadWeights, Mlp};

/// What a student is told, per mistake.
pub mod hints {
    pub const HEADS_NOT_LAYERS: &str =
        "Isso conta cabeças; as camadas são os blocos empilhados (atenção + MLP), `blk.N`.";
    pub const MAX_INDEX: &str = "Esse é o maior índice de bloco: os blocos são numerados a partir \
        de 0 (`blk.0` … `blk.N−1`), então há índice máximo + 1 camadas.";
    pub const TENSORS_NOT_BLOCKS: &str =
        "Você contou tensores, não blocos: cada bloco `blk.N` tem \
        vários tensores (W_Q, W_K, W_V, W_O, MLP, normas). Conte os índices N distintos, ou só \
        um tipo de tensor (por exemplo `attn_q`).";
    pub const TEXT_NOT_NUMBER: &str = "Compare os índices como números, não como texto: como \
        texto \"blk.9\" vem depois de \"blk.29\", e ler só um dígito para em 9. Converta o \
        índice com `.parse::<usize>()`.";
    pub const LAYERS_FORMULA: &str = "Cada camada é um bloco `blk.N.…`: conte os N distintos (ou \
        o maior N + 1).";
    pub const RMS_NOT_LAYER: &str = "isso é RMSNorm (a do Llama): a LayerNorm também subtrai a \
        média de cada linha.";
    pub const SAMPLE_VARIANCE: &str = "a variância usa divisão por n (variância populacional), \
        não por n − 1.";
    pub const WRONG_AXIS: &str = "normalizou na dimensão errada: cada linha (um token) é \
        normalizada sobre suas colunas.";
    pub const NO_EPSILON: &str = "faltou o ε: divida por sqrt(variância + ε), não por \
        sqrt(variância).";
    pub const EPS_OUTSIDE_SQRT: &str = "o ε vai dentro da raiz: sqrt(variância + ε), não \
        sqrt(variância) + ε.";
    pub const NO_SQRT: &str = "você dividiu pela variância; divida pelo desvio padrão, \
        sqrt(variância + ε).";
    pub const NOT_SCALED: &str = "você só subtraiu a média: falta dividir por sqrt(variância + ε).";
    pub const BLOCK_PRE_NORM: &str = "você normalizou antes de cada subcamada (pré-norma, \
        X + MHA(LN(X))), como o Llama faz; a aula escreve a pós-norma: Z = LN(MHA(X) + X) e \
        X̃ = LN(MLP(Z) + Z).";
    pub const BLOCK_NO_RESIDUAL_ATTN: &str = "faltou a conexão residual da atenção: some X à \
        saída da atenção antes de normalizar, Z = LN(MHA(X) + X).";
    pub const BLOCK_NO_RESIDUAL_MLP: &str = "faltou a conexão residual do MLP: some Z à saída do \
        MLP antes de normalizar, X̃ = LN(MLP(Z) + Z).";
    pub const BLOCK_RESIDUAL_AFTER_NORM: &str = "você somou o resíduo depois da normalização \
        (LN(MHA(X)) + X); a aula soma primeiro e normaliza a soma: LN(MHA(X) + X).";
    pub const BLOCK_MLP_ON_X: &str = "o MLP foi aplicado à entrada X; ele recebe Z, a saída da \
        primeira metade do bloco: X̃ = LN(MLP(Z) + Z).";
    pub const BLOCK_SECOND_RESIDUAL_X: &str = "a segunda conexão residual soma Z (a entrada do \
        MLP), não X: X̃ = LN(MLP(Z) + Z).";
    pub const BLOCK_ONE_NORM_END: &str = "você normalizou só no fim: Z também é normalizado, \
        Z = LN(MHA(X) + X).";
    pub const BLOCK_ONE_NORM_START: &str = "você normalizou só Z: a saída também é \
        normalizada, X̃ = LN(MLP(Z) + Z).";
    pub const BLOCK_NO_MLP: &str = "você devolveu Z, só a metade da atenção: falta a metade do \
        MLP, X̃ = LN(MLP(Z) + Z).";
    pub const BLOCK_CAUSAL: &str = "você usou atenção com máscara causal; neste exercício a \
        atenção é a da sua multi_head, sem máscara.";
    pub const BLOCK_FORMULA: &str = "Z = LN(MHA(X) + X), depois X̃ = LN(MLP(Z) + Z), com a sua \
        multi_head e a sua layer_norm (confira que as duas passaram nas verificações).";
    pub const FORMULA: &str = "para cada linha: subtraia a média e divida por sqrt(variância + ε).";
}

/// The layer count's typical mistakes.
const LAYER_MISTAKES: [Miscount; 6] = [
    (|_, c| c.n_layers.saturating_sub(1), hints::MAX_INDEX),
    (
        |s, _| s.names().filter(|n| n.starts_with("blk.")).count(),
        hints::TENSORS_NOT_BLOCKS,
    ),
    (|s, _| s.len(), hints::TENSORS_NOT_BLOCKS),
    (|_, c| c.n_layers.min(10), hints::TEXT_NOT_NUMBER),
    (|_, c| c.n_heads, hints::HEADS_NOT_LAYERS),
    (|_, c| c.n_kv_heads, hints::HEADS_NOT_LAYERS),
];

/// Exercise: how many layers (transformer blocks), from the tensors' names: `f(shapes)`.
pub fn count_layers(config: &Config, f: impl Fn(&WeightShapes) -> usize) -> Report {
    counting_check(
        "quantas camadas",
        config,
        |s, _| f(s),
        |c| c.n_layers,
        &LAYER_MISTAKES,
        hints::LAYERS_FORMULA,
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
        (
            centered.broadcast_div(&(var.sqrt()? + eps)?)?,
            hints::EPS_OUTSIDE_SQRT,
        ),
        (centered.broadcast_div(&(&var + eps)?)?, hints::NO_SQRT),
        (centered.clone(), hints::NOT_SCALED),
    ];
    let hint = diagnose_tensor(&got, &mistakes, hints::FORMULA);
    Ok(Outcome::Wrong(format!("{shown}: {hint}")))
}

// ---- the lecture's block ----------------------------------------------------------------------

/// The student's block: `f(x, heads, w_o, mlp, eps)`.
type BlockFn<'a> = &'a dyn Fn(&Tensor, &[HeadWeights], &Tensor, &Mlp, f64) -> crate::Result<Tensor>;

/// Exercise: the lecture's transformer block, post-norm: `Z = LN(MHA(X) + X)`,
/// `X̃ = LN(MLP(Z) + Z)`, built from the student's own multi-head attention and layer norm.
/// `f(x, heads, w_o, mlp, eps)`; the heads and `W_O` are those of `multi_head`.
pub fn block(
    f: impl Fn(&Tensor, &[HeadWeights], &Tensor, &Mlp, f64) -> crate::Result<Tensor>,
) -> Report {
    let f = &f;
    // (N, D, H, d, F, seed, ε); the second case has H·d ≠ D.
    let cases = [
        (4usize, 8usize, 2usize, 4usize, 16usize, 1u64, 1e-5f64),
        (3, 10, 2, 3, 12, 2, 1e-5),
        (5, 12, 3, 4, 24, 3, 0.1),
    ]
    .into_iter()
    .map(|(n, d_model, h, d, ff, seed, eps)| -> Case<'_> {
        Box::new(move || block_case(f, (n, d_model, h, d, ff), seed, eps).unwrap_or_else(internal))
    })
    .collect();
    report("bloco transformer", cases)
}

fn block_case(
    f: BlockFn<'_>,
    (n, d_model, h, d, ff): (usize, usize, usize, usize, usize),
    seed: u64,
    eps: f64,
) -> crate::Result<Outcome> {
    let m = |r, c, s| scratch::random_matrix(r, c, seed * 100 + 50 + s);
    // A mean away from 0, so that a missing or misplaced LayerNorm shows.
    let x = ((m(n, d_model, 0)? * 2.0)? + 1.0)?;
    let heads = (0..h as u64)
        .map(|i| {
            Ok(HeadWeights {
                w_q: m(d_model, d, 3 * i + 1)?,
                w_k: m(d_model, d, 3 * i + 2)?,
                w_v: m(d_model, d, 3 * i + 3)?,
            })
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let w_o = m(h * d, d_model, 90)?;
    let mlp = Mlp {
        w_1: m(d_model, ff, 91)?,
        w_2: m(ff, d_model, 92)?,
    };
    let shown = format!("X [{n}, {d_model}], {h} cabeças de largura {d}, ε = {eps}");
    let want = scratch::transformer_block(&x, &heads, &w_o, &mlp, eps)?;
    let got = match f(&x, &heads, &w_o, &mlp, eps) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Outcome::Wrong(format!(
                "{shown}: sua função devolveu um erro: {e}"
            )))
        }
    };
    if tensor_close(&got, &want, TOL) {
        return Ok(Outcome::Ok);
    }
    if got.dims() != want.dims() {
        return Ok(Outcome::Wrong(format!(
            "{shown}: o bloco preserva a forma da entrada, {:?}, mas sua saída tem {:?}.",
            want.dims(),
            got.dims()
        )));
    }
    let ln = |t: &Tensor| scratch::layer_norm(t, eps);
    let mha = |t: &Tensor| scratch::multi_head_attention(t, &heads, &w_o, false);
    let a = mha(&x)?;
    let z = ln(&(&a + &x)?)?;
    let mlp_z = mlp.forward(&z)?;
    let pre_z = (&x + mha(&ln(&x)?)?)?;
    let z_no_res = ln(&a)?;
    let z_after = (ln(&a)? + &x)?;
    let z_raw = (&a + &x)?;
    let causal_z = ln(&(scratch::multi_head_attention(&x, &heads, &w_o, true)? + &x)?)?;
    let mistakes = [
        (
            (&pre_z + mlp.forward(&ln(&pre_z)?)?)?,
            hints::BLOCK_PRE_NORM,
        ),
        (
            ln(&(mlp.forward(&z_no_res)? + &z_no_res)?)?,
            hints::BLOCK_NO_RESIDUAL_ATTN,
        ),
        (ln(&mlp_z)?, hints::BLOCK_NO_RESIDUAL_MLP),
        (
            (ln(&mlp.forward(&z_after)?)? + &z_after)?,
            hints::BLOCK_RESIDUAL_AFTER_NORM,
        ),
        (ln(&(mlp.forward(&x)? + &z)?)?, hints::BLOCK_MLP_ON_X),
        (ln(&(&mlp_z + &x)?)?, hints::BLOCK_SECOND_RESIDUAL_X),
        (
            ln(&(mlp.forward(&z_raw)? + &z_raw)?)?,
            hints::BLOCK_ONE_NORM_END,
        ),
        ((&mlp_z + &z)?, hints::BLOCK_ONE_NORM_START),
        (z.clone(), hints::BLOCK_NO_MLP),
        (
            ln(&(mlp.forward(&causal_z)? + &causal_z)?)?,
            hints::BLOCK_CAUSAL,
        ),
    ];
    let hint = diagnose_tensor(&got, &mistakes, hints::BLOCK_FORMULA);
    Ok(Outcome::Wrong(format!("{shown}: {hint}")))
}
