//! CPU kernels on plain row-major `f32` buffers, shared by the model families.
//!
//! candle's op-by-op tensors cost the forward pass as much as the matmuls themselves: every
//! op allocates (and page-faults in) a fresh zeroed buffer, the attention split copies q, k
//! and v into head-major tensors, and the causal mask is applied to a full `t x t` score
//! matrix. These kernels call the same `gemm` crate candle uses, but with strides that read
//! heads straight out of the projection output, a bias folded into the matmul, and causal
//! attention computed block by block on the lower triangle only.

use candle_core::quantized::GgmlDType;
use gemm::{gemm, Parallelism};

use super::capture::{AttentionRequest, HeadCapture, HeadStats};
use super::storage::Floats;
use rayon::prelude::*;

use crate::simd::multiversion;
#[cfg(test)]
use crate::simd::{simd_level, SIMD_CAP};

fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// One operand of [`matmul_into`]: element `(i, j)` at `ptr + i * row + j * col`.
#[derive(Clone, Copy)]
struct Strided {
    ptr: *const f32,
    row: usize,
    col: usize,
}

impl Strided {
    /// A row-major operand, rows `row` floats apart.
    fn rows(ptr: *const f32, row: usize) -> Self {
        Self { ptr, row, col: 1 }
    }

    /// A transposed operand: its rows are the stored columns, `col` floats apart.
    fn transposed(ptr: *const f32, col: usize) -> Self {
        Self { ptr, row: 1, col }
    }
}

/// `dst = lhs rhs` (`m x k` times `k x n`) through gemm, `dst` rows `dst_row` floats apart
/// and contiguous within. gemm writes `dst` without reading it (`read_dst` false), so
/// `dst` may be uninitialized: with m, n, k > 0 every element is written before any read.
///
/// # Safety
/// Every operand covers the extent its strides and sizes reach, and `dst` is valid for
/// writes over `m` rows of `n`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_row: usize,
    lhs: Strided,
    rhs: Strided,
    par: Parallelism,
) {
    // SAFETY: the caller's contract; gemm takes column then row strides.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row as isize,
            false,
            lhs.ptr,
            lhs.col as isize,
            lhs.row as isize,
            rhs.ptr,
            rhs.col as isize,
            rhs.row as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// `out = a b^T` for row-major `a` (`m x k`) and `b` (`n x k`): `out` is `m x n`, its rows
/// `ldo` floats apart (`ldo >= n`, so a block of `b`'s rows can fill a block of columns).
/// The logit lens's unembedding, `W_U` stored `[vocab, hidden]` as in the checkpoints.
pub fn matmul_transposed(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ldo: usize,
    out: &mut [f32],
) {
    assert!(ldo >= n && a.len() >= m * k && b.len() >= n * k);
    assert!(m == 0 || out.len() >= (m - 1) * ldo + n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.chunks_mut(ldo).take(m).for_each(|r| r[..n].fill(0.0));
        return;
    }
    // SAFETY: the asserts bound every read (lhs (i, j) = a[i k + j], rhs (j, v) =
    // b[v k + j]) and write (out[i ldo + v], v < n).
    unsafe {
        matmul_into(
            m,
            n,
            k,
            out.as_mut_ptr(),
            ldo,
            Strided {
                ptr: a.as_ptr(),
                row: k,
                col: 1,
            },
            Strided {
                ptr: b.as_ptr(),
                row: 1,
                col: k,
            },
            parallelism(),
        )
    }
}

/// A projection's weight.
enum Weight {
    /// `[in, out]`, in the file's dtype: f32 is multiplied in place, half precision is
    /// widened into a reused buffer first.
    Stored(Floats),
    /// GGUF's default mode: `[out, in]` quantized blocks in place in the mapped file,
    /// dequantized and transposed into a reused buffer when multiplied, so only one
    /// projection exists in f32 at a time.
    Dequantized(super::storage::Blocks),
    /// A Q8_0 weight in GGUF's default mode, relaid at load as `[in, out]` int8 plus its
    /// scales (the file's bytes, reordered), dequantized into a reused buffer per call.
    Int8(super::storage::Int8Columns),
    /// GGUF's quantized mode: `[out, in]` quantized blocks in place in the mapped file,
    /// multiplied a batch of rows at a time with llama.cpp's numerics.
    Batched(super::quant::QuantMatrix),
    /// GGUF's quantized mode for a format without a batched kernel (Q2_K, Q3_K): candle's
    /// `QMatMul`, one activation row at a time.
    Quantized(candle_core::quantized::QMatMul),
}

thread_local! {
    /// The buffers a stored weight is widened (or dequantized, then transposed) into: one
    /// projection's worth of f32, reused by every projection, so a bf16 model's f32
    /// footprint is its largest projection rather than the whole model.
    static SCRATCH: std::cell::RefCell<[Vec<f32>; 2]> = const {
        std::cell::RefCell::new([Vec::new(), Vec::new()])
    };
}

/// Runs `f` with two scratch buffers of `a` and `b` floats. A nested call (a rayon task
/// stolen by this thread while gemm waits) gets fresh buffers instead of the busy ones.
pub(crate) fn with_scratch<R>(
    a: usize,
    b: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let [x, y] = &mut *bufs;
            x.resize(a, 0.0);
            y.resize(b, 0.0);
            f(&mut x[..a], &mut y[..b])
        }
        Err(_) => f(&mut vec![0.0; a], &mut vec![0.0; b]),
    })
}

