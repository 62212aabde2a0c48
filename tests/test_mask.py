"""The loss mask covers exactly the assistant's answer plus the end-of-turn token, nothing else."""
import pytest
import torch

from apps.translator.task import TASK
from shared.chat import get_format
from shared.config import RunConfig
from shared.data import DataReport, Row
from shared.train import build_dataset, prefix_is_stable, sft_config, tokenize_pair

ROW = Row({"en": "Where is the station?", "ko": "역은 어디에 있습니까?"}, "x", 1)


def _labels_from_trainer(model, tokenizer, dataset, tmp_path):
    """Labels exactly as TRL builds them for training (dataset preparation + collator)."""
    from trl import SFTTrainer

    from shared.train import lora_config

    cfg = RunConfig()
    cfg.train.batch_size = 2
    cfg.train.group_by_length = False
    trainer = SFTTrainer(model=model, args=sft_config(cfg, tmp_path, has_eval=False), train_dataset=dataset,
                         processing_class=tokenizer, peft_config=lora_config(cfg, model))
    return next(iter(trainer.get_train_dataloader()))


def _check_mask(tokenizer, fmt, batch_row_ids, labels):
    prompt, completion = TASK.prompt_completion(ROW, fmt)
    ids, _ = tokenize_pair(tokenizer, prompt, completion)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    answer = labels[labels != -100].tolist()
    assert answer == ids[n_prompt:]  # exactly the answer tokens...
    assert answer[-1] == tokenizer.convert_tokens_to_ids(fmt.end_of_turn)  # ...ending with end-of-turn
    assert tokenizer.decode(answer) == "역은 어디에 있습니까?" + fmt.end_of_turn
    assert (labels[:n_prompt] == -100).all()


def test_mask_on_tiny_model(tiny_model_cfg, tmp_path):
    from shared.models import load

    model, tokenizer, fmt = load(tiny_model_cfg)
    assert tokenizer.pad_token_id != tokenizer.convert_tokens_to_ids(fmt.end_of_turn)
    ds = build_dataset([ROW, ROW], TASK, tokenizer, fmt, 256, DataReport())
    batch = _labels_from_trainer(model, tokenizer, ds, tmp_path)
    for i in range(2):
        _check_mask(tokenizer, fmt, batch["input_ids"][i], batch["labels"][i])


def test_pad_equal_to_eos_is_replaced(tiny_model_dir, tmp_path):
    """pad == end-of-turn would mask the stop token out of the labels in many pipelines."""
    from shared.config import ModelConfig
    from shared.models import load_tokenizer

    from .conftest import make_tokenizer

    tok = make_tokenizer()
    tok.pad_token = "<|im_end|>"
    tok.save_pretrained(tmp_path)
    fixed, fmt = load_tokenizer(str(tmp_path), ModelConfig(name=str(tmp_path), chat_template="chatml"))
    assert fixed.pad_token_id != fixed.convert_tokens_to_ids("<|im_end|>")


def test_marker_missing_means_no_loss_tokens_is_refused(tiny_model_cfg):
    """An empty answer still trains on the end-of-turn token: never an all -100 row (loss 0)."""
    from shared.models import load

    _, tokenizer, fmt = load(tiny_model_cfg)
    empty = Row({"en": "Hi", "ko": ""}, "x", 1)
    ds = build_dataset([empty], TASK, tokenizer, fmt, 256, DataReport())
    assert sum(ds[0]["completion_mask"]) >= 1


@pytest.mark.slow
def test_mask_on_real_gemma_tokenizer(gemma_tokenizer):
    fmt = get_format("gemma")
    prompt, completion = TASK.prompt_completion(ROW, fmt)
    ids, mask = tokenize_pair(gemma_tokenizer, prompt, completion)
    answer = [t for t, m in zip(ids, mask) if m]
    assert gemma_tokenizer.decode(answer) == "역은 어디에 있습니까?<end_of_turn>"
    assert answer[-1] == gemma_tokenizer.convert_tokens_to_ids("<end_of_turn>") == 106
    assert ids[0] == gemma_tokenizer.bos_token_id and ids.count(gemma_tokenizer.bos_token_id) == 1
    assert prefix_is_stable(gemma_tokenizer, prompt, completion)
    assert gemma_tokenizer.pad_token_id not in answer


@pytest.mark.slow
def test_labels_in_a_real_gemma_training_batch(gemma_dir, tmp_path):
    """The mask TRL actually builds, on the embedded model (tiny random weights of the same architecture)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    config = AutoConfig.from_pretrained(gemma_dir)
    config.update(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=16, layer_types=["sliding_attention", "full_attention"]))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fmt = get_format("gemma")
    ds = build_dataset([ROW, ROW], TASK, tokenizer, fmt, 256, DataReport())
    batch = _labels_from_trainer(model, tokenizer, ds, tmp_path)
    _check_mask(tokenizer, fmt, batch["input_ids"][0], batch["labels"][0])
