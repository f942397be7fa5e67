//! What a family defines (a [`Stack`] of blocks) and what the rest of strata sees of a
//! model ([`HiddenStateModel`], [`ModelInfo`], [`Readout`]): the forward loop every
//! family shares, packing the batch in and cutting it out.

use super::capture::{Capture, HeadCapture, Site, SLOTS};
use super::error::ModelError;
use super::kernels::{self, AttentionShape, Dense, HeadView};
use super::moe::Routing;
use super::weights;

/// Label of the extra state: the last block's output before the final norm (`ln_f` in
/// GPT-2). `transformers` does not return it; analyses may ask for it by this label.
pub const PRE_FINAL_NORM: &str = "pre_final_norm";

/// What an architecture tells the rest of strata about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Architecture name as in `config.json`'s `model_type` (`gpt2`, ...).
    pub architecture: String,
    /// Number of transformer blocks `L`; there are `L + 1` hidden states.
    pub n_layers: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Longest text the model accepts, in tokens.
    pub max_positions: usize,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// For a GGUF file: the predominant tensor type of its weights (`Q4_1`), and whether
    /// the matmuls run quantized. `None` for unquantized checkpoints.
    pub quantization: Option<String>,
    /// For a GGUF file: every tensor type it holds (`F32`, `Q4_K`, `Q6_K`), sorted.
    pub tensor_types: Option<Vec<String>>,
    /// `L + 1` labels, as the notebook names them: `emb`, `h.0`, ..., `h.{L-1}`.
    pub labels: Vec<String>,
    /// Whether the model turns hidden states into next-token logits (decoders: a final
    /// norm and an unembedding); encoders such as BERT have no language-model head.
    pub lm_head: bool,
    /// Query heads of every attention layer.
    pub n_heads: usize,
    /// Width of one head's values: the `attn_z` site is `n_heads × head_dim` wide (0
    /// where unknown).
    pub head_dim: usize,
    /// Width of the MLP's inner activation (the `mlp_act` site); `None` for a model
    /// without one.
    pub intermediate_size: Option<usize>,
    /// Whether attention looks only back (decoders) or both ways (encoders).
    pub causal: bool,
    /// Whether its blocks read the residual stream through LayerNorms, which centre each
    /// token (GPT-2, GPT-NeoX, BERT), rather than RMSNorms.
    pub layer_norm: bool,
    /// A mixture of experts' routing shape; `None` for a dense model.
    pub moe: Option<MoeInfo>,
}

/// What the rest of strata knows of a mixture of experts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoeInfo {
    /// Experts per sparse block.
    pub n_experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Which blocks are sparse (the others have a dense MLP and no router).
    pub sparse_layers: Vec<bool>,
}

impl MoeInfo {
    /// The sparse blocks, in order.
    pub fn sparse(&self) -> Vec<usize> {
        (0..self.sparse_layers.len())
            .filter(|&l| self.sparse_layers[l])
            .collect()
    }
}

impl ModelInfo {
    /// A decoder with the notebook's labels: `emb`, then `h.{i}` for the output of block `i`
    /// (the last one with the final norm applied, as `transformers` returns it).
    pub fn decoder(
        architecture: &str,
        n_layers: usize,
        hidden_size: usize,
        max_positions: usize,
        vocab_size: usize,
    ) -> Self {
        let labels = std::iter::once("emb".to_string())
            .chain((0..n_layers).map(|i| format!("h.{i}")))
            .collect();
        Self {
            architecture: architecture.to_string(),
            n_layers,
            hidden_size,
            max_positions,
            vocab_size,
            quantization: None,
            tensor_types: None,
            labels,
            lm_head: true,
            n_heads: 0,
            head_dim: 0,
            intermediate_size: None,
            causal: true,
            layer_norm: false,
            moe: None,
        }
    }

    /// The same, with its attention heads and MLP width.
    pub fn with_block(self, n_heads: usize, head_dim: usize, intermediate_size: usize) -> Self {
        Self {
            n_heads,
            head_dim,
            intermediate_size: Some(intermediate_size),
            ..self
        }
    }

    /// The sites this model has.
    pub fn sites(&self) -> Vec<Site> {
        Site::ALL
            .into_iter()
            .filter(|&s| self.width(s).is_some())
            .collect()
    }

