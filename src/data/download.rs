//! CIFAR-10 on first use: the official binary archive is fetched from its publisher,
//! checked against its published MD5, and extracted so that the data directory either holds
//! the complete `cifar-10-batches-bin/` folder or nothing new at all.
//!
//! Every intermediate file is a hidden temporary tagged with the process id
//! (`fsutil::temporary_sibling`); the extracted folder appears by one `rename`, so a process
//! killed at any moment leaves no half data set that `Source::detect` would take for a whole
//! one. Temporaries of processes that have ended are removed on the next attempt.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::binary::{TEST_FILE, TRAIN_FILES};
use crate::support::fsutil::{remove_temporaries, sync_dir, temporary_sibling};

/// The publisher's address of the binary version (Alex Krizhevsky's CIFAR page).
pub const OFFICIAL_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// The MD5 the publisher lists for it.
pub const OFFICIAL_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The archive's name; a copy placed in the data directory by hand is used without network.
pub const ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";
/// The folder the archive holds the batches in.
pub const EXTRACTED_FOLDER: &str = "cifar-10-batches-bin";
/// Bounds on what a download may write: twice the official archive (170,498,071 bytes) and
/// twice its tar stream (six batches of 30,730,000 bytes and a few small files), room enough
/// for a mirror's slightly different archive, and a gzip bomb or an endless body stops there
/// instead of filling the disk.
pub const MAX_ARCHIVE_BYTES: u64 = 2 * 170_498_071;
pub const MAX_EXTRACTED_BYTES: u64 = 2 * 185_000_000;

/// Why a download failed: the network (where the offline advice helps) or anything else (an
/// HTTP error, a full disk, an oversized body), which is said as it is.
enum DownloadError {
    Network(anyhow::Error),
    Other(anyhow::Error),
}

/// Where the archive comes from and the checksum it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSource {
    pub url: String,
    /// Lower-case hexadecimal MD5 of the whole archive.
    pub md5: String,
}

impl Default for ArchiveSource {
    fn default() -> Self {
        ArchiveSource {
            url: OFFICIAL_URL.into(),
            md5: OFFICIAL_MD5.into(),
        }
    }
}

impl ArchiveSource {
    /// The official archive, or a mirror named by `url` and `md5` (both needed: a mirror's
    /// file is only trusted against a checksum the user gives for it).
    pub fn new(url: Option<String>, md5: Option<String>) -> Result<ArchiveSource> {
        match (url, md5) {
            (None, None) => Ok(ArchiveSource::default()),
            (Some(url), Some(md5)) => {
                let md5 = md5.trim().to_ascii_lowercase();
                if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("MD5 checksum {md5:?} is not 32 hexadecimal digits");
                }
                Ok(ArchiveSource { url, md5 })
            }
            (Some(url), None) => bail!(
                "a download address ({url}) needs its MD5 checksum too (--md5 or HFTRAIN_DATA_MD5)"
            ),
            (None, Some(_)) => bail!(
                "an MD5 checksum needs the address of the archive it belongs to (--url or \
                 HFTRAIN_DATA_URL); without one the official archive and its own checksum are used"
            ),
        }
    }

    /// The official archive, or the mirror named by HFTRAIN_DATA_URL and HFTRAIN_DATA_MD5.
    pub fn from_env() -> Result<ArchiveSource> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        ArchiveSource::new(var("HFTRAIN_DATA_URL"), var("HFTRAIN_DATA_MD5"))
    }
}

/// Whether a command that reads `dir` should fetch CIFAR-10 first: `dir` does not exist,
/// holds nothing, or holds only the archive a user put there by hand.
pub fn should_fetch(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return !dir.exists();
    };
    // Hidden files (a leftover temporary, `.DS_Store`) do not count as content.
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .all(|name| name.starts_with('.') || name == ARCHIVE_NAME)
}

