//! `hftrain predict`: a trained network on the user's own pictures. Each picture, of any size
//! and in any format the `image` crate reads, is turned upright by its EXIF orientation,
//! cropped to its centred square and resized to
//! 32x32 with a Lanczos filter (antialiased: every source pixel counts), then normalised as in
//! training and classified in batches. A picture that cannot be read is reported and the
//! others are still classified.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use image::ImageDecoder;
use image::imageops::FilterType;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::batcher::{Transform, eval_batches};
use crate::data::{CHANNELS, Dataset, IMAGE_BYTES, IMAGE_SIDE};
use crate::device::DeviceChoice;
use crate::session::{OpenedModel, open_model};
use crate::store::output::{self, Existing};
use crate::support::fsutil::write_atomic;

/// File name endings taken from a folder (a file named on the command line is always tried).
pub const EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "gif", "bmp", "webp", "ppm", "pgm", "pnm",
];

/// How a picture becomes the network's input, as `--help` and the JSON say.
pub const PREPROCESSING: &str = "the centred square of the picture turned upright by its EXIF \
                                 orientation, resized to 32x32 with a \
                                 Lanczos-3 filter, RGB, normalised with the training mean and \
                                 standard deviation";

/// `hftrain predict`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    /// Checkpoint directory, e.g. runs/cifar10/checkpoints/latest.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Pictures (PNG, JPEG, GIF, BMP, WebP, PNM; any size) or folders of them.
    #[arg(required = true, value_name = "IMAGE")]
    pub inputs: Vec<PathBuf>,
    /// How many of the most likely classes to show.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Also write the predictions as JSON to this file [default: none, only printed].
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace the --json file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the checkpoint config's].
    #[arg(long)]
    pub device: Option<DeviceChoice>,
}

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Guess {
    pub class: String,
    pub probability: f64,
}

/// What became of one picture: its top classes, or why it could not be classified.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<Guess>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Prediction {
    /// The line `predict` prints.
    pub fn line(&self) -> String {
        match (&self.top, &self.error) {
            (Some(top), _) => {
                let guesses: Vec<String> = top
                    .iter()
                    .map(|g| format!("{} {:.1}%", g.class, 100.0 * g.probability))
                    .collect();
                format!("{}: {}", self.file.display(), guesses.join(", "))
            }
            (None, error) => format!(
                "{}: not classified: {}",
                self.file.display(),
                error.as_deref().unwrap_or("unknown error")
            ),
        }
    }
}

#[derive(Serialize)]
struct PredictionsFile<'a> {
    format: &'static str,
    checkpoint: String,
    preprocessing: &'static str,
    predictions: &'a [Prediction],
}

/// The pictures `inputs` name: files as given, folders as their image files (sorted). A
/// folder without any is an error naming it.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            files.push(input.clone());
            continue;
        }
        let entries: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("cannot read folder {}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let named_as_image = |p: &PathBuf| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        };
        let mut found = Vec::new();
        for path in entries.iter().filter(|p| named_as_image(p)) {
            if path.is_file() {
                found.push(path.clone());
            } else {
                // A link to nothing, or a folder named like a picture: said, not skipped
                // in silence.
                log::warn!(
                    "{}: skipped, it is not a readable picture file",
                    path.display()
                );
            }
        }
        if found.is_empty() {
            let subfolders: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
            let inside = match subfolders.as_slice() {
                [] => String::new(),
                [one] => format!("; its subfolder {} is not searched: name it", one.display()),
                [first, ..] => format!(
                    "; its {} subfolders are not searched: name them (e.g. {})",
                    subfolders.len(),
                    first.display()
                ),
            };
            bail!(
                "folder {} holds no image ({} files){inside}; name image files or folders of them",
                input.display(),
                EXTENSIONS.join(", ")
            );
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// The most pixels a picture may have (a 12000 x 8000 photo has 96 million): its header is
/// read first, and a larger one is refused before its pixels would take gigabytes.
pub const MAX_PIXELS: u64 = 100_000_000;

/// A picture as the network's input: CHW bytes, 32x32. Errors say what is wrong with the
/// picture; the line that prints them names its file.
pub fn prepare_image(path: &Path) -> Result<Vec<u8>> {
    // Opening a fifo would wait for a writer forever, and a device has no end.
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
    if !meta.is_file() {
        bail!("not a regular file (a fifo, a device or a socket); name a picture file");
    }
    let reader = || -> Result<_> {
        image::ImageReader::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?
            .with_guessed_format()
            .with_context(|| format!("cannot read {}", path.display()))
    };
    let unreadable =
        |e: image::ImageError| anyhow::anyhow!("not an image this build can read ({e})");
    let (width, height) = reader()?.into_dimensions().map_err(unreadable)?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        bail!(
            "the picture is {width}x{height} pixels ({} million), more than the {} million \
             predict reads; scale it down first",
            u64::from(width) * u64::from(height) / 1_000_000,
            MAX_PIXELS / 1_000_000
        );
    }
    // Upright as a viewer shows it: a phone's photo is stored sideways with an EXIF
    // orientation saying how to turn it.
    let mut decoder = reader()?.into_decoder().map_err(unreadable)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut decoded = image::DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    decoded.apply_orientation(orientation);
    let rgb = decoded.into_rgb8();
    let (width, height) = rgb.dimensions();
    let side = width.min(height);
    if side == 0 {
        bail!("the picture is empty ({width}x{height})");
    }
    let square =
        image::imageops::crop_imm(&rgb, (width - side) / 2, (height - side) / 2, side, side)
            .to_image();
    let small = image::imageops::resize(
        &square,
        IMAGE_SIDE as u32,
        IMAGE_SIDE as u32,
        FilterType::Lanczos3,
    );
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    let mut chw = vec![0u8; IMAGE_BYTES];
    for (p, pixel) in small.pixels().enumerate() {
        for c in 0..CHANNELS {
            chw[c * plane + p] = pixel.0[c];
        }
    }
    Ok(chw)
}

/// Class probabilities of prepared pictures (CHW bytes each), in batches.
pub fn probabilities(
    model: &OpenedModel,
    pictures: &[Vec<u8>],
    progress: &ProgressBar,
) -> Vec<Vec<f64>> {
    let data = Dataset {
        images: pictures.concat(),
        labels: vec![0; pictures.len()],
        classes: model.classes.clone(),
    };
    let transform = Transform::eval(&model.config.data);
    let mut out = Vec::with_capacity(pictures.len());
    for batch in eval_batches(&data, model.config.train.eval_batch_size, &transform) {
        let n = batch.len();
        let (images, _) = batch.to_device(&model.device);
        let logits = model.network.predict(images, &model.params, &model.buffers);
        let p: Vec<f64> = burn::tensor::activation::softmax(logits, 1)
            .to_data()
            .iter::<f64>()
            .collect();
        out.extend(p.chunks(model.classes.len()).map(<[f64]>::to_vec));
        progress.inc(n as u64);
    }
    out
}

/// The `top` most likely classes.
fn top_guesses(probabilities: &[f64], classes: &[String], top: usize) -> Vec<Guess> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    order
        .into_iter()
        .take(top)
        .map(|i| Guess {
            class: classes[i].clone(),
            probability: probabilities[i],
        })
        .collect()
}

