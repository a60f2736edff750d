//! The router network: per layer `Linear(d,128) → GELU(tanh) → Linear(128,3)` on each window
//! mean, logits averaged over the windows. The `L` routers are stored stacked (one tensor per
//! weight kind, layer first) so training runs all layers in one batched matmul; checkpoints name
//! each layer's weights separately (`layers.{i}.fc1.weight`, …) like per-layer modules would.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};

use super::gelu::gelu_tanh;
use super::{softmax, window_means, EXECUTE, REPEAT, SKIP};
use drllm_engine::Result;

/// Width of a router's hidden layer.
pub const HIDDEN: usize = 128;

/// Names of a layer's four weights in our checkpoints (`layers.{i}.<name>`), in the order
/// `[w1, b1, w2, b2]`.
pub const CHECKPOINT_NAMES: [&str; 4] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];

/// All layers' routers.
pub struct Routers {
    /// `[L, 128, d]`
    pub w1: Var,
    /// `[L, 128]`
    pub b1: Var,
    /// `[L, 3, 128]`
    pub w2: Var,
    /// `[L, 3]`
    pub b2: Var,
}

/// PyTorch's `nn.Linear` initialisation, seeded: weights and biases uniform in ±1/√fan_in.
pub(super) fn uniform(rng: &mut rand::rngs::StdRng, shape: &[usize], fan_in: usize) -> Result<Var> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Ok(Var::from_tensor(&Tensor::from_vec(
        v,
        shape,
        &Device::Cpu,
    )?)?)
}

impl Routers {
    /// Fresh routers for `layers` layers of width `d`, initialised from `seed`.
    pub fn init(layers: usize, d: usize, seed: u64) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Ok(Self {
            w1: uniform(&mut rng, &[layers, HIDDEN, d], d)?,
            b1: uniform(&mut rng, &[layers, HIDDEN], d)?,
            w2: uniform(&mut rng, &[layers, 3, HIDDEN], HIDDEN)?,
            b2: uniform(&mut rng, &[layers, 3], HIDDEN)?,
        })
    }

    /// The trainable weights, `[w1, b1, w2, b2]` (for the optimizer).
    pub fn vars(&self) -> Vec<Var> {
        vec![
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.b2.clone(),
        ]
    }

    /// Number of routers `L`, one per model layer.
    pub fn num_layers(&self) -> usize {
        self.w1.dims()[0]
    }

    /// The model's hidden width `d` the routers read.
    pub fn hidden_size(&self) -> usize {
        self.w1.dims()[2]
    }

    /// Logits `[L, B, 3]` for window means `x` (`[L, B, W, d]`), averaging each example's logits
    /// over the windows `mask` (`[B, W]`, 1 for a window that exists, else 0) keeps.
    pub fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_with(x, mask, gelu_tanh)
    }

    /// [`Routers::forward`] with another activation: the trainer's gradient check runs it with
    /// candle's differentiable `gelu` as an autograd reference (the fused op has no autograd).
    pub fn forward_with(
        &self,
        x: &Tensor,
        mask: &Tensor,
        act: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Tensor> {
        let (l, b, w, d) = x.dims4()?;
        let (_, _, y) = mlp_with(
            &x.reshape((l, b * w, d))?,
            [&self.w1, &self.b1, &self.w2, &self.b2],
            act,
        )?;
        let y = y.reshape((l, b, w, 3))?;
        let m = mask.reshape((1, b, w, 1))?;
        let sum = y.broadcast_mul(&m)?.sum(2)?;
        let count = mask.sum(1)?.reshape((1, b, 1))?;
        Ok(sum.broadcast_div(&count)?)
    }

    /// Router `layer`'s logits (`[3]`) for the hidden state `x` (`[T, d]`) entering it.
    pub fn layer_logits(&self, layer: usize, x: &Tensor, windows: usize) -> Result<Tensor> {
        // The routers live on the CPU; the model's rows may be on a GPU.
        let m = window_means(x, windows)?
            .to_device(self.w1.device())?
            .unsqueeze(0)?;
        let one = |v: &Var| v.narrow(0, layer, 1);
        let w = [
            one(&self.w1)?,
            one(&self.b1)?,
            one(&self.w2)?,
            one(&self.b2)?,
        ];
        let (_, _, y) = mlp(&m, [&w[0], &w[1], &w[2], &w[3]])?;
        Ok(y.squeeze(0)?.mean(0)?)
    }

    /// Router `layer`'s probabilities (skip, execute, repeat) for the state `x` entering it.
    pub fn probs(&self, layer: usize, x: &Tensor, windows: usize) -> Result<[f32; 3]> {
        let r: Vec<f32> = softmax(&self.layer_logits(layer, x, windows)?)?.to_vec1()?;
        Ok([r[0], r[1], r[2]])
    }

    /// Router `layer`'s decision for the state `x` entering it, under `budget`.
    pub fn decide(&self, layer: usize, x: &Tensor, windows: usize, budget: Budget) -> Result<u8> {
        Ok(budget.apply(self.probs(layer, x, windows)?))
    }

    /// The weights under per-layer names, for a safetensors checkpoint.
    pub fn named_tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.named_by(|i, kind| format!("layers.{i}.{}", CHECKPOINT_NAMES[kind]))
    }

    /// Each layer's weights under `name(layer, kind)`, kind indexing `[w1, b1, w2, b2]` (as
    /// [`CHECKPOINT_NAMES`] orders them): checkpoints and exports to other naming schemes.
    pub fn named_by(
        &self,
        name: impl Fn(usize, usize) -> String,
    ) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for i in 0..self.num_layers() {
            for (kind, v) in [&self.w1, &self.b1, &self.w2, &self.b2]
                .into_iter()
                .enumerate()
            {
                out.insert(name(i, kind), v.get(i)?);
            }
        }
        Ok(out)
    }

    /// Routers from [`Routers::named_tensors`]' names; `Err` names what is missing or misshapen.
    pub fn from_named(
        t: &HashMap<String, Tensor>,
        layers: usize,
        d: usize,
    ) -> std::result::Result<Self, String> {
        let stack = |name: &str, shape: &[usize]| -> std::result::Result<Var, String> {
            let mut parts = Vec::with_capacity(layers);
            for i in 0..layers {
                let key = format!("layers.{i}.{name}");
                let x = t
                    .get(&key)
                    .ok_or_else(|| format!("tensor `{key}` is missing"))?;
                if x.dims() != shape {
                    return Err(format!(
                        "tensor `{key}` has shape {:?}, expected {shape:?}",
                        x.dims()
                    ));
                }
                parts.push(x.to_dtype(DType::F32).map_err(|e| e.to_string())?);
            }
            let s = Tensor::stack(&parts, 0).map_err(|e| e.to_string())?;
            Var::from_tensor(&s).map_err(|e| e.to_string())
        };
        let [w1, b1, w2, b2] = CHECKPOINT_NAMES;
        Ok(Self {
            w1: stack(w1, &[HIDDEN, d])?,
            b1: stack(b1, &[HIDDEN])?,
            w2: stack(w2, &[3, HIDDEN])?,
            b2: stack(b2, &[3])?,
        })
    }
}

