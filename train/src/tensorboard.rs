//! TensorBoard event files: TFRecord framing (length, masked crc32c, data, masked crc32c)
//! around `Event` protobufs holding scalar `Summary` values.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use prost::Message;

/// `tensorflow.Event` (the fields rxla writes).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a scalar.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// TFRecord's checksum: crc32c rotated and offset (so a crc of crcs is not trivially zero).
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// Appends events to one file; each record is flushed so TensorBoard sees it while training.
pub struct EventWriter {
    out: BufWriter<File>,
    pub path: PathBuf,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<time>.rxla.<pid>.v2` and writes the version event.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!(
            "events.out.tfevents.{}.rxla.{}.v2",
            now() as u64,
            std::process::id()
        ));
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = EventWriter {
            out: BufWriter::new(f),
            path,
        };
        w.write(&Event {
            wall_time: now(),
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        Ok(w)
    }

    pub fn write(&mut self, e: &Event) -> Result<()> {
        let data = e.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(&data)?;
        self.out.write_all(&masked_crc(&data).to_le_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    /// One event with scalar `values` at `step`.
    pub fn scalars(&mut self, step: i64, values: &[(String, f64)]) -> Result<()> {
        let value = values
            .iter()
            .map(|(k, v)| SummaryValue {
                tag: k.clone(),
                simple_value: Some(*v as f32),
            })
            .collect();
        self.write(&Event {
            wall_time: now(),
            step,
            file_version: None,
            summary: Some(Summary { value }),
        })
    }
}

/// Reads an event file back, checking every record's checksums.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.len() < 12 {
            bail!("{}: truncated record header at byte {i}", path.display());
        }
        let len_b = &rest[..8];
        let crc = u32::from_le_bytes(rest[8..12].try_into()?);
        if crc != masked_crc(len_b) {
            bail!("{}: bad length checksum at byte {i}", path.display());
        }
        let n = u64::from_le_bytes(len_b.try_into()?) as usize;
        if rest.len() < 16 + n {
            bail!("{}: truncated record at byte {i}", path.display());
        }
        let data = &rest[12..12 + n];
        let crc = u32::from_le_bytes(rest[12 + n..16 + n].try_into()?);
        if crc != masked_crc(data) {
            bail!("{}: bad data checksum at byte {i}", path.display());
        }
        out.push(Event::decode(data).with_context(|| format!("{}: bad Event", path.display()))?);
        i += 16 + n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value_and_records_round_trip() {
        // The CRC-32C check value of "123456789".
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let dir = std::env::temp_dir().join(format!("rxla-tb-{}", std::process::id()));
        let mut w = EventWriter::create(&dir).unwrap();
        w.scalars(3, &[("loss".into(), 0.5)]).unwrap();
        let ev = read_events(&w.path).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].file_version.as_deref(), Some("brain.Event:2"));
        let s = ev[1].summary.as_ref().unwrap();
        assert_eq!((ev[1].step, s.value[0].tag.as_str()), (3, "loss"));
        assert_eq!(s.value[0].simple_value, Some(0.5));
        // A flipped byte is caught by the checksum.
        let mut bytes = std::fs::read(&w.path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        std::fs::write(&w.path, bytes).unwrap();
        assert!(read_events(&w.path)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
