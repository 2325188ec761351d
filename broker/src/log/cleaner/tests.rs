use super::*;

#[test]
fn checkpoint_v1_bytes() {
    let bytes = encode_checkpoint(42);
    assert_eq!(&bytes[..5], b"SCLN\x01");
    assert_eq!(&bytes[5..13], &42i64.to_be_bytes());
    assert_eq!(decode_checkpoint(&bytes), Some(42));
    let mut bad = bytes.clone();
    bad[7] ^= 1;
    assert_eq!(decode_checkpoint(&bad), None);
}