/// A dense projection `y = x W (+ b)`.
pub struct Dense {
    w: Weight,
    n_in: usize,
    n_out: usize,
    bias: Option<Vec<f32>>,
}

impl std::fmt::Debug for Dense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dense({} -> {})", self.n_in, self.n_out)
    }
}

impl Dense {
    /// `w`, f32 laid out `[in, out]`, and its bias: a projection built outside a model (a
    /// sparse autoencoder's encoder).
    pub fn from_f32(w: Vec<f32>, n_in: usize, n_out: usize, bias: Option<Vec<f32>>) -> Self {
        Self::in_major(
            Floats::F32(super::storage::Buf::Owned(w)),
            n_in,
            n_out,
            bias,
        )
    }

    /// `w` laid out `[in, out]` (GPT-2 `Conv1D`, or an `nn.Linear` transposed on load), in
    /// the dtype its file stores.
    pub(crate) fn in_major(w: Floats, n_in: usize, n_out: usize, bias: Option<Vec<f32>>) -> Self {
        debug_assert_eq!(w.len(), n_in * n_out);
        Self {
            w: Weight::Stored(w),
            n_in,
            n_out,
            bias,
        }
    }

    /// Quantized `[out, in]` blocks, dequantized per call: the numbers of transformers'
    /// f32 weights.
    pub(crate) fn dequantized(w: super::storage::Blocks, n_in: usize, n_out: usize) -> Self {
        let w = match w.dtype {
            GgmlDType::Q8_0 => Weight::Int8(super::storage::Int8Columns::from_q8_0(&w, n_out)),
            _ => Weight::Dequantized(w),
        };
        Self {
            w,
            n_in,
            n_out,
            bias: None,
        }
    }

    /// Quantized `[out, in]` blocks multiplied as stored (GGUF's quantized mode), if their
    /// format has a batched kernel; the blocks back if not.
    pub(crate) fn batched(
        w: super::storage::Blocks,
        n_in: usize,
        n_out: usize,
    ) -> Result<Self, super::storage::Blocks> {
        Ok(Self {
            w: Weight::Batched(super::quant::QuantMatrix::new(w, n_in, n_out)?),
            n_in,
            n_out,
            bias: None,
        })
    }

