//! What every command that runs a network starts with: the device, the data, and (for
//! `eval`, `curvature` and the like) a checkpoint with its network, on that device. `train`
//! uses the same pieces for its set-up.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::config::{Config, DataConfig};
use crate::data::{self, Dataset, Source, Split};
use crate::device::{self, DeviceChoice, SelectedDevice};
use crate::model::Network;
use crate::params::from_host;
use crate::store::checkpoint::Checkpoint;

/// Opens the device a command runs on and says which it is.
pub fn open_device(choice: DeviceChoice) -> Result<SelectedDevice> {
    let selected = device::select(choice)?;
    log::info!("device: {}", selected.description);
    Ok(selected)
}

/// The training and test sets of a run, with the description the log and `report.md` give.
pub struct TrainingData {
    pub train: Dataset,
    pub test: Dataset,
    pub summary: String,
}

/// Loads both splits of `data.dir` (fetching CIFAR-10 into the default folder on first use)
/// and checks that they have the same classes.
pub fn load_training_data(config: &DataConfig) -> Result<TrainingData> {
    let source = Source::prepare(&config.dir)?;
    let train = source.load(Split::Train, config.train_limit)?;
    let test = source.load(Split::Test, config.test_limit)?;
    data::folder::check_same_classes(&source.root, &train, &test)?;
    let summary = data::describe(&source, &train, &test);
    log::info!("{summary}");
    Ok(TrainingData {
        train,
        test,
        summary,
    })
}

/// A checkpoint's network on a device, ready to run: what `predict` needs.
pub struct OpenedModel {
    pub config: Config,
    pub network: Network,
    pub device: Device,
    pub params: Tensor<1>,
    pub buffers: Tensor<1>,
    /// The class names in label order (CIFAR-10's for checkpoints that did not keep them).
    pub classes: Vec<String>,
}

/// Loads a checkpoint onto `device` (or the one its config names).
pub fn open_model(dir: &Path, device: Option<DeviceChoice>) -> Result<OpenedModel> {
    let ckpt = Checkpoint::load(dir)?;
    let classes = if ckpt.classes.is_empty() {
        data::CIFAR10_CLASSES.map(String::from).to_vec()
    } else {
        ckpt.classes.clone()
    };
    let selected = open_device(device.unwrap_or(ckpt.config.device))?;
    let network = Network::new(&ckpt.config.model, classes.len()).map_err(anyhow::Error::msg)?;
    ckpt.check_layout(dir, &network.params, &network.buffers)?;
    let device = selected.device;
    Ok(OpenedModel {
        params: from_host(ckpt.params, &device),
        buffers: from_host(ckpt.buffers, &device),
        config: ckpt.config,
        network,
        device,
        classes,
    })
}

/// A checkpoint opened for inspection: its config (with the data directory and device the
/// user gave), the network, parameters and buffers on the device, and one split of the data.
pub struct OpenedCheckpoint {
    pub config: Config,
    pub network: Network,
    pub device: Device,
    pub params: Tensor<1>,
    pub buffers: Tensor<1>,
    pub data: Dataset,
}

pub fn open_checkpoint(
    dir: &Path,
    data: Option<PathBuf>,
    device: Option<DeviceChoice>,
    split: Split,
    limit: usize,
) -> Result<OpenedCheckpoint> {
    let ckpt = Checkpoint::load(dir)?;
    let mut config = ckpt.config.clone();
    if let Some(d) = data {
        config.data.dir = d;
    }
    let selected = open_device(device.unwrap_or(config.device))?;
    let source = Source::prepare(&config.data.dir)?;
    let images = source.load(split, limit)?;
    // Another number of classes would show as a model mismatch below; it is the data.
    if !ckpt.classes.is_empty() && ckpt.classes.len() != images.classes.len() {
        bail!(
            "the data in {} differs from the checkpoint's: it has {} classes ({}), the \
             checkpoint {} was trained on {} ({}); give --data a data set of the checkpoint's \
             classes",
            config.data.dir.display(),
            images.classes.len(),
            images.classes.join(", "),
            dir.display(),
            ckpt.classes.len(),
            ckpt.classes.join(", ")
        );
    }
    let network = Network::new(&config.model, images.classes.len()).map_err(anyhow::Error::msg)?;
    ckpt.check_layout(dir, &network.params, &network.buffers)?;
    if !ckpt.classes.is_empty() && ckpt.classes != images.classes {
        log::warn!(
            "the data's classes ({}) are not those the checkpoint was trained on ({}); \
             label numbers may mean other classes, so accuracy may not mean what it says",
            images.classes.join(", "),
            ckpt.classes.join(", ")
        );
    }
    let device = selected.device;
    log::info!(
        "checkpoint {} (epoch {}), {} {}",
        dir.display(),
        ckpt.position.epoch,
        crate::support::words::group_thousands(images.len()),
        if images.len() == 1 {
            format!("{} image", split.name())
        } else {
            format!("{} images", split.name())
        }
    );
    Ok(OpenedCheckpoint {
        params: from_host(ckpt.params.clone(), &device),
        buffers: from_host(ckpt.buffers.clone(), &device),
        config,
        network,
        device,
        data: images,
    })
}
