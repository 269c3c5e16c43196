//! CIFAR-10 on first use, end to end against a local HTTP server: the archive is a small one
//! the test makes in the official layout, served on 127.0.0.1; a corrupted copy must be
//! refused and removed, an unreachable address must say where to put the files.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use hftrain::data::binary::{TEST_FILE, TRAIN_FILES};
use hftrain::data::{Format, Source, Split};

use crate::common::{TempDir, binary_records, small_config};

/// A `.tar.gz` in the official layout: `cifar-10-batches-bin/` with the six batches (20
/// images each, labels cycling) and `batches.meta.txt`.
fn small_archive() -> Vec<u8> {
    let labels: Vec<u8> = (0..20).map(|i| (i % 10) as u8).collect();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), bytes)
            .unwrap();
    };
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        add(name, &binary_records(&labels));
    }
    add(
        "batches.meta.txt",
        hftrain::data::CIFAR10_CLASSES.join("\n").as_bytes(),
    );
    tar.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", md5::compute(bytes))
}

/// Serves `routes` (path -> body) over HTTP/1.1 on 127.0.0.1 from a background thread;
/// unknown paths get 404. Returns the base address and the paths requested so far.
fn serve(routes: Vec<(&'static str, Vec<u8>)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let requested = Arc::new(Mutex::new(Vec::new()));
    let log = requested.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let path = read_request(&stream);
            log.lock().unwrap().push(path.clone());
            let _ = match routes.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(body)),
                None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            };
        }
    });
    (address, requested)
}

