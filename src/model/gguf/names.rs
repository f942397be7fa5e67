//! Hugging Face tensor names as llama.cpp's converter renames them (`gguf-py`'s
//! `tensor_mapping.py`, for the architectures strata reads), and the one row order the
//! converter changes without changing the math: GPT-NeoX's fused `query_key_value`.
//!
//! A mixture of experts' per-expert projections (`experts.{e}.w1`, `experts.{e}.gate_proj`)
//! are stacked by the converter into one `[experts, rows, width]` tensor per projection
//! (`ffn_gate_exps`): an expert is a slab of its rows ([`expert_name`]).

/// The GGUF name of the Hugging Face tensor `hf` in a file of architecture `arch`, or
/// `None` for a name the converter does not write.
pub(super) fn gguf_name(arch: &str, hf: &str) -> Option<String> {
    let hf = ["model.", "transformer.", "gpt_neox."]
        .iter()
        .find_map(|p| hf.strip_prefix(p))
        .unwrap_or(hf);
    let (base, suffix) = hf.rsplit_once('.')?;
    if !matches!(suffix, "weight" | "bias") {
        return None;
    }
    let block = ["layers.", "h."].iter().find_map(|p| base.strip_prefix(p));
    let name = match block.and_then(|b| b.split_once('.')) {
        Some((i, part)) if i.parse::<usize>().is_ok() => {
            format!("blk.{i}.{}", block_part(arch, part)?)
        }
        _ => top_level(base)?.to_string(),
    };
    Some(format!("{name}.{suffix}"))
}

/// The stacked GGUF tensor and the expert index of the Hugging Face per-expert weight
/// `hf` (`model.layers.3.block_sparse_moe.experts.5.w1.weight` is expert 5 of
/// `blk.3.ffn_gate_exps.weight`), or `None` for any other name.
pub(super) fn expert_name(hf: &str) -> Option<(String, usize)> {
    let rest = hf
        .strip_prefix("model.")
        .unwrap_or(hf)
        .strip_prefix("layers.")?;
    let (block, rest) = rest.split_once('.')?;
    let rest = ["block_sparse_moe.experts.", "mlp.experts."]
        .iter()
        .find_map(|p| rest.strip_prefix(p))?;
    let (expert, rest) = rest.split_once('.')?;
    let projection = match rest.strip_suffix(".weight")? {
        "w1" | "gate_proj" => "gate",
        "w3" | "up_proj" => "up",
        "w2" | "down_proj" => "down",
        _ => return None,
    };
    let block: usize = block.parse().ok()?;
    Some((
        format!("blk.{block}.ffn_{projection}_exps.weight"),
        expert.parse().ok()?,
    ))
}

/// A block's tensor, by its name inside the block.
fn block_part(arch: &str, part: &str) -> Option<&'static str> {
    // Gemma and OLMo 2 normalize the attention's output; elsewhere this norm precedes the
    // MLP.
    let post_norms = arch.starts_with("gemma") || arch == "olmo2";
    Some(match part {
        "input_layernorm" | "ln_1" => "attn_norm",
        "post_attention_layernorm" if post_norms => "post_attention_norm",
        "post_attention_layernorm" | "ln_2" | "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.qkv_proj" | "attn.c_attn" | "attention.query_key_value" => "attn_qkv",
        "self_attn.o_proj" | "attn.c_proj" | "attention.dense" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" | "mlp.gate_up_proj" | "mlp.c_fc" | "mlp.dense_h_to_4h" => "ffn_up",
        "mlp.down_proj" | "mlp.c_proj" | "mlp.dense_4h_to_h" => "ffn_down",
        "mlp.gate" | "block_sparse_moe.gate" => "ffn_gate_inp",
        "mlp.shared_expert_gate" => "ffn_gate_inp_shexp",
        "mlp.shared_expert.gate_proj" => "ffn_gate_shexp",
        "mlp.shared_expert.up_proj" => "ffn_up_shexp",
        "mlp.shared_expert.down_proj" => "ffn_down_shexp",
        _ => return None,
    })
}