/// The routers' network on rows `x` (`[L, N, d]`) with stacked weights `[w1, b1, w2, b2]` (one
/// layer's router per leading index): the first layer's pre-activation `[L, N, 128]`, its GELU,
/// and the per-row logits `[L, N, 3]`. Shared by inference, the autograd forward and the
/// hand-written training step.
pub fn mlp(x: &Tensor, w: [&Tensor; 4]) -> Result<(Tensor, Tensor, Tensor)> {
    mlp_with(x, w, gelu_tanh)
}

fn mlp_with(
    x: &Tensor,
    [w1, b1, w2, b2]: [&Tensor; 4],
    act: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let pre = x
        .matmul(&w1.transpose(1, 2)?)?
        .broadcast_add(&b1.unsqueeze(1)?)?;
    let h = act(&pre)?;
    let y = h
        .matmul(&w2.transpose(1, 2)?)?
        .broadcast_add(&b2.unsqueeze(1)?)?;
    Ok((pre, h, y))
}

/// The paper code's inference knob `p ∈ [-1, 1]`: blends the router's probabilities with one-hot
/// skip / execute / repeat before the argmax. `-1` skips every layer, `-0.5` is the pure router
/// (the default), `0.5` executes every layer, `1` repeats every layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget(pub f32);

impl Default for Budget {
    fn default() -> Self {
        Budget(-0.5)
    }
}

impl Budget {
    /// The knob that executes every layer whatever the routers say: the static model.
    pub const STATIC: Budget = Budget(0.5);

    /// The decision for router probabilities `r` (skip, execute, repeat).
    pub fn apply(self, r: [f32; 3]) -> u8 {
        let p = self.0.clamp(-1.0, 1.0);
        let onehot = |c: u8| {
            let mut v = [0.0f32; 3];
            v[c as usize] = 1.0;
            v
        };
        let mix = |a: [f32; 3], b: [f32; 3], t: f32| -> [f32; 3] {
            [0, 1, 2].map(|i| (1.0 - t) * a[i] + t * b[i])
        };
        let q = if p <= -0.5 {
            mix(onehot(SKIP), r, (p + 1.0) / 0.5)
        } else if p <= 0.5 {
            mix(r, onehot(EXECUTE), p + 0.5)
        } else {
            mix(onehot(EXECUTE), onehot(REPEAT), (p - 0.5) / 0.5)
        };
        argmax3(q)
    }
}

/// Index of the largest of three (the first on ties).
pub fn argmax3(q: [f32; 3]) -> u8 {
    let mut best = 0;
    for i in 1..3 {
        if q[i] > q[best] {
            best = i;
        }
    }
    best as u8
}

/// Argmax over the last dimension of `[.., 3]` logits.
pub fn argmax_last(logits: &Tensor) -> Result<Vec<u8>> {
    Ok(logits
        .argmax(D::Minus1)?
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|c| c as u8)
        .collect())
}