/// Reads one HTTP request (its line and headers) from `stream`; returns the path asked for.
fn read_request(stream: &std::net::TcpStream) -> String {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// Runs hftrain with the mirror variables of `env` (and none inherited).
fn hftrain(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args(args)
        .env_remove("HFTRAIN_DATA")
        .env_remove("HFTRAIN_DATA_URL")
        .env_remove("HFTRAIN_DATA_MD5")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// `hftrain data download --data DATA --url URL --md5 MD5`.
fn download(data: &Path, url: &str, md5: &str) -> (bool, String) {
    hftrain(
        &[
            "data",
            "download",
            "--data",
            data.to_str().unwrap(),
            "--url",
            url,
            "--md5",
            md5,
        ],
        &[],
    )
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn download_checks_the_md5_extracts_atomically_and_removes_a_corrupted_copy() {
    let archive = small_archive();
    let md5 = md5_hex(&archive);
    let mut corrupted = archive.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x40;
    let not_an_archive = b"<html>a login page</html>".to_vec();
    let not_an_archive_md5 = md5_hex(&not_an_archive);
    let (base, requested) = serve(vec![
        ("/good.tar.gz", archive.clone()),
        ("/corrupted.tar.gz", corrupted),
        ("/login.html", not_an_archive),
    ]);
    let dir = TempDir::new();
    let data = dir.path().join("cifar10");

    // A corrupted download: refused by its MD5, removed, nothing extracted.
    let url = format!("{base}/corrupted.tar.gz");
    let (ok, text) = download(&data, &url, &md5);
    assert!(!ok, "a corrupted download must fail:\n{text}");
    assert!(
        text.contains("corrupted") && text.contains("MD5") && text.contains(&md5),
        "{text}"
    );
    assert_eq!(
        listing(&data),
        Vec::<String>::new(),
        "the corrupted download is removed"
    );

    // Its checksum right but no archive (a mirror's error page): named, nothing left behind.
    let url = format!("{base}/login.html");
    let (ok, text) = download(&data, &url, &not_an_archive_md5);
    assert!(!ok);
    assert!(
        text.contains(&format!("cannot extract the archive from {url}")),
        "{text}"
    );
    assert_eq!(
        listing(&data),
        Vec::<String>::new(),
        "nothing is left of a failed extraction"
    );

    // The good one: extracted into cifar-10-batches-bin/, no temporary left, data loads.
    let url = format!("{base}/good.tar.gz");
    let (ok, text) = download(&data, &url, &md5);
    assert!(ok, "{text}");
    assert!(text.contains("downloaded"), "{text}");
    assert_eq!(listing(&data), vec!["cifar-10-batches-bin".to_string()]);
    let source = Source::detect(&data).unwrap();
    assert_eq!(source.format, Format::Binary);
    assert_eq!(source.load(Split::Train, 0).unwrap().len(), 100);
    assert_eq!(source.load(Split::Test, 0).unwrap().len(), 20);

    // Once there, nothing is fetched again.
    let before = requested.lock().unwrap().len();
    let (ok, text) = download(&data, &url, &md5);
    assert!(ok && text.contains("already"), "{text}");
    assert_eq!(
        requested.lock().unwrap().len(),
        before,
        "no request for data already there"
    );
    println!(
        "measured: download of a {}-byte archive from 127.0.0.1 checked, extracted; corrupted copy removed",
        archive.len()
    );
}

#[test]
fn train_fetches_into_an_empty_data_directory_and_then_trains() {
    let archive = small_archive();
    let md5 = md5_hex(&archive);
    let (base, requested) = serve(vec![("/cifar-10-binary.tar.gz", archive)]);
    let dir = TempDir::new();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut config = small_config(&data, "flex");
    config.data.train_limit = 0;
    config.data.test_limit = 0;
    config.train.epochs = 1;
    let config_path = dir.path().join("c.toml");
    std::fs::write(&config_path, config.to_toml()).unwrap();
    let url = format!("{base}/cifar-10-binary.tar.gz");
    let run = dir.path().join("run");
    let (ok, text) = hftrain(
        &[
            "train",
            "--config",
            config_path.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ],
        &[("HFTRAIN_DATA_URL", &url), ("HFTRAIN_DATA_MD5", &md5)],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("holds no data set: fetching CIFAR-10"),
        "{text}"
    );
    assert!(text.contains("train: 100 images"), "{text}");
    assert_eq!(
        requested.lock().unwrap().as_slice(),
        ["/cifar-10-binary.tar.gz"]
    );
    assert!(run.join("checkpoints/latest").exists());
}

#[test]
fn offline_says_where_to_put_the_files_and_a_placed_archive_is_used_without_network() {
    // An address nothing listens on: the port of a listener that was closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let archive = small_archive();
    let md5 = md5_hex(&archive);
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let dir = TempDir::new();
    let data = dir.path().join("cifar10");
    let (ok, text) = download(&data, &url, &md5);
    assert!(!ok);
    let placed = data.join("cifar-10-binary.tar.gz");
    for needle in [
        "cannot download CIFAR-10",
        &url,
        &md5,
        placed.to_str().unwrap(),
        "data_batch_1.bin",
    ] {
        assert!(
            text.contains(needle),
            "the offline message lacks {needle:?}:\n{text}"
        );
    }
    assert!(
        listing(&data).is_empty(),
        "nothing left behind: {:?}",
        listing(&data)
    );

    // The archive put where the message says: checked and extracted, still offline.
    std::fs::write(&placed, &archive).unwrap();
    let (ok, text) = download(&data, &url, &md5);
    assert!(ok, "{text}");
    assert!(
        Source::detect(&data)
            .unwrap()
            .load(Split::Test, 0)
            .unwrap()
            .len()
            == 20
    );

    // A damaged placed archive is named, and kept (it is the user's file).
    let other = TempDir::new();
    let damaged = other.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&damaged, &archive[..archive.len() / 2]).unwrap();
    let (ok, text) = download(other.path(), &url, &md5);
    assert!(!ok);
    assert!(
        text.contains(damaged.to_str().unwrap()) && text.contains("MD5"),
        "{text}"
    );
    assert!(damaged.exists());
}

#[test]
fn a_mirror_needs_its_checksum() {
    let dir = TempDir::new();
    let (ok, text) = hftrain(
        &[
            "data",
            "download",
            "--data",
            dir.path().to_str().unwrap(),
            "--url",
            "http://127.0.0.1:9/x",
        ],
        &[],
    );
    assert!(!ok);
    assert!(text.contains("needs its MD5 checksum"), "{text}");
    let (ok, text) = download(dir.path(), "http://127.0.0.1:9/x", "xyz");
    assert!(!ok);
    assert!(
        text.contains("\"xyz\" is not 32 hexadecimal digits"),
        "{text}"
    );
}

#[test]
fn ctrl_c_during_the_download_of_train_stops_it_and_keeps_nothing() {
    // A server that announces 100 MB and sends 1 KiB every 20 ms.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/cifar-10-binary.tar.gz",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            read_request(&stream);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n");
            while stream.write_all(&[0u8; 1024]).is_ok() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    });
    let dir = TempDir::new();
    // An empty data directory is fetched into (a missing one other than the default is
    // taken for a mistyped path).
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let child = spawn_train_fetching(dir.path(), &data, &url, "0123456789abcdef0123456789abcdef");
    // Interrupt once the download has begun (its temporary exists).
    let started = std::time::Instant::now();
    while !listing(&data)
        .iter()
        .any(|n| n.starts_with(".cifar-10-binary.tar.gz.tmp-"))
    {
        assert!(
            started.elapsed().as_secs() < 60,
            "the download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("interrupted by Ctrl-C during the download; nothing of it was kept"),
        "{text}"
    );
    assert!(
        !text.contains("Without network access"),
        "an interruption is not a network failure:\n{text}"
    );
    assert!(
        listing(&data).is_empty(),
        "left behind: {:?}",
        listing(&data)
    );
}

/// A server that answers every request with `head` (status line and headers) and `body`,
/// then closes the connection.
fn serve_raw(head: &'static str, body: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            read_request(&stream);
            let _ = stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(body));
        }
    });
    address
}

