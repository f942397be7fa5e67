//! What the analyses read of a forward, decided once before the first text: per site,
//! which vectors of the model and of each second model; the attention statistics; the
//! routers' choices.

use crate::analyses::AnalysisState;
use crate::model::capture::AttentionRequest;
use crate::model::{Capture, ModelInfo, Site};

/// Per site, a flag per vector (hidden states: `pre_final_norm` last).
pub type SiteFlags = Vec<(Site, Vec<bool>)>;

/// What the analyses read of a forward.
pub struct Reads {
    /// Each site some analysis reads of the model.
    pub sites: SiteFlags,
    /// Per second model (`Spec::companions`, in order), each site some analysis reads of
    /// it, indexed by that model's own vectors (its layer count may differ).
    pub companions: Vec<SiteFlags>,
    /// Queries before this position of a text are not counted (beyond a unit's own skip).
    pub attention: Option<usize>,
    /// An analysis reads the routers' choices.
    pub routing: bool,
    /// The first analysis (its position in the spec, and its kind) that needs every
    /// text's label.
    pub labels: Option<(usize, &'static str)>,
    /// The hidden states (indices; `pre_final_norm` last) from which analyses resume the
    /// forward, kept whole for them; empty when none splices.
    pub splice: Vec<usize>,
}

/// Vectors of `info` at `site`: its hidden states and `pre_final_norm`, or one per block.
fn vectors(info: &ModelInfo, site: Site) -> usize {
    match site {
        Site::Hidden => info.labels.len() + 1,
        _ => info.n_layers,
    }
}

/// Flags `layers` at `site` in `sites`, adding the site with `n` flags when new.
fn mark(sites: &mut SiteFlags, site: Site, n: usize, layers: &[usize]) {
    let at = match sites.iter().position(|(s, _)| *s == site) {
        Some(at) => at,
        None => {
            sites.push((site, vec![false; n]));
            sites.len() - 1
        }
    };
    for &l in layers {
        if let Some(flag) = sites[at].1.get_mut(l) {
            *flag = true;
        }
    }
}

impl Reads {
    /// What `states` read of a model of shape `info` and of second models of shapes
    /// `companions`.
    pub fn of(states: &[AnalysisState], info: &ModelInfo, companions: &[ModelInfo]) -> Self {
        let mut sites = SiteFlags::new();
        let mut theirs: Vec<SiteFlags> = vec![SiteFlags::new(); companions.len()];
        let mut attention = None;
        let routing = states.iter().any(|s| s.state.reads_routing());
        for s in states {
            mark(&mut sites, s.site, vectors(info, s.site), &s.state.layers());
            if let Some((site, index)) = s.state.also_reads() {
                mark(&mut sites, site, vectors(info, site), &[index]);
            }
            if let Some((c, layers)) = s.state.companion_layers() {
                if let (Some(flags), Some(other)) = (theirs.get_mut(c), companions.get(c)) {
                    mark(flags, s.site, vectors(other, s.site), &layers);
                }
            }
            if let Some(q) = s.state.attention_from() {
                attention = Some(attention.map_or(q, |a: usize| a.max(q)));
            }
        }
        sites.retain(|(_, want)| want.iter().any(|&w| w));
        let mut splice: Vec<usize> = states
            .iter()
            .filter_map(|s| s.state.splices_from())
            .collect();
        splice.sort_unstable();
        splice.dedup();
        let labels = states
            .iter()
            .position(|s| s.state.reads_labels())
            .map(|i| (i, states[i].kind()));
        Self {
            sites,
            companions: theirs,
            attention,
            routing,
            splice,
            labels,
        }
    }

    /// What a forward over units that skip `skips` rows captures.
    pub fn capture(&self, skips: &[usize]) -> Capture {
        let mut capture = site_capture(&self.sites);
        capture.attention = self.attention.map(|q| AttentionRequest {
            from: skips.iter().map(|&s| s.max(q)).collect(),
            probabilities: false,
        });
        capture.routing = self.routing;
        capture
    }

    /// What second model `c`'s forward captures: its sites only.
    pub fn companion_capture(&self, c: usize) -> Capture {
        site_capture(&self.companions[c])
    }
}

/// The sub-block sites of `sites` (the hidden states come with every forward).
fn site_capture(sites: &SiteFlags) -> Capture {
    let mut capture = Capture::none();
    for (site, want) in sites {
        if let Some(i) = site.slot() {
            capture.sites[i] = want.clone();
        }
    }
    capture
}