    /// A quantized `[out, in]` weight multiplied as stored by candle (GGUF's quantized
    /// mode, for formats without a batched kernel).
    pub fn quantized(
        w: candle_core::quantized::QTensor,
        n_in: usize,
        n_out: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            w: Weight::Quantized(candle_core::quantized::QMatMul::from_qtensor(w)?),
            n_in,
            n_out,
            bias: None,
        })
    }

    /// This projection with `bias` added after the matmul.
    pub(crate) fn with_bias(self, bias: Vec<f32>) -> Self {
        debug_assert_eq!(bias.len(), self.n_out);
        Self {
            bias: Some(bias),
            ..self
        }
    }

    /// Bytes its weight takes as held (its bias aside), for a weight stored as floats;
    /// `None` for a quantized one.
    pub fn stored_bytes(&self) -> Option<usize> {
        match &self.w {
            Weight::Stored(w) => Some(w.bytes()),
            _ => None,
        }
    }

    /// The bias, for callers that fold it into the pass after the matmul.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// `x`: `[rows, in]` -> `x W + b`, `[rows, out]`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = self.matmul(x);
        if let Some(b) = &self.bias {
            add_bias_rows(&mut y, b);
        }
        y
    }

    /// `residual + (x W + b)`, transformers' `residual + dense(x)`, in one pass after the
    /// matmul: this replaces the copy of the residual stream that would otherwise be kept
    /// for the hidden state.
    pub fn forward_residual(&self, x: &[f32], residual: &[f32]) -> Vec<f32> {
        let mut y = self.matmul(x);
        debug_assert_eq!(y.len(), residual.len());
        let n = self.n_out;
        let chunk = rows_per_task(n) * n;
        y.par_chunks_mut(chunk)
            .zip(residual.par_chunks(chunk))
            .for_each(|(y, res)| match &self.bias {
                Some(b) => y
                    .chunks_exact_mut(n)
                    .zip(res.chunks_exact(n))
                    .for_each(|(y, res)| residual_bias_row(y, res, b)),
                None => residual_chunk(y, res),
            });
        y
    }

    /// `x W` without the bias, `[rows, out]`.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.n_in.max(1);
        debug_assert_eq!(rows * self.n_in, x.len());
        let (n_in, n_out) = (self.n_in, self.n_out);
        match &self.w {
            Weight::Stored(w) => match w.as_f32() {
                Some(w) => self.matmul_f32(x, rows, w),
                None => with_scratch(w.len(), 0, |wide, _| {
                    w.widen_into(0..w.len(), wide);
                    self.matmul_f32(x, rows, wide)
                }),
            },
            Weight::Dequantized(q) => with_scratch(n_in * n_out, 0, |wide, _| {
                q.transposed_into(n_out, wide);
                self.matmul_f32(x, rows, wide)
            }),
            Weight::Int8(q) => with_scratch(q.len(), 0, |wide, _| {
                q.widen_into(wide);
                self.matmul_f32(x, rows, wide)
            }),
            Weight::Batched(q) => q.matmul(x, rows),
            Weight::Quantized(q) => self.forward_quantized(q, x, rows),
        }
    }

    /// `x W` for an f32 `W` `[in, out]`.
    fn matmul_f32(&self, x: &[f32], rows: usize, w: &[f32]) -> Vec<f32> {
        let len = rows * self.n_out;
        if len == 0 || self.n_in == 0 {
            return vec![0.0; len];
        }
        // The buffer is neither zeroed nor pre-filled with the bias: folding the bias into
        // the pass that follows (GELU, residual add) measured 3-8% faster per projection
        // than accumulating onto a bias-filled destination.
        let mut y: Vec<f32> = Vec::with_capacity(len);
        // SAFETY: y has room for rows x n_out, x is rows x n_in, w is n_in x n_out, all
        // row-major; rows, n_out and n_in are > 0, so matmul_into initializes all `len`
        // elements before `set_len`.
        unsafe {
            matmul_into(
                rows,
                self.n_out,
                self.n_in,
                y.as_mut_ptr(),
                self.n_out,
                Strided {
                    ptr: x.as_ptr(),
                    row: self.n_in,
                    col: 1,
                },
                Strided {
                    ptr: w.as_ptr(),
                    row: self.n_out,
                    col: 1,
                },
                parallelism(),
            );
            y.set_len(len);
        }
        y
    }
}

/// Rows per parallel task for a row-wise pass: about 16k floats, at least one row.
fn rows_per_task(width: usize) -> usize {
    ((1 << 14) / width.max(1)).max(1)
}

/// `f` on every row of `v` (rows of `width`), rows spread over rayon tasks.
fn par_rows(v: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync) {
    v.par_chunks_mut(rows_per_task(width) * width)
        .for_each(|rows| rows.chunks_exact_mut(width).for_each(&f));
}

/// `v[r] += bias` on every row `r` of `v`.
pub fn add_bias_rows(v: &mut [f32], bias: &[f32]) {
    par_rows(v, bias.len(), |r| add_chunk(r, bias));
}

/// `v[r] = gelu_tanh(v[r] + bias)` on every row `r` of `v`.
pub fn bias_gelu_tanh_rows(v: &mut [f32], bias: &[f32]) {
    par_rows(v, bias.len(), |r| bias_gelu_tanh_row(r, bias));
}

multiversion! {
/// `y = residual + (y + bias)` on one row: the grouping of `residual + dense(x)`.
fn residual_bias_row(y: &mut [f32], residual: &[f32], bias: &[f32]) {
    for ((y, &r), &b) in y.iter_mut().zip(residual).zip(bias) {
        *y = r + (*y + b);
    }
}
}

multiversion! {
/// `y = residual + y`.
fn residual_chunk(y: &mut [f32], residual: &[f32]) {
    for (y, &r) in y.iter_mut().zip(residual) {
        *y += r;
    }
}
}

impl Dense {
    fn forward_quantized(
        &self,
        q: &candle_core::quantized::QMatMul,
        x: &[f32],
        rows: usize,
    ) -> Vec<f32> {
        use candle_core::Module;
        let run = || -> candle_core::Result<Vec<f32>> {
            let t =
                candle_core::Tensor::from_slice(x, (rows, self.n_in), &candle_core::Device::Cpu)?;
            q.forward(&t)?.flatten_all()?.to_vec1()
        };
        // Shapes were checked when the weight was loaded; a failure here is a bug.
        run().expect("quantized matmul on shapes checked at load")
    }
}

/// Where one of q, k, v lives in a row-major buffer of `batch * seq` rows: head `h`
/// of row `r` is `data[r * row_stride + offset + h * head_dim ..][..head_dim]`.
#[derive(Clone, Copy)]
pub struct HeadView<'a> {
    /// The buffer.
    pub data: &'a [f32],
    /// Floats from one row to the next.
    pub row_stride: usize,
    /// Floats from a row's start to head 0.
    pub offset: usize,
}

