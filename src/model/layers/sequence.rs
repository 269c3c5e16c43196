//! Layers one after another. Its record holds its children's records, so vjp and jvp (and
//! with them Hv and Gv) go through it unchanged.

use std::sync::Arc;

use burn::prelude::*;

use crate::model::layer::{BatchStats, Gradients, Layer, Pass, Recorded};

#[derive(Debug, Clone)]
pub struct Sequence {
    pub layers: Vec<Arc<dyn Layer>>,
}

impl Layer for Sequence {
    fn describe(&self) -> String {
        let parts: Vec<String> = self.layers.iter().map(|l| l.describe()).collect();
        parts.join(" | ")
    }

    fn forward(&self, x: Tensor<4>, pass: &mut Pass) -> Tensor<4> {
        self.layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, pass))
    }

    fn record(&self, x: Tensor<4>, params: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        let mut records = Vec::with_capacity(self.layers.len());
        let mut x = x;
        for layer in &self.layers {
            let (y, record) = layer.record(x, params);
            records.push(record);
            x = y;
        }
        (x, Box::new(SequenceRecord { records }))
    }
}

pub struct SequenceRecord {
    records: Vec<Box<dyn Recorded>>,
}

impl Recorded for SequenceRecord {
    fn vjp(
        &self,
        params: &[Tensor<1>],
        dy: Tensor<4>,
        grads: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        let mut dy = dy;
        for (i, record) in self.records.iter().enumerate().rev() {
            // Every layer but the first passes its input's gradient on.
            match record.vjp(params, dy, grads, i > 0 || need_input) {
                Some(dx) => dy = dx,
                None => return None,
            }
        }
        Some(dy)
    }

    fn jvp(
        &self,
        params: &[Tensor<1>],
        tangents: &[Tensor<1>],
        dx: Option<Tensor<4>>,
    ) -> Option<Tensor<4>> {
        self.records
            .iter()
            .fold(dx, |dx, record| record.jvp(params, tangents, dx))
    }

    fn batch_stats(&self, stats: &mut Vec<BatchStats>) {
        for record in &self.records {
            record.batch_stats(stats);
        }
    }
}