    /// Why the model cannot give `site`, naming the sites it has; `None` when it can.
    pub fn lacks(&self, site: Site) -> Option<String> {
        if let Some(moe) = self.moe.as_ref().filter(|_| site == Site::RouterLogits) {
            let dense: Vec<String> = (0..self.n_layers)
                .filter(|&l| !moe.sparse_layers[l])
                .map(|l| l.to_string())
                .collect();
            if !dense.is_empty() {
                return Some(format!(
                    "{} has no router in its dense blocks ({}); the `router` kind reads the sparse ones, and `strata extract --site router_logits` writes them",
                    self.architecture,
                    dense.join(", ")
                ));
            }
        }
        self.width(site).is_none().then(|| {
            let has: Vec<&str> = self.sites().iter().map(|s| s.name()).collect();
            format!(
                "{} has no such site; it has {}",
                self.architecture,
                has.join(", ")
            )
        })
    }

    /// Width of the vectors at `site`; `None` where the model lacks it.
    pub fn width(&self, site: Site) -> Option<usize> {
        match site {
            Site::MlpAct => self.intermediate_size,
            Site::RouterLogits => self.moe.as_ref().map(|m| m.n_experts),
            Site::AttnZ => {
                (self.n_heads * self.head_dim > 0).then_some(self.n_heads * self.head_dim)
            }
            _ => Some(self.hidden_size),
        }
    }

    /// Labels of the vectors at `site`: the hidden states' (`emb`, `h.0`, ...), or one per
    /// block (`mlp_out.0`, ...).
    pub fn site_labels(&self, site: Site) -> Vec<String> {
        match (site, &self.moe) {
            (Site::Hidden, _) => self.labels.clone(),
            (Site::RouterLogits, Some(moe)) => {
                moe.sparse().into_iter().map(|l| site.label(l)).collect()
            }
            (s, _) => (0..self.n_layers).map(|l| s.label(l)).collect(),
        }
    }
}

/// What turns a hidden state into next-token logits, as the model's own head does: the
/// final norm, then the unembedding (GPT-2's tied `wte`; Llama's `lm_head` or tied
/// `embed_tokens`; GGUF's `output.weight` or `token_embd`, dequantized).
pub trait Readout: Sync {
    /// Rows of the unembedding.
    fn vocab(&self) -> usize;
    /// `out = W_U final_norm(rows)^T` for `[n, d]` rows: `[n, vocab]` logits, in f32 as
    /// transformers computes them.
    fn logits(&self, rows: &[f32], out: &mut [f32]);
}

/// Every hidden state of one text, on its own, and what else the forward captured.
#[derive(Debug, Clone, Default)]
pub struct TextStates {
    /// `L + 1` row-major `[n_tokens, hidden_size]` buffers, exactly `outputs.hidden_states`.
    pub states: Vec<Vec<f32>>,
    /// `[n_tokens, hidden_size]`: the last block's output before the final norm.
    pub pre_final_norm: Vec<f32>,
    /// Per sub-block site (`attn_out`, `mlp_out`, `mlp_act`, `router_logits`): one
    /// `[n_tokens, width]` buffer per block when captured, else empty.
    pub sites: [Vec<Vec<f32>>; SLOTS],
    /// Per block, what its router did, when captured (`None` for a dense block).
    pub routing: Vec<Option<Routing>>,
    /// Per block, per head: the attention statistics (and probabilities) when captured.
    pub attention: Vec<Vec<HeadCapture>>,
}

impl TextStates {
    /// Block `l`'s vectors at `site` (`None` when not captured).
    pub fn site(&self, site: Site, l: usize) -> Option<&[f32]> {
        match site.slot() {
            None => self.states.get(l).map(Vec::as_slice),
            Some(i) => self.sites[i].get(l).map(Vec::as_slice),
        }
    }
}

/// What one forward's blocks captured, packed, before it is cut per sequence.
#[derive(Default)]
pub(crate) struct Captured {
    /// Per sub-block site, one packed `[rows, width]` buffer per block.
    sites: [Vec<Vec<f32>>; SLOTS],
    /// Per block, the router's choices for every row (when captured).
    routing: Vec<Option<Routing>>,
    /// Per block, `b * n_head` head captures, sequence-major.
    heads: Vec<Vec<HeadCapture>>,
}

