import pytest

from shared.chat import FORMATS, detect_family, get_format, render, split_for_training

MSGS = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "안녕"}]

EXPECTED_TRAIN = {
    "phi3": "<s><|system|>\nSYS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n안녕<|end|>",
    "llama3": ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n안녕<|eot_id|>"),
    "gemma": "<bos><start_of_turn>user\nSYS\n\nHi<end_of_turn>\n<start_of_turn>model\n안녕<end_of_turn>",
    "chatml": "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n안녕<|im_end|>",
}
EXPECTED_PROMPT_END = {"phi3": "<|end|>\n<|assistant|>\n", "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
                       "gemma": "<end_of_turn>\n<start_of_turn>model\n", "chatml": "<|im_end|>\n<|im_start|>assistant\n"}


@pytest.mark.parametrize("family", FORMATS)
def test_training_render(family):
    fmt = get_format(family)
    text = render(MSGS, fmt, add_generation_prompt=False)
    assert text == EXPECTED_TRAIN[family]
    assert text.endswith(fmt.end_of_turn)


@pytest.mark.parametrize("family", FORMATS)
def test_inference_render_and_split(family):
    fmt = get_format(family)
    prompt = render(MSGS[:-1], fmt, add_generation_prompt=True)
    assert prompt.endswith(EXPECTED_PROMPT_END[family])
    p, c = split_for_training(MSGS, fmt)
    assert p == prompt and c == "안녕" + fmt.end_of_turn
    assert p + c == render(MSGS, fmt, add_generation_prompt=False)


def test_gemma_folds_system_into_first_user_turn():
    text = render(MSGS, get_format("gemma"), add_generation_prompt=False)
    assert "system" not in text and text.count("<start_of_turn>user") == 1


def test_bad_messages():
    fmt = get_format("chatml")
    with pytest.raises(ValueError, match="unknown role"):
        render([{"role": "bot", "content": "x"}], fmt, add_generation_prompt=True)
    with pytest.raises(ValueError, match="end with an assistant"):
        render(MSGS[:-1], fmt, add_generation_prompt=False)
    with pytest.raises(ValueError, match="unknown chat template"):
        get_format("vicuna")


def test_detect_family_from_vocabulary():
    class Tok:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    assert detect_family(Tok({"<|eot_id|>": 1})) == "llama3"
    assert detect_family(Tok({"<end_of_turn>": 1})) == "gemma"
    assert detect_family(Tok({"<|end|>": 1})) == "phi3"
    assert detect_family(Tok({"hello": 1})) is None