/// Makes `dir` hold CIFAR-10's binary batches: uses `dir/cifar-10-binary.tar.gz` if the user
/// put it there, else downloads the archive. Returns the folder of the batches.
pub fn fetch(dir: &Path, source: &ArchiveSource) -> Result<PathBuf> {
    let extracted = dir.join(EXTRACTED_FOLDER);
    if has_all_batches(&extracted) {
        log::info!("CIFAR-10 is already in {}", extracted.display());
        return Ok(extracted);
    }
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    // Another process may be downloading into the same directory: only ended ones' leftovers.
    remove_temporaries(dir, "download", true)?;

    let placed = dir.join(ARCHIVE_NAME);
    if placed.is_file() {
        log::info!("using the archive {} (not downloading)", placed.display());
        check_md5(&placed, &source.md5).with_context(|| {
            format!(
                "the archive {} is not the one expected; delete it (hftrain then downloads \
                 {}) or replace it with a good copy",
                placed.display(),
                source.url
            )
        })?;
        extract(&placed, &placed.display().to_string(), dir)?;
    } else {
        let download = temporary_sibling(&placed);
        let result = download_to(&source.url, &download)
            .map_err(|e| match e {
                DownloadError::Network(e) if !crate::support::interrupt::requested() => {
                    e.context(offline_advice(dir, source))
                }
                DownloadError::Network(e) | DownloadError::Other(e) => e,
            })
            .and_then(|()| {
                check_md5(&download, &source.md5).with_context(|| {
                    format!(
                        "the download from {} is corrupted and was removed; run the command \
                         again to download it afresh",
                        source.url
                    )
                })
            })
            .and_then(|()| extract(&download, &format!("the archive from {}", source.url), dir));
        // The archive is not kept: the extracted batches are the data set.
        let _ = fs::remove_file(&download);
        result?;
    }
    log::info!("CIFAR-10 is in {}", extracted.display());
    Ok(extracted)
}

/// What to do without network access.
fn offline_advice(dir: &Path, source: &ArchiveSource) -> String {
    format!(
        "cannot download CIFAR-10. Without network access: fetch {} (MD5 {}) on another \
         machine and put it at {} (hftrain checks and extracts it on the next run), or put its \
         extracted files {} and {TEST_FILE} into {}",
        source.url,
        source.md5,
        dir.join(ARCHIVE_NAME).display(),
        TRAIN_FILES.join(", "),
        dir.display()
    )
}

fn has_all_batches(folder: &Path) -> bool {
    TRAIN_FILES
        .iter()
        .chain([&TEST_FILE])
        .all(|name| folder.join(name).is_file())
}

/// Streams `url` into `path` (created afresh and synced), with a progress bar.
fn download_to(url: &str, path: &Path) -> Result<(), DownloadError> {
    use DownloadError::{Network, Other};
    let stall = stall_timeout().map_err(Other)?;
    let mut response = match request(url, stall) {
        Ok(response) => response,
        Err(ureq::Error::StatusCode(code)) => {
            return Err(Other(anyhow::anyhow!(
                "{url} answered HTTP {code}: no archive there; check the address (--url or \
                 HFTRAIN_DATA_URL for a mirror)"
            )));
        }
        Err(e) => return Err(Network(anyhow::Error::new(e).context(format!("GET {url}")))),
    };
    let total = response.body().content_length();
    if let Some(total) = total.filter(|&t| t > MAX_ARCHIVE_BYTES) {
        return Err(Other(anyhow::anyhow!(
            "{url} announces {total} bytes; the CIFAR-10 archive is about 170 MB (at most \
             {MAX_ARCHIVE_BYTES} bytes accepted): not the archive, nothing downloaded"
        )));
    }
    let reader = response.body_mut().with_config().reader();
    let _ctrl_c_removes_it = crate::support::interrupt::DownloadGuard::new(path);
    receive(url, reader, total, path, stall)
}

fn request(url: &str, stall: Duration) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    log::info!("downloading {url}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        // A stalled connection fails instead of hanging (no byte for `stall`); a slow one
        // may take as long as it needs.
        .timeout_recv_response(Some(stall))
        .timeout_per_read(Some(stall))
        .timeout_recv_body(None)
        .build()
        .into();
    agent.get(url).call()
}

/// The environment variable that sets how long a download may go without receiving a byte.
pub const STALL_VARIABLE: &str = "HFTRAIN_DOWNLOAD_STALL_SECONDS";
const DEFAULT_STALL_SECONDS: u64 = 60;

/// How long a download may receive nothing before it fails: HFTRAIN_DOWNLOAD_STALL_SECONDS,
/// else 60 s.
fn stall_timeout() -> Result<Duration> {
    match std::env::var(STALL_VARIABLE) {
        Ok(text) if !text.is_empty() => match text.trim().parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
            _ => bail!("{STALL_VARIABLE}={text:?}: expected a whole number of seconds, at least 1"),
        },
        _ => Ok(Duration::from_secs(DEFAULT_STALL_SECONDS)),
    }
}

