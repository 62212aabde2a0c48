"""The benchmarks (bench/) on the tiny random model: they run end to end, print the JSON they promise, and
the two sides they compare do the same work (same batches, same loss; same greedy outputs)."""
import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, write_jsonl

# Short pairs: with the byte-level tiny tokenizer every byte is a token (Korean is 3 bytes a character).
SHORT = [("Hi.", "안녕."), ("Go.", "가."), ("Run!", "뛰어!"), ("Who?", "누구?"), ("Wow!", "우와!"), ("Help!", "도와줘!"),
         ("Stop.", "멈춰."), ("Wait.", "기다려."), ("I see.", "알겠어."), ("Thanks.", "고마워."), ("Sit.", "앉아."),
         ("Look.", "봐."), ("Come.", "와."), ("Eat.", "먹어."), ("Read.", "읽어."), ("Sing.", "노래해.")]


@pytest.fixture()
def short_pairs(tmp_path):
    return write_jsonl(tmp_path / "short.jsonl", [{"en": e, "ko": k} for e, k in SHORT])


def _train_argv(model_dir, data, *extra):
    return ["--model", str(model_dir), "--chat-template", "chatml", "--data", str(data), "--rows", "16",
            "--steps", "2", "--batch-size", "4", "--max-length", "400", "--matmul-size", "128",
            "--output-vocab", "full", *extra]  # losses compare only over the same vocabulary


def test_summarize_counts_flops_on_the_timed_steps():
    from bench.train_throughput import summarize

    step = {"tokens": 100, "loss_tokens": 10, "positions": 120, "rows": 4, "shared_prefix": 5, "hash": "x"}
    raw = {"steps": [step] * 3, "step_s": [5.0, 2.0, 2.0], "losses": [{"loss": 3.0}, {"loss": 2.0}, {"loss": 1.0}],
           "params": {"non_embedding": 1000, "lora": 10, "output_layer": 500, "embedding": 500},
           "peak_rss_mb": 1.0, "train_peak_rss_mb": 1.0, "load_s": 0.0}
    s = summarize(raw, peak_gflops=1.0)
    assert s["timed_steps"] == 2 and s["first_step_s"] == 5.0  # the first step is shown, not timed
    assert s["tokens_per_s"] == 200 / 4.0 and s["loss_tokens_per_s"] == 20 / 4.0
    distinct = 2 * (100 - 3 * 5)  # the 5 shared tokens once per batch of 4 rows
    assert s["distinct_tokens_all_steps"] == 3 * (100 - 3 * 5)
    flops = (4 * 1000 + 6 * 10) * distinct + 4 * 500 * 20  # frozen weights: forward and input gradients only
    assert math.isclose(s["gflops_per_s"], flops / 4.0 / 1e9) and math.isclose(s["mfu"], s["gflops_per_s"])
    assert math.isclose(s["mfu_6n"], (6 * 1010 * 200 + 6 * 500 * 20) / 4.0 / 1e9)  # every token, 6 per parameter
    assert s["final_loss"] == 2.0 and s["examples"] == 12
    raw["params"].update(output_rows=50, output_rows_used=5)  # an output vocabulary of a tenth of the rows
    limited = summarize(raw, peak_gflops=1.0)
    assert math.isclose(limited["gflops_per_s"], ((4 * 1000 + 6 * 10) * distinct + 4 * 50 * 20) / 4.0 / 1e9)


def test_shared_prefix_reads_the_real_tokens_of_every_row():
    import torch

    from bench.train_throughput import shared_prefix

    ids = torch.tensor([[7, 8, 9, 1, 0, 0], [7, 8, 9, 2, 3, 4], [7, 8, 5, 1, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[4], [6], [4]])).long()
    assert shared_prefix(ids, mask) == 2
    assert shared_prefix(ids[:2], mask[:2]) == 3
    assert shared_prefix(ids[:1], mask[:1]) == 4  # one row: all of it
    left = torch.tensor([[0, 0, 7, 8, 1], [7, 8, 2, 3, 4]])  # left padding: the real tokens still line up
    assert shared_prefix(left, (left != 0).long()) == 2


