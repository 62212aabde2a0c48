import sacrebleu

from apps.translator.task import clean_translation, score

HYP = ["오늘은 날씨가 좋습니다.", "저는 학생입니다.", "문을 닫아 주세요."]
REF = ["오늘은 날씨가 아주 좋습니다.", "저는 학생입니다.", "문을 닫아 주십시오."]
KNOWN_BLEU, KNOWN_CHRF = 68.16, 62.93


def test_scores_match_sacrebleu_and_known_values():
    m = score(HYP, REF)
    bleu = sacrebleu.corpus_bleu(HYP, [REF], tokenize="ko-mecab")
    chrf = sacrebleu.corpus_chrf(HYP, [REF], word_order=2)
    assert m["bleu"] == round(bleu.score, 2) and m["chrf"] == round(chrf.score, 2) and m["n"] == 3
    # Pinned values (sacrebleu 2.6.0, mecab-ko): a change here means the metric setup changed.
    assert (m["bleu"], m["chrf"]) == (KNOWN_BLEU, KNOWN_CHRF)
    assert "tok:ko-mecab" in m["signature"]["bleu"] and "nw:2" in m["signature"]["chrf"]


def test_perfect_and_empty():
    assert score(REF, REF)["bleu"] == 100.0 and score(REF, REF)["chrf"] == 100.0
    assert score(["", "", ""], REF)["bleu"] == 0.0


def test_clean_translation_keeps_first_line():
    assert clean_translation("\n 안녕하세요. \nHello again") == "안녕하세요."
    assert clean_translation("   ") == ""

