"""shared/export.py: the merged model loads with plain transformers and gives the same greedy outputs as base +
adapter; runs trained on a 4-bit base are merged into an unquantized base; GGUF and hub push only where
their tools and credentials exist, with one-line errors otherwise."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared import export, models, runs
from shared.config import GenerateSettings, resolve

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["<|im_start|>user\nTranslate: Hello.<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|>user\nThe store opens at nine.<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|>user\nWhere?<|im_end|>\n<|im_start|>assistant\n"]


def make_run(tiny_model_dir: Path, folder: Path, **model_cfg) -> Path:
    """A finished run folder as train() leaves it, with an adapter whose weights are far from zero (a freshly
    initialized LoRA adapter is a no-op, so "merged == base + adapter" would prove nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = resolve(cli={"model.name": str(tiny_model_dir), "model.chat_template": "chatml",
                       "model.dtype": "float32", "lora.r": 4, "lora.target_modules": ["q_proj", "v_proj", "down_proj"],
                       **{f"model.{k}": v for k, v in model_cfg.items()}})
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.mul_(3.0)  # a strong adapter: greedy outputs of base and fine-tuned differ
    folder.mkdir(parents=True)
    peft.save_pretrained(folder / "adapter")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder / "adapter")
    runs.Run.create(folder, "translator", cfg.to_dict(), {}, status="completed").save()
    return folder


def reference(tiny_model_dir: Path, run: Path):
    """base + adapter built with plain transformers + PEFT (independent of the project's loading code)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(run / "adapter")).eval()


def greedy(model, tokenizer, fmt) -> list[str]:
    from shared.generate import generate

    return generate(model, tokenizer, fmt, PROMPTS, GenerateSettings(max_new_tokens=12, batch_size=4))


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(PROMPTS[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = make_run(tiny_model_dir, root / "run")
    export.main(["--run", str(run), "--merged", str(root / "merged")])
    return run, root / "merged"


def test_merged_model_equals_base_plus_adapter(exported, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, out = exported
    assert (out / "model.safetensors").is_file() and not list(out.glob("*adapter*"))
    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, nothing from this project
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    info = json.loads((out / "export.json").read_text())
    assert info["chat_format"] == "chatml" and info["merged_dtype"] == "float32"

    ref = reference(tiny_model_dir, run)
    fmt = models.get_format("chatml")
    assert torch.allclose(logits(merged, tokenizer), logits(ref, tokenizer), atol=1e-4)
    with ref.disable_adapter():  # the adapter really changes the model, so the equality above means something
        assert (logits(ref, tokenizer) - logits(merged, tokenizer)).abs().max() > 0.05
        base_out = greedy(ref, tokenizer, fmt)
    merged_out = greedy(merged, tokenizer, fmt)
    assert merged_out == greedy(ref, tokenizer, fmt)
    assert merged_out != base_out

    # and through the project's own loading: the merged folder is a model like any other (--model OUT)
    from shared.config import ModelConfig
    model, tok, fmt2 = models.load(ModelConfig(name=str(out), chat_template="chatml", dtype="float32"), training=False)
    assert greedy(model, tok, fmt2) == merged_out
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eot in merged.generation_config.eos_token_id  # plain generate() stops on the end-of-turn token


def test_a_4bit_run_is_merged_into_an_unquantized_base(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = make_run(tiny_model_dir, tmp_path / "run", quantization="4bit")
    export.main(["--run", str(run), "--merged", str(tmp_path / "merged"), "--dtype", "float32"])
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
    info = json.loads((tmp_path / "merged" / "export.json").read_text())
    assert info["trained_quantization"] == "4bit" and info["merged_dtype"] == "float32"
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert torch.allclose(logits(merged, tokenizer), logits(reference(tiny_model_dir, run), tokenizer), atol=1e-4)


def _exit_message(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        export.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_gguf_with_a_converter(exported, tmp_path, monkeypatch):
    """The converter is llama.cpp's script; here a stand-in records how it is called and writes the file."""
    run, _ = exported
    fake = tmp_path / "convert_hf_to_gguf.py"
    fake.write_text("import json, sys\nopen(sys.argv[sys.argv.index('--outfile') + 1], 'w').write('GGUF')\n"
                    f"json.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\n")
    monkeypatch.setenv("FT_GGUF_CONVERTER", str(fake))
    export.main(["--run", str(run), "--merged", str(tmp_path / "m"), "--gguf", str(tmp_path / "out" / "x.gguf"),
                 "--gguf-type", "f32"])
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == [str(tmp_path / "m"), "--outfile", str(tmp_path / "out" / "x.gguf"), "--outtype", "f32"]
    assert (tmp_path / "out" / "x.gguf").read_text() == "GGUF" and (tmp_path / "m" / "config.json").is_file()


