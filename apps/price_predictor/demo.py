"""Product price predictor demo: base and fine-tuned prices side by side, the run's metrics next to the
baselines, and a browser over the evaluated test items.

    python -m apps.price_predictor.demo     # http://127.0.0.1:8501, loopback only, from any folder
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.price_predictor import readout
from apps.price_predictor.report import metric_rows
from apps.price_predictor.task import (
    DESCRIPTION_WORDS,
    MAX_DESCRIPTION_CHARS,
    MAX_TITLE_CHARS,
    TASK,
    item_row,
    parse_price,
)
from shared import demo


def page():
    run, loaded = demo.start_page(TASK, "Product price predictor", "🏷️")
    eval_name, metrics, items = demo.pick_eval(run)
    run_dir = run.path
    st.sidebar.caption(f"model `{loaded.cfg.model.name}` · run `{run_dir.name}` · weights `{run.weights_name}`")

    with st.form("predict"):
        title = st.text_input("Title", placeholder="Stainless Steel Electric Kettle, 1.7 L, BPA-free", key="title")
        description = st.text_area("Description", height=120, key="description",
                                   placeholder="Boils 1.7 litres in under five minutes; auto shut-off; 2-year warranty.")
        submitted = st.form_submit_button("Predict price", type="primary")

    if submitted:
        checked_title = demo.check_text(title, "title", MAX_TITLE_CHARS)
        checked_description = demo.check_text(description, "description", MAX_DESCRIPTION_CHARS, required=False)
        if checked_title.error:
            st.error(checked_title.error)
        else:
            notes = checked_title.notes + checked_description.notes
            if len(checked_description.text.split()) > DESCRIPTION_WORDS:
                notes.append(f"Only the first {DESCRIPTION_WORDS} words of the description go into the prompt, "
                             "as in training.")
            for note in notes:
                st.info(note)
            row = item_row(checked_title.text, checked_description.text)
            prompt = TASK.inference_prompt(row, loaded.fmt)
            budget = TASK.answer_budget(row, loaded.tokenizer)
            gen = loaded.cfg.generate
            with loaded.lock:  # the adapter must stay on while the hidden state is read
                read = readout.estimate(run, loaded.model, loaded.tokenizer, loaded.fmt, [row])
            columns = st.columns(2 if read is None else 3)
            entry = {"title": checked_title.text}
            for column, name, use_base in zip(columns, ("base", "fine-tuned"), (True, False)):
                answer = demo.generate_answer(loaded, prompt, gen, use_base, budget)
                price = parse_price(answer)
                entry[name] = price
                with column:
                    st.metric(name, f"${price:,.2f}" if price is not None else "no price")
                    st.caption(f"raw answer: {answer!r}")
            if read is not None:
                entry["read-out"] = round(read[0], 2)
                with columns[2]:
                    st.metric("read-out", f"${read[0]:,.2f}")
                    st.caption("read off the fine-tuned model's hidden state (readout.py)")
            st.session_state.setdefault("history", []).insert(0, entry)

    if st.session_state.get("history"):
        with st.expander("This session", expanded=False):
            st.dataframe(pd.DataFrame(st.session_state["history"]), hide_index=True, width="stretch")

    st.subheader("Run metrics")
    if metrics:
        table = metric_rows(metrics)
        st.dataframe(pd.DataFrame([{"model": name, "MAE $": m["mae"], "RMSLE": m["rmsle"], "hit rate": m["hit_rate"],
                                    "n": m["n"], "unparsed": m["unparsed"]} for name, m in table.items()]),
                     hide_index=True, column_config={"hit rate": st.column_config.NumberColumn(format="percent")})
        st.caption(f"{metrics.get('data', '')} · hit = error under $40 or under 20% of the true price")
        scatter = run.eval_dir(eval_name) / "scatter.png"
        left, right = st.columns([2, 3])
        if scatter.is_file():
            left.image(str(scatter), caption="truth vs fine-tuned prediction")
        with right:
            st.markdown("**Evaluated items**")
            frame = pd.DataFrame(items)
            if not frame.empty:
                frame["error"] = (frame["finetuned"].fillna(0.0) - frame["price"]).abs()
                show = st.radio("Show", ["all", "hits", "misses"], horizontal=True, key="show")
                query = st.text_input("Title contains", key="query")
                categories = sorted(c for c in frame.get("category", pd.Series(dtype=str)).unique() if c)
                chosen = st.multiselect("Category", categories, key="categories") if categories else []
                low, high = float(frame["price"].min()), float(frame["price"].max())
                price_range = st.slider("True price ($)", low, max(high, low + 1), (low, max(high, low + 1)),
                                        key="price_range")
                keep = frame["price"].between(*price_range)
                if show != "all":
                    keep &= frame["finetuned_hit"] == (show == "hits")
                if query:
                    keep &= frame["title"].str.contains(query, case=False, regex=False)
                if chosen:
                    keep &= frame["category"].isin(chosen)
                columns = [c for c in ("title", "category", "price", "finetuned", "error", "finetuned_hit", "readout",
                                       "ensemble", "base")
                           if c in frame and frame[c].notna().any()]  # no base column after --no-base
                st.dataframe(frame.loc[keep, columns], hide_index=True, width="stretch",
                             column_config={"price": st.column_config.NumberColumn("truth $", format="%.2f"),
                                            "finetuned": st.column_config.NumberColumn("fine-tuned $", format="%.2f"),
                                            "error": st.column_config.NumberColumn("error $", format="%.2f"),
                                            "finetuned_hit": "hit",
                                            "readout": st.column_config.NumberColumn("read-out $", format="%.2f"),
                                            "ensemble": st.column_config.NumberColumn("ensemble $", format="%.2f"),
                                            "base": st.column_config.NumberColumn("base $", format="%.2f")})
                st.caption(f"{int(keep.sum())} of {len(frame)} items")
    else:
        st.info("This run has not been evaluated yet:")
        st.code(demo.evaluate_command(run), language="bash")


if __name__ == "__main__" and not demo.in_streamlit():
    demo.launch(__file__)  # python -m ... : streamlit run with the safe settings
else:
    demo.serve(page)
