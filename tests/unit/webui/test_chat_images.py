"""The web UI's chat tab takes an uploaded image and sends it with the next message."""

from __future__ import annotations

import pytest
from PIL import Image

from tunery.webui.chat_session import ChatSession, to_messages


def test_uploaded_image_goes_with_the_next_user_text():
    history = [{"role": "user", "content": {"path": "/tmp/a.png"}},
               {"role": "user", "content": "What is this?"},
               {"role": "assistant", "content": "A cat."},
               {"role": "user", "content": [{"type": "file", "file": {"path": "/tmp/b.png"}},
                                            {"type": "text", "text": "And this?"}]}]
    assert to_messages(history) == [
        {"role": "user", "content": "What is this?", "images": ["/tmp/a.png"]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "And this?", "images": ["/tmp/b.png"]},
    ]
    assert to_messages([{"role": "user", "content": "hi"}]) == [{"role": "user", "content": "hi"}]


def test_chat_session_streams_a_reply_about_an_image(tiny_llava, tmp_path):
    path = tmp_path / "green.png"
    Image.new("RGB", (32, 32), (0, 200, 0)).save(path)
    session = ChatSession()
    session.load({"model_name_or_path": str(tiny_llava), "max_new_tokens": 4, "do_sample": False})
    history = [{"role": "user", "content": {"path": str(path)}}, {"role": "user", "content": "What is this?"}]
    replies = list(session.stream(history, None, max_new_tokens=4, do_sample=False))
    expected = session.engine.chat([{"role": "user", "content": "What is this?", "images": [str(path)]}],
                                   max_new_tokens=4, do_sample=False)[0].text
    assert replies and replies[-1] == expected


def test_chat_tab_has_an_image_upload():
    pytest.importorskip("gradio")
    from tunery.webui.app import build_app

    blocks = {getattr(b, "elem_id", None): b for b in build_app("en").blocks.values()}
    assert type(blocks["chat_image"]).__name__ == "Image" and blocks["chat_image"].type == "filepath"
