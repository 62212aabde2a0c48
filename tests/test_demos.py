"""The Streamlit demos: input checks and run discovery (plain functions), the pages with Streamlit's AppTest on
tiny runs made here, and (marked slow) each demo in a real headless Chromium on loopback."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from shared import demo, runs
from shared.config import resolve
from shared.train import train

from .conftest import PAIRS, ROOT, write_jsonl

TRANSLATOR_PAGE = str(ROOT / "apps" / "translator" / "demo.py")
PRICE_PAGE = str(ROOT / "apps" / "price_predictor" / "demo.py")
ITEMS = [{"title": f"{name} {size}", "description": f"A {size} {name.lower()} with {extra}.", "category": cat,
          "price": price}
         for name, size, extra, cat, price in [
             ("Steel Kettle", "1.7 L", "auto shut-off", "Kitchen", 39.0), ("Desk Lamp", "LED", "three modes", "Home", 24.0),
             ("Hiking Boots", "size 10", "a waterproof lining", "Outdoors", 129.0),
             ("USB Cable", "2 m", "braided nylon", "Electronics", 9.0), ("Office Chair", "mesh", "lumbar support",
                                                                          "Home", 189.0),
             ("Yoga Mat", "6 mm", "a carry strap", "Sports", 29.0), ("Blender", "1000 W", "six speeds", "Kitchen", 79.0),
             ("Backpack", "30 L", "a laptop sleeve", "Outdoors", 59.0)]]


# ---------------------------------------------------------------- plain functions
def test_check_text_empty_long_and_non_english():
    assert demo.check_text("   ", "English text", 100).error == "Enter the English text."
    assert demo.check_text("", "description", 100, required=False).error is None
    long = demo.check_text("word " * 100, "English text", 50)
    assert long.error is None and len(long.text) <= 50 and long.text.endswith("word")
    assert "499 characters long; only the first 49 were used" in long.notes[0]
    korean = demo.check_text("안녕하세요 반갑습니다", "English text", 100, english_only=True)
    assert korean.error and "does not look like English" in korean.error
    note_only = demo.check_text("전기 주전자 1.7 L", "title", 100)
    assert note_only.error is None and "does not look like English" in note_only.notes[0]
    fine = demo.check_text("  The museum\nopens at nine. ", "English text", 100, english_only=True)
    assert (fine.text, fine.error, fine.notes) == ("The museum opens at nine.", None, [])


def test_finished_runs_skip_unfinished_and_put_latest_first(tmp_path):
    def make(name, finished):
        path = tmp_path / "translator" / name
        run = runs.Run.create(path, "translator", {}, {}, status="completed" if finished else "running")
        run.save()
        (path / "adapter").mkdir()
        if finished:
            (path / "adapter" / "adapter_config.json").write_text("{}")
        return run

    older, unfinished, newer = make("a-older", True), make("b-running", False), make("c-newer", True)
    broken = tmp_path / "translator" / "d-broken"
    (broken / "adapter").mkdir(parents=True)
    (broken / "adapter" / "adapter_config.json").write_text("{}")
    (broken / "run.json").write_text('{"status": "compl')  # cut short: skipped, not a traceback
    assert runs.finished_runs(tmp_path, "translator") == [newer.path, older.path]
    runs.mark_latest(older, tmp_path)
    assert runs.finished_runs(tmp_path, "translator") == [older.path, newer.path]
    assert unfinished.path not in runs.finished_runs(tmp_path, "translator")
    assert runs.finished_runs(tmp_path, "price_predictor") == []


# ---------------------------------------------------------------- tiny runs for the pages
def _tiny_run(task, model_dir, data: Path, root: Path, name: str, **settings) -> Path:
    flat = {"model.name": str(model_dir), "model.chat_template": "chatml", "model.dtype": "float32",
            "data.train": str(data), "data.valid": str(data), "data.test": str(data), "train.max_steps": 2,
            "train.batch_size": 4, "train.save_steps": 100, "train.logging_steps": 1, "train.bf16": "false",
            "lora.r": 4, "lora.target_modules": ["q_proj", "v_proj"], "generate.max_new_tokens": 12,
            "output.runs_root": str(root), **settings}
    return train(task, resolve(cli=flat), root / task.name / name, "test")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, tiny_model_dir):
    from apps.price_predictor import evaluate as price_eval
    from apps.price_predictor.task import TASK as PRICE
    from apps.translator import evaluate as translator_eval
    from apps.translator.task import TASK as TRANSLATOR

    root = tmp_path_factory.mktemp("runs")
    pairs = write_jsonl(root / "pairs.jsonl", [{"en": e, "ko": k} for e, k in PAIRS])
    items = write_jsonl(root / "items.jsonl", ITEMS)
    translator_run = _tiny_run(TRANSLATOR, tiny_model_dir, pairs, root, "tiny-translator")
    translator_eval.evaluate(str(translator_run), limit=3)
    price_run = _tiny_run(PRICE, tiny_model_dir, items, root, "tiny-price")
    price_eval.evaluate(str(price_run))
    return root


@pytest.fixture()
def in_runs(runs_root, monkeypatch):
    monkeypatch.setenv(runs.RUNS_ENV, str(runs_root))
    return runs_root


def _app(page):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(page, default_timeout=180)


def _texts(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
                     + [e.value for e in at.error] + [w.value for w in at.warning] + [c.value for c in at.code])


def _expected(loaded: demo.LoadedRun, text: str, use_base: bool) -> str:
    """What the page must show: the same greedy answer through the same code path, loaded separately
    (`demo.load(run_dir)`, once per test: the embedded model takes seconds to load)."""
    from apps.translator.task import TASK, source_row

    row = source_row(text)
    budget = min(loaded.cfg.generate.max_new_tokens, TASK.answer_budget(row, loaded.tokenizer))
    greedy = dataclasses.replace(loaded.cfg.generate, num_beams=1)  # the page's default mode
    return "".join(demo.stream_answer(loaded, TASK.inference_prompt(row, loaded.fmt), greedy,
                                      use_base, budget, first_line_only=True))


def listening_addresses(port: int) -> set[str]:
    """The IPv4/IPv6 addresses a local TCP port listens on, read from /proc/net (no tool needed)."""
    import ipaddress

    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            host, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                raw = bytes.fromhex(host)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))  # stored as host-order words
                address = ipaddress.ip_address(raw)
                found.add(str(getattr(address, "ipv4_mapped", None) or address))
    return found


@pytest.fixture()
def exposed_server():
    """Streamlit's settings as `streamlit run` has them outside the repository: every interface, statistics on."""
    from streamlit import config

    saved = {k: (config.get_option(k), config.get_where_defined(k))
             for k in ("server.address", "browser.gatherUsageStats")}
    config.set_option("server.address", None, where_defined="<default>")
    config.set_option("browser.gatherUsageStats", True, where_defined="<default>")
    yield
    for key, (value, where) in saved.items():
        config.set_option(key, value, where_defined=where)


