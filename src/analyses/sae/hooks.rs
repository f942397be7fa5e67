//! Where an SAE reads: TransformerLens hook names, and Gemma Scope 2's Hugging Face module
//! names, mapped onto strata's capture sites exactly.
//!
//! | hook | site | index |
//! | --- | --- | --- |
//! | `blocks.N.hook_resid_pre`, `model.layers.N.input` | `hidden` | hidden state `N` |
//! | `blocks.N.hook_resid_post`, `model.layers.N.output` | `hidden` | hidden state `N+1`; the last block's is `pre_final_norm` |
//! | `blocks.N.hook_attn_out` | `attn_out` | block `N` |
//! | `blocks.N.hook_mlp_out`, `model.layers.N.post_feedforward_layernorm.output` (Gemma) | `mlp_out` | block `N` |
//! | `blocks.N.mlp.hook_post` | `mlp_act` | block `N` |
//! | `blocks.N.attn.hook_z`, `model.layers.N.self_attn.o_proj.input` | `attn_z` | block `N` |
//! | `model.layers.N.pre_feedforward_layernorm.output` (Gemma), a SAELens config's `hf_hook_name` | `mlp_in` | block `N` |
//!
//! TransformerLens' `ln2.hook_normalized` is the normalised stream before ln2's weight and
//! bias, which strata does not capture, and its `hook_mlp_in` the stream before ln2: both
//! are refused with the reason.

use crate::model::{ModelInfo, Site};

/// The site and the index at it (a hidden-state index, or a block) of `hook` in a model
/// of shape `info`; the error says why none.
pub fn site_of(hook: &str, info: &ModelInfo) -> Result<(Site, usize), String> {
    let (block, rest) = split(hook).ok_or_else(|| {
        format!("`{hook}` names no block: strata reads blocks.N.hook_resid_pre, hook_resid_post, hook_attn_out, hook_mlp_out, mlp.hook_post and attn.hook_z, and Gemma Scope 2's model.layers.N.* names")
    })?;
    let l = info.n_layers;
    if block >= l {
        return Err(format!(
            "`{hook}` reads block {block}, but the model has {l} blocks (0 to {})",
            l.saturating_sub(1)
        ));
    }
    let post = if block + 1 == l { l + 1 } else { block + 1 };
    let site = match rest {
        "hook_resid_pre" | "input" => (Site::Hidden, block),
        "hook_resid_post" | "output" => (Site::Hidden, post),
        "hook_attn_out" => (Site::AttnOut, block),
        "hook_mlp_out" | "post_feedforward_layernorm.output" => (Site::MlpOut, block),
        "mlp.hook_post" => (Site::MlpAct, block),
        "attn.hook_z" | "self_attn.o_proj.input" => (Site::AttnZ, block),
        "pre_feedforward_layernorm.output" => (Site::MlpIn, block),
        "ln2.hook_normalized" => return Err(format!("`{hook}` is TransformerLens' normalised stream before ln2's weight and bias, which strata does not capture (its mlp_in is the MLP's input after them, model.layers.{block}.pre_feedforward_layernorm.output in Gemma's names)")),
        "hook_mlp_in" => return Err(format!("`{hook}` is TransformerLens' residual stream before ln2, which strata does not capture; an SAE or transcoder trained on the MLP's normalised input names model.layers.{block}.pre_feedforward_layernorm.output (a SAELens config's hf_hook_name)")),
        "hook_resid_mid" => return Err(format!("`{hook}` (the residual stream between attention and MLP) is not a site strata captures")),
        _ => return Err(format!("`{hook}` is not a hook strata maps to a site: see the table of hooks in the book's Sparse autoencoders page")),
    };
    Ok(site)
}

/// `(N, rest)` of `blocks.N.rest` or `model.layers.N.rest`.
fn split(hook: &str) -> Option<(usize, &str)> {
    let tail = hook
        .strip_prefix("blocks.")
        .or_else(|| hook.strip_prefix("model.layers."))
        .or_else(|| hook.strip_prefix("layers."))?;
    let (n, rest) = tail.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

/// Whether the SAE at `site` reads the residual stream's basis (what TransformerLens'
/// `center_writing_weights` centres): the hidden states and what the sub-blocks add.
pub fn in_residual_basis(site: Site) -> bool {
    matches!(site, Site::Hidden | Site::AttnOut | Site::MlpOut)
}