/// Where each sequence of a packed batch is: its first row and its length.
#[derive(Clone, Copy, Debug)]
pub struct Spans<'a> {
    /// First row of each sequence.
    pub starts: &'a [usize],
    /// Rows (tokens) of each sequence.
    pub lengths: &'a [usize],
}

impl Spans<'_> {
    /// Rows of the packed buffers.
    pub fn rows(&self) -> usize {
        self.lengths.iter().sum()
    }
}

/// Shape of an attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (`n_head` without grouped-query attention); query head `h` reads
    /// key/value head `h / (n_head / n_kv_head)`, as `repeat_kv` does.
    pub n_kv_head: usize,
    /// Floats per head.
    pub head_dim: usize,
    /// Multiplies the scores before the softmax.
    pub scale: f32,
    /// Query `i` sees keys `j <= i` (decoders) or every real key (encoders).
    pub causal: bool,
    /// A causal sliding window (Mistral, Gemma's local layers): query `i` sees only keys
    /// `i - window < j <= i`, as transformers' `sliding_window_overlay` masks them.
    pub window: Option<usize>,
    /// Gemma 2's attention logit soft-capping: scores become `cap * tanh(scale * s / cap)`
    /// before the softmax.
    pub softcap: Option<f32>,
}

/// Query rows per block: the block's scores (`BLOCK x len`) stay in cache, and a causal
/// block only multiplies the keys up to its last row.
const BLOCK: usize = 64;

/// Softmax attention over a packed batch: `[rows, n_head * head_dim]`, heads
/// concatenated as transformers' `o_proj`/`c_proj` input expects. Each sequence of
/// `spans` attends only within its own rows.
pub fn attention(
    q: HeadView,
    k: HeadView,
    v: HeadView,
    s: AttentionShape,
    spans: Spans,
) -> Vec<f32> {
    attention_probed(q, k, v, s, spans, None).0
}

/// [`attention`], and with a `probe` what it asks for of every (sequence, head), in the
/// order `b * n_head + h` (empty without one). The probabilities the statistics read are
/// the ones the output is computed from, so asking changes no bit of the output.
pub fn attention_probed(
    q: HeadView,
    k: HeadView,
    v: HeadView,
    s: AttentionShape,
    spans: Spans,
    probe: Option<&AttentionRequest>,
) -> (Vec<f32>, Vec<HeadCapture>) {
    let d = s.head_dim;
    let width = s.n_head * d;
    let tasks: Vec<(usize, usize)> = (0..spans.lengths.len())
        .flat_map(|b| (0..s.n_head).map(move |h| (b, h)))
        .collect();
    // One task per (sequence, head); each runs its gemms on one core, and rayon spreads the
    // tasks, which balance well because every head of a sequence has the same work.
    let heads: Vec<(Vec<f32>, Option<HeadCapture>)> = tasks
        .par_iter()
        .map(|&(b, h)| {
            let len = spans.lengths[b];
            let probe = probe.map(|p| Probe::new(p, b, len));
            head_attention(q, k, v, s, (spans.starts[b], h, len), probe)
        })
        .collect();
    let mut out = vec![0f32; spans.rows() * width];
    let mut captured = Vec::new();
    for (&(b, h), (head, capture)) in tasks.iter().zip(heads) {
        for (r, src) in head.chunks_exact(d).enumerate() {
            let at = (spans.starts[b] + r) * width + h * d;
            out[at..at + d].copy_from_slice(src);
        }
        captured.extend(capture);
    }
    (out, captured)
}

/// What one (sequence, head) task records besides its output.
struct Probe {
    /// First query counted in the statistics.
    from: usize,
    /// Keep the `[len, len]` probabilities.
    keep: bool,
    /// Scratch: one row's visible logits.
    logits: Vec<f32>,
    capture: HeadCapture,
}

impl Probe {
    fn new(request: &AttentionRequest, b: usize, len: usize) -> Self {
        Self {
            from: request.from.get(b).copied().unwrap_or(0),
            keep: request.probabilities,
            logits: vec![0.0; len],
            capture: HeadCapture {
                stats: HeadStats::new(len),
                probabilities: if request.probabilities {
                    vec![0.0; len * len]
                } else {
                    Vec::new()
                },
            },
        }
    }

    /// Query `q`'s row, once its probabilities over keys `lo..lo + p.len()` are known.
    fn record(&mut self, q: usize, lo: usize, p: &[f32]) {
        if q >= self.from {
            self.capture
                .stats
                .add_row(q, lo, p, &self.logits[..p.len()]);
        }
        if self.keep {
            let len = self.capture.stats.received.len();
            self.capture.probabilities[q * len + lo..][..p.len()].copy_from_slice(p);
        }
    }
}