# ---------------------------------------------------------------- pages (AppTest)
@pytest.mark.parametrize("page", [TRANSLATOR_PAGE, PRICE_PAGE])
def test_page_refuses_to_serve_on_every_interface(page, in_runs, exposed_server):
    assert demo.exposure_problem() == "listens on every network interface"
    at = _app(page).run()
    assert not at.exception and "listens on every network interface" in at.error[0].value
    assert "python -m apps." in at.error[0].value and not at.text_area and not at.text_input


def test_broken_run_is_one_line_on_the_page(in_runs, tmp_path, monkeypatch):
    """A run whose base model is gone: the page says so in one line, no traceback box."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(in_runs / "translator", root / "translator")
    run = runs.Run.load(root / "translator" / "tiny-translator")
    run.record.config["model"]["name"] = str(tmp_path / "gone")
    run.save()
    monkeypatch.setenv(runs.RUNS_ENV, str(root))
    at = _app(TRANSLATOR_PAGE).run()
    assert not at.exception
    assert "neither a model folder nor a .gguf file" in at.error[0].value


@pytest.mark.parametrize("page, product", [(TRANSLATOR_PAGE, "translator"), (PRICE_PAGE, "price_predictor")])
def test_no_run_page_gives_the_command(page, product, tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUNS_ENV, str(tmp_path))
    at = _app(page).run()
    assert not at.exception
    assert f"No finished {product.replace('_', ' ')} run" in at.warning[0].value
    assert f"python -m apps.{product}.train" in at.code[0].value


def test_translator_page_shows_base_and_finetuned_and_history(in_runs):
    at = _app(TRANSLATOR_PAGE).run()
    assert not at.exception
    assert "BLEU" in at.dataframe[0].value.columns  # the run's metrics
    at.text_area(key="english").input("Where is the station?")
    at.button[0].click().run()
    assert not at.exception
    run_dir = in_runs / "translator" / "tiny-translator"
    shown = [m.value for m in at.markdown]
    assert "**base**" in shown and "**fine-tuned**" in shown
    history = at.session_state["history"]
    assert len(history) == 1 and history[0]["English"] == "Where is the station?"
    loaded = demo.load(run_dir)
    assert history[0]["base"] == _expected(loaded, "Where is the station?", use_base=True)
    assert history[0]["fine-tuned"] == _expected(loaded, "Where is the station?", use_base=False)
    at.text_area(key="english").input("Please close the door.")
    at.button[0].click().run()
    assert len(at.session_state["history"]) == 2


def test_translator_page_beam_search_shows_what_generate_gives(in_runs):
    from apps.translator.task import TASK, source_row

    at = _app(TRANSLATOR_PAGE).run()
    at.radio[0].set_value("beam search").run()
    at.text_area(key="english").input("Where is the station?")
    at.button[0].click().run()
    assert not at.exception
    loaded = demo.load(in_runs / "translator" / "tiny-translator")
    gen = dataclasses.replace(loaded.cfg.generate, num_beams=max(2, loaded.cfg.generate.num_beams))
    row = source_row("Where is the station?")
    budget = min(gen.max_new_tokens, TASK.answer_budget(row, loaded.tokenizer))
    history = at.session_state["history"][0]
    assert history["decoding"] == "beam search"
    for side, use_base in (("fine-tuned", False), ("base", True)):
        answer = demo.generate_answer(loaded, TASK.inference_prompt(row, loaded.fmt), gen, use_base, budget)
        assert history[side] == answer.strip().split("\n")[0].strip()


@pytest.mark.parametrize("text, message", [
    ("   ", "Enter the English text."),
    ("오늘은 비가 옵니다", "does not look like English"),
])
def test_translator_page_rejects_bad_input_with_a_message(in_runs, text, message):
    at = _app(TRANSLATOR_PAGE).run()
    at.text_area(key="english").input(text)
    at.button[0].click().run()
    assert not at.exception
    assert message in at.error[0].value
    assert "history" not in at.session_state


def test_translator_page_truncates_long_input_visibly(in_runs):
    at = _app(TRANSLATOR_PAGE).run()
    at.text_area(key="english").input("The store opens at nine. " * 60)
    at.button[0].click().run()
    assert not at.exception
    assert "only the first" in at.info[0].value
    assert len(at.session_state["history"][0]["English"]) <= 600


def test_price_page_predicts_and_filters_evaluated_items(in_runs):
    at = _app(PRICE_PAGE).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["model"]) == ["constant (train mean)", "tf-idf + ridge", "base model", "fine-tuned",
                                   "fine-tuned, 8-beam median", "fine-tuned, 8-beam mean",
                                   "fine-tuned, hidden-state read-out"]
    assert "8 of 8 items" in _texts(at)
    items = at.dataframe[1].value  # the evaluated items, with the read-out's price beside the fine-tuned answer
    assert {"price", "finetuned", "readout"} <= set(items.columns) and len(items) == 8
    at.multiselect(key="categories").select("Kitchen").run()
    assert "2 of 8 items" in _texts(at)
    at.text_input(key="query").input("kettle").run()
    assert "1 of 8 items" in _texts(at)
    at.text_input(key="title").input("Steel Kettle 1.7 L")
    at.text_area(key="description").input("word " * 80)
    at.button[0].click().run()
    assert not at.exception
    assert [m.label for m in at.metric] == ["base", "fine-tuned", "read-out"]  # train fitted the read-out
    assert at.metric[2].value.startswith("$")
    assert any("first 60 words" in i.value for i in at.info)
    at.text_input(key="title").input("")
    at.button[0].click().run()
    assert "Enter the title." in at.error[0].value


def test_concurrent_sessions_do_not_mix_base_and_finetuned(in_runs):
    """Two sessions generating at once share one model; the lock keeps the adapter switch of one from leaking
    into the other."""
    run_dir = in_runs / "translator" / "tiny-translator"
    text = "It is raining today."
    loaded = demo.load(run_dir)
    expected = {True: _expected(loaded, text, True), False: _expected(loaded, text, False)}
    assert expected[True] != expected[False]
    from apps.translator.task import TASK, source_row

    prompt = TASK.inference_prompt(source_row(text), loaded.fmt)
    results: list[tuple[bool, str]] = []

    def session(use_base):
        for _ in range(3):
            results.append((use_base, "".join(demo.stream_answer(loaded, prompt, loaded.cfg.generate, use_base, 12,
                                                                 first_line_only=True))))

    threads = [threading.Thread(target=session, args=(flag,)) for flag in (True, False, True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and all(answer == expected[flag] for flag, answer in results)


def test_demos_bind_to_loopback_by_default():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"  # plain `streamlit run` from the repository root
    flags = dict(zip(demo.SAFE_FLAGS[::2], demo.SAFE_FLAGS[1::2]))  # python -m apps.<product>.demo, anywhere
    assert flags["--server.address"] == "127.0.0.1" and flags["--browser.gatherUsageStats"] == "false"


# ---------------------------------------------------------------- real browser
@pytest.fixture()
def gemma_runs(embedded_run) -> Path:
    """The runs root of the embedded Gemma 3 270M runs: unlike the tiny random model, it writes readable text,
    which the browser test can compare with what the same code path gives in this process."""
    made = embedded_run("translator", "price_predictor")
    for _, done in made:
        assert done.returncode == 0, done.stderr[-3000:]
    return made[0][0].parents[1]  # <runs root>/<product>/<run>


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.slow
@pytest.mark.parametrize("page, product", [(TRANSLATOR_PAGE, "translator"), (PRICE_PAGE, "price_predictor")])
def test_demo_in_headless_chromium(page, product, gemma_runs, monkeypatch):
    """Start the demo on loopback, type an input in Chromium, wait for both outputs, compare them with the same
    greedy answers made here, and keep a screenshot under tests/output/."""
    from apps.price_predictor.task import TASK as PRICE
    from apps.price_predictor.task import item_row, parse_price

    from .browser import chromium, new_page, streamlit_server

    monkeypatch.setenv(runs.RUNS_ENV, str(gemma_runs))
    run_dir = gemma_runs / product / "cli-run"
    shots = ROOT / "tests" / "output"
    shots.mkdir(exist_ok=True)
    with streamlit_server(page, gemma_runs) as (url, port), chromium() as browser:
        assert listening_addresses(port) == {"127.0.0.1"}  # started outside the repository: loopback all the same
        tab = new_page(browser)
        tab.goto(url)
        if product == "translator":
            text = "Thank you very much."
            tab.get_by_label("English", exact=True).fill(text)
            tab.get_by_role("button", name="Translate").click()
            tab.get_by_text("generated in").nth(1).wait_for()  # the timing caption under the second output
            columns = tab.locator("[data-testid='stColumn']")
            shown = [_words(columns.nth(i).inner_text()) for i in range(2)]
            loaded = demo.load(run_dir)
            for column, use_base, label in ((shown[0], True, "base"), (shown[1], False, "fine-tuned")):
                answer = _words(_expected(loaded, text, use_base))
                assert column.startswith(label)
                assert answer[:20] in column, (label, answer, column)
        else:
            # Three sessions at once, each with its own product: each must show its own two prices.
            loaded = demo.load(run_dir)
            titles = ["Steel Kettle 1.7 L", "Hiking Boots size 10", "USB Cable 2 m"]
            tabs = [tab] + [new_page(browser) for _ in titles[1:]]
            for other in tabs[1:]:
                other.goto(url)
            for t, title in zip(tabs, titles):
                t.get_by_label("Title", exact=True).fill(title)
                t.get_by_label("Description", exact=True).fill(f"{title}, sold new.")
            for t in tabs:
                t.get_by_role("button", name="Predict price").click()
            for t, title in zip(tabs, titles):
                metrics = t.locator("[data-testid='stMetric']")
                metrics.nth(1).wait_for()
                prompt = PRICE.inference_prompt(item_row(title, f"{title}, sold new."), loaded.fmt)
                for i, (label, use_base) in enumerate((("base", True), ("fine-tuned", False))):
                    price = parse_price(demo.generate_answer(loaded, prompt, loaded.cfg.generate, use_base, 8))
                    value = f"${price:,.2f}" if price is not None else "no price"
                    assert _words(metrics.nth(i).inner_text()) == f"{label} {value}", (title, label)
                assert "Traceback" not in t.content()
        tab.screenshot(path=str(shots / f"demo-{product}.png"), full_page=True)
        assert (shots / f"demo-{product}.png").stat().st_size > 10_000
        assert "Traceback" not in tab.content()


# ---------------------------------------------------------------- a checkpoint's weights on the pages
@pytest.fixture(scope="module")
def checkpoint_root(tmp_path_factory, tiny_model_dir):
    """Runs that kept checkpoints 1 and 2; the translator's checkpoint 1 is evaluated, no price checkpoint is."""
    from apps.price_predictor import evaluate as price_eval
    from apps.price_predictor.task import TASK as PRICE
    from apps.translator import evaluate as translator_eval
    from apps.translator.task import TASK as TRANSLATOR

    root = tmp_path_factory.mktemp("checkpoint-runs")
    pairs = write_jsonl(root / "pairs.jsonl", [{"en": e, "ko": k} for e, k in PAIRS])
    items = write_jsonl(root / "items.jsonl", ITEMS)
    kept = {"train.save_steps": 1, "train.save_total_limit": 2, "train.lr": 0.01}
    translator_run = _tiny_run(TRANSLATOR, tiny_model_dir, pairs, root, "ckpt-translator", **kept)
    translator_eval.evaluate(str(translator_run), limit=3)
    translator_eval.evaluate(str(translator_run), limit=3, checkpoint="1")
    price_eval.evaluate(str(_tiny_run(PRICE, tiny_model_dir, items, root, "ckpt-price", **kept)))
    return root