/// Packs `batch` into one run of rows, sequence after sequence, with no padding (`None`
/// when it holds no token), refusing an id the embedding has no row for: a tokenizer that
/// does not belong to the model. Returns the shape and the ids.
pub(crate) fn pack_batch(
    batch: &[&[u32]],
    vocab: usize,
) -> Result<Option<(Batch, Vec<usize>)>, ModelError> {
    let lengths: Vec<usize> = batch.iter().map(|ids| ids.len()).collect();
    let t = lengths.iter().copied().max().unwrap_or(0);
    if t == 0 {
        return Ok(None);
    }
    let mut ids = Vec::with_capacity(lengths.iter().sum());
    for &id in batch.iter().flat_map(|seq| seq.iter()) {
        if id as usize >= vocab {
            return Err(ModelError::TokenOutOfVocab { id, vocab });
        }
        ids.push(id as usize);
    }
    let starts = lengths
        .iter()
        .scan(0, |at, &n| {
            let start = *at;
            *at += n;
            Some(start)
        })
        .collect();
    let positions = lengths.iter().flat_map(|&n| 0..n).collect();
    let shape = Batch {
        b: batch.len(),
        t,
        lengths,
        starts,
        positions,
    };
    Ok(Some((shape, ids)))
}

/// Splits packed `[rows, c]` states back into one [`TextStates`] per sequence. A single
/// sequence (one text per forward) keeps its buffers instead of copying them.
pub(crate) fn cut_batch(
    states: Vec<Vec<f32>>,
    pre_final: Vec<f32>,
    captured: Captured,
    batch: &Batch,
) -> Vec<TextStates> {
    let b = batch.b;
    let heads = captured.heads;
    if b == 1 {
        return vec![TextStates {
            states,
            pre_final_norm: pre_final,
            sites: captured.sites,
            routing: captured.routing,
            attention: heads,
        }];
    }
    // [block][b * n_head] -> [text][block][n_head], moved rather than copied (with
    // probabilities, a text's heads hold its whole attention pattern).
    let mut per_text: Vec<Vec<Vec<HeadCapture>>> = (0..b).map(|_| Vec::new()).collect();
    for layer in heads {
        let n = layer.len() / b.max(1);
        let mut layer = layer.into_iter();
        for text in &mut per_text {
            text.push(layer.by_ref().take(n).collect());
        }
    }
    let rows = batch.rows();
    let cut = |bi: usize, s: &[f32]| {
        let c = s.len() / rows.max(1);
        let (start, len) = (batch.starts[bi], batch.lengths[bi]);
        s[start * c..(start + len) * c].to_vec()
    };
    // Each packed buffer is dropped as soon as it is cut, so the forward's states are held
    // once plus one layer, not twice.
    let split = |packed: Vec<Vec<f32>>| {
        let mut texts: Vec<Vec<Vec<f32>>> =
            (0..b).map(|_| Vec::with_capacity(packed.len())).collect();
        for layer in packed {
            for (bi, text) in texts.iter_mut().enumerate() {
                text.push(cut(bi, &layer));
            }
        }
        texts
    };
    let mut states = split(states).into_iter();
    let mut sites = captured.sites.map(|site| split(site).into_iter());
    per_text
        .into_iter()
        .enumerate()
        .map(|(bi, attention)| TextStates {
            states: states.next().unwrap_or_default(),
            pre_final_norm: cut(bi, &pre_final),
            sites: sites.each_mut().map(|site| site.next().unwrap_or_default()),
            routing: captured
                .routing
                .iter()
                .map(|r| {
                    let (start, len) = (batch.starts[bi], batch.lengths[bi]);
                    r.as_ref().map(|r| r.rows(start..start + len))
                })
                .collect(),
            attention,
        })
        .collect()
}

/// What a block records of itself for one forward: the sites and the attention the
/// [`Capture`] asks for. Recording changes no bit of the block's output.
pub(crate) struct Tap<'a> {
    capture: &'a Capture,
    /// Vectors to put in place of one site's (a resumed forward).
    patch: Option<&'a Patch<'a>>,
    /// The block.
    layer: usize,
    sites: [Option<Vec<f32>>; SLOTS],
    heads: Vec<HeadCapture>,
    routing: Option<Routing>,
}

