//! The wire format of the node-to-node transport: pure encode/decode over byte buffers.
//!
//! ```text
//! [len u32][crc32c u32][kind u8][flags u8][group u64][request_id u64][payload ...]
//! ```
//! All integers are big-endian. `len` counts every byte after itself (so a frame occupies
//! `4 + len` bytes on the wire); `crc32c` covers every byte after itself (kind through the end
//! of the payload). A frame is at most `frame_bytes_max` bytes on the wire, header included.
//!
//! `flags` says what the frame is: exactly one of [`Flags::REQUEST`], [`Flags::RESPONSE`],
//! [`Flags::HELLO`], [`Flags::PING`]; [`Flags::ERROR`] may only accompany `RESPONSE` (the
//! payload is then the handler's UTF-8 error message). Unknown bits are a decode error, so a
//! future version that adds one fails loudly instead of being misread.
//!
//! Decoding never panics: a short buffer is "need more bytes" (`Ok(None)`), anything else that
//! does not parse is a [`FrameError`], after which the connection is closed.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 4;
/// Bytes covered by `len` before the payload: crc (4) + kind (1) + flags (1) + group (8) +
/// request_id (8).
pub const HEADER_AFTER_LEN_BYTES: usize = 4 + 1 + 1 + 8 + 8;
/// Bytes on the wire before the payload.
pub const HEADER_BYTES: usize = LEN_BYTES + HEADER_AFTER_LEN_BYTES;

/// Version of the handshake and frame layout; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;
/// Longest cluster id a hello may carry.
pub const CLUSTER_ID_BYTES_MAX: usize = 255;

/// What a frame is. A thin wrapper over the `flags` byte so that invalid combinations are
/// rejected in one place ([`Flags::validate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    /// A request; the receiver answers with a `RESPONSE` carrying the same `request_id`.
    pub const REQUEST: Flags = Flags(0x01);
    /// A response to the request with the same `request_id`.
    pub const RESPONSE: Flags = Flags(0x02);
    /// With `RESPONSE`: the handler failed; the payload is its error message.
    pub const ERROR: Flags = Flags(0x04);
    /// Handshake: the first frame in each direction of a connection.
    pub const HELLO: Flags = Flags(0x08);
    /// Liveness probe; the receiver ignores it (receiving it counts as traffic). Sent to make a
    /// half-dead connection fail fast on write.
    pub const PING: Flags = Flags(0x10);
    /// `RESPONSE | ERROR`.
    pub const RESPONSE_ERROR: Flags = Flags(0x02 | 0x04);

    const TYPE_MASK: u8 = 0x01 | 0x02 | 0x08 | 0x10;
    const KNOWN_MASK: u8 = Self::TYPE_MASK | 0x04;

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Accepts exactly one type bit, and `ERROR` only together with `RESPONSE`.
    pub fn validate(bits: u8) -> Result<Flags, FrameError> {
        let type_bits = bits & Self::TYPE_MASK;
        let one_type = type_bits.count_ones() == 1;
        let unknown = bits & !Self::KNOWN_MASK != 0;
        let stray_error = bits & Self::ERROR.0 != 0 && type_bits != Self::RESPONSE.0;
        if !one_type || unknown || stray_error {
            return Err(FrameError::BadFlags(bits));
        }
        Ok(Flags(bits))
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// RPC kind, opaque to the transport (the Raft glue defines the values).
    pub kind: u8,
    pub flags: Flags,
    /// Raft group (partition) the frame belongs to, opaque to the transport.
    pub group: u64,
    /// Matches a response to its request; unique per connection and direction.
    pub request_id: u64,
    pub payload: Bytes,
}

impl Frame {
    /// Bytes this frame occupies on the wire.
    pub fn wire_bytes(&self) -> usize {
        wire_bytes(self.payload.len())
    }
}

/// Bytes on the wire of a frame with `payload_bytes` of payload.
pub fn wire_bytes(payload_bytes: usize) -> usize {
    HEADER_BYTES.saturating_add(payload_bytes)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {frame_bytes} bytes exceeds frame_bytes_max {frame_bytes_max}")]
    TooLarge { frame_bytes: usize, frame_bytes_max: usize },
    #[error("frame length {len} is shorter than the {HEADER_AFTER_LEN_BYTES}-byte header")]
    TooShort { len: usize },
    #[error("frame checksum mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    BadCrc { expected: u32, actual: u32 },
    #[error("invalid frame flags {0:#04x}")]
    BadFlags(u8),
    #[error("invalid hello: {0}")]
    BadHello(&'static str),
}

/// Appends `frame` to `dst`. The caller checks the size limit first (see [`wire_bytes`]); a
/// payload too large for the `u32` length field is a [`FrameError::TooLarge`].
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    let len = HEADER_AFTER_LEN_BYTES + frame.payload.len();
    let len_u32 = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        frame_bytes: frame.wire_bytes(),
        frame_bytes_max: LEN_BYTES + u32::MAX as usize,
    })?;
    let mut covered = [0u8; HEADER_AFTER_LEN_BYTES - 4];
    covered[0] = frame.kind;
    covered[1] = frame.flags.bits();
    covered[2..10].copy_from_slice(&frame.group.to_be_bytes());
    covered[10..18].copy_from_slice(&frame.request_id.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&covered), &frame.payload);

    dst.reserve(LEN_BYTES + len);
    dst.put_u32(len_u32);
    dst.put_u32(crc);
    dst.put_slice(&covered);
    dst.put_slice(&frame.payload);
    Ok(())
}