fn progress_bar(len: usize) -> ProgressBar {
    // A bar only where there is something to wait for.
    if !crate::support::logging::progress_bars() || len < 100 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "classifying [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise}<{eta_precise}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar
}

/// Classifies every picture the request names; writes `--json` where asked. A picture that
/// fails is in the result with its error; the run fails only where nothing can be done (no
/// checkpoint, a folder without pictures, a JSON file that cannot be written).
pub fn run(request: &PredictArgs) -> Result<Vec<Prediction>> {
    if request.top == 0 {
        bail!("--top 0: expected at least 1 class to show");
    }
    let files = expand_inputs(&request.inputs)?;
    if let Some(path) = &request.json {
        output::check(path, "--json", Existing::named(request.force))?;
        output::check_not_an_input(path, "--json", &files)?;
    }
    let model = open_model(&request.checkpoint, request.device)?;
    let progress = progress_bar(files.len());
    let prepared: Vec<Result<Vec<u8>>> = files.par_iter().map(|f| prepare_image(f)).collect();
    let good: Vec<Vec<u8>> = prepared
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let mut probabilities = probabilities(&model, &good, &progress).into_iter();
    progress.finish_and_clear();
    let top = request.top.min(model.classes.len());
    let predictions: Vec<Prediction> = files
        .into_iter()
        .zip(prepared)
        .map(|(file, prepared)| match prepared {
            Ok(_) => Prediction {
                top: Some(top_guesses(
                    &probabilities
                        .next()
                        .expect("one result per prepared picture"),
                    &model.classes,
                    top,
                )),
                error: None,
                file,
            },
            Err(e) => Prediction {
                top: None,
                error: Some(format!("{e:#}")),
                file,
            },
        })
        .collect();
    if let Some(path) = &request.json {
        let file = PredictionsFile {
            format: "hftrain predictions v1",
            checkpoint: request.checkpoint.display().to_string(),
            preprocessing: PREPROCESSING,
            predictions: &predictions,
        };
        let text = serde_json::to_string_pretty(&file).expect("predictions always serialise");
        write_atomic(path, text.as_bytes())?;
    }
    Ok(predictions)
}

/// `hftrain predict`: exit status 1 when a picture could not be classified (after printing
/// and writing all the others).
pub fn execute(args: &PredictArgs) -> Result<ExitCode> {
    let predictions = run(args)?;
    let mut failed = 0;
    for p in &predictions {
        if p.error.is_some() {
            failed += 1;
            eprintln!("{}", p.line());
        } else {
            println!("{}", p.line());
        }
    }
    if let Some(json) = &args.json {
        println!("predictions: {}", json.display());
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} could not be classified",
            crate::support::words::count(predictions.len(), "picture")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
