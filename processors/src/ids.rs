//! Stable hashes for storage keys. FNV-1a is fixed by its spec, so every process and version
//! computes the same key for the same input.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a over the concatenation of `parts` (with a separator so ("ab","c") ≠ ("a","bc")).
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(FNV_PRIME);
        }
        for b in *part {
            h ^= *b as u64;
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// The stored visitor key for a visitor id.
pub fn visitor_key(visitor_id: &str) -> u64 {
    fnv64(&[visitor_id.as_bytes()])
}

/// The 128-bit event id: the UUID ingest assigned, or a hash of the text for foreign ids.
pub fn event_key(event_id: &str) -> u128 {
    match uuid::Uuid::parse_str(event_id) {
        Ok(u) => u.as_u128(),
        Err(_) => {
            ((fnv64(&[b"hi", event_id.as_bytes()]) as u128) << 64)
                | fnv64(&[b"lo", event_id.as_bytes()]) as u128
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable_and_separates_parts() {
        assert_eq!(fnv64(&[b""]), FNV_OFFSET);
        assert_eq!(fnv64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv64(&[b"ab", b"c"]), fnv64(&[b"a", b"bc"]));
    }

    #[test]
    fn event_key_uses_uuid_bits() {
        let u = uuid::Uuid::new_v4();
        assert_eq!(event_key(&u.to_string()), u.as_u128());
        assert_eq!(event_key("not-a-uuid"), event_key("not-a-uuid"));
        assert_ne!(event_key("a"), event_key("b"));
    }
}
