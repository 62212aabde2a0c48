"""Command-line plumbing shared by the products' entry points: options, config resolution, clean errors."""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from . import runs
from .config import (ConfigError, anchor_data_paths, apply, changed_on_resume, coerce, describe_keys, load_yaml,
                     parse_overrides, resolve, validate)
from .data import DataError
from .models import one_run_process, resolve_profile
from .task import Task

# Shortcut options -> config keys (everything else: --section.field value or --set section.field=value).
SHORTCUTS = {"model": "model.name", "backend": "model.backend", "data": "data.train", "output_dir": "output.dir",
             "max_steps": "train.max_steps", "epochs": "train.epochs", "limit": "data.limit"}


class Parser(argparse.ArgumentParser):
    """argparse with a usage mistake reported like every other error: one line, exit status 2."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def train_parser(task: Task) -> argparse.ArgumentParser:
    p = Parser(
        prog=task.command("train"),
        description=f"Fine-tune the {task.name} with LoRA/QLoRA. Any config key can be set as --section.field "
                    "VALUE or --set section.field=VALUE (precedence: defaults < YAML < command line).",
        epilog="config keys: " + ", ".join(describe_keys()))
    p.add_argument("--config", help=f"YAML config (default: {task.configs_dir}/<profile>.yaml)")
    p.add_argument("--profile", choices=["auto", "cpu", "gpu"], help="hardware profile (default: auto)")
    p.add_argument("--model", help="registry name, local folder, .gguf file or hub id")
    p.add_argument("--backend", choices=["auto", "transformers", "unsloth"],
                   help="model backend (default: auto = unsloth on a CUDA GPU when installed, else transformers)")
    p.add_argument("--data", help="training data: JSONL/JSON/CSV/TSV file, several separated by commas (see "
                                  "--data.weights), or a Hugging Face dataset id")
    p.add_argument("--output-dir", help=f"run folder (default: a new folder under <runs root>/{task.name}/)")
    p.add_argument("--runs-root", help=f"where runs live (default: ${runs.RUNS_ENV}, else ./runs)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides epochs)")
    p.add_argument("--epochs", type=float, help="passes over the training data")
    p.add_argument("--limit", type=int, help="use only the first N training rows")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir (or the latest run) "
                                                         "from its last checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="train into --output-dir even though it holds a run: the old run is moved aside "
                        "(renamed), never deleted")
    return p


CHECKPOINT_HELP = ("use a checkpoint of the run instead of its final weights: a step (e.g. 1200) or 'last'; the "
                   "run may still be training (evaluate writes to eval/<name>-checkpoint-STEP/)")


def run_parser(task: Task, prog: str, doc: str, checkpoint_help: str = CHECKPOINT_HELP) -> argparse.ArgumentParser:
    """The options every command that uses a trained run shares: which run, where runs live, which weights."""
    p = Parser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="latest", help=f"run folder (default: the latest {task.name} run)")
    p.add_argument("--runs-root", help=f"where runs live, for --run latest (default: ${runs.RUNS_ENV}, else ./runs)")
    p.add_argument("--checkpoint", metavar="STEP", help=checkpoint_help)
    return p


def eval_parser(task: Task, doc: str) -> argparse.ArgumentParser:
    """The options every product's evaluate command shares."""
    p = run_parser(task, task.command("evaluate"), doc,
                   CHECKPOINT_HELP + "; 'all': every kept checkpoint, oldest first, then the final weights, with "
                                     "their scores side by side at the end (the base model is scored once)")
    p.add_argument("--data", help="test file (default: the run's data.test)")
    p.add_argument("--limit", type=int, default=0, help="score only the first N rows of the file")
    p.add_argument("--last", type=int, default=0, help="score only the last N rows of the file")
    p.add_argument("--batch-size", type=int, help="prompts per generation batch")
    p.add_argument("--no-base", action="store_true", help="skip the base model")
    p.add_argument("--full-vocab", action="store_true",
                   help="decode over the whole vocabulary even when the run was trained with train.output_vocab = "
                        "answers (as its merged or GGUF export decodes)")
    p.add_argument("--repetition-penalty", type=float, help="decoding: >1 discourages repeated tokens")
    p.add_argument("--no-repeat-ngram-size", type=int, help="decoding: forbid repeating n-grams of this size")
    p.add_argument("--loop-guard", action=argparse.BooleanOptionalAction,
                   help="decoding: end an answer that loops, keeping one copy (default: the run's generate.loop_guard)")
    return p


def find_run(task: Task, args: argparse.Namespace) -> runs.Run:
    """The finished run of this product that --run / --runs-root name, or its --checkpoint."""
    return runs.find_run(args.run, task.name, args.runs_root, train_command=task.command("train"),
                         checkpoint=args.checkpoint)