def test_push_needs_credentials(exported, tmp_path, monkeypatch, capsys):
    run, _ = exported
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no cached token there
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(export, "hub_token", lambda: None)  # belt and braces: the client caches its paths
    err = _exit_message(capsys, ["--run", str(run), "--merged", str(tmp_path / "m"), "--push-to-hub", "me/model"])
    assert "no Hugging Face token" in err and "HF_TOKEN" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE" in _exit_message(capsys, ["--run", str(run), "--merged", str(tmp_path / "m"),
                                                      "--push-to-hub", "me/model"])
    assert not (tmp_path / "m").exists()


def test_refusals(exported, tmp_path, capsys):
    run, out = exported
    assert "holds an earlier export; pass --overwrite" in _exit_message(capsys, ["--run", str(run), "--merged", str(out)])
    assert "not a run folder" in _exit_message(capsys, ["--run", str(tmp_path), "--merged", str(tmp_path / "m")])
    half = tmp_path / "half"
    half.mkdir()
    runs.Run.create(half, "translator", {}, {}, status="interrupted").save()
    assert "no finished adapter" in _exit_message(capsys, ["--run", str(half), "--merged", str(tmp_path / "m")])


def test_command_line_error_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "shared.export", "--run", str(tmp_path / "none"),
                           "--merged", str(tmp_path / "m")], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: run folder {tmp_path / 'none'} does not exist"]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_never_deletes_runs_or_a_users_folder(exported, tmp_path, capsys):
    """--merged --overwrite where the folder holds the run (the runs folder itself, or its parent), or is a
    folder of the user's own files: refused, and every file is byte-identical afterwards."""
    run, _ = exported
    holder = run.parent
    before = _snapshot(holder)
    for target in (holder, holder.parent, run):
        message = _exit_message(capsys, ["--run", str(run), "--merged", str(target), "--overwrite"])
        assert "run folder" in message
    own = tmp_path / "my-notes"
    own.mkdir()
    (own / "thesis.txt").write_text("three years of work")
    assert "holds no earlier export" in _exit_message(capsys, ["--run", str(run), "--merged", str(own),
                                                               "--overwrite"])
    assert (own / "thesis.txt").read_text() == "three years of work"
    assert _snapshot(holder) == before


def test_odd_targets_are_refused_before_the_merge(exported, tiny_model_dir, tmp_path, capsys, monkeypatch):
    """The run's own base folder as --merged (an export there would sit the adapter on weights that already hold
    it), `--merged .`, a --merged or --gguf under a file, a --gguf that is a folder: one line, nothing written."""
    import shutil

    run, _ = exported
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "export.json").write_text("{}")  # as if it were itself an earlier export
    on_base = make_run(base, tmp_path / "on-base")
    before = _snapshot(base)
    capsys.readouterr()
    message = _exit_message(capsys, ["--run", str(on_base), "--merged", str(base), "--overwrite"])
    assert "the run's base model" in message
    assert _snapshot(base) == before
    monkeypatch.chdir(run)  # a non-empty folder that is the run itself
    assert "--merged" in _exit_message(capsys, ["--run", str(run), "--merged", "."])
    (tmp_path / "afile").write_text("mine")
    assert "is a file, not a folder" in _exit_message(
        capsys, ["--run", str(run), "--merged", str(tmp_path / "afile" / "m")])
    assert "is a file, not a folder" in _exit_message(
        capsys, ["--run", str(run), "--merged", str(tmp_path / "m"), "--gguf", str(tmp_path / "afile" / "x.gguf")])
    (tmp_path / "d.gguf").mkdir()
    assert "is a folder" in _exit_message(
        capsys, ["--run", str(run), "--merged", str(tmp_path / "m"), "--gguf", str(tmp_path / "d.gguf"), "--overwrite"])
    (base / "model.gguf").write_text("the base's weights")  # a base given as a .gguf file in that folder
    assert "is the run's base model" in _exit_message(
        capsys, ["--run", str(on_base), "--merged", str(tmp_path / "m"), "--gguf", str(base / "model.gguf"),
                 "--overwrite"])
    (on_base / "notes.gguf").write_text("a file of the run")
    assert "is a file of the run" in _exit_message(
        capsys, ["--run", str(on_base), "--merged", str(tmp_path / "m"), "--gguf", str(on_base / "notes.gguf"),
                 "--overwrite"])
    assert (base / "model.gguf").read_text() == "the base's weights"
    assert not (tmp_path / "m").exists() and (tmp_path / "afile").read_text() == "mine"
