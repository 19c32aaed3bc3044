//! Direct Avro binary encoding for the two hot record types (collected and enriched events),
//! written against their newest schemas field by field. The generic apache-avro path builds a
//! value tree per record and resolves the schema each call; profiles showed it as the largest
//! single cost per event. Tests prove these bytes are exactly what apache-avro writes and reads.
//! Older schema versions still decode through apache-avro's schema resolution.

use crate::codec::CodecError;
use crate::events::{CollectedEvent, EnrichedEvent, LedgerEntryPosted, UsageRecorded};

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(2); // union branch 1, zig-zag encoded
            put_str(out, s);
        }
    }
}

/// A cursor over a datum; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn long(&mut self) -> Result<i64, CodecError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| err("truncated long"))?;
            self.buf = rest;
            n |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        Err(err("long longer than 10 bytes"))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let len = usize::try_from(self.long()?).map_err(|_| err("negative string length"))?;
        if len > self.buf.len() {
            return Err(err("string longer than the datum"));
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        String::from_utf8(s.to_vec()).map_err(|_| err("string is not UTF-8"))
    }

    fn opt(&mut self) -> Result<Option<String>, CodecError> {
        match self.long()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            b => Err(err(&format!("union branch {b} out of range"))),
        }
    }

    fn double(&mut self) -> Result<f64, CodecError> {
        if self.buf.len() < 8 {
            return Err(err("truncated double"));
        }
        let (b, rest) = self.buf.split_at(8);
        self.buf = rest;
        let mut le = [0u8; 8];
        le.copy_from_slice(b);
        Ok(f64::from_le_bytes(le))
    }

    fn boolean(&mut self) -> Result<bool, CodecError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| err("truncated boolean"))?;
        self.buf = rest;
        match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(err("boolean byte is not 0 or 1")),
        }
    }

    pub(crate) fn finish(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(err(&format!(
                "{} trailing bytes after the datum",
                self.buf.len()
            )))
        }
    }
}

fn err(msg: &str) -> CodecError {
    CodecError::Avro(msg.to_string())
}

/// Encodes a record's fields in schema order and decodes them back. `S` is a string, `L` a
/// long, `O` a nullable string, `B` a boolean, `D` a double: the order must match the `.avsc`
/// exactly.
macro_rules! avro_record {
    ($t:ident { $($field:ident : $kind:ident),* $(,)? }) => {
        impl $t {
            pub(crate) fn write_avro(&self, out: &mut Vec<u8>) {
                $( avro_record!(@put out, self.$field, $kind); )*
            }
            pub(crate) fn read_avro(r: &mut Reader<'_>) -> Result<Self, CodecError> {
                Ok(Self { $( $field: avro_record!(@get r, $kind), )* })
            }
        }
    };
    (@put $out:ident, $v:expr, S) => { put_str($out, &$v) };
    (@put $out:ident, $v:expr, L) => { put_long($out, $v) };
    (@put $out:ident, $v:expr, O) => { put_opt($out, &$v) };
    (@put $out:ident, $v:expr, B) => { $out.push($v as u8) };
    (@put $out:ident, $v:expr, D) => { $out.extend_from_slice(&$v.to_le_bytes()) };
    (@get $r:ident, S) => { $r.string()? };
    (@get $r:ident, L) => { $r.long()? };
    (@get $r:ident, O) => { $r.opt()? };
    (@get $r:ident, B) => { $r.boolean()? };
    (@get $r:ident, D) => { $r.double()? };
}

avro_record!(CollectedEvent {
    event_id: S,
    website_id: S,
    received_at_ms: L,
    timestamp_ms: L,
    event_type: S,
    url: S,
    referrer: O,
    screen: O,
    language: O,
    event_name: O,
    event_data: O,
    utm_source: O,
    utm_medium: O,
    utm_campaign: O,
    utm_term: O,
    utm_content: O,
    visitor_id: S,
    user_agent: O,
    country: O,
    region: O,
    city: O,
});

avro_record!(EnrichedEvent {
    event_id: S,
    website_id: S,
    received_at_ms: L,
    timestamp_ms: L,
    event_type: S,
    url: S,
    page: S,
    hostname: O,
    referrer: O,
    referrer_domain: O,
    screen: O,
    language: O,
    event_name: O,
    event_data: O,
    utm_source: O,
    utm_medium: O,
    utm_campaign: O,
    utm_term: O,
    utm_content: O,
    country: O,
    region: O,
    city: O,
    browser: O,
    browser_version: O,
    os: O,
    os_version: O,
    device_type: O,
    visitor_id: S,
    is_bot: B,
});

