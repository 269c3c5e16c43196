//! `[data]`: where the images are, how many to use, and how pixels become network inputs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::support::validate::Problems;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Directory of the data set: CIFAR-10 binary batches or an image folder.
    pub dir: PathBuf,
    /// Use at most this many training images, balanced over classes (0: all).
    pub train_limit: usize,
    /// Use at most this many test images, balanced over classes (0: all).
    pub test_limit: usize,
    /// Per-channel mean and standard deviation of the pixels in [0, 1].
    #[serde(deserialize_with = "three_channels")]
    pub mean: [f32; 3],
    #[serde(deserialize_with = "three_channels")]
    pub std: [f32; 3],
    /// Random crop after zero padding by this many pixels (0: no crop).
    pub crop_padding: usize,
    /// Random horizontal flip of training images.
    pub flip: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/cifar10"),
            train_limit: 0,
            test_limit: 0,
            mean: [0.4914, 0.4822, 0.4465],
            std: [0.2470, 0.2435, 0.2616],
            crop_padding: 4,
            flip: true,
        }
    }
}

/// The smallest `data.std` accepted.
const MIN_PIXEL_STD: f32 = 1e-3;

/// One value per colour channel: serde's arrays take the first three of a longer list and
/// drop the rest, which would hide a mistake.
fn three_channels<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<[f32; 3], D::Error> {
    let values = Vec::<f32>::deserialize(deserializer)?;
    <[f32; 3]>::try_from(values.as_slice()).map_err(|_| {
        serde::de::Error::custom(format!(
            "expected 3 values (red, green, blue), found {}: {values:?}",
            values.len()
        ))
    })
}

impl DataConfig {
    pub fn validate(&self, problems: &mut Problems) {
        for (i, (&m, &s)) in self.mean.iter().zip(&self.std).enumerate() {
            problems.check(
                m.is_finite(),
                format!("data.mean[{i}] = {m}: expected a finite number"),
            );
            // Pixels are in [0, 1]: a spread below 1/1000 (CIFAR-10's is about 0.25) would
            // scale inputs by a thousand or more and blow up the first steps.
            problems.check(
                s.is_finite() && s >= MIN_PIXEL_STD,
                format!(
                    "data.std[{i}] = {s}: expected a standard deviation of pixels in [0, 1] of \
                     at least {MIN_PIXEL_STD} (CIFAR-10's is about 0.25)"
                ),
            );
        }
        problems.check(
            self.crop_padding <= 16,
            format!(
                "data.crop_padding = {}: expected at most 16 pixels",
                self.crop_padding
            ),
        );
    }
}
