"""Training data by name, hub id or local file: the named datasets' field mappings applied to
local copies, the messages format, and the errors a user sees for bad or unreachable data."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from learnforget.data.loaders import (
    NAMED_DATASETS,
    load_documents,
    load_pairs,
    pair_from_messages,
    render_messages_plain,
)
from learnforget.data.types import Pair
from learnforget.errors import UserError

torch.set_num_threads(1)


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- named datasets
def test_the_named_datasets_and_their_fields() -> None:
    assert {name: (d.hub_id, d.regime) for name, d in NAMED_DATASETS.items()} == {
        "starcoder-python": ("bigcode/starcoderdata", "cpt"),
        "open-web-math": ("open-web-math/open-web-math", "cpt"),
        "magicoder-evol-instruct-110k": ("ise-uiuc/Magicoder-Evol-Instruct-110K", "ift"),
        "metamathqa": ("meta-math/MetaMathQA", "ift"),
    }
    assert NAMED_DATASETS["starcoder-python"].data_dir == "python"
    assert NAMED_DATASETS["starcoder-python"].text_field == "content"
    assert NAMED_DATASETS["metamathqa"].prompt_field == "query"


def test_local_starcoder_copy_uses_the_content_field(tmp_path: Path) -> None:
    # starcoderdata's python folder: parquet with "content" and repository metadata.
    path = tmp_path / "train-00000.parquet"
    table = {
        "max_stars_repo_path": ["a.py", "b.py", "c.py"],
        "content": ["def f():\n    return 1\n", "", "import os\n"],
        "max_stars_count": [3, 0, 10],
    }
    pq.write_table(pa.table(table), path)
    documents = load_documents("starcoder-python", local_path=path)
    assert list(documents) == ["def f():\n    return 1\n", "import os\n"]  # empty one skipped


def test_local_open_web_math_folder_of_jsonl_files(tmp_path: Path) -> None:
    folder = tmp_path / "owm"
    folder.mkdir()
    _write_jsonl(folder / "part-1.jsonl", [{"url": "u1", "text": "Let $x=1$.", "date": "d"}])
    _write_jsonl(folder / "part-0.jsonl", [{"url": "u0", "text": "Proof. Trivial.", "date": "d"}])
    assert list(load_documents("open-web-math", local_path=folder)) == [
        "Proof. Trivial.",  # files in name order
        "Let $x=1$.",
    ]


def test_local_metamathqa_json_array_uses_query_and_response(tmp_path: Path) -> None:
    # The hub file MetaMathQA-395K.json is one JSON array of these records.
    records = [
        {"type": "GSM_Rephrased", "query": "What is 2+3?", "original_question": "2+3?",
         "response": "2+3=5\nThe answer is: 5"},
        {"type": "MATH_AnsAug", "query": "What is 4*4?", "original_question": "4*4?",
         "response": "4*4=16\nThe answer is: 16"},
    ]  # fmt: skip
    path = tmp_path / "MetaMathQA-395K.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    pairs = load_pairs("metamathqa", local_path=path)
    assert pairs == [
        Pair("What is 2+3?", "2+3=5\nThe answer is: 5"),
        Pair("What is 4*4?", "4*4=16\nThe answer is: 16"),
    ]
    # The same file read as a plain path with the same fields gives the same pairs.
    assert load_pairs(str(path), prompt_field="query", response_field="response") == pairs
    assert load_pairs("metamathqa", local_path=path, limit=1) == pairs[:1]


def test_local_magicoder_copy_uses_instruction_and_response(tmp_path: Path) -> None:
    path = tmp_path / "data-evol_instruct-decontaminated.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as file:
        for i in range(3):
            file.write(json.dumps({"instruction": f"Write f{i}.", "response": f"def f{i}(): ..."}))
            file.write("\n")
    pairs = load_pairs("magicoder-evol-instruct-110k", local_path=path)
    assert pairs == [Pair(f"Write f{i}.", f"def f{i}(): ...") for i in range(3)]


def test_local_copy_missing_the_named_fields_says_which_were_found(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mm.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(UserError) as error:
        load_pairs("metamathqa", local_path=path)
    message = str(error.value)
    assert "['answer', 'question']" in message and "'query' and 'response'" in message


def test_a_dataset_used_for_the_wrong_regime_is_refused_before_any_download() -> None:
    with pytest.raises(UserError, match="instruction \\(IFT\\) pairs"):
        load_documents("metamathqa")
    with pytest.raises(UserError, match="continued-pretraining"):
        load_pairs("open-web-math")


def test_local_path_needs_a_named_dataset(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    with pytest.raises(UserError, match="not one of"):
        load_documents("someone/some-data", local_path=path)


# ---------------------------------------------------------------------------- generic files
def test_documents_from_a_plain_jsonl_file_with_limit(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "docs.jsonl", [{"text": f"doc {i}"} for i in range(5)])
    assert list(load_documents(str(path))) == [f"doc {i}" for i in range(5)]
    assert list(load_documents(str(path), limit_docs=2)) == ["doc 0", "doc 1"]
    other = _write_jsonl(tmp_path / "body.jsonl", [{"body": "b"}])
    assert list(load_documents(str(other), text_field="body")) == ["b"]


def test_pairs_from_prompt_and_response_fields(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"prompt": ["p1", "p2", "p3"], "response": ["r1", " ", "r3"]}), path)
    assert load_pairs(str(path)) == [Pair("p1", "r1"), Pair("p3", "r3")]  # blank response skipped


def test_pairs_from_messages_render_plain_without_a_chat_template(tmp_path: Path) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"},
        {"role": "user", "content": "Thanks."},  # after the last reply: dropped
    ]
    path = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": chat}])
    assert load_pairs(str(path)) == [
        Pair("System: Be brief.\nUser: 2+2?\nAssistant: 4\nUser: And 3+3?\nAssistant:", " 6")
    ]


def test_messages_use_the_tokenizers_chat_template_when_it_has_one() -> None:
    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    vocabulary = models.WordLevel({"<unk>": 0}, unk_token="<unk>")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(vocabulary), chat_template=template
    )
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert pair_from_messages(chat, tokenizer) == Pair("<|user|>2+2?\n<|assistant|>", "4")
    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(vocabulary))
    assert pair_from_messages(chat, plain) == Pair("User: 2+2?\nAssistant:", " 4")
    assert render_messages_plain([]) == "Assistant:"


def test_messages_without_an_assistant_reply_name_the_record(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    bad = {"messages": [{"role": "user", "content": "only a question"}]}
    path = _write_jsonl(tmp_path / "chat.jsonl", [good, bad])
    with pytest.raises(UserError, match="record 1: the messages hold no 'assistant' message"):
        load_pairs(str(path))


# ---------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_documents(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="not found"):
        load_pairs("metamathqa", local_path=tmp_path / "nope.json")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(UserError, match="Unsupported data file type '.csv'.*\\.parquet"):
        load_documents(str(path))


def test_folder_without_data_files_or_with_mixed_formats(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="No data files"):
        load_documents(str(tmp_path))
    _write_jsonl(tmp_path / "a.jsonl", [{"text": "a"}])
    pq.write_table(pa.table({"text": ["b"]}), tmp_path / "b.parquet")
    with pytest.raises(UserError, match="mixes JSON and parquet"):
        load_documents(str(tmp_path))


def test_missing_text_field_names_found_and_expected(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "docs.jsonl", [{"body": "x", "id": 1}])
    with pytest.raises(UserError) as error:
        load_documents(str(path))
    assert "['body', 'id']" in str(error.value) and "expected 'text'" in str(error.value)


def test_pairs_without_known_fields(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [{"input": "x", "output": "y"}])
    with pytest.raises(UserError, match="'prompt' and 'response', or 'messages'"):
        load_pairs(str(path))


def test_empty_data(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="empty"):
        load_documents(str(empty))
    blank = _write_jsonl(tmp_path / "blank.jsonl", [{"text": ""}, {"text": "  \n"}])
    with pytest.raises(UserError, match="No documents"):
        load_documents(str(blank))
    no_replies = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "response": ""}])
    with pytest.raises(UserError, match="No prompt/response pairs"):
        load_pairs(str(no_replies))


def test_malformed_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\nthis is not json\n', encoding="utf-8")
    with pytest.raises(UserError, match="Could not read"):
        list(load_documents(str(path)))


# ---------------------------------------------------------------------------- offline
_OFFLINE_SCRIPT = """
import json
from learnforget.data.loaders import load_documents, load_pairs
from learnforget.errors import UserError
messages = {}
for name, call in [
    ("metamathqa", lambda: load_pairs("metamathqa", limit=5)),
    ("starcoder-python", lambda: load_documents("starcoder-python")),
    ("hub-id", lambda: load_documents("someone/some-corpus")),
]:
    try:
        call()
        messages[name] = None
    except UserError as error:
        messages[name] = str(error)
print(json.dumps(messages))
"""


def test_hub_datasets_offline_give_a_clear_message(tmp_path: Path) -> None:
    # A fresh process: the hub libraries read HF_HUB_OFFLINE when they are imported, and an
    # empty HF_HOME makes sure no cached copy answers instead of the hub.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    messages = json.loads(done.stdout.strip().splitlines()[-1])
    metamath = messages["metamathqa"]
    assert "Could not reach the Hugging Face hub" in metamath
    assert "metamathqa (meta-math/MetaMathQA)" in metamath
    assert "HF_HUB_OFFLINE" in metamath and "'query' and 'response'" in metamath
    assert "local" in metamath
    assert "bigcode/starcoderdata" in messages["starcoder-python"]
    assert "'content'" in messages["starcoder-python"]
    assert "someone/some-corpus" in messages["hub-id"] and "local path" in messages["hub-id"]
