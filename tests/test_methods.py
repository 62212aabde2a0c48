"""Training methods and the product metric during training, on the tiny model: each LoRA variant's adapter
loads with plain PEFT on the original base and gives what the trained model gave; the best checkpoint by the
product's metric becomes the run's adapter."""
from __future__ import annotations

import json

import pytest
import torch

from apps.translator.task import TASK
from shared import runs
from shared.config import ConfigError, resolve
from shared.train import train

from .conftest import PAIRS, write_jsonl

PROBE = "Where is the station?"


def _cfg(model_dir, data, out, **extra):
    flat = {"model.name": str(model_dir), "model.chat_template": "chatml", "model.dtype": "float32",
            "model.max_length": 256, "data.train": str(data), "data.valid": str(data), "data.test": str(data),
            "train.max_steps": 3, "train.batch_size": 4, "train.save_steps": 1, "train.logging_steps": 1,
            "train.bf16": "false", "train.warmup_ratio": 0, "train.lr": 5e-3, "lora.r": 4,
            "lora.target_modules": ["q_proj", "v_proj"], "generate.max_new_tokens": 8, "output.dir": str(out)}
    flat.update(extra)
    return resolve(cli=flat)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("d") / "pairs.jsonl", [{"en": e, "ko": k} for e, k in PAIRS])


class Probe:
    """Keeps the trained model's logits on one prompt, as they are when training ends (before saving)."""

    def __init__(self, tokenizer_dir):
        from transformers import AutoTokenizer
        self.ids = AutoTokenizer.from_pretrained(tokenizer_dir)(PROBE, return_tensors="pt")["input_ids"]
        self.logits = None

    def callback(self):
        from transformers import TrainerCallback
        probe = self

        class Keep(TrainerCallback):
            def on_train_end(self, args, state, control, model=None, **kw):
                model.eval()
                with torch.no_grad():
                    probe.logits = model(input_ids=probe.ids).logits.float()
        return Keep()


@pytest.mark.parametrize("method", [
    {"lora.use_rslora": True},
    {"lora.use_dora": True},
    {"lora.init": "pissa"},
    {"lora.init": "gaussian"},
    {"train.neftune_alpha": 5.0},
], ids=["rslora", "dora", "pissa", "gaussian", "neftune"])
def test_each_method_gives_a_standard_adapter(method, tiny_model_dir, data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    probe = Probe(tiny_model_dir)
    run = train(TASK, _cfg(tiny_model_dir, data, tmp_path / "run", **method), tmp_path / "run", "t",
                callbacks=(probe.callback(),))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)  # the original base
    with torch.no_grad():
        before = base(input_ids=probe.ids).logits.float()
    model = PeftModel.from_pretrained(base, str(run / "adapter")).eval()  # plain PEFT, nothing of ours
    with torch.no_grad():
        loaded = model(input_ids=probe.ids).logits.float()
    assert not torch.allclose(loaded, before, atol=1e-4)  # the adapter does something
    assert torch.allclose(loaded, probe.logits, atol=1e-4), (loaded - probe.logits).abs().max()
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    if "lora.init" in method and method["lora.init"] == "pissa":
        assert config["r"] == 8 and config["init_lora_weights"] is True  # converted to a plain rank-2r LoRA


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_full_fine_tuning_writes_a_model_folder_of_the_trained_body(tiny_model_dir, data, tmp_path):
    """model/ loads with plain transformers and gives what the trained model gave; only the body changed; the
    project loads it onto the base, and base outputs come from the same loaded model."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from shared import export
    from shared.generate import base_model, load_run

    probe = Probe(tiny_model_dir)
    run_dir = train(TASK, _cfg(tiny_model_dir, data, tmp_path / "run", **{"train.method": "full", "train.lr": 1e-3}),
                    tmp_path / "run", "t", callbacks=(probe.callback(),))
    assert (run_dir / "model" / "config.json").is_file() and not (run_dir / "adapter").exists()
    run = runs.Run.load(run_dir)
    assert run.finished and run.weights_dir == run_dir / "model"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    plain = AutoModelForCausalLM.from_pretrained(run_dir / "model", dtype=torch.float32).eval()  # nothing of ours
    assert torch.allclose(_logits(plain, probe.ids), probe.logits, atol=1e-4)
    before, after = base.state_dict(), load_file(run_dir / "model" / "model.safetensors")
    frozen = ("model.embed_tokens.weight", "lm_head.weight")
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    changed = [k for k in after if k not in frozen and not torch.equal(before[k], after[k])]
    assert any("mlp" in k for k in changed) and any("self_attn" in k for k in changed)
    body = sum(v.numel() for k, v in before.items() if k not in frozen)
    assert run.record.parameters["trainable"] == body

    model, *_ = load_run(run, limit_vocab=False)
    tuned = _logits(model, probe.ids)
    assert torch.allclose(tuned, probe.logits, atol=1e-4)
    with base_model(model):
        assert torch.allclose(_logits(model, probe.ids), _logits(base, probe.ids), atol=1e-5)
    assert torch.equal(_logits(model, probe.ids), tuned)  # the fine-tuned weights are back

    info = export.merge(run, tmp_path / "merged")
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    assert info["method"] == "full" and info["lora"] is None
    assert all(torch.allclose(merged[k].float(), after[k].float()) for k in after)


def test_full_fine_tuning_keeps_the_trained_weights_in_float32_and_the_embeddings_frozen(tiny_model_dir):
    """bf16's 8-bit mantissa would round small updates away: the trained weights train in float32."""
    from transformers import AutoModelForCausalLM

    from shared import full

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    trainable = full.prepare(model)
    train_params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == sum(p.numel() for p in train_params.values())
    assert all(p.dtype == torch.float32 for p in train_params.values())
    assert "model.embed_tokens.weight" not in train_params and "lm_head.weight" not in train_params
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16  # frozen ones stay as loaded