def _selectbox(at, label: str):
    return next(box for box in at.selectbox if box.label == label)


def test_weight_choices_final_then_checkpoints_newest_first(checkpoint_root, tmp_path):
    import shutil

    run = runs.Run.load(shutil.copytree(checkpoint_root / "translator" / "ckpt-translator", tmp_path / "run"))
    assert demo.weight_choices(run) == ["final", "checkpoint-2", "checkpoint-1"]
    (run.checkpoints_dir / "checkpoint-2" / "trainer_state.json").unlink()  # as if the Trainer were still writing it
    assert demo.weight_choices(runs.Run.load(run.path)) == ["final", "checkpoint-1"]
    (run.path / runs.PISSA_START).mkdir()
    assert demo.weight_choices(runs.Run.load(run.path)) == ["final"]  # a PiSSA checkpoint fits another base


def test_translator_page_uses_the_checkpoint_picked(checkpoint_root, monkeypatch):
    import torch

    monkeypatch.setenv(runs.RUNS_ENV, str(checkpoint_root))
    run_dir = checkpoint_root / "translator" / "ckpt-translator"
    at = _app(TRANSLATOR_PAGE).run()
    assert not at.exception
    assert _selectbox(at, "Evaluation").value == "test-first3"
    _selectbox(at, "Weights").set_value("checkpoint-1").run()
    assert not at.exception
    assert _selectbox(at, "Evaluation").value == "test-first3-checkpoint-1"  # the scores of the weights in use
    assert "weights `checkpoints/checkpoint-1`" in _texts(at)
    at.text_area(key="english").input("Where is the station?")
    at.button[0].click().run()
    assert not at.exception
    final, early = demo.load(run_dir), demo.load(run_dir, "checkpoint-1")
    name = next(n for n, _ in early.model.named_parameters() if "lora_B" in n)
    assert not torch.equal(dict(final.model.named_parameters())[name], dict(early.model.named_parameters())[name])
    history = at.session_state["history"][0]
    assert history["fine-tuned"] == _expected(early, "Where is the station?", use_base=False)
    assert history["base"] == _expected(early, "Where is the station?", use_base=True)