impl<'a> Tap<'a> {
    pub(crate) fn new(capture: &'a Capture, layer: usize) -> Self {
        Self {
            capture,
            patch: None,
            layer,
            sites: Default::default(),
            heads: Vec::new(),
            routing: None,
        }
    }

    /// The same, putting `patch`'s rows in place of its site's.
    fn patched(capture: &'a Capture, layer: usize, patch: &'a Patch<'a>) -> Self {
        Self {
            patch: Some(patch),
            ..Self::new(capture, layer)
        }
    }

    /// Whether this block's `site` is captured.
    pub(crate) fn wants(&self, site: Site) -> bool {
        self.capture.wants(site, self.layer)
    }

    /// The patch for this block's `site`, if any.
    fn patch_at(&self, site: Site) -> Option<&'a Patch<'a>> {
        self.patch
            .filter(|p| p.site == site && p.layer == self.layer)
    }

    /// Keeps `v` as `site` when asked for, after putting the patch's rows in place of its
    /// own when the forward patches this site: for the vectors a block goes on with.
    pub(crate) fn pass(&mut self, site: Site, v: &mut [f32]) {
        if let Some(p) = self.patch_at(site) {
            p.apply(v);
        }
        self.keep(site, v);
    }

    /// Keeps a copy of `v` as `site`, when asked for.
    pub(crate) fn keep(&mut self, site: Site, v: &[f32]) {
        if let Some(i) = site.slot().filter(|_| self.wants(site)) {
            self.sites[i] = Some(v.to_vec());
        }
    }

    /// `residual + dense(x)`, bit for bit [`Dense::forward_residual`], keeping `dense(x)`
    /// as `site` when asked for (IEEE addition commutes, so adding the residual after
    /// the bias gives the fused pass's bits).
    pub(crate) fn residual(
        &mut self,
        site: Site,
        dense: &Dense,
        x: &[f32],
        residual: &[f32],
    ) -> Vec<f32> {
        if !self.wants(site) && self.patch_at(site).is_none() {
            return dense.forward_residual(x, residual);
        }
        let mut y = dense.forward(x);
        self.pass(site, &mut y);
        add(residual, &y)
    }

    /// [`Tap::residual`] with the branch multiplied by `s` before it is added (Granite);
    /// the site keeps the branch as the sublayer returns it, before the multiplier.
    pub(crate) fn scaled_residual(
        &mut self,
        site: Site,
        dense: &Dense,
        x: &[f32],
        residual: &[f32],
        s: f32,
    ) -> Vec<f32> {
        if s == 1.0 {
            return self.residual(site, dense, x, residual);
        }
        let mut y = dense.forward(x);
        self.pass(site, &mut y);
        add_scaled(residual, &y, s)
    }

    /// Keeps what a sparse block's router did, when the capture asks for it (the routing
    /// itself, or the `router_logits` site).
    pub(crate) fn route(&mut self, routing: Routing) {
        self.keep(Site::RouterLogits, &routing.logits);
        if self.capture.routing {
            self.routing = Some(routing);
        }
    }

    /// Softmax attention ([`kernels::attention`]), recording what the capture asks of it.
    pub(crate) fn attention(
        &mut self,
        (q, k, v): (HeadView, HeadView, HeadView),
        s: AttentionShape,
        spans: kernels::Spans,
    ) -> Vec<f32> {
        let (mut out, heads) =
            kernels::attention_probed(q, k, v, s, spans, self.capture.attention.as_ref());
        self.heads = heads;
        // Every family multiplies exactly this buffer by its output projection.
        self.pass(Site::AttnZ, &mut out);
        out
    }
}

/// Vectors to put in place of one site's in a resumed forward ([`Stack::resume`]), one
/// set per copy of the text the forward runs: an SAE's reconstruction spliced back into
/// the model, and zeros for the ablation it is measured against, in one batch. The rows
/// before `from_row` (a text's skipped token 0, a window's context) keep their own vectors.
#[derive(Debug, Clone, Copy)]
pub struct Patch<'a> {
    /// The site patched.
    pub site: Site,
    /// Its block (for hidden states: the block it is the input of).
    pub layer: usize,
    /// Rows of the text (every row, the skipped ones too).
    pub rows: usize,
    /// The first row patched.
    pub from_row: usize,
    /// Per copy, `[rows - from_row, width]` vectors; `None` puts zeros there.
    pub with: &'a [Option<&'a [f32]>],
}

