//! A scan of a GGUF header's tensor descriptions, for the one question candle's reader
//! cannot answer: which tensor has a type it does not read. candle stops at the first
//! unknown type number without naming the tensor; this walks the same header (metadata
//! skipped value by value) to name it. Used only to explain a header candle refused.
//! Also ggml's table of type numbers and names.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// ggml's type names by their number in a GGUF tensor description (`ggml.h`), and
/// whether strata reads the type (candle's `GgmlDType`, dequantized by candle's per-type
/// routines, which follow ggml's).
pub(super) const GGML_TYPES: &[(u32, &str, bool)] = &[
    (0, "F32", true),
    (1, "F16", true),
    (30, "BF16", true),
    (2, "Q4_0", true),
    (3, "Q4_1", true),
    (6, "Q5_0", true),
    (7, "Q5_1", true),
    (8, "Q8_0", true),
    (9, "Q8_1", true),
    (10, "Q2_K", true),
    (11, "Q3_K", true),
    (12, "Q4_K", true),
    (13, "Q5_K", true),
    (14, "Q6_K", true),
    (15, "Q8_K", true),
    (16, "IQ2_XXS", false),
    (17, "IQ2_XS", false),
    (18, "IQ3_XXS", false),
    (19, "IQ1_S", false),
    (20, "IQ4_NL", false),
    (21, "IQ3_S", false),
    (22, "IQ2_S", false),
    (23, "IQ4_XS", false),
    (24, "I8", false),
    (25, "I16", false),
    (26, "I32", false),
    (27, "I64", false),
    (28, "F64", false),
    (29, "IQ1_M", false),
    (34, "TQ1_0", false),
    (35, "TQ2_0", false),
    (39, "MXFP4", false),
];

/// The tensor types strata reads, for messages (`F32, F16, BF16, Q4_0, ...`).
pub fn tensor_types() -> String {
    let read: Vec<&str> = GGML_TYPES.iter().filter(|t| t.2).map(|t| t.1).collect();
    read.join(", ")
}

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
        let read = GGML_TYPES.iter().any(|t| t.0 == ty && t.2);
        if !read {
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
