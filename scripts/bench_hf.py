#!/usr/bin/env python3
"""HF transformers' GptOssForCausalLM at a checkpoint's shape on the GPU, for comparison with
`mind4 bench --backend cuda` in the same run (scripts/cuda_bench.sh). The weights are HF's own
random initialisation in bf16 (experts dense bf16: transformers runs MXFP4 experts only with the
`kernels` package, which this machine lacks), so the figures are of HF's code at that shape.
Prefill: one forward over N tokens; decode: greedy generate() of T new tokens after a C-token
context, batch 1 and batched; each the median of R timed runs after a warm-up."""
import argparse, json, statistics, sys, time

import torch
from transformers import GptOssConfig, GptOssForCausalLM


def hf_config(c):
    rope = {"rope_type": "yarn", "factor": c["rope_scaling_factor"], "beta_fast": c["rope_ntk_beta"],
            "beta_slow": c["rope_ntk_alpha"], "truncate": False,
            "original_max_position_embeddings": c["initial_context_length"],
            "rope_theta": c["rope_theta"]}
    cfg = GptOssConfig(
        num_hidden_layers=c["num_hidden_layers"], num_local_experts=c["num_experts"],
        num_experts_per_tok=c["experts_per_token"], vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        head_dim=c["head_dim"], num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"], sliding_window=c["sliding_window"],
        rope_theta=c["rope_theta"], swiglu_limit=c["swiglu_limit"],
        max_position_embeddings=c["max_context_length"], rms_norm_eps=1e-5, attention_bias=True,
        tie_word_embeddings=False,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention"
                     for i in range(c["num_hidden_layers"])],
        rope_scaling=rope, output_router_logits=False, pad_token_id=None, eos_token_id=None,
        bos_token_id=None)
    if hasattr(cfg, "rope_parameters"):
        cfg.rope_parameters = dict(rope)
    return cfg


def timed(fn, runs):
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--prefill", type=int, default=2048)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    c = json.load(open(a.config))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = GptOssForCausalLM._from_config(hf_config(c), torch_dtype=torch.bfloat16)
    model.eval()
    V = c["vocab_size"]
    res = {"device": torch.cuda.get_device_name(), "transformers": __import__("transformers").__version__}
    with torch.no_grad():
        ids = torch.randint(0, V, (1, a.prefill), device="cuda")
        t = timed(lambda: model(ids), a.runs)
        res["prefill_tokens_per_second"] = a.prefill / t
        for b in [1] + [int(x) for x in a.batch_sizes.split(",") if x]:
            ctx = torch.randint(0, V, (b, a.context), device="cuda")
            gen = lambda: model.generate(ctx, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                         do_sample=False, pad_token_id=0)
            t_gen = timed(gen, a.runs)
            t_pre = timed(lambda: model(ctx), a.runs)
            # generate() = one prefill + new_tokens - 1 decode steps
            res[f"decode_b{b}_tokens_per_second"] = b * (a.new_tokens - 1) / max(t_gen - t_pre, 1e-9)
    for k, v in res.items():
        print(f"hf {k}: {v:.1f}" if isinstance(v, float) else f"hf {k}: {v}")
    print(json.dumps(res), file=sys.stderr)


if __name__ == "__main__":
    main()