/// Head `h` of the sequence at rows `row0..row0 + len`: `[len, head_dim]`, query blocks of
/// [`BLOCK`] rows, each against the keys it can see.
fn head_attention(
    q: HeadView,
    k: HeadView,
    v: HeadView,
    s: AttentionShape,
    (row0, h, len): (usize, usize, usize),
    mut probe: Option<Probe>,
) -> (Vec<f32>, Option<HeadCapture>) {
    let d = s.head_dim;
    let kv = h / (s.n_head / s.n_kv_head.max(1)).max(1);
    let mut out = vec![0f32; len * d];
    let mut scores = vec![0f32; BLOCK.min(len.max(1)) * len];
    let qp = |r: usize| q.data[(row0 + r) * q.row_stride + q.offset + h * d..].as_ptr();
    let kp = k.data[row0 * k.row_stride + k.offset + kv * d..].as_ptr();
    let vp = v.data[row0 * v.row_stride + v.offset + kv * d..].as_ptr();
    let window = s.window.filter(|_| s.causal).unwrap_or(usize::MAX);
    for r0 in (0..len).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(len);
        let m = r1 - r0;
        // Keys lo..lo + keys: the block's first query sees back to r0 + 1 - window.
        let lo = (r0 + 1).saturating_sub(window);
        let keys = if s.causal { r1 } else { len } - lo;
        let (kp, vp) = (
            kp.wrapping_add(lo * k.row_stride),
            vp.wrapping_add(lo * v.row_stride),
        );
        // SAFETY: q rows r0..r1, k and v rows lo..lo + keys of this sequence, and
        // head columns h*d..(h+1)*d (kv*d.. for k, v) are inside their buffers, as
        // the bounds-checked slices above start there; scores holds m x keys.
        unsafe {
            // scores[i, j] = q[r0 + i] . k[j]: k read transposed through strides.
            matmul_into(
                m,
                keys,
                d,
                scores.as_mut_ptr(),
                keys,
                Strided::rows(qp(r0), q.row_stride),
                Strided::transposed(kp, k.row_stride),
                Parallelism::None,
            );
        }
        for i in 0..m {
            let row = &mut scores[i * keys..(i + 1) * keys];
            // Keys first..end of the block's range are visible to this query.
            let end = if s.causal { r0 + i + 1 } else { len } - lo;
            let first = (r0 + i + 1).saturating_sub(window).saturating_sub(lo);
            let logits = probe.as_mut().map(|p| &mut p.logits[..end - first]);
            softmax_visible(row, first, end, s, logits);
            if let Some(p) = probe.as_mut() {
                p.record(r0 + i, lo + first, &row[first..end]);
            }
        }
        // SAFETY: as above; out holds len x d, rows r0..r1 written.
        unsafe {
            // out[r0 + i] = sum_j p[i, j] v[j]
            matmul_into(
                m,
                d,
                keys,
                out[r0 * d..].as_mut_ptr(),
                d,
                Strided::rows(scores.as_ptr(), keys),
                Strided::rows(vp, v.row_stride),
                Parallelism::None,
            );
        }
    }
    (out, probe.map(|p| p.capture))
}

/// One query's scores -> probabilities over the keys `first..end` it sees (soft-capped
/// first where the model caps them); the keys before `first` get 0. `logits`, when given,
/// receives the visible logits exactly as the softmax exponentiates them (minus the max).
fn softmax_visible(
    row: &mut [f32],
    first: usize,
    end: usize,
    s: AttentionShape,
    logits: Option<&mut [f32]>,
) {
    row[..first].fill(0.0);
    let seen = &mut row[first..];
    match s.softcap {
        Some(cap) => {
            // transformers' order: scale, divide by the cap, tanh, times it.
            for x in seen[..end - first].iter_mut() {
                *x = (*x * s.scale / cap).tanh() * cap;
            }
            if let Some(z) = logits {
                z.copy_from_slice(&seen[..end - first]);
            }
            softmax_prefix(seen, end - first, 1.0);
        }
        None => {
            if let Some(z) = logits {
                for (z, &x) in z.iter_mut().zip(&seen[..end - first]) {
                    *z = x * s.scale;
                }
            }
            softmax_prefix(seen, end - first, s.scale)
        }
    }
}

/// `e^x` in f32 to about 2 ulp, written so loops over it auto-vectorize (libm's `expf` is an
/// opaque call per element: it was 9% of the forward pass, in the softmax). Cephes' `expf`
/// scheme: `x = n ln2 + r`, a degree-6 polynomial for `e^r`, `2^n` built in the exponent
/// bits. Below `-87.3` (where f32 goes subnormal) it returns 0, as a softmax wants.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so `n * LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.7);
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // `shifted`'s low mantissa bits hold `n` itself (its ulp is 1 at 1.5 * 2^23), so 2^n
    // comes from integer ops alone: a saturating `n as i32` costs a clamp per lane.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    if x < -87.3 {
        0.0
    } else {
        er * scale
    }
}

