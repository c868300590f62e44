"""Stage kto raises the log-probability of desirable replies and lowers that of undesirable ones."""

from __future__ import annotations

from tests.unit.pref_data import CHOSEN, REJECTED, config, kto_dataset, logged, prompt_ids, sequence_logps


def _mean_logp(model, tokenizer, reply: str) -> float:
    ids = tokenizer.encode(reply, add_special_tokens=False)
    questions = ["Where is Paris?", "Say something nice."]  # unseen prompts: the preference generalises
    return sum(sequence_logps(model, prompt_ids(tokenizer, q), ids) for q in questions) / len(questions)


def test_kto_learns_desirable_replies(tiny_chatml_model, tmp_path):
    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.kto import kto_trainer

    cfg = config(tiny_chatml_model, tmp_path / "out", stage="kto", kto_chosen_weight=1.0, kto_rejected_weight=1.0)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    good_before, bad_before = _mean_logp(model, tokenizer, CHOSEN), _mean_logp(model, tokenizer, REJECTED)
    data = kto_dataset(tokenizer)
    trainer = kto_trainer(cfg, model, tokenizer, data)
    assert trainer.args.desirable_weight == 1.0 and trainer.args.beta == cfg.finetuning.pref_beta
    assert "KL_completion_ids" in trainer.train_dataset.column_names
    assert list(trainer.model.peft_config) == ["default"] and trainer.ref_model is None
    trainer.train()
    good_after, bad_after = _mean_logp(model, tokenizer, CHOSEN), _mean_logp(model, tokenizer, REJECTED)
    assert good_after > good_before + 1.0, (good_before, good_after)
    assert good_after - bad_after > good_before - bad_before + 1.0
    assert logged(trainer, "rewards/chosen") and logged(trainer, "kl")


def test_kl_completions_rotate_within_a_batch():
    from datasets import Dataset

    from tunery.train.kto import with_kl_completions

    data = Dataset.from_dict({"prompt_ids": [[1]] * 4, "completion_ids": [[10], [11], [12], [13]],
                              "label": [True, False, True, False]})
    out = with_kl_completions(data, batch_size=2)
    assert out["KL_completion_ids"] == [[11], [10], [13], [12]]