def test_price_page_checkpoint_has_no_readout_of_the_final_weights(checkpoint_root, monkeypatch):
    monkeypatch.setenv(runs.RUNS_ENV, str(checkpoint_root))
    at = _app(PRICE_PAGE).run()
    assert not at.exception
    assert _selectbox(at, "Evaluation").value == "test"
    _selectbox(at, "Weights").set_value("checkpoint-2").run()
    assert _selectbox(at, "Evaluation").value == "test"  # the only one there is, said to be of other weights
    assert "No evaluation of `checkpoints/checkpoint-2` yet" in _texts(at)
    assert "--checkpoint 2" in _texts(at)
    at.text_input(key="title").input("Steel Kettle 1.7 L")
    at.button[0].click().run()
    assert not at.exception
    assert [m.label for m in at.metric] == ["base", "fine-tuned"]  # the run's read-out was fitted on other weights


def test_a_run_trained_again_in_the_same_folder_is_not_served_from_the_cache(in_runs, checkpoint_root, tmp_path,
                                                                             monkeypatch):
    import shutil

    text = "Where is the station?"
    first, second = in_runs / "translator" / "tiny-translator", checkpoint_root / "translator" / "ckpt-translator"
    old, new = _expected(demo.load(first), text, False), _expected(demo.load(second), text, False)
    assert old != new
    root = tmp_path / "runs"
    shutil.copytree(first, root / "translator" / "mine")
    monkeypatch.setenv(runs.RUNS_ENV, str(root))
    at = _app(TRANSLATOR_PAGE).run()
    at.text_area(key="english").input(text)
    at.button[0].click().run()
    assert at.session_state["history"][0]["fine-tuned"] == old
    shutil.rmtree(root / "translator" / "mine")  # trained again under the same name (as --overwrite leaves it)
    shutil.copytree(second, root / "translator" / "mine")
    at = _app(TRANSLATOR_PAGE).run()
    at.text_area(key="english").input(text)
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["history"][0]["fine-tuned"] == new