def check_counts(args: argparse.Namespace) -> None:
    """--limit / --last / --batch-size are counts: a negative one would silently count from the end."""
    for name in ("limit", "last", "batch_size", "max_new_tokens", "beams"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")
    if getattr(args, "limit", 0) and getattr(args, "last", 0):
        raise ConfigError("--limit and --last cannot be combined: pick the first N or the last N rows")


def decoding_overrides(args: argparse.Namespace) -> dict:
    """Generation settings given on an evaluate command line (unset ones keep the run's config)."""
    keys = ("batch_size", "repetition_penalty", "no_repeat_ngram_size", "max_new_tokens", "num_beams",
            "loop_guard", "first_line", "beam_pick")
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    for key, value in out.items():  # the ranges of the generate.* settings, checked before the model loads
        try:
            coerce(f"generate.{key}", value)
        except ConfigError as e:
            flag = "--beams" if key == "num_beams" else f"--{key.replace('_', '-')}"
            raise ConfigError(f"{flag} {value}: {str(e).split('; ', 1)[-1]}") from None
    return out


def _folder(path: str) -> Path:
    """An --output-dir as an absolute path: ~ as the shell makes it, '.' and '..' resolved (moving the old run
    aside renames the folder by its name, which '.' does not have); links are kept."""
    return Path(os.path.abspath(Path(path).expanduser()))


def build_config(task: Task, args: argparse.Namespace, rest: list[str]):
    """Return (cfg, run_dir, profile_reason) for a new or resumed run."""
    cli = parse_overrides(rest)
    for name, key in SHORTCUTS.items():
        value = getattr(args, name)
        if value is not None:
            cli[key] = value
    if args.resume:
        root = runs.runs_root(cli.get("output.runs_root"))
        folder = cli.get("output.dir")
        run_dir = _folder(folder) if folder else runs.latest_run(root, task.name)
        if run_dir is None:
            raise ConfigError(f"--resume: no latest {task.name} run under {root}; pass --output-dir DIR of an "
                              "earlier run")
        if not (run_dir / "run.json").exists():
            raise ConfigError(f"--resume: no run to resume in {run_dir} (no run.json); drop --resume to start a "
                              "new run there")
        given = [flag for flag, value in (("--config", args.config), ("--profile", args.profile)) if value]
        if given:
            raise ConfigError(f"--resume continues {run_dir} with its own config.yaml, so {' and '.join(given)} "
                              "cannot apply. Change single settings as --section.field VALUE (e.g. "
                              "--train.max_steps 400), or train a new run with --output-dir NEW_DIR")
        run = runs.Run.load(run_dir).require(task.name, finished=False)
        cfg = validate(anchor_data_paths(apply(run.config(), cli)))  # the run's own config, then your changes
        changed = changed_on_resume(run.config(), cfg)
        if changed:
            raise ConfigError(f"--resume: {'; '.join(changed)}. The checkpoints in {run_dir} were trained with "
                              "the old value, so the run cannot go on with the new one. Drop the option to "
                              "resume, or train a new run with --output-dir NEW_DIR")
        return cfg, run_dir, run.record.profile_reason or "resumed"
    if "data.train" in cli and "data.valid" not in cli:  # --data X, --data.train X or --set data.train=X
        cli["data.valid"] = ""  # new training data: hold out a split of it, not the shipped validation file
    yaml_flat = load_yaml(args.config) if args.config else {}
    requested = args.profile or cli.get("profile") or yaml_flat.get("profile") or "auto"
    profile, reason = resolve_profile(requested)
    yaml_path = args.config or task.config_path(profile)
    cfg = resolve(yaml_path=yaml_path, cli=cli)
    cfg.profile = profile
    anchor_data_paths(cfg)
    cfg.output.runs_root = str(runs.runs_root(cfg.output.runs_root))  # recorded as resolved
    cfg.output.dir = str(_folder(cfg.output.dir)) if cfg.output.dir else ""
    run_dir = Path(cfg.output.dir) if cfg.output.dir else runs.new_run_dir(cfg.output.runs_root, task.name,
                                                                           cfg.model.name)
    return cfg, run_dir, reason


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception, so a command stops the way Ctrl-C stops it (exit status 143)."""
    exit_code = 143


def raise_terminated(signum, frame):
    raise Terminated()


def run_cli(main, own_process: bool = False) -> None:
    """Run an entry point; user errors print one clear line and exit 2 instead of a traceback. Ctrl-C exits
    130 and SIGTERM 143, after whatever was being written is finished or rolled back by the code that wrote it.
    own_process: the command was started from the shell (its argv is None), not called in-process
    (models.one_run_process)."""
    if own_process:
        one_run_process()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        main()
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        code = getattr(e, "exit_code", 130)
        print(f"stopped ({'SIGTERM' if code == 143 else 'Ctrl-C'})", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # A generation thread (streaming) may still be inside torch: a normal interpreter exit would wait for it
        # or abort; the run folder and outputs were already left consistent by the code that was interrupted.
        os._exit(code)
    except OSError as e:  # disk full, permission denied, ... mid-run: what and where, not a traceback
        if os.environ.get("FT_DEBUG"):
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where} (set FT_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)
    finally:
        if previous is not None:  # entry points called in-process (tests, notebooks) leave the handler as found
            signal.signal(signal.SIGTERM, previous)


def train_main(task: Task, argv: list[str] | None = None, after=None) -> None:
    """A product's train command. after: optional fn(run folder), the product's own last step on the finished
    run (on the main process only), e.g. fitting a head on the trained weights."""
    from .log import log
    from .train import train

    def main():
        args, rest = train_parser(task).parse_known_args(argv)
        if args.runs_root is not None:
            rest = [*rest, "--output.runs_root", args.runs_root]
        cfg, run_dir, reason = build_config(task, args, rest)
        log(f"profile: {cfg.profile} ({reason})")
        out = train(task, cfg, run_dir, reason, resume=args.resume, overwrite=args.overwrite)
        if runs.is_main_process():  # once, not once per process under accelerate launch
            if after is not None:
                after(out)
            print(f"\nDone. Run folder: {out}\n"
                  f"Evaluate it:  {task.command('evaluate')} --run {shlex.quote(str(out))}")

    run_cli(main, own_process=argv is None)
