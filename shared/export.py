"""Export a run: merge its LoRA adapter into a 16-bit copy of the base and save a plain transformers model.

    python -m shared.export --run runs/translator/mine --merged exports/translator-merged
    python -m shared.export --run DIR --merged OUT --gguf OUT.gguf          # + OUT.Modelfile for Ollama
    python -m shared.export --run DIR --merged OUT --push-to-hub user/name  # needs a hub token
    python -m shared.export --run DIR --checkpoint 1200 --merged OUT        # a checkpoint, not the final weights

The base is loaded as the run's config says, except: never quantized (a run trained on a 4-bit base gets
its base reloaded unquantized from the same source, because merging into 4-bit weights would round the
adapter away), always with the transformers backend, and in --dtype (default: the run's weight dtype,
bf16 where the device does bf16 fast, else fp32). The adapter from DIR/adapter is applied with PEFT
(`generate.load_run`), merged with `merge_and_unload`, and the result saved as safetensors with the
tokenizer, so `AutoModelForCausalLM.from_pretrained(OUT)` loads it with nothing from this project. Its
generation config stops on the chat family's end-of-turn token; `export.json` records where it came from.

A model merged from a 4-bit run is not bit-identical to "4-bit base + adapter" (the adapter was trained
against the rounded weights); merged from an unquantized run it gives the same greedy outputs as base +
adapter (tests/test_export.py).

GGUF (--gguf, --gguf-type f16|q8_0|f32) is written from the merged folder by shared/gguf_export.py with the
`gguf` package alone (gemma3, llama/mistral, phi3, qwen2), with an Ollama Modelfile beside it; setting
$FT_GGUF_CONVERTER to llama.cpp's convert_hf_to_gguf.py uses that instead (docs/gguf.md). --push-to-hub
uploads the merged folder (a private repo unless --public) when a token exists ($HF_TOKEN, or
`hf auth login`). Errors are one line and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from . import full, gguf_export, runs
from .config import ConfigError


def parser() -> argparse.ArgumentParser:
    from .cli import CHECKPOINT_HELP, Parser

    p = Parser(prog="python -m shared.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder with a finished adapter/ (or 'latest' with --product)")
    p.add_argument("--product", help="with --run latest: the product whose latest run to export (the name of its "
                                     "folder under the runs root, e.g. translator)")
    p.add_argument("--runs-root", help="where runs live, for --run latest (default: $FT_RUNS_DIR, else ./runs)")
    p.add_argument("--checkpoint", metavar="STEP", help=CHECKPOINT_HELP)
    p.add_argument("--merged", required=True, help="output folder for the merged model (safetensors + tokenizer)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                   help="weights of the merged model (default: the run's weight dtype, never 4-/8-bit)")
    p.add_argument("--gguf", help="also write this .gguf file, and an Ollama Modelfile beside it")
    p.add_argument("--gguf-type", default="f16", choices=["f16", "q8_0", "f32"],
                   help="GGUF weight type (default f16; q8_0 is half the size, close but not identical outputs)")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the merged folder to this hub repo (user/name)")
    p.add_argument("--public", action="store_true", help="with --push-to-hub: create the repo public")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --merged if it holds an earlier export (a folder with export.json); any other "
                        "folder is never replaced")
    return p


# ---------------------------------------------------------------- pre-flight checks (before any loading)

def hub_token() -> str | None:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token
        return get_token()
    except Exception:  # noqa: BLE001 - no hub client or an unreadable token file: treated as no token
        return None


def preflight(args) -> tuple[runs.Run, list[str] | None, str | None]:
    """(run, GGUF converter command, hub token): everything that can be refused is refused here."""
    latest = args.run in ("", "latest")
    # absolute from here on: `--merged .` has no name to write beside, `~/x` is the home folder's x
    args.merged = str(Path(args.merged).expanduser().resolve())
    args.gguf = str(Path(args.gguf).expanduser().resolve()) if args.gguf else args.gguf
    if latest and not args.product:
        raise ConfigError("--run latest needs --product (the product whose latest run to export)")
    # --product picks the latest run; a run named by its folder is exported whatever its product
    run = runs.find_run(args.run, args.product if latest else None, args.runs_root, checkpoint=args.checkpoint)
    check_merged_target(Path(args.merged), run, args.overwrite, runs.runs_root(args.runs_root))
    converter = None
    if args.gguf:
        check_gguf_target(Path(args.gguf), run)
        converter = gguf_export.preflight(Path(args.gguf), (run.record.base_model or {}).get("model_type"),
                                          args.overwrite)
    token = None
    if args.push_to_hub:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
            raise ConfigError("--push-to-hub: HF_HUB_OFFLINE is set, so the hub cannot be reached; "
                              "unset it, or drop --push-to-hub")
        token = hub_token()
        if not token:
            raise ConfigError("--push-to-hub: no Hugging Face token found. Set HF_TOKEN (a write token) or run "
                              "`hf auth login`; or drop --push-to-hub")
    return run, converter, token


def _local_base(run: runs.Run) -> Path | None:
    """The run's base model where it is a local file or folder (None: a registry name or hub id)."""
    base = Path(run.config().model.name).expanduser()
    return base.resolve() if base.exists() else None