/// Encodes one frame into its own buffer.
pub fn encode_to_bytes(frame: &Frame) -> Result<Bytes, FrameError> {
    let mut buf = BytesMut::with_capacity(frame.wire_bytes());
    encode(frame, &mut buf)?;
    Ok(buf.freeze())
}

/// Takes one frame off the front of `src`.
///
/// `Ok(None)`: `src` holds no complete frame yet (nothing is consumed). An oversized length is
/// reported as soon as the length prefix is readable, so a reader never buffers more than
/// `frame_bytes_max` bytes of one frame.
pub fn decode(src: &mut BytesMut, frame_bytes_max: usize) -> Result<Option<Frame>, FrameError> {
    if src.len() < LEN_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
    let frame_bytes = LEN_BYTES.saturating_add(len);
    if frame_bytes > frame_bytes_max {
        return Err(FrameError::TooLarge { frame_bytes, frame_bytes_max });
    }
    if len < HEADER_AFTER_LEN_BYTES {
        return Err(FrameError::TooShort { len });
    }
    if src.len() < frame_bytes {
        return Ok(None);
    }
    let expected = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
    let actual = crc32c::crc32c(&src[8..frame_bytes]);
    if expected != actual {
        return Err(FrameError::BadCrc { expected, actual });
    }
    let flags = Flags::validate(src[9])?;

    let mut frame = src.split_to(frame_bytes);
    frame.advance(8);
    let kind = frame.get_u8();
    frame.advance(1); // flags, validated above
    let group = frame.get_u64();
    let request_id = frame.get_u64();
    Ok(Some(Frame { kind, flags, group, request_id, payload: frame.freeze() }))
}

/// The handshake payload: who is on the other end and which cluster it belongs to.
///
/// ```text
/// [version u16][node_id u64][cluster_id_len u16][cluster_id utf-8]
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub node_id: u64,
    pub cluster_id: String,
}

