//! TensorBoard event files: `tensorboard --logdir runs` shows every run's curves, live.
//!
//! An event file is a sequence of TFRecords (length, masked CRC-32C of the length, data,
//! masked CRC-32C of the data), each holding one `Event` protocol buffer. We write the three
//! fields of it a scalar needs by hand (wall time, step, a summary of tag/value pairs): the
//! one Rust crate for it, tensorboard-rs, has been unmaintained since 2022, and the format is
//! a few dozen lines. `tests/integration/tensorboard.rs` checks our bytes against the ones
//! TensorBoard's own writer produces; `scripts/check_tensorboard.py` reads a run with
//! TensorBoard itself.
//!
//! One file per run, `<run>/events.out.tfevents.hftrain`, only ever appended to while a run
//! trains, so TensorBoard can follow it. A resumed run first cuts the file back to the events
//! up to the checkpoint's step (what a killed process wrote past it, or half a record), so
//! the curves of a resumed run are those of an uninterrupted one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// The file's name: TensorBoard reads files whose name contains "tfevents".
pub const FILE_NAME: &str = "events.out.tfevents.hftrain";

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecords.
/// (crc32fast, which the checkpoints use, computes the other CRC-32.)
pub fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8)
    })
}

/// TFRecord's masking of a CRC (so that a CRC of data holding CRCs stays well mixed).
fn masked_crc(bytes: &[u8]) -> u32 {
    crc32c(bytes).rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// One record: the data framed with its length and both checksums.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

// Protocol-buffer field keys: (field number << 3) | wire type.
const EVENT_WALL_TIME: u8 = 1 << 3 | 1; // double
const EVENT_STEP: u8 = 2 << 3; // int64, varint
const EVENT_FILE_VERSION: u8 = 3 << 3 | 2; // string
const EVENT_SUMMARY: u8 = 5 << 3 | 2; // message Summary
const SUMMARY_VALUE: u8 = 1 << 3 | 2; // repeated message Summary.Value
const VALUE_TAG: u8 = 1 << 3 | 2; // string
const VALUE_SIMPLE_VALUE: u8 = 2 << 3 | 5; // float

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    out.push(key);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The first event of every file: names the format version.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut out = vec![EVENT_WALL_TIME];
    out.extend_from_slice(&wall_time.to_le_bytes());
    put_bytes(&mut out, EVENT_FILE_VERSION, b"brain.Event:2");
    out
}

/// An event with scalar values at one step.
pub fn scalars_event(wall_time: f64, step: u64, scalars: &[(&str, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, value) in scalars {
        let mut entry = Vec::new();
        put_bytes(&mut entry, VALUE_TAG, tag.as_bytes());
        entry.push(VALUE_SIMPLE_VALUE);
        entry.extend_from_slice(&value.to_le_bytes());
        put_bytes(&mut summary, SUMMARY_VALUE, &entry);
    }
    let mut out = vec![EVENT_WALL_TIME];
    out.extend_from_slice(&wall_time.to_le_bytes());
    out.push(EVENT_STEP);
    put_varint(&mut out, step);
    put_bytes(&mut out, EVENT_SUMMARY, &summary);
    out
}

/// An event as read back (for resuming, and for tests).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub wall_time: f64,
    pub step: u64,
    pub file_version: Option<String>,
    pub scalars: Vec<(String, f32)>,
}

/// A reader of protocol-buffer fields; fields this file does not write are skipped.
struct Fields<'a> {
    bytes: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.bytes.get(..n)?, self.bytes.get(n..)?);
        self.bytes = rest;
        Some(head)
    }

    /// The next (field number, value), None at the end; Err on malformed bytes.
    fn next_field(&mut self) -> Result<Option<(u64, Field<'a>)>, ()> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint().ok_or(())?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint().ok_or(())?),
            1 => Field::Fixed64(self.take(8).ok_or(())?.try_into().map_err(|_| ())?),
            2 => {
                let n = self.varint().ok_or(())? as usize;
                Field::Bytes(self.take(n).ok_or(())?)
            }
            5 => Field::Fixed32(self.take(4).ok_or(())?.try_into().map_err(|_| ())?),
            _ => return Err(()),
        };
        Ok(Some((key >> 3, field)))
    }
}