/// What went wrong is said as it is: an HTTP error is not "without network access", and a
/// body larger than any CIFAR-10 archive (announced, or a gzip bomb that unpacks to more than
/// its files) is stopped before it fills the disk, leaving nothing behind.
#[test]
fn http_errors_and_oversized_downloads_are_named_and_bounded() {
    let dir = TempDir::new();
    let data = dir.path().join("cifar10");
    let (base, _) = serve(vec![]);
    let (ok, text) = download(&data, &format!("{base}/missing.tar.gz"), &"0".repeat(32));
    assert!(
        !ok && text.contains("HTTP 404") && text.contains("--url"),
        "{text}"
    );
    assert!(
        !text.contains("Without network access"),
        "a 404 is not a network failure:\n{text}"
    );

    let huge = serve_raw(
        "HTTP/1.1 200 OK\r\nContent-Length: 4000000000\r\nConnection: close\r\n\r\n",
        b"0123456789",
    );
    let (ok, text) = download(&data, &format!("{huge}/bomb.tar.gz"), &"0".repeat(32));
    assert!(
        !ok && text.contains("announces 4000000000 bytes") && text.contains("nothing downloaded"),
        "{text}"
    );
    assert!(
        listing(&data).is_empty(),
        "left behind: {:?}",
        listing(&data)
    );

    // A small .tar.gz whose one file unpacks to more than the bound (zeros compress a
    // thousandfold), with the right checksum: extraction stops at the bound.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let size = hftrain::data::download::MAX_EXTRACTED_BYTES + (1 << 20);
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        "cifar-10-batches-bin/data_batch_1.bin",
        std::io::Read::take(std::io::repeat(0), size),
    )
    .unwrap();
    let bomb = tar.into_inner().unwrap().finish().unwrap();
    let (base, _) = serve(vec![("/bomb.tar.gz", bomb.clone())]);
    let (ok, text) = download(&data, &format!("{base}/bomb.tar.gz"), &md5_hex(&bomb));
    assert!(
        !ok && text.contains("unpacks to more than") && text.contains("not the CIFAR-10 archive"),
        "{text}"
    );
    assert!(!text.contains("Without network access"), "{text}");
    assert!(
        listing(&data).is_empty(),
        "left behind: {:?}",
        listing(&data)
    );
    println!(
        "measured: a {}-byte gzip bomb of {size} bytes stopped at the bound",
        bomb.len()
    );
}

