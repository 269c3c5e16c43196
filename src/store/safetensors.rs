//! A minimal writer of the safetensors format (what PyTorch, JAX and NumPy users load with
//! `safetensors.torch.load_file` and friends): an 8-byte little-endian header length, a JSON
//! header naming each tensor's dtype, shape and byte range, then the raw little-endian data.
//!
//! Our own instead of the `safetensors` crate: that crate turns on features of crates wgpu
//! depends on (bitflags/std), which would make `cargo build` and `cargo test` compile the
//! whole Burn stack twice (see BENCHMARKS.md), for fifty lines of format.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::support::fsutil::write_atomic;

/// Tensors and string metadata, written in name order.
#[derive(Debug, Default)]
pub struct SafeTensors {
    tensors: BTreeMap<String, (&'static str, Vec<usize>, Vec<u8>)>,
    metadata: BTreeMap<String, String>,
}

impl SafeTensors {
    pub fn add_f32(&mut self, name: impl Into<String>, shape: &[usize], values: &[f32]) {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape and data of a tensor agree"
        );
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors
            .insert(name.into(), ("F32", shape.to_vec(), bytes));
    }

    pub fn add_i64(&mut self, name: impl Into<String>, shape: &[usize], values: &[i64]) {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape and data of a tensor agree"
        );
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors
            .insert(name.into(), ("I64", shape.to_vec(), bytes));
    }

    pub fn add_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        if !self.metadata.is_empty() {
            header.insert("__metadata__".into(), json!(self.metadata));
        }
        let mut offset = 0usize;
        for (name, (dtype, shape, bytes)) in &self.tensors {
            header.insert(
                name.clone(),
                json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()] }),
            );
            offset += bytes.len();
        }
        let mut header =
            serde_json::to_vec(&Value::Object(header)).expect("JSON of strings and numbers");
        // The format pads the header with spaces to a multiple of 8 bytes.
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let mut out = Vec::with_capacity(8 + header.len() + offset);
        out.extend((header.len() as u64).to_le_bytes());
        out.extend(header);
        for (_, _, bytes) in self.tensors.values() {
            out.extend(bytes);
        }
        out
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes())
    }
}
