//! Fuzz target: Kafka request frames, as a client sends them to a node's Kafka listener.
//!
//! `keel_node::kafka::decode_request` decodes a frame (without its 4-byte size prefix) the way
//! the server does before handling it: the request header, then the whole body with the
//! `kafka-protocol` crate's decoder of that API and version. For any bytes it must answer `Ok`
//! or `Err` — no panic, and no allocation the input cannot justify (an allocation the machine
//! cannot make aborts the process, which libFuzzer reports as a crash). When it answers
//! `Ok((api, version))`, those are the frame's first four bytes, and Keel serves that version
//! (or the API is ApiVersions, which answers any version).
//!
//! Input: byte 0 picks the mode.
//! - raw: the rest is the frame, as is.
//! - structured: bytes 1..3 pick an (API, version) among every version `served_versions()`
//!   lists, and the rest is the body, appended to a valid request header of that API's header
//!   version (client id "fuzz"). In one variant the header's tagged fields (header v2) are left
//!   to the input as well. The header is valid, so an error can only be a malformed request.

#![no_main]

use std::sync::LazyLock;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use keel_node::kafka::{FrameError, decode_request, served_versions};
use libfuzzer_sys::fuzz_target;

/// Keel's allocator, as in the `keel` binary: huge claimed arrays reserve address space instead
/// of aborting (finding 3).
#[global_allocator]
static ALLOC: keel_node::alloc::ReservingAllocator = keel_node::alloc::ReservingAllocator;

/// Every (API, version) Keel serves, one entry per version.
static SERVED: LazyLock<Vec<(ApiKey, i16)>> = LazyLock::new(|| {
    served_versions().into_iter().flat_map(|(api, lo, hi)| (lo..=hi).map(move |v| (api, v))).collect()
});

const MODE_RAW: u8 = 0;
const MODE_HEADER: u8 = 1;
const MODE_HEADER_OPEN_TAGS: u8 = 2;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        MODE_RAW => raw(rest),
        MODE_HEADER => structured(rest, true),
        MODE_HEADER_OPEN_TAGS => structured(rest, false),
        _ => unreachable!(),
    }
});

fn raw(frame: &[u8]) {
    let result = decode_request(Bytes::copy_from_slice(frame));
    if let Ok((api, version)) = result {
        assert!(frame.len() >= 8, "decoded a frame shorter than the fixed header fields");
        assert_eq!(api as i16, i16::from_be_bytes([frame[0], frame[1]]));
        assert_eq!(version, i16::from_be_bytes([frame[2], frame[3]]));
        let served = SERVED.contains(&(api, version));
        assert!(served || api == ApiKey::ApiVersions, "accepted {api:?} v{version}, which is not served");
    }
}

fn structured(input: &[u8], close_header_tags: bool) {
    let Some((pick, body)) = input.split_first_chunk::<2>() else {
        return;
    };
    let (api, version) = SERVED[usize::from(u16::from_le_bytes(*pick)) % SERVED.len()];
    let mut frame = BytesMut::with_capacity(16 + body.len());
    frame.put_i16(api as i16);
    frame.put_i16(version);
    frame.put_i32(0x1234_5678); // correlation id
    let header_version = api.request_header_version(version);
    if header_version >= 1 {
        frame.put_i16(4); // client id: a nullable string, i16 length
        frame.put_slice(b"fuzz");
    }
    if header_version >= 2 && close_header_tags {
        frame.put_u8(0); // no tagged fields in the header
    }
    frame.put_slice(body);
    match decode_request(frame.freeze()) {
        Ok(decoded) => assert_eq!(decoded, (api, version)),
        Err(FrameError::Malformed { .. }) => {}
        Err(e) => panic!("{api:?} v{version} with a valid header: {e}"),
    }
}
