//! Property tests: the WARC and HTTP readers never panic on arbitrary bytes, and whatever
//! we write reads back identically.

use data::pipeline::warc::{
    HttpMessage, NewRecord, RecordType, WarcReader, WarcVersion, WarcWriter,
};
use proptest::prelude::*;

fn drain(bytes: &[u8]) -> usize {
    let mut r = WarcReader::new(bytes);
    let n = (&mut r)
        .filter_map(Result::ok)
        .inspect(|rec| {
            let _ = rec.http();
            let _ = rec.target_uri();
        })
        .count();
    assert!(r.stats().records as usize == n);
    n
}

fn one_record(block: &[u8], gzip: bool) -> Vec<u8> {
    let mut w = WarcWriter::new(Vec::new(), gzip, WarcVersion::V1_0);
    w.write(&NewRecord {
        kind: RecordType::Response,
        target_uri: Some("http://p.test/".into()),
        content_type: Some("application/http; msgtype=response".into()),
        extra: vec![],
        block: block.to_vec(),
    })
    .unwrap();
    w.into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        drain(&bytes);
        let _ = HttpMessage::parse(&bytes);
    }

    #[test]
    fn warc_prefixed_garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..1024),
                                          gz in any::<bool>()) {
        // Start like a record (or a gzip member) so the parser goes past the first line.
        let mut b = if gz { vec![0x1f, 0x8b, 0x08, 0] } else {
            b"WARC/1.0\r\nContent-Length: 40\r\nWARC-Type: response\r\n".to_vec()
        };
        b.extend_from_slice(&tail);
        drain(&b);
    }

    #[test]
    fn mutated_records_never_panic(block in proptest::collection::vec(any::<u8>(), 0..512),
                                   gzip in any::<bool>(),
                                   flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                                   cut in any::<usize>()) {
        let mut b = one_record(&block, gzip);
        b.extend(one_record(b"HTTP/1.1 200 OK\r\n\r\nsecond", gzip));
        for (i, x) in flips {
            let n = b.len();
            b[i % n] ^= x;
        }
        let keep = cut % (b.len() + 1);
        drain(&b[..keep]);
    }

    #[test]
    fn written_records_read_back(blocks in proptest::collection::vec(
                                     proptest::collection::vec(any::<u8>(), 0..300), 1..5),
                                 gzip in any::<bool>()) {
        let mut w = WarcWriter::new(Vec::new(), gzip, WarcVersion::V1_1);
        for b in &blocks {
            w.write(&NewRecord {
                kind: RecordType::Resource,
                target_uri: Some("http://p.test/r".into()),
                content_type: Some("application/octet-stream".into()),
                extra: vec![],
                block: b.clone(),
            }).unwrap();
        }
        let bytes = w.into_inner();
        let mut r = WarcReader::new(&bytes[..]);
        let got: Vec<Vec<u8>> = (&mut r).map(|x| x.unwrap().block).collect();
        prop_assert_eq!(got, blocks);
        prop_assert_eq!(r.stats().skipped_total(), 0);
    }
}
