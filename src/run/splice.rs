//! One text's forward resumed with other vectors at a site ([`Splice`]): the hidden states
//! it resumes from are kept whole before the analyses' rows are cut from them.

use crate::analyses::Splice;
use crate::model::{HiddenStateModel, Patch, Site, TextStates};

/// What one text keeps to resume its forward.
pub(super) struct Resumer<'a> {
    model: &'a dyn HiddenStateModel,
    ids: &'a [u32],
    /// Rows the analyses skip (token 0, a window's context): they keep their own vectors.
    skip: usize,
    /// Hidden-state index and its `[rows, hidden_size]` vectors, every row.
    inputs: Vec<(usize, Vec<f32>)>,
    /// `pre_final_norm` at the analysed rows.
    clean: Vec<f32>,
}

impl<'a> Resumer<'a> {
    /// Copies of `out`'s hidden states `wanted` (its labels' indices, then
    /// `pre_final_norm`), before the analyses take them; `None` when nothing splices.
    pub(super) fn keep(
        model: &'a dyn HiddenStateModel,
        ids: &'a [u32],
        skip: usize,
        out: &TextStates,
        wanted: &[usize],
    ) -> Option<Self> {
        if wanted.is_empty() {
            return None;
        }
        let state = |i: usize| match out.states.get(i) {
            Some(s) => s.clone(),
            None => out.pre_final_norm.clone(),
        };
        let width = out.pre_final_norm.len() / ids.len().max(1);
        let from = (skip * width).min(out.pre_final_norm.len());
        Some(Self {
            model,
            ids,
            skip,
            inputs: wanted.iter().map(|&i| (i, state(i))).collect(),
            clean: out.pre_final_norm[from..].to_vec(),
        })
    }
}

impl Splice for Resumer<'_> {
    fn clean(&self) -> &[f32] {
        &self.clean
    }

    fn run(
        &self,
        site: Site,
        layer: usize,
        with: &[Option<&[f32]>],
    ) -> Result<Vec<Vec<f32>>, String> {
        let n_layers = self.model.info().n_layers;
        if site == Site::Hidden && layer == n_layers {
            return Err(format!(
                "hidden state {layer} has the final norm applied: splice at pre_final_norm ({})",
                n_layers + 1
            ));
        }
        let Some((_, x)) = self.inputs.iter().find(|(i, _)| *i == layer) else {
            return Err(format!("hidden state {layer} was not kept for splicing"));
        };
        // A patch of the wrong size would be taken for zeros: refuse it instead.
        let width = self.model.info().width(site).unwrap_or(0);
        let want = self.ids.len().saturating_sub(self.skip) * width;
        if let Some(w) = with.iter().flatten().find(|w| w.len() != want) {
            return Err(format!(
                "{} values to splice in at {site:?} {layer}, not {want}",
                w.len()
            ));
        }
        let patch = Patch {
            site,
            layer,
            rows: self.ids.len(),
            from_row: self.skip,
            with,
        };
        let outs = self
            .model
            .resume(self.ids, x, &patch)
            .map_err(|e| e.to_string())?;
        Ok(outs
            .into_iter()
            .map(|mut out| {
                let width = out.len() / self.ids.len().max(1);
                out.drain(..(self.skip * width).min(out.len()));
                out
            })
            .collect())
    }
}
