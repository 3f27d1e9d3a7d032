"""Loading instruction records from JSON / JSONL files, folders and (refused) Hub ids."""

import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from huggingface_hub import constants

from cads_hf.text import (
    RECORD_COLUMNS,
    RECORD_FEATURES,
    load_instruction_records,
    load_instruction_sources,
    parse_source_spec,
)


def write_json(path, rows):
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines), encoding="utf-8")
    return path


def test_json_array_fills_missing_input_and_history(tmp_path):
    path = write_json(tmp_path / "a.json", [
        {"instruction": "Say hi", "output": "hi"},
        {"instruction": "Add", "input": "1 and 2", "output": "3", "extra": 7},
    ])
    ds = load_instruction_records(path)
    assert ds.column_names == list(RECORD_COLUMNS)
    assert ds.features == RECORD_FEATURES
    assert ds.to_list() == [
        {"instruction": "Say hi", "input": "", "output": "hi", "history": []},
        {"instruction": "Add", "input": "1 and 2", "output": "3", "history": []},
    ]


def test_jsonl_skips_blank_lines_and_accepts_response_key(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [
        {"instruction": "x", "input": "", "response": "from response"},
        "",
        {"instruction": "y", "output": "from output", "response": "ignored"},
    ])
    ds = load_instruction_records(str(path))
    assert ds["output"] == ["from response", "from output"]


def test_json_file_holding_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "lines.json", [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}])
    assert load_instruction_records(path)["instruction"] == ["a", "c"]


def test_history_pairs_are_kept(tmp_path):
    history = [["first question", "first answer"], ["second question", "second answer"]]
    path = write_json(tmp_path / "chat.json", [{"instruction": "q3", "input": "", "output": "a3", "history": history}])
    assert load_instruction_records(path)[0]["history"] == history


def test_self_instruct_instances_expand_to_records(tmp_path):
    path = write_jsonl(tmp_path / "seed_tasks.jsonl", [
        {"id": "t0", "instruction": "Double it.", "instances": [{"input": "1", "output": "2"}, {"input": "2", "output": "4"}]},
        {"id": "t1", "instruction": "Greet.", "instances": [{"input": "", "output": "Hello"}]},
    ])
    ds = load_instruction_records(path)
    assert ds["instruction"] == ["Double it.", "Double it.", "Greet."]
    assert ds["input"] == ["1", "2", ""]
    assert ds["output"] == ["2", "4", "Hello"]


def test_predictions_layout_maps_response_to_output(tmp_path):
    row = {"prompt": "Fix it.\n\nInput: teh\nOutput:", "instruction": "Fix it.", "input": "teh", "response": " the", "target": "the"}
    ds = load_instruction_records(write_jsonl(tmp_path / "preds.jsonl", [row]))
    assert ds[0] == {"instruction": "Fix it.", "input": "teh", "output": " the", "history": []}


def test_folder_reads_json_and_jsonl_in_sorted_order_not_recursively(tmp_path, caplog):
    write_jsonl(tmp_path / "b.jsonl", [{"instruction": "from b", "output": "1"}])
    write_json(tmp_path / "a.json", [{"instruction": "from a", "output": "1"}])
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / "sub").mkdir()
    write_json(tmp_path / "sub" / "c.json", [{"instruction": "from sub", "output": "1"}])
    assert load_instruction_records(tmp_path)["instruction"] == ["from a", "from b"]
    assert "not reading 2 entries" in caplog.text and "notes.txt" in caplog.text and "sub" in caplog.text


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", [{"instruction": "a", "output": "b"}, "", '{"instruction": "c", "output": '])
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 3: invalid JSON"):
        load_instruction_records(path)


def test_malformed_json_array_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"instruction": "a", "output": "b"},\n{"instruction": }\n]')
    with pytest.raises(ValueError, match=r"broken\.json: invalid JSON at line 3"):
        load_instruction_records(path)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"input": "", "output": "b"}, r"missing 'instruction'"),
        ({"instruction": "a", "input": ""}, r"missing 'output' \(or 'response'\)"),
        ({"instruction": "a", "output": 3}, r"'output' must be a string"),
        ({"instruction": "a", "output": "b", "history": [["only user"]]}, r"'history' must be a list"),
        ({"instruction": "a", "instances": []}, r"'instances' must be a non-empty list"),
    ],
)
def test_bad_record_in_json_array_names_file_and_index(tmp_path, row, message):
    path = write_json(tmp_path / "bad.json", [{"instruction": "fine", "output": "ok"}, row])
    with pytest.raises(ValueError, match=r"bad\.json: record 1: " + message):
        load_instruction_records(path)


def test_missing_output_in_jsonl_names_line_and_instance(tmp_path):
    path = write_jsonl(tmp_path / "tasks.jsonl", [
        {"instruction": "ok", "output": "fine"},
        {"instruction": "t", "instances": [{"input": "1", "output": "2"}, {"input": "3"}]},
    ])
    with pytest.raises(ValueError, match=r"tasks\.jsonl: line 2 instance 1: missing 'output'"):
        load_instruction_records(path)


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"), ("empty.json", "[]")])
def test_empty_file_is_an_error_naming_it(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=rf"{name}: file holds no records"):
        load_instruction_records(tmp_path / name)


def test_folder_without_data_files_is_an_error(tmp_path):
    (tmp_path / "readme.md").write_text("nothing here")
    with pytest.raises(ValueError, match="folder holds no .json or .jsonl file"):
        load_instruction_records(tmp_path)


def test_missing_local_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_instruction_records(tmp_path / "absent.json")


def test_hub_id_fails_fast_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ValueError, match="offline.*pass a local path"):
        load_instruction_records("tatsu-lab/alpaca")
    assert time.monotonic() - start < 5


def test_hub_id_fails_fast_when_hub_unreachable(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(ValueError, match="unreachable.*pass a local path"):
        load_instruction_records("tatsu-lab/alpaca")
    assert time.monotonic() - start < 5


def test_parse_source_spec():
    assert parse_source_spec("alpaca=/data/alpaca.json") == ("alpaca", "/data/alpaca.json")
    assert parse_source_spec("hub=tatsu-lab/alpaca") == ("hub", "tatsu-lab/alpaca")
    assert parse_source_spec("odd=path=with=equals.json") == ("odd", "path=with=equals.json")
    for bad in ("no_equals_sign.json", "=path.json", "name=", "bad name=x.json"):
        with pytest.raises(ValueError, match="expected NAME=PATH"):
            parse_source_spec(bad)


def test_load_instruction_sources_keeps_names_and_sizes(tmp_path):
    write_json(tmp_path / "a.json", [{"instruction": "a", "output": "1"}] * 3)
    write_jsonl(tmp_path / "b.jsonl", [{"instruction": "b", "response": "2"}] * 2)
    sources = load_instruction_sources([f"first={tmp_path / 'a.json'}", f"second={tmp_path / 'b.jsonl'}"])
    assert list(sources) == ["first", "second"]
    assert (len(sources["first"]), len(sources["second"])) == (3, 2)


def test_duplicate_source_names_are_rejected(tmp_path):
    write_json(tmp_path / "a.json", [{"instruction": "a", "output": "1"}])
    with pytest.raises(ValueError, match="source name 'same' is given twice"):
        load_instruction_sources([f"same={tmp_path / 'a.json'}", f"same={tmp_path / 'a.json'}"])
    with pytest.raises(ValueError, match="no instruction sources"):
        load_instruction_sources([])
