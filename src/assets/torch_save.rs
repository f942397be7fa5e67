//! A state dict of f32 tensors as `torch.save` writes it (the zip format of torch 1.6 on):
//! a zip of stored entries, `NAME/data.pkl` (a protocol-2 pickle of an `OrderedDict` of
//! `torch._utils._rebuild_tensor_v2` calls over persistent storages), each storage's
//! little-endian bytes as `NAME/data/K`, `NAME/version` and `NAME/byteorder`. This is
//! what the tuned-lens package saves a lens's translators as and `torch.load` reads.
//!
//! Written here rather than through a crate: candle reads this format but does not
//! write it, and the registry's pickle crates write Python values, not torch's
//! persistent storages. The pickle uses a handful of opcodes and no memo; the zip is
//! the `zip` crate candle already builds, with its entries stored (uncompressed, as torch
//! stores them), 64-byte aligned and dated 1980-01-01, so the bytes depend on the
//! tensors alone.

use std::io::Write;

/// A tensor to save: its name, shape and row-major values.
pub struct Saved<'a> {
    /// Its key in the state dict.
    pub name: &'a str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: &'a [f32],
}

/// Pickle opcodes (protocol 2).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const REDUCE: u8 = b'R';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(op::GLOBAL);
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    fn string(&mut self, s: &str) {
        self.0.push(op::BINUNICODE);
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: usize) {
        self.0.push(op::BININT);
        self.0.extend_from_slice(&(v as i32).to_le_bytes());
    }

    fn ints(&mut self, values: &[usize]) {
        self.0.push(op::MARK);
        for &v in values {
            self.int(v);
        }
        self.0.push(op::TUPLE);
    }

    /// `collections.OrderedDict()`.
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.push(op::EMPTY_TUPLE);
        self.0.push(op::REDUCE);
    }

    /// `_rebuild_tensor_v2(storage K, 0, shape, strides, False, OrderedDict())`.
    fn tensor(&mut self, key: usize, t: &Saved) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.0.push(op::MARK);
        self.0.push(op::MARK);
        self.string("storage");
        self.global("torch", "FloatStorage");
        self.string(&key.to_string());
        self.string("cpu");
        self.int(t.values.len());
        self.0.push(op::TUPLE);
        self.0.push(op::BINPERSID);
        self.int(0);
        self.ints(&t.shape);
        let strides: Vec<usize> = (0..t.shape.len())
            .map(|i| t.shape[i + 1..].iter().product())
            .collect();
        self.ints(&strides);
        self.0.push(op::NEWFALSE);
        self.ordered_dict();
        self.0.push(op::TUPLE);
        self.0.push(op::REDUCE);
    }
}

/// The bytes of `torch.save(OrderedDict(tensors))`, its archive folder named `folder`
/// (torch names it after the file's stem).
pub fn state_dict(folder: &str, tensors: &[Saved]) -> Result<Vec<u8>, String> {
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.values.len() {
            return Err(format!(
                "{}: {} values for shape {:?}",
                t.name,
                t.values.len(),
                t.shape
            ));
        }
    }
    let mut p = Pickle(vec![op::PROTO, 2]);
    p.ordered_dict();
    p.0.push(op::MARK);
    for (k, t) in tensors.iter().enumerate() {
        p.string(t.name);
        p.tensor(k, t);
    }
    p.0.push(op::SETITEMS);
    p.0.push(op::STOP);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    let mut put = |name: String, bytes: &[u8]| -> Result<(), String> {
        zip.start_file(name, options).map_err(|e| e.to_string())?;
        zip.write_all(bytes).map_err(|e| e.to_string())
    };
    put(format!("{folder}/data.pkl"), &p.0)?;
    put(format!("{folder}/byteorder"), b"little")?;
    for (k, t) in tensors.iter().enumerate() {
        let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        put(format!("{folder}/data/{k}"), &bytes)?;
    }
    put(format!("{folder}/version"), b"3\n")?;
    let cursor = zip.finish().map_err(|e| e.to_string())?;
    Ok(cursor.into_inner())
}
