//! Kafka Connect's standalone offsets file (`offset.storage.file.filename`): a Java-serialized
//! `java.util.HashMap<byte[],byte[]>` (Object Serialization Stream Protocol version 5), exactly as
//! `FileOffsetBackingStore` writes it (kafka-connect.md §4.3).
//!
//! [`decode`] is a strict reader of that one shape; [`encode`] writes the bytes the JDK writes
//! (entry order aside, which is random in Java). Pure functions: the file handling is in
//! [`super::disk`].
//!
//! Invariants of the reader: it never panics on any input, its time is linear in the input, and
//! its output (including bytes copied for back-references) is at most
//! [`EXPANSION_LIMIT`] times the input plus 1 MiB, so a crafted file cannot exhaust memory.

pub use super::disk::{load, save_atomic, temp_path, Activity, OffsetsError};

/// One entry: key bytes and value bytes (`None` = Java null, a tombstone written by a reset).
pub type Entry = (Vec<u8>, Option<Vec<u8>>);

const STREAM_MAGIC: u16 = 0xACED;
const STREAM_VERSION: u16 = 5;
const TC_NULL: u8 = 0x70;
const TC_REFERENCE: u8 = 0x71;
const TC_CLASSDESC: u8 = 0x72;
const TC_OBJECT: u8 = 0x73;
const TC_STRING: u8 = 0x74;
const TC_ARRAY: u8 = 0x75;
const TC_BLOCKDATA: u8 = 0x77;
const TC_ENDBLOCKDATA: u8 = 0x78;
const TC_BLOCKDATALONG: u8 = 0x7A;
const BASE_HANDLE: u32 = 0x7E_0000;

const HASHMAP_CLASS: &str = "java.util.HashMap";
const HASHMAP_SUID: u64 = 362_498_820_763_181_265;
const BYTE_ARRAY_CLASS: &str = "[B";
const BYTE_ARRAY_SUID: u64 = 0xACF3_17F8_0608_54E0; // -5984413125824719648
const SC_WRITE_METHOD: u8 = 0x01;
const SC_SERIALIZABLE: u8 = 0x02;
const SC_EXTERNALIZABLE: u8 = 0x04;
const SC_ENUM: u8 = 0x10;

/// Why bytes are not a readable offsets file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffsetFileError {
    #[error("the file is empty")]
    Empty,
    #[error("truncated at byte {offset} (expected {what})")]
    Truncated { offset: usize, what: String },
    #[error("corrupt at byte {offset}: {what}")]
    Corrupt { offset: usize, what: String },
}

enum Handle {
    ClassDesc(String),
    Object,
    Array(std::ops::Range<usize>),
}

/// Decoded bytes (entries, including copies for back-references) may be at most this many times
/// the input size, plus [`EXPANSION_SLACK`]. Java only writes a back-reference when the same
/// array object is written twice, which a `FileOffsetBackingStore` never does.
pub const EXPANSION_LIMIT: usize = 4;
pub const EXPANSION_SLACK: usize = 1 << 20;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    handles: Vec<Handle>,
    /// Bytes left in the current block-data segment (HashMap's custom data).
    block_left: usize,
    /// Bytes the decoded entries may still take (see [`EXPANSION_LIMIT`]).
    budget: usize,
}

impl<'a> Reader<'a> {
    fn truncated(&self, what: &str) -> OffsetFileError {
        OffsetFileError::Truncated {
            offset: self.b.len(),
            what: what.to_string(),
        }
    }

