"""Where one training step's time goes: torch.profiler around a step of the translator's default run.

    python -m bench.profile_step                         # cpu profile, shipped data, step 3 of 3
    python -m bench.profile_step --steps 4 -- --lora.r 32   # arguments after -- go to the training command
    python -m bench.profile_step --shapes 20             # also the matrix products by shape, with GFLOP/s

Trains a throw-away run (a temporary folder, no validation) for --steps optimizer steps and profiles the last
one (the first steps pay one-time set-up). Prints the step split into the labelled phases (the backbone's
forward, the answer-only output layer + loss, the optimizer, the rest = backward and the Trainer's own work)
and the operators that took the most time; --shapes N adds the N slowest matrix products by input shape with the
rate each ran at, to set beside the machine's peak. Run it alone: on 2 cores any other job distorts the split.
"""
from __future__ import annotations

import argparse
import tempfile
import time

# Phases labelled with torch.profiler.record_function in shared/loss.py; the optimizer's label is PyTorch's own.
PHASES = ("backbone forward", "output layer + loss", "Optimizer.step")


MATMULS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm")


def profiler_callback(profile_step: int, top: int, shapes: int = 0):
    import torch
    from transformers import TrainerCallback

    class Profile(TrainerCallback):
        prof = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step + 1 == profile_step:
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                   record_shapes=bool(shapes), with_flops=bool(shapes))
                self.prof.__enter__()
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if self.prof is None or state.global_step != profile_step:
                return
            wall = time.perf_counter() - self.t0
            self.prof.__exit__(None, None, None)
            print(report(self.prof.key_averages(), wall, top), flush=True)
            if shapes:
                print(matmul_report(self.prof.key_averages(group_by_input_shape=True), shapes), flush=True)
            self.prof = None

    return Profile()


def report(events, wall: float, top: int) -> str:
    phase = {name: 0.0 for name in PHASES}
    for e in events:
        for name in PHASES:
            if e.key.startswith(name):
                phase[name] += e.cpu_time_total / 1e6
    lines = [f"one optimizer step: {wall:.2f} s wall", f"{'phase':<28}{'s':>8}{'share':>8}"]
    for name, s in phase.items():
        lines.append(f"{name:<28}{s:>8.2f}{100 * s / wall:>7.0f}%")
    rest = wall - sum(phase.values())
    lines.append(f"{'backward + the rest':<28}{rest:>8.2f}{100 * rest / wall:>7.0f}%")
    lines += ["", events.table(sort_by="self_cpu_time_total", row_limit=top)]
    return "\n".join(lines)


def matmul_report(events, top: int) -> str:
    """The matrix products grouped by input shapes: count, time and the rate they ran at."""
    rows = [e for e in events if e.key in MATMULS]
    flops, secs = sum(e.flops for e in rows), sum(e.self_cpu_time_total for e in rows) / 1e6
    lines = [f"matrix products: {flops / 1e9:.1f} GFLOP in {secs:.2f} s = {flops / 1e9 / max(secs, 1e-9):.0f} GFLOP/s",
             f"{'operator':<14} {'input shapes':<64} {'calls':>5} {'s':>7} {'GFLOP/s':>8}"]
    for e in sorted(rows, key=lambda e: -e.self_cpu_time_total)[:top]:
        s = e.self_cpu_time_total / 1e6
        rate = f"{e.flops / 1e9 / s:8.0f}" if e.flops else f"{'-':>8}"  # the profiler counts no flops for addmm_
        lines.append(f"{e.key:<14} {str(e.input_shapes)[:64]:<64} {e.count:>5} {s:7.3f} {rate}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="optimizer steps; the last is profiled")
    p.add_argument("--top", type=int, default=15, help="operators listed")
    p.add_argument("--shapes", type=int, default=0, help="also list the N slowest matrix products by input shape")
    p.add_argument("train_args", nargs="*", help="after --: more arguments for the training command")
    a = p.parse_args(argv)

    from apps.translator.task import TASK
    from shared.cli import build_config, train_parser
    from shared.train import train

    with tempfile.TemporaryDirectory() as tmp:
        args, rest = train_parser(TASK).parse_known_args(
            ["--max-steps", str(a.steps), "--output-dir", f"{tmp}/run", "--train.eval_steps", "0",
             "--train.save_steps", "1000", *a.train_args])
        cfg, run_dir, reason = build_config(TASK, args, rest)
        train(TASK, cfg, run_dir, reason, callbacks=(profiler_callback(a.steps, a.top, a.shapes),))


if __name__ == "__main__":
    main()