multiversion! {
/// In place: `row[..visible]` becomes `softmax(scale * row[..visible])`, the rest exactly 0
/// (what a softmax over `-inf` gives). At least one entry stays visible, so a row is never
/// all zeros.
fn softmax_prefix(row: &mut [f32], visible: usize, scale: f32) {
    let visible = visible.clamp(1, row.len());
    let (keep, masked) = row.split_at_mut(visible);
    // max(scale * x) = scale * max(x) for the positive scales attention uses; the lanes
    // let the loop vectorize (a single running max cannot be reordered).
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = keep.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            let v = x * scale;
            *l = if v > *l { v } else { *l };
        }
    }
    let max = lanes.iter().fold(tail, |m, &x| m.max(x));
    for x in keep.iter_mut() {
        *x = exp_fast(*x * scale - max);
    }
    let inv = 1.0 / sum_f32(keep);
    for x in keep.iter_mut() {
        *x *= inv;
    }
    masked.fill(0.0);
}
}

/// Sum in 16 independent lanes (vectorizes; a single running sum cannot be reordered),
/// then the lanes in order.
#[inline(always)]
fn sum_f32(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Sum of `f(x)` in f64 over 8 independent lanes (so it vectorizes), then the lanes.
#[inline(always)]
pub fn sum_f64(v: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| f(x as f64)).sum();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f(x as f64);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

multiversion! {
/// `log sum exp` of a row of f32 logits, into `out`: the largest entry in 16 lanes, each
/// `e^(z - max)` in f32 ([`exp_fast`], as torch's f32 softmax forms it), summed in f64
/// over 8 lanes, the log in f64. libm's `exp` in f64 per entry was a quarter of a
/// per-token loss over GPT-2's 50,257 logits.
fn log_sum_exp_into(z: &[f32], out: &mut f64) {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = z.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = if x > *l { x } else { *l };
        }
    }
    let max = lanes.iter().fold(tail, |m, &x| m.max(x));
    // sum_f64's lanes and order, the exponentials formed 256 at a time into a buffer first:
    // a loop that only exponentiates vectorizes, one that also widens and adds each did
    // not (5 ns an entry against half of one).
    let mut sums = [0f64; 8];
    let whole = z.len() - z.len() % 8;
    let tail: f64 = z[whole..].iter().map(|&x| exp_fast(x - max) as f64).sum();
    let mut e = [0f32; 256];
    for block in z[..whole].chunks(256) {
        let e = &mut e[..block.len()];
        for (e, &x) in e.iter_mut().zip(block) {
            *e = exp_fast(x - max);
        }
        for c in e.chunks_exact(8) {
            for (s, &e) in sums.iter_mut().zip(c) {
                *s += e as f64;
            }
        }
    }
    *out = max as f64 + (sums.iter().sum::<f64>() + tail).ln();
}
}

/// `log sum exp` of a row of f32 logits, summed in f64 (see `log_sum_exp_into`).
pub fn log_sum_exp(z: &[f32]) -> f64 {
    let mut out = 0.0;
    log_sum_exp_into(z, &mut out);
    out
}

multiversion! {
/// `a += b`.
fn add_chunk(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b)
}
}

multiversion! {
/// GELU, tanh form (`gelu_new`), in place.
pub fn gelu_tanh(v: &mut [f32]) {
    for x in v {
        *x = gelu_tanh_one(*x);
    }
}
}

multiversion! {
/// `v = gelu_tanh(v + bias)` on one row.
fn bias_gelu_tanh_row(v: &mut [f32], bias: &[f32]) {
    for (x, &b) in v.iter_mut().zip(bias) {
        *x = gelu_tanh_one(*x + b);
    }
}
}

#[inline(always)]
fn gelu_tanh_one(x: f32) -> f32 {
    let u = 0.797_884_6_f32 * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + tanh_fast(u))
}

multiversion! {
/// SwiGLU's `silu(gate) * up`, into `gate`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp_fast(-*g)) * u;
    }
}
}

/// tanh through one (vectorizable) `exp`: libm's `tanhf` (via `expm1f`) was a fifth of the
/// forward pass.
/// The absolute error stays at f32 rounding (~1e-7): near 0 the formula loses relative,
/// not absolute, precision, and GELU multiplies it by 0.5 x.
#[inline(always)]
pub fn tanh_fast(u: f32) -> f32 {
    let e = exp_fast(-2.0 * u.abs());
    ((1.0 - e) / (1.0 + e)).copysign(u)
}