/// Decodes an `Event` holding what `file_version_event` and `scalars_event` write.
pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    let mut event = Event::default();
    let mut fields = Fields { bytes };
    while let Some((number, field)) = fields.next_field().ok()? {
        match (number, field) {
            (1, Field::Fixed64(b)) => event.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => event.step = v,
            (3, Field::Bytes(b)) => {
                event.file_version = Some(String::from_utf8_lossy(b).into_owned())
            }
            (5, Field::Bytes(summary)) => {
                let mut values = Fields { bytes: summary };
                while let Some((1, Field::Bytes(entry))) = values.next_field().ok()? {
                    let (mut tag, mut value) = (String::new(), f32::NAN);
                    let mut parts = Fields { bytes: entry };
                    while let Some((number, part)) = parts.next_field().ok()? {
                        match (number, part) {
                            (1, Field::Bytes(b)) => tag = String::from_utf8_lossy(b).into_owned(),
                            (2, Field::Fixed32(b)) => value = f32::from_le_bytes(b),
                            _ => {}
                        }
                    }
                    event.scalars.push((tag, value));
                }
            }
            _ => {}
        }
    }
    Some(event)
}

/// The complete, intact records at the start of `bytes`: each event with the byte offset
/// where its record ends. Reading stops at the first short or damaged record.
pub fn read_records(bytes: &[u8]) -> Vec<(Event, usize)> {
    let mut events = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 12) {
        let (length, length_crc) = header.split_at(8);
        if masked_crc(length).to_le_bytes() != length_crc {
            break;
        }
        let n = u64::from_le_bytes(length.try_into().expect("8 bytes")) as usize;
        let Some(data) = at
            .checked_add(12 + n)
            .and_then(|end| bytes.get(at + 12..end))
        else {
            break;
        };
        let Some(crc) = bytes.get(at + 12 + n..at + 16 + n) else {
            break;
        };
        if masked_crc(data).to_le_bytes() != crc {
            break;
        }
        let Some(event) = decode_event(data) else {
            break;
        };
        at += 16 + n;
        events.push((event, at));
    }
    events
}

/// Reads every intact event of a file.
pub fn read_file(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(read_records(&bytes)
        .into_iter()
        .map(|(event, _)| event)
        .collect())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The event file of one run, open for appending.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Opens `<run_dir>/events.out.tfevents.hftrain`, keeping the events up to and
    /// including `last_step` (0 for a new run: only the file-version event) and cutting off
    /// the rest.
    pub fn open(run_dir: &Path, last_step: u64) -> Result<Self> {
        let path = run_dir.join(FILE_NAME);
        let existing = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let records = read_records(&existing);
        let starts_right = records
            .first()
            .is_some_and(|(e, _)| e.file_version.is_some());
        let keep = if starts_right {
            records
                .iter()
                .take_while(|(event, _)| event.step <= last_step)
                .last()
                .map_or(0, |&(_, end)| end)
        } else {
            0
        };
        // Append mode: every write lands at the end, after the cut.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.set_len(keep as u64)
            .with_context(|| format!("cannot cut {} back to step {last_step}", path.display()))?;
        let mut writer = Self { path, file };
        if keep == 0 {
            writer.append(&file_version_event(now()))?;
        }
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, event: &[u8]) -> Result<()> {
        self.file
            .write_all(&frame(event))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Appends scalars at a global step (one record, visible to TensorBoard at once).
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f32)]) -> Result<()> {
        self.append(&scalars_event(now(), step, scalars))
    }

    /// Makes what was written durable (before a checkpoint that claims it).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.path.display()))
    }
}