    fn corrupt(&self, at: usize, what: impl Into<String>) -> OffsetFileError {
        OffsetFileError::Corrupt {
            offset: at,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], OffsetFileError> {
        if self.b.len() - self.pos < n {
            return Err(self.truncated(what));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, OffsetFileError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, OffsetFileError> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, OffsetFileError> {
        let s = self.take(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, OffsetFileError> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }

    fn expect(&mut self, code: u8, what: &str) -> Result<(), OffsetFileError> {
        let at = self.pos;
        let got = self.u8(what)?;
        if got != code {
            return Err(self.corrupt(
                at,
                format!("expected {what} (0x{code:02X}), found 0x{got:02X}"),
            ));
        }
        Ok(())
    }

    /// A modified-UTF-8 string with a u16 length (class and field names: ASCII in practice).
    fn utf(&mut self, what: &str) -> Result<String, OffsetFileError> {
        let len = self.u16(what)? as usize;
        let at = self.pos;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| self.corrupt(at, format!("{what} is not valid (modified) UTF-8")))
    }

    /// Accounts for `n` decoded bytes; refuses once the expansion budget is spent.
    fn spend(&mut self, at: usize, n: usize) -> Result<(), OffsetFileError> {
        match self.budget.checked_sub(n) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(self.corrupt(
                at,
                format!(
                    "back-references expand the entries beyond {EXPANSION_LIMIT} times the file size"
                ),
            )),
        }
    }

    fn handle(&self, at: usize, h: u32) -> Result<&Handle, OffsetFileError> {
        h.checked_sub(BASE_HANDLE)
            .and_then(|i| self.handles.get(i as usize))
            .ok_or_else(|| self.corrupt(at, format!("reference to unknown handle 0x{h:08X}")))
    }

    /// A new class descriptor (after its TC_CLASSDESC byte) with the expected name and SUID.
    /// Returns the field type codes and names in stream order.
    fn class_desc_body(
        &mut self,
        expect_name: &str,
        expect_suid: u64,
    ) -> Result<Vec<(u8, String)>, OffsetFileError> {
        let at = self.pos;
        let name = self.utf("class name")?;
        self.handles.push(Handle::ClassDesc(name.clone()));
        if name != expect_name {
            return Err(self.corrupt(
                at,
                format!("expected a serialized {expect_name}, found class {name:?}"),
            ));
        }
        let suid_at = self.pos;
        let suid = self.u64("serialVersionUID")?;
        if suid != expect_suid {
            return Err(self.corrupt(
                suid_at,
                format!(
                    "{name} serialVersionUID {} does not match {}",
                    suid as i64, expect_suid as i64
                ),
            ));
        }
        let flags_at = self.pos;
        let flags = self.u8("class flags")?;
        if flags & SC_SERIALIZABLE == 0 || flags & (SC_EXTERNALIZABLE | SC_ENUM) != 0 {
            return Err(self.corrupt(
                flags_at,
                format!("unexpected class flags 0x{flags:02X} for {name}"),
            ));
        }
        if name == HASHMAP_CLASS && flags & SC_WRITE_METHOD == 0 {
            return Err(self.corrupt(
                flags_at,
                "java.util.HashMap descriptor without writeObject data",
            ));
        }
        let count = self.u16("field count")?;
        let mut fields = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let tc_at = self.pos;
            let tc = self.u8("field type code")?;
            let fname = self.utf("field name")?;
            if !matches!(tc, b'B' | b'C' | b'D' | b'F' | b'I' | b'J' | b'S' | b'Z') {
                return Err(self.corrupt(
                    tc_at,
                    format!("unexpected non-primitive field {fname:?} in {name}"),
                ));
            }
            fields.push((tc, fname));
        }
        self.expect(TC_ENDBLOCKDATA, "TC_ENDBLOCKDATA after class descriptor")?;
        self.expect(TC_NULL, "TC_NULL (no serializable superclass)")?;
        Ok(fields)
    }

    /// One byte of block data, crossing block segments as Java's block-data stream does.
    fn block_byte(&mut self) -> Result<u8, OffsetFileError> {
        while self.block_left == 0 {
            let at = self.pos;
            let tc = self.u8("HashMap block data")?;
            self.block_left = match tc {
                TC_BLOCKDATA => self.u8("block data length")? as usize,
                TC_BLOCKDATALONG => self.u32("block data length")? as usize,
                other => {
                    return Err(self.corrupt(
                        at,
                        format!("expected HashMap block data (0x77), found 0x{other:02X}"),
                    ))
                }
            };
        }
        self.block_left -= 1;
        self.u8("HashMap block data")
    }

    fn block_i32(&mut self) -> Result<i32, OffsetFileError> {
        let mut b = [0u8; 4];
        for x in &mut b {
            *x = self.block_byte()?;
        }
        Ok(i32::from_be_bytes(b))
    }

    /// One key or value: TC_NULL, a new `byte[]` or a back-reference to an earlier one.
    fn byte_array_or_null(&mut self) -> Result<Option<Vec<u8>>, OffsetFileError> {
        if self.block_left != 0 {
            return Err(self.corrupt(self.pos, "unread HashMap block data before an entry"));
        }
        let at = self.pos;
        // Every key or value also costs its in-memory header, so tiny entries count too.
        self.spend(at, std::mem::size_of::<Option<Vec<u8>>>())?;
        match self.u8("a map key or value")? {
            TC_NULL => Ok(None),
            TC_REFERENCE => {
                let h_at = self.pos;
                let h = self.u32("handle")?;
                match self.handle(h_at, h)? {
                    Handle::Array(r) => {
                        let r = r.clone();
                        self.spend(at, r.len())?;
                        Ok(Some(self.b[r].to_vec()))
                    }
                    _ => {
                        Err(self
                            .corrupt(at, "a map entry refers to something that is not a byte[]"))
                    }
                }
            }
            TC_ARRAY => {
                let desc_at = self.pos;
                match self.u8("array class descriptor")? {
                    TC_CLASSDESC => {
                        let fields = self.class_desc_body(BYTE_ARRAY_CLASS, BYTE_ARRAY_SUID)?;
                        if !fields.is_empty() {
                            return Err(self.corrupt(desc_at, "byte[] descriptor with fields"));
                        }
                    }
                    TC_REFERENCE => {
                        let h_at = self.pos;
                        let h = self.u32("handle")?;
                        match self.handle(h_at, h)? {
                            Handle::ClassDesc(n) if n == BYTE_ARRAY_CLASS => {}
                            Handle::ClassDesc(n) => {
                                let n = n.clone();
                                return Err(self.corrupt(
                                    desc_at,
                                    format!(
                                        "expected a byte[] entry, found an array of class {n:?}"
                                    ),
                                ));
                            }
                            _ => {
                                return Err(self.corrupt(
                                    desc_at,
                                    "array class reference is not a class descriptor",
                                ))
                            }
                        }
                    }
                    other => {
                        return Err(self.corrupt(
                            desc_at,
                            format!("expected an array class descriptor, found 0x{other:02X}"),
                        ))
                    }
                }
                let len_at = self.pos;
                let len = self.u32("array length")? as i32;
                if len < 0 {
                    return Err(self.corrupt(len_at, format!("negative array length {len}")));
                }
                let start = self.pos;
                self.take(len as usize, "array bytes")?;
                self.spend(at, len as usize)?;
                self.handles
                    .push(Handle::Array(start..start + len as usize));
                Ok(Some(self.b[start..start + len as usize].to_vec()))
            }
            TC_OBJECT => Err(self.corrupt(at, "a map entry is an object, not a byte[]")),
            TC_STRING => Err(self.corrupt(at, "a map entry is a String, not a byte[]")),
            other => Err(self.corrupt(
                at,
                format!("expected a byte[] or null map entry, found type code 0x{other:02X}"),
            )),
        }
    }
}

/// Decodes an offsets file. Trailing bytes after the map are ignored, as Java ignores them.
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, OffsetFileError> {
    decode_salvage(bytes).map_err(|(_, e)| e)
}

/// Like [`decode`], but on failure also returns the entries read before the damage (for
/// `iotconnect offsets show` on a damaged file).
pub fn decode_salvage(bytes: &[u8]) -> Result<Vec<Entry>, (Vec<Entry>, OffsetFileError)> {
    if bytes.is_empty() {
        return Err((Vec::new(), OffsetFileError::Empty));
    }
    let mut r = Reader {
        b: bytes,
        pos: 0,
        handles: Vec::new(),
        block_left: 0,
        budget: bytes
            .len()
            .saturating_mul(EXPANSION_LIMIT)
            .saturating_add(EXPANSION_SLACK),
    };
    let mut entries = Vec::new();
    match decode_into(&mut r, &mut entries) {
        Ok(()) => Ok(entries),
        Err(e) => Err((entries, e)),
    }
}

fn decode_into(r: &mut Reader<'_>, entries: &mut Vec<Entry>) -> Result<(), OffsetFileError> {
    let magic = r.u16("stream header")?;
    let version = r.u16("stream header")?;
    if magic != STREAM_MAGIC || version != STREAM_VERSION {
        return Err(r.corrupt(
            0,
            format!(
                "invalid stream header {:02X}{:02X}{:02X}{:02X}: not a Java-serialized offsets file",
                magic >> 8,
                magic & 0xFF,
                version >> 8,
                version & 0xFF
            ),
        ));
    }
    let at = r.pos;
    let tc = r.u8("the HashMap object")?;
    if tc != TC_OBJECT {
        return Err(r.corrupt(
            at,
            format!("expected a HashMap object (0x73), found 0x{tc:02X}"),
        ));
    }
    r.expect(TC_CLASSDESC, "HashMap class descriptor")?;
    let fields = r.class_desc_body(HASHMAP_CLASS, HASHMAP_SUID)?;
    r.handles.push(Handle::Object);
    let mut load_factor = None;
    for (tc, name) in &fields {
        let at = r.pos;
        match tc {
            b'F' => {
                let v = f32::from_bits(r.u32("float field")?);
                if name == "loadFactor" {
                    load_factor = Some((at, v));
                }
            }
            b'I' => {
                r.u32("int field")?;
            }
            b'B' | b'Z' => {
                r.u8("byte field")?;
            }
            b'C' | b'S' => {
                r.u16("short field")?;
            }
            _ => {
                r.u64("long field")?;
            }
        }
    }
    match load_factor {
        Some((_, lf)) if lf > 0.0 => {}
        Some((at, lf)) => return Err(r.corrupt(at, format!("illegal load factor {lf}"))),
        None => return Err(r.corrupt(r.pos, "HashMap descriptor without a loadFactor field")),
    }
    let _buckets = r.block_i32()?;
    let count_at = r.pos;
    let mappings = r.block_i32()?;
    if mappings < 0 {
        return Err(r.corrupt(count_at, format!("illegal mappings count {mappings}")));
    }
    if r.block_left != 0 {
        return Err(r.corrupt(r.pos, "unexpected extra HashMap block data"));
    }
    for _ in 0..mappings {
        let key_at = r.pos;
        let key = r.byte_array_or_null()?;
        let value = r.byte_array_or_null()?;
        match key {
            Some(k) => entries.push((k, value)),
            None => return Err(r.corrupt(key_at, "an entry has a null key")),
        }
    }
    r.expect(TC_ENDBLOCKDATA, "TC_ENDBLOCKDATA after the last entry")?;
    Ok(())
}

/// (threshold, buckets) Java writes for a `HashMap` filled by `put` with `n` mappings.
fn header_values(n: usize) -> (u32, u32) {
    if n == 0 {
        return (0, 16);
    }
    let mut cap: u64 = 16;
    while (n as u64) * 4 > cap * 3 {
        cap *= 2;
    }
    let cap = cap.min(1 << 30) as u32;
    (cap / 4 * 3, cap)
}

/// Encodes entries as `ObjectOutputStream.writeObject(HashMap<byte[],byte[]>)` does, in the given
/// order.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let payload: usize = entries
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 20)
        .sum();
    let mut out = Vec::with_capacity(100 + payload);
    out.extend_from_slice(&STREAM_MAGIC.to_be_bytes());
    out.extend_from_slice(&STREAM_VERSION.to_be_bytes());
    out.push(TC_OBJECT);
    out.push(TC_CLASSDESC);
    write_utf(&mut out, HASHMAP_CLASS);
    out.extend_from_slice(&HASHMAP_SUID.to_be_bytes());
    out.push(SC_WRITE_METHOD | SC_SERIALIZABLE);
    out.extend_from_slice(&2u16.to_be_bytes());
    out.push(b'F');
    write_utf(&mut out, "loadFactor");
    out.push(b'I');
    write_utf(&mut out, "threshold");
    out.push(TC_ENDBLOCKDATA);
    out.push(TC_NULL);
    let (threshold, buckets) = header_values(entries.len());
    out.extend_from_slice(&0.75f32.to_bits().to_be_bytes());
    out.extend_from_slice(&threshold.to_be_bytes());
    out.push(TC_BLOCKDATA);
    out.push(8);
    out.extend_from_slice(&buckets.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    let mut wrote_desc = false;
    let mut write_array = |out: &mut Vec<u8>, b: &[u8]| {
        out.push(TC_ARRAY);
        if wrote_desc {
            out.push(TC_REFERENCE);
            out.extend_from_slice(&(BASE_HANDLE + 2).to_be_bytes());
        } else {
            out.push(TC_CLASSDESC);
            write_utf(out, BYTE_ARRAY_CLASS);
            out.extend_from_slice(&BYTE_ARRAY_SUID.to_be_bytes());
            out.push(SC_SERIALIZABLE);
            out.extend_from_slice(&0u16.to_be_bytes());
            out.push(TC_ENDBLOCKDATA);
            out.push(TC_NULL);
            wrote_desc = true;
        }
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    };
    for (k, v) in entries {
        write_array(&mut out, k);
        match v {
            Some(v) => write_array(&mut out, v),
            None => out.push(TC_NULL),
        }
    }
    out.push(TC_ENDBLOCKDATA);
    out
}

fn write_utf(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "file_props.rs"]
mod props;