def check_gguf_target(gguf: Path, run: runs.Run) -> None:
    """--gguf (even with --overwrite) is never the run's local base model (a .gguf file, or a file in its
    folder) nor a file of the run."""
    base = _local_base(run)
    if base is not None and runs.contains(base, gguf):
        raise ConfigError(f"--gguf {gguf} is the run's base model {base}; replacing it would change what the "
                          "run's weights sit on. Pick another file name.")
    if gguf.exists() and runs.contains(run.path, gguf):
        raise ConfigError(f"--gguf {gguf} is a file of the run {run.path}; pick a file name outside the run")


def check_merged_target(out: Path, run: runs.Run, overwrite: bool, root: Path) -> None:
    """--merged may be new, empty, or (with --overwrite) an earlier export; never the run, a folder holding
    the run or the runs root, nor a folder of someone's own files."""
    runs.check_apart(out, run.path, "--merged", "the run folder")
    base = _local_base(run)
    if base is not None:  # replacing it would change what the run's adapter sits on
        runs.check_apart(out, base, "--merged", "the run's base model")
    holder = runs.existing_ancestor(out.parent)
    if not holder.is_dir():
        raise ConfigError(f"--merged {out}: {holder} is a file, not a folder")
    if root.exists() and runs.contains(out, root):
        raise ConfigError(f"--merged {out} contains the runs root {root}; replacing it would delete every run. "
                          "Pick another folder.")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--merged {out} is a file; pass a folder")
    if out.exists() and any(out.iterdir()):
        if not (out / "export.json").is_file():
            raise ConfigError(f"--merged {out} is not empty and holds no earlier export (no export.json); nothing "
                              "was touched. Pick a new or empty folder.")
        if not overwrite:
            raise ConfigError(f"--merged {out} holds an earlier export; pass --overwrite to replace it")


# ---------------------------------------------------------------- the work

def merge(run: runs.Run, out: Path, dtype: str = "auto", overwrite: bool = False) -> dict:
    """Merge the run's adapter into an unquantized base and save it to `out` (written beside, then moved
    into place). Returns what export.json records."""
    import torch

    from .generate import load_run, stop_ids

    overrides = {"quantization": "none", "backend": "transformers"}
    if dtype != "auto":
        overrides["dtype"] = dtype
    trained = run.config().model
    t0 = time.time()
    model, tokenizer, fmt, cfg = load_run(run, model_overrides=overrides, limit_vocab=False)
    merged = full.detach(model) if run.is_full else model.merge_and_unload()
    weights = {p.dtype for p in merged.parameters()}
    if not weights <= {torch.bfloat16, torch.float16, torch.float32}:
        raise ConfigError(f"the base loaded with weights {weights}, not 16-/32-bit floats; nothing was written")
    merged.generation_config.eos_token_id = stop_ids(tokenizer, fmt)  # plain generate() stops like ours
    merged.generation_config.pad_token_id = tokenizer.pad_token_id

    info = {"run": str(run.path.resolve()), "weights": run.weights_name,
            "base": cfg.model.name, "trained_quantization": trained.quantization,
            "merged_dtype": str(next(iter(weights))).replace("torch.", ""), "chat_format": fmt.family,
            "end_of_turn": fmt.end_of_turn, "method": run.record.config.get("train", {}).get("method", "lora"),
            "lora": None if run.is_full else run.record.config.get("lora"),
            "exported": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": runs.versions()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        runs.write_json(tmp / "export.json", info)
        if out.exists():
            if any(out.iterdir()) and not (overwrite and (out / "export.json").is_file()):
                raise ConfigError(f"--merged {out} changed while merging; nothing was replaced")
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["merge_s"] = round(time.time() - t0, 1)
    return info


def to_gguf(converter: list[str] | None, merged: Path, gguf: Path, out_type: str, family: str, product: str) -> dict:
    """The GGUF and its Ollama Modelfile (shared/gguf_export.py); the external converter when opted into."""
    return gguf_export.export(merged, gguf, out_type, family, product, converter)


def push(folder: Path, repo: str, token: str, public: bool) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo, private=not public, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="Merged model from domain-finetune")
    except Exception as e:  # noqa: BLE001 - network, permission and name errors alike: one line
        raise ConfigError(f"--push-to-hub {repo} failed ({e.__class__.__name__}: "
                          f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else 'no message'}); "
                          f"the merged model in {folder} is complete") from None
    return str(url)


def main(argv: list[str] | None = None) -> None:
    from .cli import run_cli
    from .log import log

    def work():
        args = parser().parse_args(argv)
        run, converter, token = preflight(args)
        out = Path(args.merged)
        info = merge(run, out, args.dtype, args.overwrite)
        log(f"merged {run.path} into {out} ({info['merged_dtype']}, base {info['base']}, trained with quantization "
            f"{info['trained_quantization']}) in {info['merge_s']} s")
        if args.gguf:
            gguf = to_gguf(converter, out, Path(args.gguf), args.gguf_type, info["chat_format"], run.record.product)
            log(f"GGUF written: {args.gguf} ({args.gguf_type}); Ollama: ollama create NAME -f {gguf['modelfile']}")
        if token:
            log(f"pushed to {push(out, args.push_to_hub, token, args.public)}")
        print(f"Merged model: {out}\nLoad it with: AutoModelForCausalLM.from_pretrained({str(out)!r}); prompts in "
              f"the {info['chat_format']} chat format, stop on {info['end_of_turn']}")

    run_cli(work, own_process=argv is None)


if __name__ == "__main__":
    main()
