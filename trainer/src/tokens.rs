//! Training a token router end to end through the frozen model (`trainer tokens`). Each example
//! is a prompt with its choices as the evaluation runs them (fused rows: the context and every
//! choice's continuation). The teacher is the full model on those rows; the student runs every
//! layer on every row and mixes by the gates (`Model::run_mixed`, differentiable with
//! `Ops::Autograd`), with hard decisions forward and the soft (Gumbel-sigmoid) gradient back.
//! The loss is T²·KL(teacher ‖ student) on the scored rows (or all rows), plus λ times the mean
//! execute probability, plus μ times the squared distance of the execute share from the target.
//! Only the gates train; candle's autograd carries the gradient through the frozen layers.

use candle_core::{DType, Tensor, D};
use drllm_core::router::{GateInput, TokenRouter};
use drllm_core::tasks::reward::Prepared;
use drllm_engine::{LayerPath, LoadedModel, Model, Ops, Route, RowMeta, Rows, SkippedKv};
use rand::{rngs::StdRng, Rng};

use crate::Result;

/// One training example: the rows the evaluation runs and the teacher's distribution on the
/// distilled rows.
pub struct TokenExample {
    /// Question id.
    pub id: String,
    /// Embeddings of the rows, `[n, d]`.
    pub x: Tensor,
    /// The rows' positions and segments.
    pub meta: RowMeta,
    /// First distilled row and their count.
    pub kd_rows: (usize, usize),
    /// Teacher log-probabilities at temperature T on those rows, `[kd, vocab]`.
    pub teacher: Tensor,
}

impl TokenExample {
    /// Runs the teacher (the full path, as inference does) on `prep`'s rows; distils on every
    /// row when `all_rows`, else on the prompt's last row and the continuations (the rows
    /// choice-loglik scores), at temperature `t`.
    pub fn new(
        lm: &LoadedModel,
        id: &str,
        prep: &Prepared,
        all_rows: bool,
        t: f64,
    ) -> Result<Self> {
        let x = prep.embed(lm)?;
        let n = x.dim(0)?;
        let kd_rows = match all_rows {
            true => (0, n),
            false => (prep.prompt_ids.len() - 1, n + 1 - prep.prompt_ids.len()),
        };
        let mut slots = Vec::new();
        let rows = prep.rows(&mut slots);
        let meta = RowMeta::segments(prep.segments());
        Self::from_rows(&lm.model, id, x, rows, meta, kd_rows, t)
    }

    /// The same from rows laid out by hand (`rows` and `meta` must agree).
    pub fn from_rows(
        model: &Model,
        id: &str,
        x: Tensor,
        rows: Rows<'_>,
        meta: RowMeta,
        kd_rows: (usize, usize),
        t: f64,
    ) -> Result<Self> {
        let full = LayerPath::full(model.num_layers());
        let route = Route::Path {
            path: &full,
            from: 0,
        };
        let pass = model.run_path(x.clone(), rows, route, |_, _, _| ())?;
        let logits = model.head(&pass.hidden.narrow(0, kd_rows.0, kd_rows.1)?)?;
        let teacher = candle_nn::ops::log_softmax(&(logits / t)?, D::Minus1)?;
        Ok(Self {
            id: id.into(),
            x,
            meta,
            kd_rows,
            teacher,
        })
    }
}

/// The parts of one example's loss (the tensor is differentiable in the gates).
pub struct LossParts {
    /// The whole loss.
    pub loss: Tensor,
    /// T²·KL(teacher ‖ student), mean over the distilled rows.
    pub kd: f64,
    /// Share of token-layers executed (all layers counted) by the forward's decisions.
    pub execute: f64,
}

/// How a step decides and weighs.
#[derive(Debug, Clone, Copy)]
pub struct LossSettings {
    /// Treatment of skipped tokens' keys (as the router will run).
    pub kv: SkippedKv,
    /// Gumbel-sigmoid temperature.
    pub tau: f64,
    /// Hard 0/1 decisions forward (straight-through); `false` runs the soft gates themselves
    /// (the gradient check's smooth loss).
    pub hard: bool,
    /// Logistic noise on the logits (Gumbel-sigmoid); `false` for a deterministic loss.
    pub noise: bool,
    /// Distillation temperature.
    pub kd_temperature: f64,
    /// Target execute share.
    pub target: f64,
    /// Sparsity weight λ.
    pub lambda: f64,
    /// Ratio weight μ.
    pub mu: f64,
}

