//! SAEBench's splice metrics: the rest of the network run with the SAE's reconstruction
//! `x̂` in place of `x` at its site, and again with zeros there; the next-token loss of
//! each against the clean forward's, and their KL divergence from it. Per row the figures
//! are f64, summed on the fixed-point grid, so merges are exact.

use serde::{Deserialize, Serialize};

use super::encode::row_mean;
use crate::analyses::kind::{Lens, Splice};
use crate::analyses::next_token as tokens;
use crate::model::Site;
use crate::stats::gram::Fixed;

/// Sums kept per row, in this order on the fixed-point grid.
const SUMS: [&str; 5] = ["ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero"];

/// The splice metrics counted so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpliceState {
    /// The SAE's site.
    pub site: Site,
    /// Rows with a next token (where the loss is counted).
    pub predicted: u64,
    /// Rows (where the KL is counted).
    pub rows: u64,
    /// [`SUMS`]: the losses at rows with a next token, the KLs at every row.
    pub sums: Fixed,
    /// Why a resumed forward failed, if one did: the result is then refused.
    pub error: Option<String>,
}

impl SpliceState {
    /// Nothing counted yet, at `site`.
    pub fn new(site: Site) -> Self {
        Self {
            site,
            predicted: 0,
            rows: 0,
            sums: Fixed::zeros(SUMS.len()),
            error: None,
        }
    }

    /// Folds in the state of the texts after this one's.
    pub fn merge(&mut self, r: SpliceState) {
        self.predicted += r.predicted;
        self.rows += r.rows;
        self.sums.merge(&r.sums);
        self.error = self.error.take().or(r.error);
    }

    /// One text: `xhat` (`[rows, width]`, the site's vectors as reconstructed) spliced in at
    /// `layer`, then zeros; `next[r]` the token row `r` predicts, if any.
    pub fn observe(
        &mut self,
        (splice, lens): (&dyn Splice, Lens),
        layer: usize,
        xhat: &[f32],
        next: &[Option<u32>],
    ) {
        if self.error.is_some() {
            return;
        }
        let (spliced, zeroed) = match splice.run(self.site, layer, &[Some(xhat), None]) {
            Ok(mut r) if r.len() == 2 => {
                let zeroed = r.pop().unwrap_or_default();
                (r.pop().unwrap_or_default(), zeroed)
            }
            Ok(_) => {
                self.error = Some("the resumed forward returned no rows".into());
                return;
            }
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        let clean = (lens.readout, splice.clean());
        let news = [(lens.readout, &spliced[..]), (lens.readout, &zeroed[..])];
        let rows = tokens::rows_against(clean, &news, next);
        let (with_sae, with_zero) = (&rows[0], &rows[1]);
        for (a, z) in with_sae.iter().zip(with_zero) {
            let (ce, predicted) = match (a.next, z.next) {
                (Some((lp, lq)), Some((_, lz))) => ([-lp, -lq, -lz], 1),
                _ => ([0.0; 3], 0),
            };
            self.sums.add(&[ce[0], ce[1], ce[2], a.kl, z.kl]);
            self.predicted += predicted;
            self.rows += 1;
        }
    }

    /// The metrics, or why there are none.
    pub fn finish(&self) -> Result<SpliceResult, String> {
        if let Some(e) = &self.error {
            return Err(format!("the spliced forward failed: {e}"));
        }
        if self.sums.overflow {
            return Err("a splice sum left the fixed-point range".into());
        }
        if self.predicted == 0 {
            return Err("no analysed token had a next token to predict: splice metrics need texts of at least two analysed tokens".into());
        }
        let p = self.predicted as f64;
        let n = self.rows as f64;
        let (ce_clean, ce_sae, ce_zero) = (
            self.sums.get(0) / p,
            self.sums.get(1) / p,
            self.sums.get(2) / p,
        );
        let (kl_sae, kl_zero) = (self.sums.get(3) / n, self.sums.get(4) / n);
        Ok(SpliceResult {
            predicted: self.predicted,
            rows: self.rows,
            ce_clean,
            ce_sae,
            ce_zero,
            ce_recovered: (ce_zero - ce_sae) / (ce_zero - ce_clean),
            kl_sae,
            kl_zero,
            kl_recovered: 1.0 - kl_sae / kl_zero,
        })
    }
}

/// The splice metrics: the model's next-token loss and output distribution with the SAE's
/// reconstruction in place of its input, against the clean forward and a zero ablation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpliceResult {
    /// Analysed tokens with a next token, where the losses are counted.
    pub predicted: u64,
    /// Analysed tokens, where the KL divergences are counted.
    pub rows: u64,
    /// Mean next-token cross-entropy of the clean forward, nats.
    pub ce_clean: f64,
    /// The same with `x̂` in place of `x` at the SAE's site.
    pub ce_sae: f64,
    /// The same with zeros there.
    pub ce_zero: f64,
    /// `(ce_zero − ce_sae) / (ce_zero − ce_clean)`: the share of the loss the ablation costs
    /// that the SAE recovers (SAEBench's CE loss score).
    pub ce_recovered: f64,
    /// Mean `KL(clean ‖ spliced)` of the next-token distributions, nats.
    pub kl_sae: f64,
    /// Mean `KL(clean ‖ zero-ablated)`.
    pub kl_zero: f64,
    /// `1 − kl_sae / kl_zero` (SAEBench's KL divergence score).
    pub kl_recovered: f64,
}

/// The reconstruction as the site's own vectors: in f32, with each row's mean added back
/// when the SAE read centred rows (`original` holds the rows as captured).
pub fn in_site_basis(recon: &[f64], original: &[f32], centred: bool, d: usize) -> Vec<f32> {
    recon
        .chunks_exact(d)
        .zip(original.chunks_exact(d))
        .flat_map(|(xh, x)| {
            // The mean the encoder's input had subtracted, formed as it formed it.
            let mu = if centred { row_mean(x) } else { 0.0 };
            xh.iter().map(move |&v| v as f32 + mu)
        })
        .collect()
}