impl Patch<'_> {
    /// Puts each copy's rows into its part of `v`, the site's packed `[copies · rows,
    /// width]` vectors.
    pub fn apply(&self, v: &mut [f32]) {
        let copy = v.len() / self.with.len().max(1);
        let width = copy / self.rows.max(1);
        for (part, with) in v.chunks_exact_mut(copy.max(1)).zip(self.with) {
            let tail = &mut part[(self.from_row * width).min(copy)..];
            match with {
                Some(w) if w.len() == tail.len() => tail.copy_from_slice(w),
                _ => tail.fill(0.0),
            }
        }
    }
}

/// `a + b`, elementwise, in a new buffer.
pub(crate) fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(a, b)| a + b).collect()
}

/// `a + b * s` (Granite's residual multiplier), in f32 as torch forms it; `a + b` for 1.
pub(crate) fn add_scaled(a: &[f32], b: &[f32], s: f32) -> Vec<f32> {
    if s == 1.0 {
        return add(a, b);
    }
    a.iter().zip(b).map(|(a, b)| a + b * s).collect()
}

/// A batch as every block sees it: its sequences packed one after another into
/// `[rows, width]` buffers, with no padding. Every op but attention works row by row, and
/// a row's result does not depend on its neighbours, so a packed batch gives each text the
/// bits it gets alone; packing rather than padding to the longest text saves the rows a
/// padded batch of short texts of mixed lengths wasted (a third of them for texts of 7 to
/// 17 tokens).
pub(crate) struct Batch {
    /// Sequences.
    pub b: usize,
    /// The longest sequence.
    pub t: usize,
    /// Tokens of each sequence.
    pub lengths: Vec<usize>,
    /// First row of each sequence.
    pub starts: Vec<usize>,
    /// Every row's position in its sequence.
    pub positions: Vec<usize>,
}

impl Batch {
    /// Rows of the packed buffers.
    pub fn rows(&self) -> usize {
        self.positions.len()
    }

    /// Where each sequence's rows are, for the attention kernel.
    pub fn spans(&self) -> kernels::Spans<'_> {
        kernels::Spans {
            starts: &self.starts,
            lengths: &self.lengths,
        }
    }
}

/// A stack of blocks: what a family defines. [`Stack::forward`] does the rest, the same for
/// every family: packing the batch, one hidden state per block input, the final norm, and
/// cutting the batch into its texts again.
pub(crate) trait Stack {
    /// What every block of one forward shares (rotary tables).
    type Shared;
    /// Shape and labels: the vocabulary, the width and the number of blocks.
    fn info(&self) -> &ModelInfo;
    /// Hidden state 0 (`[rows, width]`) of the packed `ids`, and what the blocks share.
    fn embed(&self, ids: &[usize], batch: &Batch) -> (Vec<f32>, Self::Shared);
    /// Block `i`'s output, in a new buffer (`x` is kept as a hidden state).
    fn block(
        &self,
        i: usize,
        x: &[f32],
        batch: &Batch,
        shared: &Self::Shared,
        tap: &mut Tap,
    ) -> Result<Vec<f32>, ModelError>;
    /// The last hidden state from the last block's output (the final norm).
    fn last(&self, x: &[f32]) -> Vec<f32>;
    /// The final norm and unembedding, when the model has them.
    fn readout(&self) -> Option<&dyn Readout> {
        None
    }

    /// Runs one packed forward: one [`TextStates`] per sequence of `batch`, with what
    /// `capture` asks for.
    fn forward(&self, batch: &[&[u32]], capture: &Capture) -> Result<Vec<TextStates>, ModelError> {
        let info = self.info();
        let Some((shape, ids)) = pack_batch(batch, info.vocab_size)? else {
            return Ok(Vec::new());
        };
        let (mut x, shared) = self.embed(&ids, &shape);
        let mut states = Vec::with_capacity(info.n_layers + 1);
        let mut captured = Captured::default();
        for i in 0..info.n_layers {
            let mut tap = Tap::new(capture, i);
            let next = self.block(i, &x, &shape, &shared, &mut tap)?;
            for (all, one) in captured.sites.iter_mut().zip(tap.sites) {
                all.push(one.unwrap_or_default());
            }
            if capture.attention.is_some() {
                captured.heads.push(tap.heads);
            }
            captured.routing.push(tap.routing);
            states.push(std::mem::replace(&mut x, next));
        }
        states.push(self.last(&x));
        Ok(cut_batch(states, x, captured, &shape))
    }

