//! Hugging Face tensor names as llama.cpp's converter renames them (`gguf-py`'s
//! `tensor_mapping.py`, for the architectures strata reads), and the one row order the
//! converter changes without changing the math: GPT-NeoX's fused `query_key_value`.

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

/// A block's tensor, by its name inside the block.
fn block_part(arch: &str, part: &str) -> Option<&'static str> {
    let gemma = arch.starts_with("gemma");
    Some(match part {
        "input_layernorm" | "ln_1" => "attn_norm",
        // Gemma normalizes the attention's output; elsewhere this norm precedes the MLP.
        "post_attention_layernorm" if gemma => "post_attention_norm",
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