// The money path's two records: one per ledger row and one per execution, written inside
// the money transaction.
avro_record!(LedgerEntryPosted {
    entry_id: S,
    company_id: S,
    kind: S,
    credits: L,
    balance_after: L,
    execution_id: O,
    counterparty_company_id: O,
    at_ms: L,
});

avro_record!(UsageRecorded {
    execution_id: S,
    buyer_company_id: S,
    seller_company_id: S,
    asset_id: S,
    api_key_id: L,
    user_id: S,
    credits: L,
    seller_credits: L,
    rows: L,
    duration_ms: D,
    status: S,
    mode: S,
    at_ms: L,
});

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::registry::{newest_id, schema_by_id};
    use crate::WireRecord;

    fn collected() -> CollectedEvent {
        CollectedEvent {
            event_id: "e".into(),
            website_id: "w".into(),
            received_at_ms: 1_700_000_000_123,
            timestamp_ms: -5,
            event_type: "pageview".into(),
            url: "https://example.com/ünïcode".into(),
            referrer: Some(String::new()),
            event_data: Some("{\"a\":1}".into()),
            utm_content: Some("c".into()),
            visitor_id: "v".into(),
            city: Some("Linköping".into()),
            ..Default::default()
        }
    }

    fn enriched() -> EnrichedEvent {
        EnrichedEvent {
            event_id: "e".into(),
            website_id: "w".into(),
            received_at_ms: i64::MAX,
            timestamp_ms: i64::MIN,
            event_type: "event".into(),
            url: "/".into(),
            page: "/".into(),
            hostname: Some("example.com".into()),
            device_type: Some("mobile".into()),
            visitor_id: "v".into(),
            is_bot: true,
            ..Default::default()
        }
    }

    fn generic<T: WireRecord>(v: &T) -> Vec<u8> {
        let schema = schema_by_id(newest_id(T::SUBJECT).unwrap()).unwrap();
        apache_avro::to_avro_datum(schema, apache_avro::to_value(v).unwrap()).unwrap()
    }

    #[test]
    fn bytes_match_apache_avro_and_round_trip() {
        let c = collected();
        let mut fast = Vec::new();
        c.write_avro(&mut fast);
        assert_eq!(fast, generic(&c));
        let mut r = Reader::new(&fast);
        assert_eq!(CollectedEvent::read_avro(&mut r).unwrap(), c);
        r.finish().unwrap();

        let e = enriched();
        let mut fast = Vec::new();
        e.write_avro(&mut fast);
        assert_eq!(fast, generic(&e));
        let mut r = Reader::new(&fast);
        assert_eq!(EnrichedEvent::read_avro(&mut r).unwrap(), e);
    }

    #[test]
    fn money_records_match_apache_avro_and_round_trip() {
        let l = LedgerEntryPosted {
            entry_id: "entry".into(),
            company_id: "company".into(),
            kind: "refund".into(),
            credits: -4_000_000_000,
            balance_after: 0,
            execution_id: Some("x".into()),
            counterparty_company_id: None,
            at_ms: 1_700_000_000_000,
        };
        let mut fast = Vec::new();
        l.write_avro(&mut fast);
        assert_eq!(fast, generic(&l));
        let mut r = Reader::new(&fast);
        assert_eq!(LedgerEntryPosted::read_avro(&mut r).unwrap(), l);
        r.finish().unwrap();
        for duration_ms in [0.0, 12.34, -1.5e300, f64::MIN_POSITIVE] {
            let u = UsageRecorded {
                execution_id: "x".into(),
                buyer_company_id: "b".into(),
                seller_company_id: "s".into(),
                asset_id: "a".into(),
                api_key_id: 7,
                user_id: "u".into(),
                credits: 63,
                seller_credits: 50,
                rows: -1,
                duration_ms,
                status: "succeeded".into(),
                mode: "live".into(),
                at_ms: 9,
            };
            let mut fast = Vec::new();
            u.write_avro(&mut fast);
            assert_eq!(fast, generic(&u));
            let mut r = Reader::new(&fast);
            assert_eq!(UsageRecorded::read_avro(&mut r).unwrap(), u);
            r.finish().unwrap();
        }
        assert!(Reader::new(&[0u8; 7]).double().is_err());
    }

    #[test]
    fn longs_use_zigzag_varints() {
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            put_long(&mut out, v);
            assert_eq!(out, bytes);
            assert_eq!(Reader::new(&out).long().unwrap(), v);
        }
    }
}