impl Hello {
    /// The hello frame carrying this handshake.
    pub fn to_frame(&self) -> Result<Frame, FrameError> {
        if self.cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            return Err(FrameError::BadHello("cluster id too long"));
        }
        let mut payload = BytesMut::with_capacity(12 + self.cluster_id.len());
        payload.put_u16(self.version);
        payload.put_u64(self.node_id);
        payload.put_u16(self.cluster_id.len() as u16);
        payload.put_slice(self.cluster_id.as_bytes());
        Ok(Frame { kind: 0, flags: Flags::HELLO, group: 0, request_id: 0, payload: payload.freeze() })
    }

    pub fn from_frame(frame: &Frame) -> Result<Hello, FrameError> {
        if frame.flags != Flags::HELLO {
            return Err(FrameError::BadHello("first frame is not a hello"));
        }
        let mut p = &frame.payload[..];
        if p.remaining() < 12 {
            return Err(FrameError::BadHello("payload too short"));
        }
        let version = p.get_u16();
        let node_id = p.get_u64();
        let cluster_id_len = p.get_u16() as usize;
        if cluster_id_len > CLUSTER_ID_BYTES_MAX || p.remaining() != cluster_id_len {
            return Err(FrameError::BadHello("cluster id length mismatch"));
        }
        let cluster_id =
            std::str::from_utf8(p).map_err(|_| FrameError::BadHello("cluster id is not utf-8"))?.to_string();
        Ok(Hello { version, node_id, cluster_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn sample(payload: &'static [u8]) -> Frame {
        Frame {
            kind: 7,
            flags: Flags::REQUEST,
            group: 0x0102_0304_0506_0708,
            request_id: u64::MAX - 3,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn round_trip_including_two_frames_back_to_back() {
        let a = sample(b"hello raft");
        let b = Frame { flags: Flags::RESPONSE_ERROR, payload: Bytes::new(), ..sample(b"") };
        let mut buf = BytesMut::new();
        encode(&a, &mut buf).unwrap();
        encode(&b, &mut buf).unwrap();
        assert_eq!(buf.len(), a.wire_bytes() + b.wire_bytes());
        assert_eq!(decode(&mut buf, MAX).unwrap(), Some(a));
        assert_eq!(decode(&mut buf, MAX).unwrap(), Some(b));
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf, MAX).unwrap(), None);
    }

    #[test]
    fn layout_is_big_endian_and_len_counts_bytes_after_itself() {
        let bytes = encode_to_bytes(&sample(b"xy")).unwrap();
        assert_eq!(&bytes[0..4], &(HEADER_AFTER_LEN_BYTES as u32 + 2).to_be_bytes());
        assert_eq!(&bytes[4..8], &crc32c::crc32c(&bytes[8..]).to_be_bytes());
        assert_eq!(bytes[8], 7);
        assert_eq!(bytes[9], Flags::REQUEST.bits());
        assert_eq!(&bytes[10..18], &0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(&bytes[26..], b"xy");
    }

    #[test]
    fn every_truncation_needs_more_bytes_and_consumes_nothing() {
        let bytes = encode_to_bytes(&sample(b"some payload")).unwrap();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(decode(&mut buf, MAX).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn any_flipped_bit_is_a_crc_error() {
        let bytes = encode_to_bytes(&sample(b"payload")).unwrap();
        for i in 4..bytes.len() {
            for bit in 0..8 {
                let mut buf = BytesMut::from(&bytes[..]);
                buf[i] ^= 1 << bit;
                assert!(matches!(decode(&mut buf, MAX), Err(FrameError::BadCrc { .. })), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn too_large_is_rejected_from_the_length_prefix_alone() {
        let frame = sample(&[0u8; 100]);
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf).unwrap();
        let limit = frame.wire_bytes() - 1;
        let mut prefix = BytesMut::from(&buf[..4]);
        assert_eq!(
            decode(&mut prefix, limit),
            Err(FrameError::TooLarge { frame_bytes: frame.wire_bytes(), frame_bytes_max: limit })
        );
        assert!(decode(&mut buf, frame.wire_bytes()).unwrap().is_some());
    }

    #[test]
    fn short_length_is_rejected() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 5, 1, 2, 3, 4, 5][..]);
        assert_eq!(decode(&mut buf, MAX), Err(FrameError::TooShort { len: 5 }));
    }

    #[test]
    fn flags_must_name_exactly_one_type() {
        for bits in 0..=255u8 {
            let ok = matches!(bits, 0x01 | 0x02 | 0x06 | 0x08 | 0x10);
            assert_eq!(Flags::validate(bits).is_ok(), ok, "bits {bits:#04x}");
        }
        // A bad flags byte with a valid CRC is still rejected.
        let mut frame = sample(b"");
        frame.flags = Flags(0x03);
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf).unwrap();
        assert_eq!(decode(&mut buf, MAX), Err(FrameError::BadFlags(0x03)));
    }

    #[test]
    fn hello_round_trip_and_rejections() {
        let hello = Hello { version: PROTOCOL_VERSION, node_id: 42, cluster_id: "keel-test".into() };
        let frame = hello.to_frame().unwrap();
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf).unwrap();
        let decoded = decode(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(Hello::from_frame(&decoded).unwrap(), hello);

        assert!(Hello::from_frame(&sample(b"")).is_err());
        let mut bad = frame.clone();
        bad.payload = bad.payload.slice(..bad.payload.len() - 1);
        assert!(Hello::from_frame(&bad).is_err());
        let long = Hello { cluster_id: "x".repeat(CLUSTER_ID_BYTES_MAX + 1), ..hello };
        assert!(long.to_frame().is_err());
    }

    /// A small xorshift generator: the fuzz below is reproducible without an RNG dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Guarantee: decoding bytes from the network never panics (STYLE rule 7), whether the
    /// bytes are pure garbage or a valid frame with some bytes overwritten or cut.
    #[test]
    fn decoding_random_bytes_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let valid = encode_to_bytes(&sample(b"a valid frame to mutate")).unwrap();
        for case in 0..20_000 {
            let mut buf = if case % 2 == 0 {
                let n = (rng.next() % 96) as usize;
                (0..n).map(|_| rng.next() as u8).collect::<BytesMut>()
            } else {
                let mut b = BytesMut::from(&valid[..]);
                let i = (rng.next() as usize) % b.len();
                b[i] = rng.next() as u8;
                b.truncate((rng.next() as usize) % (b.len() + 1));
                b
            };
            let limit = [HEADER_BYTES, 64, MAX][case % 3];
            // Drain until error or need-more; every step must terminate without panicking.
            for _ in 0..buf.len() + 1 {
                match decode(&mut buf, limit) {
                    Ok(Some(f)) => {
                        let _ = Hello::from_frame(&f);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
