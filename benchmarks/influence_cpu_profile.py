"""Where a CPU JVP's time goes: forward vs JVP vs per-sequence gradients, and a profile of the JVP.

    python benchmarks/influence_cpu_profile.py [--rows 8] [--seq 128] [--threads 2]

A randomly initialised SmolLM2-135M-shaped model + LoRA r 16 on all linear layers (the builders of
benchmarks/influence_gpu.py), float32, eager attention, on the CPU. Prints the timings (one
run each after a warm-up), the JVP once more with torch's own forward-AD rule for nn.Linear (no
`scoring.influence.tangent_linears`: a frozen weight's zero tangent costs a full matmul), and
torch.profiler's top ops of one JVP by self CPU time.
"""

from __future__ import annotations

import argparse

import _common as C
import torch
from influence_gpu import add_lora, build, make_batch

from prefsift.scoring import influence as I
from prefsift.scoring.logprobs import sequence_logps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows-shown", type=int, default=18)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = build("smollm2", torch.float32, "cpu", "eager")
    model = add_lora(base, 16, 0.02)
    batch = make_batch(args.rows, args.seq, args.seq // 4, base.config.vocab_size, "cpu")
    logp_fn, params = I.make_logp_fn(model), I.select_params(model)
    v = {k: torch.randn_like(t) for k, t in params.items()}

    def fwd():
        with torch.inference_mode():
            return sequence_logps(model, batch)

    def jvp():
        return I.directional_logps(logp_fn, params, v, batch, method="jvp")

    def jvp_torch_linear():  # a logp_fn without .model: torch's own forward-AD rule for nn.Linear
        return I.directional_logps(
            lambda p, b: sequence_logps(model, b, params=p), params, v, batch, method="jvp"
        )

    def grad():
        return I.directional_logps(logp_fn, params, v, batch, method="grad")

    runs = (
        ("forward", fwd),
        ("JVP", jvp),
        ("JVP, torch's linear rule (x @ 0 for frozen weights)", jvp_torch_linear),
        ("per-sequence gradients", grad),
    )
    for _, f in runs:
        f()
    for name, f in runs:
        with C.Stopwatch() as sw:
            f()
        print(f"{name}: {sw.wall:.2f} s", flush=True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        jvp()
    print(
        prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=args.rows_shown, max_name_column_width=45
        )
    )


if __name__ == "__main__":
    main()