/// Gate values `[rows, 1]` for one routed layer from its run logits: soft (with logistic noise)
/// and, when `hard`, the straight-through 0/1 decisions; with the hard flags.
fn gate_values(
    logits: &Tensor,
    s: &LossSettings,
    rng: &mut StdRng,
) -> drllm_engine::Result<(Tensor, Vec<bool>)> {
    let n = logits.dim(0)?;
    let logits = if s.noise {
        let u: Vec<f32> = (0..n)
            .map(|_| {
                let u: f32 = rng.random_range(1e-6..1.0 - 1e-6);
                (u / (1.0 - u)).ln()
            })
            .collect();
        (logits + Tensor::from_vec(u, n, logits.device())?)?
    } else {
        logits.clone()
    };
    let soft = candle_nn::ops::sigmoid(&(logits / s.tau)?)?;
    let flags: Vec<bool> = soft.to_vec1::<f32>()?.iter().map(|&p| p > 0.5).collect();
    let g = if s.hard {
        let hard = Tensor::from_vec(
            flags.iter().map(|&f| f as u8 as f32).collect::<Vec<_>>(),
            n,
            soft.device(),
        )?;
        ((hard - soft.detach())? + &soft)?
    } else {
        soft
    };
    Ok((g.reshape((n, 1))?, flags))
}

/// One example's loss through the frozen model, differentiable in `router`'s weights.
pub fn token_loss(
    model: &Model,
    router: &TokenRouter,
    ex: &TokenExample,
    s: &LossSettings,
    rng: &mut StdRng,
) -> Result<LossParts> {
    let cfg = &router.cfg;
    let (k, layers) = (cfg.keep_first, model.num_layers());
    let mut contextual: Option<Tensor> = None;
    let mut gates: Vec<Tensor> = Vec::with_capacity(layers - k);
    let mut executed = 0usize;
    let hidden = model.run_mixed(ex.x.clone(), &ex.meta, s.kv, Ops::Autograd, |layer, x| {
        if layer < k {
            return Ok(None);
        }
        let g = layer - k;
        let logits = match cfg.gate_input {
            GateInput::Contextual => {
                if contextual.is_none() {
                    contextual = Some(router.logits(x, 0..cfg.routed())?);
                }
                contextual.as_ref().expect("just set").narrow(1, g, 1)?
            }
            GateInput::Own => router.logits(x, g..g + 1)?,
        };
        let (gate, flags) = gate_values(&logits.flatten_all()?, s, rng)?;
        executed += flags.iter().filter(|&&f| f).count();
        gates.push(gate.clone());
        Ok(Some((gate, flags)))
    })?;
    let (start, len) = ex.kd_rows;
    let t = s.kd_temperature;
    let logits = model.head_with(&hidden.narrow(0, start, len)?, Ops::Autograd)?;
    let student = candle_nn::ops::log_softmax(&(logits / t)?, D::Minus1)?;
    let p_t = ex.teacher.exp()?;
    let kl = (p_t * (&ex.teacher - student)?)?
        .sum(D::Minus1)?
        .mean_all()?;
    let kd = (kl * (t * t))?;
    let rows = ex.x.dim(0)?;
    let gates = Tensor::cat(&gates, 1)?; // [rows, G]
    let routed_mean = gates.mean_all()?;
    let share = ((routed_mean.clone() * ((layers - k) as f64 / layers as f64))?
        + (k as f64 / layers as f64))?;
    let ratio = (share - s.target)?.sqr()?;
    let loss = ((&kd + (routed_mean * s.lambda)?)? + (ratio * s.mu)?)?;
    let total = rows * layers;
    Ok(LossParts {
        kd: kd.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        execute: (executed + rows * k) as f64 / total as f64,
        loss,
    })
}
