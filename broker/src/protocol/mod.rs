//! Kafka framing and request decoding / response encoding through the kafka-protocol
//! crate. No storage knowledge lives here.
//!
//! Traps handled here:
//! - the size prefix is checked against `max_request_bytes` before anything is allocated,
//!   and the buffer grows only as bytes arrive, so a lying prefix costs nothing;
//! - bytes left after a request body are ignored (librdkafka 2.16 sends 3 extra bytes on
//!   some Metadata v13 requests);
//! - an ApiVersions request of a version newer than ours gets the KIP-511 answer: a v0
//!   body with UNSUPPORTED_VERSION and our list, so the client retries with a version we
//!   know (kafka-python 3 opens with v4);
//! - anything else we cannot decode closes the connection, as Kafka does: without a
//!   decodable header there is no correlation id to answer with.

pub mod versions;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request of {size} bytes exceeds max_request_bytes {max}")]
    TooLarge { size: i64, max: usize },
    #[error("negative frame size {0}")]
    Negative(i32),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one size-prefixed frame. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    match read_frame_size(reader, max).await? {
        Some(size) => read_frame_body(reader, size).await.map(Some),
        None => Ok(None),
    }
}

/// Reads a frame's size prefix and checks it against `max`. `Ok(None)` on a clean end of
/// stream. Split from [`read_frame_body`] so the listener can wait for memory budget
/// between the two.
pub async fn read_frame_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<usize>, FrameError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size);
    if size < 0 {
        return Err(FrameError::Negative(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge {
            size: size as i64,
            max,
        });
    }
    Ok(Some(size))
}

/// Reads a frame body of `size` bytes (already checked against the maximum).
pub async fn read_frame_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> Result<Bytes, FrameError> {
    let mut buf = BytesMut::with_capacity(size.min(64 * 1024));
    while buf.len() < size {
        buf.reserve((size - buf.len()).min(1024 * 1024));
        let limit = size - buf.len();
        let read = (&mut *reader).take(limit as u64).read_buf(&mut buf).await?;
        if read == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(buf.freeze())
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api_key:?} v{version} is not supported")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{version} request: {message}")]
    Malformed {
        api_key: ApiKey,
        version: i16,
        message: String,
    },
}

/// Decodes a request frame. Trailing bytes after the body are ignored.
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Short(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey(raw_key))?;
    if !versions::supports(api_key, version) {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |message: String| DecodeError::Malformed {
        api_key,
        version,
        message,
    };
    // The decoder is third-party code fed by the network: contain any panic in it.
    let decoded = std::panic::catch_unwind(move || {
        let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
            .map_err(|e| format!("header: {e}"))?;
        let body =
            RequestKind::decode(api_key, &mut frame, version).map_err(|e| format!("body: {e}"))?;
        Ok::<_, String>((header, body))
    });
    let (header, body) = decoded
        .map_err(|_| malformed("decoder panicked".into()))?
        .map_err(malformed)?;
    Ok(Request {
        api_key,
        version,
        header,
        body,
    })
}

/// Encodes a response frame (size prefix included).
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> anyhow::Result<Bytes> {
    // A Fetch response carries up to fetch_max_bytes of records: sized up front, they are
    // copied once into the frame instead of again at each doubling of a growing buffer.
    let body_size = match response {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(0),
        _ => 0,
    };
    let mut buf = BytesMut::with_capacity(body_size + 256);
    buf.extend_from_slice(&[0, 0, 0, 0]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, api_key.response_header_version(version))?;
    response.encode(&mut buf, version)?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// The KIP-511 answer to an ApiVersions request newer than we know: always encoded as v0.
pub fn api_versions_fallback(correlation_id: i32) -> anyhow::Result<Bytes> {
    let response = ApiVersionsResponse::default()
        .with_error_code(kafka_protocol::ResponseError::UnsupportedVersion.code())
        .with_api_keys(versions::advertised());
    encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(response),
    )
}

#[cfg(test)]
mod tests;