/// Writes the body into `path`, at most MAX_ARCHIVE_BYTES of it.
fn receive(
    url: &str,
    mut reader: impl Read,
    total: Option<u64>,
    path: &Path,
    stall: Duration,
) -> Result<(), DownloadError> {
    use DownloadError::{Network, Other};
    let bar = progress_bar(total);
    let local = |e: anyhow::Error| Other(e);
    let mut file = BufWriter::new(
        File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))
            .map_err(local)?,
    );
    let mut buffer = vec![0u8; 1 << 16];
    let mut received: u64 = 0;
    let mut next_line = 1u64;
    loop {
        let n = reader.read(&mut buffer).map_err(|e| {
            // ureq hands its own timeout inside an io::Error.
            let timed_out = e.kind() == std::io::ErrorKind::TimedOut
                || e.get_ref()
                    .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                    .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)));
            let what = match timed_out {
                true => format!(
                    "the download from {url} stalled after {received} bytes: nothing arrived \
                     for {} s ({STALL_VARIABLE} sets how long to wait)",
                    stall.as_secs()
                ),
                false => format!("the connection to {url} broke off after {received} bytes"),
            };
            Network(anyhow::Error::new(e).context(what))
        })?;
        if n == 0 {
            break;
        }
        // Under `train`, Ctrl-C only raises a flag (so that a step can finish): honour it here.
        if crate::support::interrupt::requested() {
            return Err(Other(anyhow::anyhow!(
                "interrupted by Ctrl-C during the download; nothing of it was kept"
            )));
        }
        received += n as u64;
        if received > MAX_ARCHIVE_BYTES {
            return Err(Other(anyhow::anyhow!(
                "{url} sent more than {MAX_ARCHIVE_BYTES} bytes; the CIFAR-10 archive is about \
                 170 MB: not the archive, stopped and removed"
            )));
        }
        file.write_all(&buffer[..n])
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(local)?;
        bar.set_position(received);
        // Off a terminal the bar is hidden: a line every tenth of the way instead.
        if bar.is_hidden()
            && total.is_some_and(|t| received * 10 >= next_line * t && next_line < 10)
        {
            log::info!(
                "downloaded {} of {} MiB",
                mib(received),
                mib(total.unwrap_or(0))
            );
            next_line += 1;
        }
    }
    bar.finish_and_clear();
    if let Some(total) = total
        && received != total
    {
        return Err(Network(anyhow::anyhow!(
            "the download from {url} ended after {received} of {total} bytes"
        )));
    }
    file.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(local)?;
    log::info!("downloaded {} MiB", mib(received));
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !crate::support::logging::progress_bars() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "CIFAR-10 [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar
}

/// Fails unless the file's MD5 is `expected` (lower-case hexadecimal).
fn check_md5(path: &Path, expected: &str) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut context = md5::Context::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        context.consume(&buffer[..n]);
    }
    let actual = format!("{:x}", context.finalize());
    if actual != expected {
        bail!("{} has MD5 {actual}, expected {expected}", path.display());
    }
    Ok(())
}

/// A reader that fails once more than `left` bytes have come through it.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buffer)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!(
                "it unpacks to more than {MAX_EXTRACTED_BYTES} bytes (CIFAR-10's files are \
                 about 185 MB): not the CIFAR-10 archive"
            ))
        })?;
        Ok(n)
    }
}

/// Unpacks the archive into a temporary folder beside `dir/cifar-10-batches-bin`, checks it
/// holds every batch, then renames its batch folder into place. `name` says in errors which
/// archive it is (a download's temporary file is gone by the time the user reads them).
fn extract(archive: &Path, name: &str, dir: &Path) -> Result<()> {
    let target = dir.join(EXTRACTED_FOLDER);
    let staging = temporary_sibling(&target);
    let result = (|| {
        let file =
            File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
        // `unpack` refuses entries that would land outside `staging` (absolute paths, `..`);
        // the bound stops a gzip bomb before it fills the disk.
        let unpacked_bytes = Bounded {
            inner: flate2::read::GzDecoder::new(BufReader::new(file)),
            left: MAX_EXTRACTED_BYTES,
        };
        tar::Archive::new(unpacked_bytes)
            .unpack(&staging)
            .with_context(|| format!("cannot extract {name}"))?;
        let unpacked = staging.join(EXTRACTED_FOLDER);
        if !has_all_batches(&unpacked) {
            bail!(
                "{name} does not hold {EXTRACTED_FOLDER}/ with {} and {TEST_FILE}: not the \
                 CIFAR-10 binary archive",
                TRAIN_FILES.join(", ")
            );
        }
        for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
            File::open(unpacked.join(name))
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", unpacked.join(name).display()))?;
        }
        sync_dir(&unpacked)?;
        fs::rename(&unpacked, &target).with_context(|| {
            format!("cannot move {} to {}", unpacked.display(), target.display())
        })?;
        sync_dir(dir)
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}
