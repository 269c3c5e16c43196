//! `hftrain data download` and `hftrain data synthetic`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::data::synthetic::{MAX_PER_CLASS, SyntheticSpec, is_generated};
use crate::data::{Format, Split};

#[derive(Subcommand, Debug, Clone)]
pub enum DataCommand {
    /// Download CIFAR-10's binary version (cifar-10-binary.tar.gz, 163 MB) from its
    /// publisher, check its MD5 and extract it into <data>/cifar-10-batches-bin/. `train` and
    /// `eval` do the same by themselves when the data directory is empty or missing. A copy
    /// of the archive placed at <data>/cifar-10-binary.tar.gz is checked and extracted
    /// without network access. A download that receives nothing for 60 s fails
    /// (HFTRAIN_DOWNLOAD_STALL_SECONDS sets the wait); Ctrl-C stops it at once, keeping
    /// nothing.
    Download {
        /// Data directory.
        #[arg(long, env = "HFTRAIN_DATA", default_value = "data/cifar10")]
        data: PathBuf,
        /// Address of the archive, for a mirror (needs --md5) [default: the publisher's,
        /// https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz].
        #[arg(long, env = "HFTRAIN_DATA_URL")]
        url: Option<String>,
        /// MD5 checksum of the mirror's archive (32 hexadecimal digits) [default: the
        /// publisher's, c32a1d4ab5d03f1284b67883e8d87530].
        #[arg(long, env = "HFTRAIN_DATA_MD5")]
        md5: Option<String>,
    },
    /// Write a generated stand-in for CIFAR-10: ten classes (CIFAR-10's names) of coloured
    /// stripes with noise, which a small network learns in seconds. For a check of the whole
    /// pipeline without downloading anything: `--data` a run at the folder it writes.
    Synthetic(SyntheticArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct SyntheticArgs {
    /// Folder to create (refused when it exists and is not empty, but with --force).
    #[arg(long)]
    pub out: PathBuf,
    /// On-disk format: the official binary batches or an image folder of PNG files.
    #[arg(long, value_enum, default_value_t = SyntheticFormat::Binary)]
    pub format: SyntheticFormat,
    /// Training images per class.
    #[arg(long, default_value_t = 500)]
    pub train_per_class: usize,
    /// Test images per class.
    #[arg(long, default_value_t = 100)]
    pub test_per_class: usize,
    /// Seed of the generator (the same seed writes the same images on every machine).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace --out if it holds a data set `data synthetic` wrote (and nothing else).
    #[arg(long)]
    pub force: bool,
}

/// The formats `hftrain data synthetic` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyntheticFormat {
    /// data_batch_1.bin ... data_batch_5.bin and test_batch.bin.
    Binary,
    /// train/<class>/*.png and test/<class>/*.png.
    Folder,
}

pub fn execute(command: &DataCommand) -> Result<ExitCode> {
    match command {
        DataCommand::Download { data, url, md5 } => {
            let source = crate::data::download::ArchiveSource::new(url.clone(), md5.clone())?;
            let folder = crate::data::download::fetch(data, &source)?;
            println!("CIFAR-10: {}", folder.display());
        }
        DataCommand::Synthetic(args) => synthetic(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn synthetic(args: &SyntheticArgs) -> Result<()> {
    // Checked before the images are allocated (a billion per class would abort the process).
    for (option, count) in [
        ("--train-per-class", args.train_per_class),
        ("--test-per-class", args.test_per_class),
    ] {
        if count == 0 || count > MAX_PER_CLASS {
            bail!(
                "{option} {count}: expected 1 to {} images per class (CIFAR-10 has 5,000 \
                 training and 1,000 test images per class)",
                crate::support::words::group_thousands(MAX_PER_CLASS)
            );
        }
    }
    crate::store::output::check_folder(&args.out, "--out")?;
    let replace = std::fs::read_dir(&args.out).is_ok_and(|mut e| e.next().is_some());
    if replace && !(args.force && is_generated(&args.out)) {
        bail!(
            "{} already exists and is not empty; choose a new folder for the generated data \
             set{}",
            args.out.display(),
            match args.force {
                true =>
                    " (--force replaces only a folder holding nothing but a data set \
                         `data synthetic` wrote)",
                false => ", or pass --force to replace a data set `data synthetic` wrote there",
            }
        );
    }
    let spec = SyntheticSpec {
        train_per_class: args.train_per_class,
        test_per_class: args.test_per_class,
        seed: args.seed,
    };
    let (train, test) = (spec.generate(Split::Train), spec.generate(Split::Test));
    let format = match args.format {
        SyntheticFormat::Binary => Format::Binary,
        SyntheticFormat::Folder => Format::ImageFolder,
    };
    if replace {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("--force: cannot remove {}", args.out.display()))?;
    }
    crate::data::synthetic::write(&args.out, format, &train, &test)?;
    println!(
        "synthetic data set ({format}): {} training and {} test images in {}",
        train.len(),
        test.len(),
        args.out.display()
    );
    Ok(())
}
