//! Flat parameter vectors and their layout table.
//!
//! Every vector of parameter space (the parameters, gradients, optimizer state, and later the
//! curvature products and CG iterates) is one flat device tensor, so an optimizer update is a
//! handful of kernels, not a handful per parameter tensor. The layout table (name, shape,
//! offset) says where each named tensor lives; the checkpoint code stores it beside the data.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutEntry {
    /// PyTorch-style name, e.g. `stages.1.layers.0.weight`.
    pub name: String,
    /// PyTorch-style shape, e.g. `[out, in, kh, kw]` for a convolution weight.
    pub shape: Vec<usize>,
    pub offset: usize,
    /// Whether weight decay applies (convolution and linear weights; not biases or batch norm).
    pub decay: bool,
}

impl LayoutEntry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    entries: Vec<LayoutEntry>,
}

impl Layout {
    /// Appends a tensor and returns its index.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize], decay: bool) -> usize {
        let offset = self.total();
        self.entries.push(LayoutEntry {
            name: name.into(),
            shape: shape.to_vec(),
            offset,
            decay,
        });
        self.entries.len() - 1
    }

    pub fn entries(&self) -> &[LayoutEntry] {
        &self.entries
    }

    pub fn entry(&self, index: usize) -> &LayoutEntry {
        &self.entries[index]
    }

    /// Number of scalars in the whole vector.
    pub fn total(&self) -> usize {
        self.entries.last().map_or(0, |e| e.offset + e.len())
    }

    /// Each entry of `flat` as its own 1-D tensor, in layout order.
    pub fn split(&self, flat: &Tensor<1>) -> Vec<Tensor<1>> {
        self.entries
            .iter()
            .map(|e| flat.clone().slice(e.offset..e.offset + e.len()))
            .collect()
    }

    /// The inverse of `split`.
    pub fn join(&self, parts: Vec<Tensor<1>>) -> Tensor<1> {
        debug_assert_eq!(parts.len(), self.entries.len());
        Tensor::cat(parts, 0)
    }

    /// 1 where weight decay applies, 0 elsewhere.
    pub fn decay_mask(&self, device: &Device) -> Tensor<1> {
        let mut mask = Vec::with_capacity(self.total());
        for e in &self.entries {
            mask.extend(std::iter::repeat_n(
                if e.decay { 1f32 } else { 0f32 },
                e.len(),
            ));
        }
        Tensor::from_data(burn::tensor::TensorData::new(mask, [self.total()]), device)
    }

    /// The first difference to `other`, in words, for refusing a checkpoint of another model.
    pub fn mismatch(&self, other: &Layout) -> Option<String> {
        for (mine, theirs) in self.entries.iter().zip(&other.entries) {
            if mine.name != theirs.name || mine.shape != theirs.shape {
                return Some(format!(
                    "`{}` has shape {:?} here but the checkpoint has `{}` with shape {:?}",
                    mine.name, mine.shape, theirs.name, theirs.shape
                ));
            }
        }
        if self.entries.len() != other.entries.len() {
            return Some(format!(
                "this model has {} parameter tensors, the checkpoint {}",
                self.entries.len(),
                other.entries.len()
            ));
        }
        None
    }
}

/// Reads a 1-D device tensor back as f32 values.
pub fn to_host(tensor: &Tensor<1>) -> Vec<f32> {
    tensor.to_data().iter::<f32>().collect()
}

/// Uploads f32 values as a 1-D tensor on `device` (converted to the device's float type).
pub fn from_host(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = values.len();
    Tensor::from_data(burn::tensor::TensorData::new(values, [n]), device)
}

/// A direction with entries uniform in [-1, 1), drawn on the host from `seed` (the `v` of
/// `hftrain curvature` and `hftrain bench`).
pub fn seeded_direction(len: usize, seed: u64, device: &Device) -> Tensor<1> {
    let mut rng = crate::support::rng::Rng::derive(seed, &[0xD1EC]);
    from_host(
        (0..len)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
            .collect(),
        device,
    )
}

/// Waits for the device by reading one value back (what a timing must do before it stops
/// the clock).
pub fn sync(t: &Tensor<1>) {
    let _ = t.clone().sum().into_scalar::<f64>();
}
