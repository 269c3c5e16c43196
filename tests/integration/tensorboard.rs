//! TensorBoard event files: our bytes against TensorBoard's own writer, reading back, and
//! cutting a file back to a checkpoint's step on resume. (The training tests check that a
//! resumed run's curves equal an uninterrupted run's; scripts/check_tensorboard.py reads a
//! run with TensorBoard itself.)

use std::path::Path;

use hftrain::store::tensorboard::{
    self, EventWriter, crc32c, file_version_event, frame, read_file, scalars_event,
};

use crate::common::TempDir;

/// A logged value, equal to another only bit for bit: a Hessian-free step whose model
/// predicted no decrease logs rho as NaN, which `==` on f32 would call unequal to itself.
#[derive(Clone, Copy)]
pub struct Logged(pub f32);

impl PartialEq for Logged {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl std::fmt::Debug for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The curves of a run's event file: (step, scalars) of every event after the file-version
/// one, without wall times and without the `time/` tags (which differ between equal runs).
pub fn curves(run: &Path) -> Vec<(u64, Vec<(String, Logged)>)> {
    let events = read_file(&run.join(tensorboard::FILE_NAME)).unwrap();
    assert_eq!(
        events[0].file_version.as_deref(),
        Some("brain.Event:2"),
        "{}: first event",
        run.display()
    );
    events[1..]
        .iter()
        .map(|e| {
            (
                e.step,
                e.scalars
                    .iter()
                    .filter(|(tag, _)| !tag.starts_with("time/"))
                    .map(|(tag, value)| (tag.clone(), Logged(*value)))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn crc32c_gives_the_published_check_value() {
    // The check value of CRC-32C (iSCSI) in the catalogue of parametrised CRC algorithms.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn event_records_are_byte_identical_to_tensorboards_own_writer() {
    // Written by TensorBoard 2.21's RecordWriter with its protobuf classes:
    //   e0 = event_pb2.Event(wall_time=1700000000.25, file_version="brain.Event:2")
    //   e1 = event_pb2.Event(wall_time=1700000001.5, step=300, summary=summary_pb2.Summary(value=[
    //       Summary.Value(tag="loss/train", simple_value=0.625),
    //       Summary.Value(tag="hessian_free/damping", simple_value=-3.0e-4)]))
    //   RecordWriter(buf).write(e.SerializeToString()) for e in (e0, e1)
    let tensorboards = "1800000000000000a37f4b220900001040fc54d9411a0d627261696e2e4576656e743a32338d2fe9\
        3e00000000000000d9d240e70900006040fc54d94110ac022a300a110a0a6c6f73732f747261696e150000203f\
        0a1b0a146865737369616e5f667265652f64616d70696e671552499db988a07a64";
    let mut ours = frame(&file_version_event(1_700_000_000.25));
    ours.extend(frame(&scalars_event(
        1_700_000_001.5,
        300,
        &[("loss/train", 0.625), ("hessian_free/damping", -3.0e-4)],
    )));
    assert_eq!(hex(&ours), tensorboards);
}

#[test]
fn reading_stops_at_a_torn_or_damaged_record() {
    let mut bytes = frame(&file_version_event(1.0));
    for step in 1..=3 {
        bytes.extend(frame(&scalars_event(2.0, step, &[("a", step as f32)])));
    }
    let whole = tensorboard::read_records(&bytes);
    assert_eq!(
        whole.iter().map(|(e, _)| e.step).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(whole[3].0.scalars, [("a".to_string(), 3.0)]);
    assert_eq!(whole[3].1, bytes.len());
    // Half of the last record (a writer killed mid-write).
    let torn = &bytes[..bytes.len() - 5];
    assert_eq!(tensorboard::read_records(torn).len(), 3);
    // One flipped bit in the second record's data: reading stops before it.
    let mut damaged = bytes.clone();
    damaged[whole[0].1 + 14] ^= 0x08;
    assert_eq!(tensorboard::read_records(&damaged).len(), 1);
}

#[test]
fn reopening_keeps_the_events_up_to_the_checkpoint_step_and_appends_after_them() {
    let dir = TempDir::new();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut writer = EventWriter::open(dir.path(), 0).unwrap();
    for step in 1..=10 {
        writer
            .scalars(step, &[("loss/train", step as f32 / 10.0)])
            .unwrap();
    }
    drop(writer);
    // A killed writer's half record after step 10.
    let path = dir.path().join(tensorboard::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&frame(&scalars_event(0.0, 11, &[("loss/train", 1.1)]))[..20]);
    std::fs::write(&path, &bytes).unwrap();

    let mut writer = EventWriter::open(dir.path(), 6).unwrap();
    writer.scalars(7, &[("loss/train", 7.5)]).unwrap();
    drop(writer);
    let events = read_file(&path).unwrap();
    let steps: Vec<u64> = events.iter().map(|e| e.step).collect();
    assert_eq!(
        steps,
        [0, 1, 2, 3, 4, 5, 6, 7],
        "one file-version event, then steps 1 to 6 kept and 7 appended"
    );
    assert_eq!(events[7].scalars, [("loss/train".to_string(), 7.5)]);
    assert_eq!(
        std::fs::read(&path).unwrap().len(),
        tensorboard::read_records(&std::fs::read(&path).unwrap())
            .last()
            .unwrap()
            .1,
        "no bytes after the last record"
    );
    let ended = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        events
            .iter()
            .all(|e| (started..=ended).contains(&e.wall_time)),
        "wall times are the seconds since 1970 of the writes"
    );

    // A file that is not an event file (or an empty one) is started afresh.
    std::fs::write(&path, b"not an event file").unwrap();
    drop(EventWriter::open(dir.path(), 6).unwrap());
    let events = read_file(&path).unwrap();
    assert_eq!(events.len(), 1);
    assert!(events[0].file_version.is_some());
}