/// A tensor outside the blocks.
fn top_level(base: &str) -> Option<&'static str> {
    Some(match base {
        "embed_tokens" | "wte" | "embed_in" => "token_embd",
        "wpe" => "position_embd",
        "norm" | "ln_f" | "final_layer_norm" => "output_norm",
        "lm_head" | "embed_out" => "output",
        _ => return None,
    })
}

/// Where row `row` of the Hugging Face tensor lies in the GGUF one. GPT-NeoX interleaves
/// q, k and v head by head (`[head][q|k|v][head_dim]`); the converter stores all of q, then
/// k, then v, as GPT-2 does. Every other tensor keeps its rows.
pub(super) fn stored_row(arch: &str, gguf: &str, row: usize, n_out: usize, n_head: usize) -> usize {
    if arch != "gptneox" || !gguf.contains(".attn_qkv.") || n_head == 0 {
        return row;
    }
    let d = n_out / 3 / n_head;
    let (head, within) = (row / (3 * d), row % (3 * d));
    (within / d) * (n_out / 3) + head * d + within % d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_converter() {
        let n = |arch, hf| gguf_name(arch, hf).unwrap();
        assert_eq!(
            n("llama", "model.layers.3.self_attn.q_proj.weight"),
            "blk.3.attn_q.weight"
        );
        assert_eq!(n("gpt2", "h.0.attn.c_attn.bias"), "blk.0.attn_qkv.bias");
        assert_eq!(
            n("gemma2", "model.layers.1.post_attention_layernorm.weight"),
            "blk.1.post_attention_norm.weight"
        );
        assert_eq!(
            n("qwen2", "model.layers.1.post_attention_layernorm.weight"),
            "blk.1.ffn_norm.weight"
        );
        assert_eq!(n("gptneox", "embed_out.weight"), "output.weight");
        assert_eq!(
            n("phi3", "model.layers.0.mlp.gate_up_proj.weight"),
            "blk.0.ffn_up.weight"
        );
        assert_eq!(gguf_name("llama", "model.layers.0.rotary.inv_freq"), None);
        assert_eq!(
            n("olmo2", "model.layers.2.post_attention_layernorm.weight"),
            "blk.2.post_attention_norm.weight"
        );
        assert_eq!(
            n("qwen2moe", "model.layers.0.mlp.shared_expert_gate.weight"),
            "blk.0.ffn_gate_inp_shexp.weight"
        );
        assert_eq!(
            n("llama", "model.layers.1.block_sparse_moe.gate.weight"),
            "blk.1.ffn_gate_inp.weight"
        );
    }

    #[test]
    fn experts_are_slabs_of_the_stacked_tensors() {
        let e = |hf| expert_name(hf).unwrap();
        assert_eq!(
            e("model.layers.3.block_sparse_moe.experts.5.w1.weight"),
            ("blk.3.ffn_gate_exps.weight".into(), 5)
        );
        assert_eq!(
            e("model.layers.0.block_sparse_moe.experts.0.w2.weight"),
            ("blk.0.ffn_down_exps.weight".into(), 0)
        );
        assert_eq!(
            e("model.layers.1.mlp.experts.12.up_proj.weight"),
            ("blk.1.ffn_up_exps.weight".into(), 12)
        );
        assert_eq!(
            expert_name("model.layers.1.mlp.shared_expert.up_proj.weight"),
            None
        );
        assert_eq!(
            expert_name("model.layers.1.mlp.experts.1.up_proj.bias"),
            None
        );
        assert_eq!(expert_name("model.layers.1.mlp.gate.weight"), None);
    }

    #[test]
    fn neox_rows_move_from_interleaved_to_grouped() {
        // 2 heads of 2: HF rows [q0 q0 k0 k0 v0 v0 q1 q1 k1 k1 v1 v1].
        let stored: Vec<usize> = (0..12)
            .map(|r| stored_row("gptneox", "blk.0.attn_qkv.weight", r, 12, 2))
            .collect();
        assert_eq!(stored, [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]);
        assert_eq!(stored_row("gpt2", "blk.0.attn_qkv.weight", 5, 12, 2), 5);
    }
}
