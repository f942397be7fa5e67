//! A scan of a GGUF header's tensor descriptions, for the one question candle's reader
//! cannot answer: which tensor has a type it does not read. candle stops at the first
//! unknown type number without naming the tensor; this walks the same header (metadata
//! skipped value by value) to name it. Used only to explain a header candle refused.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// Type numbers candle reads (`GgmlDType::from_u32`).
const READ: &[u32] = &[0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30];

/// The first tensor whose type number strata does not read, with that number; `None`
/// when every type is readable (the header failed for another reason).
pub(super) fn first_unread_type(path: &Path) -> std::io::Result<Option<(String, u32)>> {
    let mut r = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"GGUF" || u32_(&mut r)? < 2 {
        return Ok(None);
    }
    let n_tensors = u64_(&mut r)?;
    let n_kv = u64_(&mut r)?;
    for _ in 0..n_kv {
        skip_string(&mut r)?;
        let ty = u32_(&mut r)?;
        skip_value(&mut r, ty)?;
    }
    for _ in 0..n_tensors {
        let name = string(&mut r)?;
        let n_dims = u32_(&mut r)?;
        r.seek_relative(8 * i64::from(n_dims))?;
        let ty = u32_(&mut r)?;
        u64_(&mut r)?;
        if !READ.contains(&ty) {
            return Ok(Some((name, ty)));
        }
    }
    Ok(None)
}

fn u32_(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u64_(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// A tensor name (at most 64 KiB: GGUF names are short; longer is damage).
fn string(r: &mut impl Read) -> std::io::Result<String> {
    let n = u64_(r)?;
    if n > 1 << 16 {
        return Err(bad("tensor name too long"));
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn skip_string(r: &mut BufReader<File>) -> std::io::Result<()> {
    let n = u64_(r)?;
    let n = i64::try_from(n).map_err(|_| bad("string too long"))?;
    r.seek_relative(n)
}

/// Bytes of one value of a fixed-size metadata type; `None` for strings and arrays.
fn fixed_size(ty: u32) -> std::io::Result<Option<i64>> {
    Ok(Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 | 9 => return Ok(None),
        _ => return Err(bad("unknown metadata type")),
    }))
}

/// Skips one metadata value of type `ty` (GGUF's numbering: 0-7, 10-12 fixed-size
/// numbers and bools, 8 a string, 9 an array).
fn skip_value(r: &mut BufReader<File>, ty: u32) -> std::io::Result<()> {
    if let Some(size) = fixed_size(ty)? {
        return r.seek_relative(size);
    }
    if ty == 8 {
        return skip_string(r);
    }
    let inner = u32_(r)?;
    let n = u64_(r)?;
    match fixed_size(inner)? {
        Some(size) => {
            let n = i64::try_from(n).map_err(|_| bad("array too long"))?;
            r.seek_relative(n.checked_mul(size).ok_or_else(|| bad("array too long"))?)
        }
        None => (0..n).try_for_each(|_| skip_value(r, inner)),
    }
}