/// `hftrain train` on a small config whose data directory `data` is to be fetched from `url`
/// (run directory `dir/run`), with its output piped.
fn spawn_train_fetching(dir: &Path, data: &Path, url: &str, md5: &str) -> std::process::Child {
    let config_path = dir.join("c.toml");
    std::fs::write(&config_path, small_config(data, "flex").to_toml()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args([
            "train",
            "--config",
            config_path.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ])
        .env_remove("HFTRAIN_DATA")
        .env_remove("HFTRAIN_DOWNLOAD_STALL_SECONDS")
        .env("HFTRAIN_DATA_URL", url)
        .env("HFTRAIN_DATA_MD5", md5)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// A server that sends its headers and then nothing: the download fails once nothing has
/// arrived for HFTRAIN_DOWNLOAD_STALL_SECONDS, saying so; under `train`, Ctrl-C during such a
/// stall ends the process at once and keeps nothing.
#[test]
fn a_stalled_download_times_out_and_ctrl_c_ends_it_at_once() {
    let url = serve_stalling();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let started = std::time::Instant::now();
    let (ok, text) = hftrain(
        &[
            "data",
            "download",
            "--data",
            data.to_str().unwrap(),
            "--url",
            &url,
            "--md5",
            &"0".repeat(32),
        ],
        &[("HFTRAIN_DOWNLOAD_STALL_SECONDS", "1")],
    );
    assert!(
        !ok && text.contains("stalled after 0 bytes")
            && text.contains("HFTRAIN_DOWNLOAD_STALL_SECONDS"),
        "{text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        listing(&data).is_empty(),
        "left behind: {:?}",
        listing(&data)
    );

    std::fs::create_dir_all(&data).unwrap();
    let child = spawn_train_fetching(dir.path(), &data, &url, &"0".repeat(32));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !listing(&data)
        .iter()
        .any(|n| n.starts_with(".cifar-10-binary.tar.gz.tmp-"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let interrupted = std::time::Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(
        interrupted.elapsed() < std::time::Duration::from_secs(5),
        "Ctrl-C took {:?}",
        interrupted.elapsed()
    );
    assert!(
        text.contains("interrupted by Ctrl-C during the download; nothing of it was kept"),
        "{text}"
    );
    assert!(
        listing(&data).is_empty(),
        "left behind: {:?}",
        listing(&data)
    );
}

/// A server that sends headers announcing a body, then holds the connection without sending.
fn serve_stalling() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/cifar-10-binary.tar.gz",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            read_request(&stream);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
            held.push(stream);
        }
    });
    url
}

/// A download that cannot be written (the disk full, simulated by a file-size limit: writes
/// past 64 KiB fail with EFBIG) says so, without the offline advice, and keeps nothing.
#[test]
fn a_download_that_cannot_be_written_says_so() {
    use std::os::unix::process::CommandExt;
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let md5 = md5_hex(&body);
    let (base, _) = serve(vec![("/big.tar.gz", body)]);
    let dir = TempDir::new();
    let data = dir.path().join("cifar10");
    let mut command = Command::new(env!("CARGO_BIN_EXE_hftrain"));
    command.args([
        "data",
        "download",
        "--data",
        data.to_str().unwrap(),
        "--url",
        &format!("{base}/big.tar.gz"),
        "--md5",
        &md5,
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1 << 16,
                rlim_max: 1 << 16,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cannot write") && text.contains("File too large"),
        "{text}"
    );
    assert!(
        !text.contains("Without network access") && !text.contains(".tar.gz?"),
        "{text}"
    );
    assert!(
        listing(&data).is_empty(),
        "left behind: {:?}",
        listing(&data)
    );
}
