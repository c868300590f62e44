"""`tunery chat`: one-shot --query, the interactive loop (history, clear, exit), --system, clear errors."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from tests.unit.scripted_model import script_model
from tunery.cli.chat import ChatSession, interactive, pop_options
from tunery.cli.main import main as tunery_main
from tunery.config import parse_config
from tunery.inference import load_engine


@pytest.fixture(scope="module")
def paris_model(tiny_chatml_model, tmp_path_factory):
    """A saved model folder that answers ' Paris is' then <|im_end|> (and would say ' sky' after it)."""
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(tiny_chatml_model)}))
    tok = engine.tokenizer
    last = engine.prompt_ids([{"role": "user", "content": "x"}])[-1]
    chain = [last, *tok.encode(" Paris is"), tok.convert_tokens_to_ids("<|im_end|>"), tok.encode(" sky")[0]]
    script_model(engine.model, chain)
    path = tmp_path_factory.mktemp("paris-model")
    engine.model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_query_answers_once_and_stops_at_end_of_turn(paris_model, capsys):
    rc = tunery_main(["chat", "--model_name_or_path", str(paris_model), "--do_sample", "false",
                      "--max_new_tokens", "30", "--query", "What is the capital of France?"])
    assert rc == 0
    assert capsys.readouterr().out == " Paris is\n"  # nothing after <|im_end|>


def test_interactive_history_clear_exit(paris_model):
    engine = load_engine(parse_config("chat", {"model_name_or_path": str(paris_model), "do_sample": False}))
    out = io.StringIO()
    session = ChatSession(engine, system="Be brief.", out=out)
    interactive(session, io.StringIO("Hello\nAgain\n"))  # input ends without 'exit': leaves cleanly
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert session.history[1]["content"] == " Paris is"
    prompt = engine.tokenizer.decode(engine.prompt_ids(session.history, system=session.system))
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "Hello<|im_end|>\n<|im_start|>assistant\n Paris is<|im_end|>" in prompt  # earlier turns are kept

    interactive(session, io.StringIO("clear\nOnce more\nexit\nNever read\n"))
    assert [m["content"] for m in session.history] == ["Once more", " Paris is"]
    text = out.getvalue()
    assert "History cleared." in text and text.count("Assistant:  Paris is") == 3
    assert "Never read" not in str(session.history)


def test_pop_options():
    opts, rest = pop_options(["cfg.yaml", "--query=Hi there", "--system", "Be nice", "--top_p", "0.5"])
    assert opts == {"query": "Hi there", "system": "Be nice"}
    assert rest == ["cfg.yaml", "--top_p", "0.5"]


def test_vllm_on_cpu_is_a_clear_error_not_a_traceback(tiny_chatml_model):
    proc = subprocess.run(
        [sys.executable, "-m", "tunery", "chat", "--model_name_or_path", str(tiny_chatml_model),
         "--infer_backend", "vllm", "--query", "hi"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "vllm" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_model_is_a_clear_error(capsys):
    assert tunery_main(["chat", "--query", "hi"]) == 2
    assert "model_name_or_path" in capsys.readouterr().err