@pytest.mark.slow  # two trainers: ~12 s on a quiet 2-core CPU, more when it is busy
def test_our_training_step_matches_stock_trl(tiny_model_dir, short_pairs, tmp_path):
    """The fast path (pre-tokenized data + answer-only fused loss) sees the same batches as stock TRL on
    prompt-completion text, and gives the same loss before and after an optimizer step."""
    from bench.train_throughput import parse_args, run_ours, run_trl

    a = parse_args(_train_argv(tiny_model_dir, short_pairs, "--dtype", "float32"))
    (tmp_path / "o").mkdir(), (tmp_path / "t").mkdir()
    ours, trl = run_ours(a, tmp_path / "o"), run_trl(a, tmp_path / "t")
    assert [s["hash"] for s in ours["steps"]] == [s["hash"] for s in trl["steps"]]
    assert [s["loss_tokens"] for s in ours["steps"]] == [s["loss_tokens"] for s in trl["steps"]]
    assert all(s["loss_tokens"] > 0 for s in ours["steps"])
    assert len(ours["losses"]) == len(trl["losses"]) == 2
    for o, t in zip(ours["losses"], trl["losses"]):  # bf16 autocast on both sides: close, not bit-equal
        assert abs(o["loss"] - t["loss"]) < 2e-2 * max(1.0, abs(t["loss"]))
    assert ours["params"]["lora"] == trl["params"]["lora"] > 0


@pytest.mark.slow
def test_train_throughput_end_to_end(tiny_model_dir, short_pairs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "bench.train_throughput",
                           *_train_argv(tiny_model_dir, short_pairs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("ours_tokens_per_s", "trl_tokens_per_s", "speedup", "ours_peak_rss_mb", "trl_peak_rss_mb",
                "ours_final_loss", "trl_final_loss", "mfu_ours", "mfu_trl", "matmul_peak_gflops"):
        assert key in out, key
    assert out["ours_tokens_per_s"] > 0 and out["trl_tokens_per_s"] > 0 and out["speedup"] > 0
    assert out["ours_peak_rss_mb"] > 50 and out["trl_peak_rss_mb"] > 50
    # (a 128x128 matmul peak on a tiny model says nothing about utilisation: only check the figures exist)
    assert out["mfu_ours"] > 0 and out["mfu_trl"] > 0 and out["matmul_peak_gflops"] > 0
    assert math.isfinite(out["ours_final_loss"]) and abs(out["ours_final_loss"] - out["trl_final_loss"]) < 0.1
    assert out["same_batches"] and out["examples"] == 8
    assert "stock TRL" in proc.stdout and "MFU" in proc.stdout


def test_eval_throughput_batched_equals_loop(tiny_model_dir, short_pairs, capsys):
    """Batched generation and the one-at-a-time model.generate loop give the same strings (fp32)."""
    from bench.eval_throughput import main

    out = main(["--model", str(tiny_model_dir), "--chat-template", "chatml", "--data", str(short_pairs),
                "--limit", "6", "--batch-size", "4", "--max-new-tokens", "8", "--dtype", "float32"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == out
    for key in ("ours_examples_per_s", "loop_examples_per_s", "speedup", "outputs_identical"):
        assert key in out, key
    assert out["outputs_identical"] is True and out["n"] == 6 and out["n_differ"] == 0
    assert out["ours_examples_per_s"] > 0 and out["loop_examples_per_s"] > 0


def test_eval_throughput_with_budgets(tiny_model_dir, short_pairs, capsys):
    from bench.eval_throughput import main

    out = main(["--model", str(tiny_model_dir), "--chat-template", "chatml", "--data", str(short_pairs),
                "--limit", "4", "--batch-size", "4", "--max-new-tokens", "6", "--dtype", "float32", "--budgets"])
    assert out["budgets"] is True and out["n"] == 4 and out["speedup"] > 0


def test_stock_side_gets_the_same_lora_as_ours(tiny_model_dir):
    """The stock LoraConfig mirrors the profile's rank, alpha and scaling (rsLoRA on the translator's cpu
    profile): otherwise the 'same loss after the same examples' row compares two different adapters."""
    from bench.train_throughput import bench_config, parse_args, stock_lora_config

    cfg = bench_config(parse_args(["--model", str(tiny_model_dir)]))
    stock = stock_lora_config(cfg)
    assert cfg.lora.use_rslora and stock.use_rslora
    assert (stock.r, stock.lora_alpha, stock.lora_dropout) == (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout)


def test_profile_step_lists_matrix_products_by_shape_with_their_rate():
    import torch

    from bench.profile_step import matmul_report

    a, b, c = torch.randn(64, 32), torch.randn(32, 48), torch.zeros(64, 48)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True,
                                with_flops=True) as prof:
        for _ in range(3):
            a @ b
        c.addmm_(a, b)
        torch.randn(8, 8).relu()  # not a matrix product: left out
    text = matmul_report(prof.key_averages(group_by_input_shape=True), top=5)
    first, _, *rows = text.splitlines()
    assert first.startswith(f"matrix products: {3 * 2 * 64 * 32 * 48 / 1e9:.1f} GFLOP")
    mm = next(r for r in rows if r.startswith("aten::mm"))
    assert "[[64, 32], [32, 48]]" in mm and mm.split()[-3] == "3"
    assert any(r.startswith("aten::addmm_") for r in rows) and not any("relu" in r for r in rows)
