//! Fuzz target: bytes arriving on a node-to-node transport connection.
//!
//! The reader calls `frame::decode` on its buffer until it needs more bytes or gets an error.
//! For any bytes and any frame limit that must never panic; "need more bytes" consumes nothing;
//! a decoded frame consumed exactly its wire size, and encoding it again gives back exactly the
//! bytes it came from (so decode then encode round-trips). A hello frame must round-trip too.
//!
//! Input: byte 0 picks the frame limit and whether to repair the first frame (length covering
//! the rest of the input, correct CRC32C) so that the fuzzer gets past the checksum; the rest is
//! the byte stream.

#![no_main]

use bytes::BytesMut;
use keel_node::transport::frame::{self, HEADER_BYTES, Hello, LEN_BYTES};
use libfuzzer_sys::fuzz_target;

const REPAIR: u8 = 0x80;
const FRAME_BYTES_MAX: [usize; 6] = [0, LEN_BYTES, HEADER_BYTES, 64, 1 << 20, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let frame_bytes_max = FRAME_BYTES_MAX[usize::from(control & 0x7f) % FRAME_BYTES_MAX.len()];
    let mut buf = BytesMut::from(stream);
    if control & REPAIR != 0 && buf.len() >= HEADER_BYTES {
        let len = u32::try_from(buf.len() - LEN_BYTES).unwrap_or(u32::MAX);
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_be_bytes());
    }
    drain(buf, frame_bytes_max);
});

fn drain(mut buf: BytesMut, frame_bytes_max: usize) {
    // Each successful decode consumes at least a header, so this terminates.
    loop {
        let before = buf.clone();
        match frame::decode(&mut buf, frame_bytes_max) {
            Ok(None) => {
                assert_eq!(buf, before, "need-more-bytes consumed input");
                return;
            }
            Err(_) => return,
            Ok(Some(f)) => {
                let consumed = before.len() - buf.len();
                assert_eq!(consumed, f.wire_bytes());
                assert!(consumed <= frame_bytes_max, "decoded a frame over the limit");
                let encoded = frame::encode_to_bytes(&f).expect("a decoded frame encodes");
                assert_eq!(&encoded[..], &before[..consumed], "re-encoding changed the bytes");
                let mut again = BytesMut::from(&encoded[..]);
                assert_eq!(frame::decode(&mut again, frame_bytes_max), Ok(Some(f.clone())));
                assert!(again.is_empty());
                if let Ok(hello) = Hello::from_frame(&f) {
                    let back = hello.to_frame().expect("a decoded hello encodes");
                    assert_eq!(Hello::from_frame(&back), Ok(hello));
                }
            }
        }
    }
}