def test_a_stopped_run_is_offered_with_its_checkpoints(checkpoint_root, tmp_path, monkeypatch):
    import json
    import shutil

    stopped = tmp_path / "runs" / "translator" / "stopped"
    shutil.copytree(checkpoint_root / "translator" / "ckpt-translator", stopped)
    shutil.rmtree(stopped / "adapter")  # as an interrupted training leaves it
    record = json.loads((stopped / "run.json").read_text())
    (stopped / "run.json").write_text(json.dumps({**record, "status": "interrupted", "evaluations": {}}))
    assert runs.finished_runs(tmp_path / "runs", "translator") == []
    assert runs.finished_runs(tmp_path / "runs", "translator", checkpoints=True) == [stopped]
    assert demo.weight_choices(runs.Run.load(stopped)) == ["checkpoint-2", "checkpoint-1"]
    monkeypatch.setenv(runs.RUNS_ENV, str(tmp_path / "runs"))
    at = _app(TRANSLATOR_PAGE).run()
    assert not at.exception
    run_box = _selectbox(at, "Run")
    assert run_box.format_func(run_box.value) == "stopped (interrupted: checkpoints)"
    # a training killed hard (SIGKILL) leaves "running" in run.json: only a held lock means it still trains
    (stopped / "run.json").write_text(json.dumps({**record, "status": "running", "evaluations": {}}))
    assert demo._state(runs.Run.load(stopped)) == "stopped"
    with runs.RunLock(stopped):
        assert demo._state(runs.Run.load(stopped)) == "running"
    assert _selectbox(at, "Weights").value == "checkpoint-2"
    assert "has not been evaluated yet" in _texts(at) and "--checkpoint 2" in _texts(at)
    at.text_area(key="english").input("Where is the station?")
    at.button[0].click().run()
    assert not at.exception
    expected = _expected(demo.load(stopped, "checkpoint-2"), "Where is the station?", use_base=False)
    assert at.session_state["history"][0]["fine-tuned"] == expected


def test_a_damaged_or_deleted_evaluation_leaves_the_page_usable(checkpoint_root, tmp_path, monkeypatch):
    """A cut-short metrics.json of the evaluation shown first is one line in the sidebar, and the model can
    still be used; an evaluation whose folder was deleted is not offered."""
    import shutil

    run = tmp_path / "runs" / "translator" / "damaged"
    shutil.copytree(checkpoint_root / "translator" / "ckpt-translator", run)
    shutil.rmtree(run / "eval" / "test-first3-checkpoint-1")
    metrics = run / "eval" / "test-first3" / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])
    monkeypatch.setenv(runs.RUNS_ENV, str(tmp_path / "runs"))
    at = _app(TRANSLATOR_PAGE).run()
    assert not at.exception
    assert [o.split()[0] for o in _selectbox(at, "Evaluation").options] == ["test-first3"]
    assert any(str(metrics) in e.value and "Evaluate again" in e.value for e in at.sidebar.error)
    at.text_area(key="english").input("Where is the station?")
    at.button[0].click().run()
    assert not at.exception
