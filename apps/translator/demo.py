"""English -> Korean translator demo: base and fine-tuned side by side, streamed, from one copy of the weights.

    python -m apps.translator.demo     # http://127.0.0.1:8501, loopback only, from any folder
"""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from apps.translator.task import MAX_CHARS, TASK, source_row
from shared import demo


def page():
    run, loaded = demo.start_page(TASK, "English → Korean translator", "🇰🇷")
    eval_name, metrics, examples = demo.pick_eval(run)
    run_dir = run.path

    with st.sidebar:
        st.subheader("Decoding")
        mode = st.radio("Mode", ["greedy", "sampling", "beam search"], horizontal=True,
                        help="beam search is how `evaluate` decodes with the cpu profile: several beams, keeping "
                             "the one the others agree with most (chrF++); it shows the answer once complete")
        sample, beams = mode == "sampling", mode == "beam search"
        width = st.slider("Beams", 2, 8, max(2, int(loaded.cfg.generate.num_beams)), disabled=not beams)
        temperature = st.slider("Temperature", 0.1, 1.5, 0.7, 0.05, disabled=not sample)
        top_p = st.slider("Top-p", 0.1, 1.0, 0.9, 0.05, disabled=not sample)
        top_k = st.slider("Top-k", 1, 100, 50, disabled=not sample)
        seed = st.number_input("Seed", 0, 2**31 - 1, 0, disabled=not sample,
                               help="the same seed for base and fine-tuned, so a sampled comparison is repeatable")
        max_new_tokens = st.slider("Max new tokens", 8, 256, int(loaded.cfg.generate.max_new_tokens), 8)
        st.caption(f"model `{loaded.cfg.model.name}` · run `{run_dir.name}` · weights `{run.weights_name}`")

    gen = demo.decoding(loaded.cfg.generate, sample, temperature, top_p, top_k, max_new_tokens,
                        num_beams=width if beams else 1)

    with st.form("translate"):
        text = st.text_area("English", placeholder="The museum opens at nine on weekdays.", height=100,
                            max_chars=None, key="english")
        submitted = st.form_submit_button("Translate", type="primary")

    if submitted:
        checked = demo.check_text(text, "English text", MAX_CHARS, english_only=True)
        if checked.error:
            st.error(checked.error)
        else:
            for note in checked.notes:
                st.info(note)
            row = source_row(checked.text)
            prompt = TASK.inference_prompt(row, loaded.fmt)
            budget = min(max_new_tokens, TASK.answer_budget(row, loaded.tokenizer))
            left, right = st.columns(2)
            outputs = {}
            for column, name, use_base in ((left, "base", True), (right, "fine-tuned", False)):
                with column:
                    st.markdown(f"**{name}**")
                    start = time.perf_counter()
                    outputs[name] = st.write_stream(demo.stream_answer(
                        loaded, prompt, gen, use_base, budget, seed=int(seed) if sample else None,
                        first_line_only=True)) or ""
                    st.caption(f"generated in {time.perf_counter() - start:.1f} s")
            st.session_state.setdefault("history", []).insert(
                0, {"English": checked.text, "base": outputs["base"], "fine-tuned": outputs["fine-tuned"],
                    "decoding": mode})

    history = st.session_state.get("history", [])
    if history:
        st.subheader("This session")
        st.dataframe(pd.DataFrame(history), hide_index=True, width="stretch")

    st.subheader("Run metrics")
    if metrics:
        rows = [{"model": name, "BLEU": metrics[key]["bleu"], "chrF++": metrics[key]["chrf"], "n": metrics[key]["n"]}
                for key, name in (("base", "base"), ("finetuned", "fine-tuned")) if key in metrics]
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        signature = metrics["finetuned"].get("signature", {})
        st.caption(f"{metrics.get('data', '')} · BLEU {signature.get('bleu', '')}")
        if examples:
            st.subheader("Test examples")
            shown = pd.DataFrame(examples[:8])[["source", "reference", "base", "finetuned"]]
            st.dataframe(shown.dropna(axis=1, how="all"), hide_index=True, width="stretch")  # no base: --no-base
    else:
        st.info("This run has not been evaluated yet:")
        st.code(demo.evaluate_command(run), language="bash")


if __name__ == "__main__" and not demo.in_streamlit():
    demo.launch(__file__)  # python -m ... : streamlit run with the safe settings
else:
    demo.serve(page)