def test_full_fine_tuning_on_a_bf16_base_trains_with_bf16_matmuls(tiny_gemma_dir, data, tmp_path):
    """As the cpu profile runs on a CPU with fast bf16: the float32 body meets bf16 embeddings under autocast,
    in the loss and in the product metric's generation; model/ is saved in the base's bf16."""
    from safetensors.torch import load_file

    extra = {"train.method": "full", "train.lr": 1e-3, "model.dtype": "bfloat16", "train.bf16": "true",
             "train.eval_steps": 1, "train.metric_samples": 2, "train.max_steps": 2}
    run_dir = train(TASK, _cfg(tiny_gemma_dir, data, tmp_path / "run", **extra), tmp_path / "run", "t")
    record = runs.Run.load(run_dir).record
    assert [p["step"] for p in record.loss_curve if "eval_chrf" in p][:2] == [1, 2]
    weights = load_file(run_dir / "model" / "model.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}


def test_a_stopped_full_fine_tuning_resumes_to_the_same_weights(tiny_model_dir, data, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 2:
                raise KeyboardInterrupt("stopped after checkpoint-2")

    extra = {"train.method": "full", "train.lr": 1e-3}
    straight = train(TASK, _cfg(tiny_model_dir, data, tmp_path / "a", **extra), tmp_path / "a", "t")
    with pytest.raises(KeyboardInterrupt):
        train(TASK, _cfg(tiny_model_dir, data, tmp_path / "b", **extra), tmp_path / "b", "t",
              callbacks=(StopAfterSave(),))
    assert runs.Run.load(tmp_path / "b").record.status == "interrupted"
    resumed = train(TASK, _cfg(tiny_model_dir, data, tmp_path / "b", **extra), tmp_path / "b", "t", resume=True)
    a, b = load_file(straight / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    assert runs.Run.load(resumed).record.train["steps_this_session"] == 1
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_best_checkpoint_by_the_product_metric_becomes_the_adapter(tiny_model_dir, data, tmp_path, monkeypatch):
    """The metric peaks at step 2 while the loss keeps falling: step 2's adapter is kept."""
    from safetensors.torch import load_file

    scores = iter([10.0, 30.0, 20.0, 30.0])  # steps 1, 2, 3, then the kept adapter measured once more
    calls = []

    def metric(rows, answers):
        calls.append(len(answers))
        return next(scores)
    monkeypatch.setattr(TASK, "metric", metric)
    cfg = _cfg(tiny_model_dir, data, tmp_path / "run", **{"train.eval_steps": 1, "train.metric_samples": 4,
                                                          "train.keep": "best_metric", "train.save_total_limit": 5})
    run_dir = train(TASK, cfg, tmp_path / "run", "t")
    record = runs.Run.load(run_dir).record
    points = [p for p in record.loss_curve if "eval_chrf" in p]
    # one point per step: the kept checkpoint's second measurement is the run's eval_loss, not a step-3 point
    assert [(p["step"], p["eval_chrf"]) for p in points] == [(1, 10.0), (2, 30.0), (3, 20.0)]
    assert record.eval_loss == next(p["eval_loss"] for p in points if p["step"] == 2)
    assert calls[0] == 4 and all("eval_loss" in p for p in points)  # 4 sampled rows generated on
    assert record.train["best_checkpoint"].endswith("checkpoint-2") and record.train["best_value"] == 30.0
    best = {"step": 2}
    kept = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    chosen = load_file(run_dir / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors")
    assert kept.keys() == chosen.keys() and all(torch.equal(kept[k], chosen[k]) for k in kept)
    assert (run_dir / "loss.png").stat().st_size > 5_000


def test_the_metric_during_training_decodes_over_the_output_vocabulary(tiny_model_dir, data, tmp_path,
                                                                       monkeypatch):
    """As evaluate will decode the finished run; the loss keeps the full output layer between evaluations."""
    import shared.generate
    from shared import vocab

    heads, generate = [], shared.generate.generate

    def spy(model, *args, **kwargs):
        heads.append(model.get_base_model().get_output_embeddings())
        return generate(model, *args, **kwargs)
    monkeypatch.setattr(shared.generate, "generate", spy)
    cfg = _cfg(tiny_model_dir, data, tmp_path / "run", **{"train.eval_steps": 1, "train.metric_samples": 4,
                                                          "train.output_vocab": "answers"})
    run_dir = train(TASK, cfg, tmp_path / "run", "t")
    ids = vocab.load(run_dir)
    assert len(heads) >= 3 and all(isinstance(h, vocab.LimitedOutputLayer) for h in heads)
    assert all(h.ids.tolist() == ids for h in heads) and len(ids) < heads[0].weight.shape[0]
    record = runs.Run.load(run_dir).record
    assert [p["step"] for p in record.loss_curve if "eval_chrf" in p][:3] == [1, 2, 3]
    assert record.status == "completed"


@pytest.mark.parametrize("extra, message", [
    ({"train.keep": "best_metric"}, "needs evaluations during training"),
    ({"train.keep": "best_loss", "train.eval_steps": 2, "train.save_steps": 3}, "must be a multiple"),
    ({"train.keep": "best_metric", "train.eval_steps": 1}, "needs train.metric_samples"),
    ({"train.early_stopping": 2}, "needs train.keep"),
    ({"lora.init": "pissa", "lora.use_rslora": True}, "lora.init=pissa"),
    ({"train.method": "full", "model.quantization": "4bit"}, "cannot: set model.quantization none"),
])
def test_inconsistent_method_settings_are_refused(extra, message, tiny_model_dir, data, tmp_path):
    with pytest.raises(ConfigError, match=message):
        _cfg(tiny_model_dir, data, tmp_path / "run", **extra)


def test_full_fine_tuning_accepts_a_profile_tuned_for_lora():
    """The translator's cpu profile sets lora.use_rslora; --train.method full must still resolve with it."""
    from shared.config import resolve

    cfg = resolve(yaml_path="apps/translator/configs/cpu.yaml", cli={"train.method": "full", "train.lr": 5e-5})
    assert cfg.train.method == "full" and cfg.lora.use_rslora


def test_the_products_metrics_on_known_answers():
    from apps.price_predictor.task import TASK as PRICE
    from shared.data import Row

    rows = [Row({"en": e, "ko": k}, "t", i) for i, (e, k) in enumerate(PAIRS)]
    assert TASK.metric(rows, [f"{r['ko']}\nextra line" for r in rows]) == 100.0  # first line kept, as evaluated
    assert TASK.metric(rows, ["" for _ in rows]) == 0.0
    items = [Row({"title": "t", "description": "", "price": p}, "t", 1) for p in (10.0, 100.0)]
    assert PRICE.metric(items, ["12.00", "no idea"]) == 51.0  # (2 + 100) / 2: unparsed counts as $0
    assert (TASK.greater_is_better, PRICE.greater_is_better) == (True, False)