multiversion! {
/// One row of LayerNorm, in place: two passes with f64 sums (see `gpt2::LayerNorm`).
pub fn layer_norm_row(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f64) {
    let dim = row.len() as f64;
    let mean = sum_f64(row, |v| v) / dim;
    let var = sum_f64(row, |v| (v - mean) * (v - mean)) / dim;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
        *v = ((*v as f64 - mean) * inv) as f32 * w + b;
    }
}
}

multiversion! {
/// One row of RMSNorm, in place, as transformers computes it:
/// `w * (x * rsqrt(mean(x^2) + eps))`, the mean accumulated in f64.
pub fn rms_norm_row(row: &mut [f32], weight: &[f32], eps: f64) {
    let ms = sum_f64(row, |v| v * v) / row.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    for (v, &g) in row.iter_mut().zip(weight) {
        *v = g * ((*v as f64 * inv) as f32);
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_set_gives_identical_bits() {
        use std::sync::atomic::Ordering;
        let x: Vec<f32> = rand(4099, 11).iter().map(|v| v * 30.0).collect();
        let w = rand(4099, 12);
        let b = rand(4099, 13);
        let run = || {
            let mut out: Vec<Vec<f32>> = Vec::new();
            let mut v = x.clone();
            gelu_tanh(&mut v);
            out.push(v);
            let mut v = x.clone();
            silu_mul(&mut v, &w);
            out.push(v);
            let mut v = x.clone();
            softmax_prefix(&mut v, 3001, 0.37);
            out.push(v);
            let mut v = x.clone();
            layer_norm_row(&mut v, &w, &b, 1e-5);
            out.push(v);
            let mut v = x.clone();
            rms_norm_row(&mut v, &w, 1e-6);
            out.push(v);
            let mut v = x.clone();
            add_chunk(&mut v, &w);
            out.push(v);
            let mut v = x.clone();
            residual_bias_row(&mut v, &w, &b);
            out.push(v);
            let mut v = x.clone();
            residual_chunk(&mut v, &w);
            out.push(v);
            let mut v = x.clone();
            bias_gelu_tanh_row(&mut v, &b);
            out.push(v);
            out.push(x.iter().map(|&v| exp_fast(v)).collect());
            out
        };
        let widest = simd_level();
        let mut seen = Vec::new();
        for cap in 0..=widest {
            SIMD_CAP.store(cap, Ordering::Relaxed);
            seen.push(run());
        }
        SIMD_CAP.store(2, Ordering::Relaxed);
        for (level, got) in seen.iter().enumerate() {
            for (k, (g, want)) in got.iter().zip(&seen[0]).enumerate() {
                let same = g.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "kernel {k} at level {level} differs from the baseline"
                );
            }
        }
    }

    /// The textbook formulas, in f64, one element at a time.
    fn naive_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttentionShape,
        spans: Spans,
    ) -> Vec<f64> {
        let (d, w) = (s.head_dim, s.n_head * s.head_dim);
        let kvw = s.n_kv_head * d;
        let mut out = vec![0f64; spans.rows() * w];
        for (&row0, &len) in spans.starts.iter().zip(spans.lengths) {
            for h in 0..s.n_head {
                let kv = h / (s.n_head / s.n_kv_head);
                for i in 0..len {
                    let keys = if s.causal { i + 1 } else { len };
                    // The window masks keys j <= i - window (their weight is exactly 0).
                    let first = s
                        .window
                        .filter(|_| s.causal)
                        .map_or(0, |w| (i + 1).saturating_sub(w));
                    let sc: Vec<f64> = (0..keys)
                        .map(|j| {
                            if j < first {
                                return f64::NEG_INFINITY;
                            }
                            let dot = (0..d)
                                .map(|x| {
                                    q[(row0 + i) * w + h * d + x] as f64
                                        * k[(row0 + j) * kvw + kv * d + x] as f64
                                })
                                .sum::<f64>()
                                * s.scale as f64;
                            match s.softcap {
                                Some(cap) => (dot / cap as f64).tanh() * cap as f64,
                                None => dot,
                            }
                        })
                        .collect();
                    let max = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|x| (x - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for x in 0..d {
                        out[(row0 + i) * w + h * d + x] = (0..keys)
                            .map(|j| e[j] / z * v[(row0 + j) * kvw + kv * d + x] as f64)
                            .sum();
                    }
                }
            }
        }
        out
    }

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut st = seed;
        (0..n)
            .map(|_| {
                st = st
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((st >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn attention_matches_the_formula_causal_windowed_gqa_packed_and_bidirectional() {
        // 150 rows cross two block boundaries; a second sequence of 97 packed after it.
        // Windows of 5 and 70 keys: shorter than a block, and reaching into the one before.
        // A soft cap of 0.2 bends most scores (|scale * s| reaches about 0.9).
        for (causal, n_head, n_kv, window, softcap) in [
            (true, 4, 4, None, None),
            (true, 6, 2, None, None),
            (true, 6, 2, Some(5), None),
            (true, 4, 4, Some(70), None),
            (true, 4, 2, Some(9), Some(0.2)),
            (false, 4, 1, None, None),
            (false, 3, 3, None, None),
        ] {
            let s = AttentionShape {
                n_head,
                n_kv_head: n_kv,
                head_dim: 8,
                scale: 0.35,
                causal,
                window,
                softcap,
            };
            let spans = Spans {
                starts: &[0, 150],
                lengths: &[150, 97],
            };
            let rows = spans.rows();
            let q = rand(rows * n_head * 8, 1);
            let k = rand(rows * n_kv * 8, 2);
            let v = rand(rows * n_kv * 8, 3);
            fn view(data: &[f32], heads: usize) -> HeadView<'_> {
                HeadView {
                    data,
                    row_stride: heads * 8,
                    offset: 0,
                }
            }
            let got = attention(view(&q, n_head), view(&k, n_kv), view(&v, n_kv), s, spans);
            let want = naive_attention(&q, &k, &v, s, spans);
            assert_eq!(got.len(), rows * n_head * 8);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let r = i / (n_head * 8);
                assert!(
                    (*g as f64 - w).abs() < 1e-5,
                    "causal {causal} window {window:?} heads {n_head}/{n_kv} row {r}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn dense_matches_the_formula_in_every_dtype_with_and_without_bias() {
        let (rows, n_in, n_out) = (37, 19, 23);
        let x = rand(rows * n_in, 4);
        let w: Vec<f32> = rand(n_in * n_out, 5)
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        let bias = rand(n_out, 6);
        let want = |b: bool| -> Vec<f64> {
            (0..rows * n_out)
                .map(|i| {
                    let (r, j) = (i / n_out, i % n_out);
                    (0..n_in)
                        .map(|kk| x[r * n_in + kk] as f64 * w[kk * n_out + j] as f64)
                        .sum::<f64>()
                        + if b { bias[j] as f64 } else { 0.0 }
                })
                .collect()
        };
        // The weight as f32, as bf16 (its values are bf16-exact), and as an `[out, in]`
        // bf16 tensor transposed on load: the same products.
        use super::super::storage::{Buf, Floats};
        let f32w = || Floats::F32(Buf::Owned(w.clone()));
        let half = || {
            Floats::Bf16(Buf::Owned(
                w.iter().map(|&v| half::bf16::from_f32(v)).collect(),
            ))
        };
        let out_major = || half().transposed(n_in, n_out).transposed(n_out, n_in);
        for (dense, b) in [
            (
                Dense::in_major(f32w(), n_in, n_out, Some(bias.clone())),
                true,
            ),
            (
                Dense::in_major(half(), n_in, n_out, Some(bias.clone())),
                true,
            ),
            (Dense::in_major(f32w(), n_in, n_out, None), false),
            (Dense::in_major(out_major(), n_in, n_out, None), false),
        ] {
            let got = dense.forward(&x);
            for (g, w) in got.iter().zip(want(b)) {
                assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
            }
            // The matmul alone leaves the bias out.
            for (g, w) in dense.matmul(&x).iter().zip(want(false)) {
                assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
            }
            // residual + (x W + b), in the one pass after the matmul.
            let residual = rand(rows * n_out, 7);
            let got = dense.forward_residual(&x, &residual);
            for ((g, w), r) in got.iter().zip(want(b)).zip(&residual) {
                assert!(
                    (*g as f64 - (w + *r as f64)).abs() < 1e-5,
                    "{g} vs {w} + {r}"
                );
            }
        }
        // No rows, and no inputs: zeros of the right shape, never uninitialized memory.
        let empty = Dense::in_major(Floats::F32(Buf::Owned(Vec::new())), 0, 3, None);
        assert_eq!(empty.matmul(&[]), Vec::<f32>::new());
        assert_eq!(
            Dense::in_major(f32w(), n_in, n_out, None).matmul(&[]).len(),
            0
        );
    }

    #[test]
    fn exp_fast_is_within_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max((exp_fast(x) as f64 - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_fast(0.0), 1.0);
        assert_eq!(exp_fast(-100.0), 0.0);
        assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn transpose_is_exact_on_ragged_shapes() {
        use super::super::storage::transpose;
        for (rows, cols) in [(1, 1), (3, 70), (65, 33), (100, 1)] {
            let a: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&a, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], a[r * cols + c]);
                }
            }
        }
    }

    #[test]
    fn softmax_prefix_masks_exactly() {
        let mut row = vec![1.0, 2.0, 3.0, 100.0];
        softmax_prefix(&mut row, 3, 1.0);
        assert_eq!(row[3], 0.0);
        let z: f32 = row.iter().sum();
        assert!((z - 1.0).abs() < 1e-6);
        assert!(row[2] > row[1] && row[1] > row[0]);
    }
}