    /// Runs the blocks from `patch.layer` on over one copy of a text per set of
    /// `patch.with`, packed in one batch, from its hidden state `x` there (`[rows,
    /// width]`), with the patch in place: each copy's last block output before the final
    /// norm. A hidden-state patch is put into `x` before the first block.
    fn resume(&self, ids: &[u32], x: &[f32], patch: &Patch) -> Result<Vec<Vec<f32>>, ModelError> {
        let info = self.info();
        let copies = vec![ids; patch.with.len()];
        let Some((shape, packed)) = pack_batch(&copies, info.vocab_size)? else {
            return Ok(vec![Vec::new(); patch.with.len()]);
        };
        let mut x = x.repeat(copies.len());
        if patch.site == Site::Hidden {
            patch.apply(&mut x);
        }
        // The embedding is recomputed only for what the blocks share (rotary tables).
        let (_, shared) = self.embed(&packed, &shape);
        let none = Capture::none();
        for i in patch.layer..info.n_layers {
            let mut tap = Tap::patched(&none, i, patch);
            x = self.block(i, &x, &shape, &shared, &mut tap)?;
        }
        let part = x.len() / copies.len();
        Ok(x.chunks_exact(part.max(1)).map(<[f32]>::to_vec).collect())
    }
}

/// Every family is a [`Stack`]; the rest of strata sees it as a [`HiddenStateModel`].
impl<S: Stack + Sync> HiddenStateModel for S {
    fn info(&self) -> &ModelInfo {
        Stack::info(self)
    }

    fn forward_with(
        &self,
        batch: &[&[u32]],
        capture: &Capture,
    ) -> Result<Vec<TextStates>, ModelError> {
        Stack::forward(self, batch, capture)
    }

    fn readout(&self) -> Option<&dyn Readout> {
        Stack::readout(self)
    }

    fn resume(&self, ids: &[u32], x: &[f32], patch: &Patch) -> Result<Vec<Vec<f32>>, ModelError> {
        Stack::resume(self, ids, x, patch)
    }
}

/// Each row's position embedding (its row of `positions`), added to `x` (`[rows, width]`).
pub(crate) fn add_positions(
    x: &mut [f32],
    positions: &weights::RowMatrix,
    batch: &Batch,
    width: usize,
) {
    let pos = positions.gather(&(0..batch.t).collect::<Vec<_>>());
    for (row, &p) in x.chunks_exact_mut(width).zip(&batch.positions) {
        let p = &pos[p * width..(p + 1) * width];
        row.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
}

/// A model that returns all hidden states for a batch of token-id sequences.
pub trait HiddenStateModel: Sync {
    /// Shape and labels.
    fn info(&self) -> &ModelInfo;
    /// Runs one forward over `batch`; one [`TextStates`] per input, in order.
    /// Batched results equal one-at-a-time results.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<TextStates>, ModelError> {
        self.forward_with(batch, &Capture::none())
    }
    /// [`HiddenStateModel::forward`], also capturing what `capture` asks for (sites,
    /// attention). Capturing changes no hidden state.
    fn forward_with(
        &self,
        batch: &[&[u32]],
        capture: &Capture,
    ) -> Result<Vec<TextStates>, ModelError>;
    /// The final norm and unembedding, when the model has them.
    fn readout(&self) -> Option<&dyn Readout> {
        None
    }
    /// One text's forward from block `patch.layer` on, from its hidden state `x` there
    /// (`[rows, width]`, every row), once per set of vectors `patch.with` puts in place of
    /// its site's, the copies packed in one batch: each copy's last block output before
    /// the final norm, `[rows, width]`. A copy whose patch changes nothing gives, to the
    /// bit, the forward's own.
    fn resume(&self, ids: &[u32], x: &[f32], patch: &Patch) -> Result<Vec<Vec<f32>>, ModelError>;
}
