"""Instruction sets: the shipped files pass `apt-bench splits --check`, each kind of bad file is
rejected with a message naming file, entry and problem, and the control splits behave."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from apt import cli
from apt.splits.controls import derive_control, shuffle_words
from apt.splits.instruction_set import (InstructionEntry, InstructionSet, instruction_sets_dir, load_instruction_set,
                                        normalize_instruction, training_set)
from apt.splits.resolve import load_split
from apt.splits.validate import check_instruction_set
from benchmarks.base import BenchError
from benchmarks.tabletop.tasks import all_tasks

TASKS = all_tasks()
TRAIN_IDS = {t.task_id for t in TASKS if t.train}
HELD_OUT_IDS = {t.task_id for t in TASKS if not t.train}
SHIPPED = instruction_sets_dir() / "tabletop"


def shipped_data(split: str) -> dict:
    return yaml.safe_load((SHIPPED / f"{split}.yaml").read_text())


def write(tmp_path: Path, data: dict | str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def check(files: list[Path], capsys) -> tuple[int, list[str], str]:
    rc = cli.main(["splits", "--suite", "tabletop", "--check", *map(str, files)])
    out = capsys.readouterr()
    problems = [line for line in out.out.splitlines() if ": " in line and "problem(s) in" not in line]
    return rc, problems, out.err


# --- shipped files ---------------------------------------------------------------------------


def test_shipped_files_pass_check(capsys):
    rc = cli.main(["splits", "--check"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("ok: 5 file(s)")


def test_listing_shows_every_split(capsys):
    assert cli.main(["splits", "--suite", "tabletop"]) == 0
    out = capsys.readouterr().out
    for split in ("train", "seen", "paraphrased", "unseen", "compositional", "blank", "shuffled",
                  "swapped"):
        assert f"\n{split} " in out
    assert "24 training, 8 held out" in out


def test_shipped_content_rules():
    """What the splits promise beyond the validator: sizes, coverage, vocabulary discipline."""
    sets = {s: load_split("tabletop", s, TASKS)
            for s in ("train", "seen", "paraphrased", "unseen", "compositional")}
    assert {e.task_id for e in sets["train"].entries} == TRAIN_IDS
    assert ([e.instruction for e in sets["seen"].entries]
            == [e.instruction for e in sets["train"].entries])
    for split in ("paraphrased", "unseen"):
        per_task = sets[split].by_task()
        assert set(per_task) == TRAIN_IDS and min(map(len, per_task.values())) >= 3
    comp = sets["compositional"].by_task()
    assert set(comp) == HELD_OUT_IDS and all(2 <= len(v) <= 3 for v in comp.values())
    # Paraphrases keep the colour and object words of training: no synonym of the unseen split.
    unseen_only = {"crimson", "scarlet", "emerald", "lime", "navy", "azure", "golden", "amber",
                   "cube", "brick", "basin", "dish", "platter", "crate", "bin", "carton", "drop",
                   "deposit", "shove", "nudge", "pile", "slide", "balance"}
    for split in ("paraphrased", "compositional"):
        for e in sets[split].entries:
            assert not set(normalize_instruction(e.instruction).split()) & unseen_only, e


def test_sha256_is_the_file_hash():
    iset = load_instruction_set(SHIPPED / "unseen.yaml")
    assert iset.sha256 == hashlib.sha256((SHIPPED / "unseen.yaml").read_bytes()).hexdigest()
    assert iset.split == "unseen" and iset.suite == "tabletop" and iset.version == 1


def test_schema_json_accepts_the_shipped_files_and_rejects_a_bad_one(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((instruction_sets_dir() / "schema.json").read_text())
    for path in SHIPPED.glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    bad = shipped_data("seen")
    del bad["entries"][0]["instruction"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(BenchError, match="missing key"):
        load_instruction_set(write(tmp_path, bad, "seen.yaml"))


# --- each bad case: one problem, naming file, entry and problem ------------------------------


def test_rejects_unknown_task_id(tmp_path, capsys):
    data = shipped_data("paraphrased")
    data["entries"].append({"id": "para-extra", "task_id": "place-gren-bowl",
                            "instruction": "place the gren block in the bowl", "axis": "verb_change"})
    path = write(tmp_path, data, "paraphrased.yaml")
    rc, problems, _ = check([path], capsys)
    assert rc == 1
    assert problems == [f"{path}: entry 'para-extra': unknown task id 'place-gren-bowl' "
                        f"(did you mean 'place-green-bowl'?)"]


def test_rejects_duplicate_id(tmp_path, capsys):
    data = shipped_data("unseen")
    data["entries"][5]["id"] = data["entries"][4]["id"]
    path = write(tmp_path, data, "unseen.yaml")
    rc, problems, _ = check([path], capsys)
    assert rc == 1
    assert problems == [f"{path}: entry {data['entries'][4]['id']!r}: duplicate entry id"]


def test_rejects_ood_instruction_identical_to_training_after_normalising(tmp_path, capsys):
    data = shipped_data("paraphrased")
    entry = next(e for e in data["entries"] if e["task_id"] == "place-red-box")
    entry["instruction"] = "  Put the RED block in the box! "
    path = write(tmp_path, data, "paraphrased.yaml")
    rc, problems, _ = check([path], capsys)
    assert rc == 1 and len(problems) == 1
    assert problems[0].startswith(f"{path}: entry {entry['id']!r}: instruction ")
    assert "identical (ignoring case, punctuation and spaces) to the training instruction of " \
           "'place-red-box'" in problems[0]


def test_rejects_compositional_task_present_in_training(tmp_path, capsys):
    data = shipped_data("compositional")
    data["entries"].append({"id": "comp-place-red-plate-1", "task_id": "place-red-plate",
                            "instruction": "place the red block onto the plate",
                            "axis": "held_out_combination+paraphrase"})
    path = write(tmp_path, data, "compositional.yaml")
    rc, problems, _ = check([path], capsys)
    assert rc == 1
    assert problems == [f"{path}: entry 'comp-place-red-plate-1': task 'place-red-plate' appears in "
                        f"training, so it is not a held-out combination"]


@pytest.mark.parametrize("split,task", [("unseen", "push-yellow-left"),
                                        ("compositional", "stack-yellow-red")])
def test_rejects_a_task_with_no_entry(tmp_path, capsys, split, task):
    data = shipped_data(split)
    data["entries"] = [e for e in data["entries"] if e["task_id"] != task]
    path = write(tmp_path, data, f"{split}.yaml")
    rc, problems, _ = check([path], capsys)
    assert rc == 1
    kind = "training" if split == "unseen" else "held-out"
    assert problems == [f"{path}: {kind} task {task!r} has no entry"]


def test_rejects_held_out_task_in_paraphrased_and_drift_in_seen(tmp_path, capsys):
    para = shipped_data("paraphrased")
    para["entries"].append({"id": "para-leak", "task_id": "place-red-bowl",
                            "instruction": "place the red block into the bowl", "axis": "verb_change"})
    seen = shipped_data("seen")
    seen["entries"][0]["instruction"] = "place the red block on the plate"
    p1, p2 = write(tmp_path, para, "paraphrased.yaml"), write(tmp_path, seen, "seen.yaml")
    rc, problems, _ = check([p1, p2], capsys)
    assert rc == 1 and len(problems) == 2
    assert problems[0] == (f"{p1}: entry 'para-leak': task 'place-red-bowl' is held out of training; "
                           "it belongs in compositional")
    assert problems[1].startswith(f"{p2}: entry 'seen-place-red-plate': instruction "
                                  "'place the red block on the plate' is not a training instruction")


def test_rejects_unseen_entry_in_training_vocabulary_and_ambiguous_text(tmp_path, capsys):
    data = shipped_data("unseen")
    data["entries"][0]["instruction"] = "the red block on the plate put"
    data["entries"][4]["instruction"] = data["entries"][1]["instruction"]  # two tasks, one text
    path = write(tmp_path, data, "unseen.yaml")
    rc, problems, _ = check([path], capsys)
    assert rc == 1 and len(problems) == 2
    assert problems[0].endswith("uses only training vocabulary; it belongs in paraphrased")
    assert f"entry {data['entries'][4]['id']!r}" in problems[1]
    assert "also asks for task 'place-red-plate'" in problems[1]


def test_shipped_file_fields_must_match_its_name():
    iset = load_instruction_set(SHIPPED / "seen.yaml")
    renamed = InstructionSet(suite="tabletop", split="paraphrased", version=1, entries=iset.entries,
                             path=SHIPPED / "seen.yaml", sha256=iset.sha256)
    problems = check_instruction_set(renamed, TASKS, training_set("tabletop", TASKS))
    assert f"{SHIPPED / 'seen.yaml'}: field split 'paraphrased' does not match its file name 'seen'" \
        in problems


@pytest.mark.parametrize("text,needle", [
    ("suite: tabletop\nsplit: seen\nentries: [\n  {id: a\n", "malformed YAML at line"),
    ("suite: tabletop\nsplit: seen\nversion: one\nentries: []\n", "'version' must be an integer"),
    ("suite: tabletop\nsplit: seen\nversion: 1\nentries:\n  - {id: x1, task_id: push-red-left, "
     "axis: canonical}\n", "entry #0 ('x1'): missing key(s) ['instruction']"),
    ("suite: tabletop\nsplit: seen\nversion: 1\nentries:\n  - {id: x1, task_id: push-red-left, "
     "instruction: 7, axis: canonical}\n", "entry #0 ('x1'): 'instruction' must be a string"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_malformed_file_is_one_clear_error(tmp_path, capsys, text, needle):
    path = write(tmp_path, text, "seen.yaml")
    rc = cli.main(["splits", "--check", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"apt-bench splits: error: {path}: ")
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# --- load_split ------------------------------------------------------------------------------


def test_unknown_split_suggests_a_close_name():
    with pytest.raises(BenchError, match=r"unknown split 'paraphrase'.*did you mean 'paraphrased'"
                                         r".*valid splits: train, seen, paraphrased"):
        load_split("tabletop", "paraphrase", TASKS)
    with pytest.raises(BenchError, match=r"did you mean 'swapped'"):
        load_split("tabletop", "swaped@unseen", TASKS)


def test_user_file_is_validated_but_may_cover_a_subset(tmp_path):
    data = {"suite": "tabletop", "split": "colours", "version": 1, "entries": [
        {"id": "c1", "task_id": "place-red-plate", "instruction": "put the crimson block on the plate",
         "axis": "colour_synonym"}]}
    iset = load_split("tabletop", str(write(tmp_path, data, "colours.yaml")), TASKS)
    assert [e.task_id for e in iset.entries] == ["place-red-plate"] and iset.path is not None
    data["entries"][0]["instruction"] = "put the red block on the plate."
    with pytest.raises(BenchError, match="identical .* to the training instruction"):
        load_split("tabletop", str(write(tmp_path, data, "leak.yaml")), TASKS)
    data["suite"] = "libero"
    with pytest.raises(BenchError, match="for suite 'libero', not 'tabletop'"):
        load_split("tabletop", str(write(tmp_path, data, "other.yaml")), TASKS)


# --- control splits ----------------------------------------------------------------------------


def test_blank_control():
    seen = load_split("tabletop", "seen", TASKS)
    blank = load_split("tabletop", "blank", TASKS)
    assert blank.split == "blank" and blank.path is None
    assert all(e.instruction == "" and e.axis == "blank" for e in blank.entries)
    assert [(e.id, e.task_id) for e in blank.entries] == [(e.id, e.task_id) for e in seen.entries]


def test_shuffled_control_is_a_different_permutation():
    base = load_split("tabletop", "paraphrased", TASKS)
    shuffled = load_split("tabletop", "shuffled@paraphrased", TASKS)
    assert shuffled.split == "shuffled@paraphrased"
    for b, s in zip(base.entries, shuffled.entries):
        assert (s.id, s.task_id, s.axis) == (b.id, b.task_id, "shuffled")
        assert sorted(s.instruction.split()) == sorted(b.instruction.split())
        assert s.instruction != b.instruction
    assert shuffle_words("a b", 0) == "b a"
    assert shuffle_words("go go", 3) == "go go"  # nothing to shuffle
    assert {shuffle_words("put the red block on the plate", k) for k in range(50)} != {
        "put the red block on the plate"}


def test_swapped_control_uses_another_tasks_instruction_and_keeps_the_task():
    by_id = {t.task_id: t for t in TASKS}
    canonical = {t.instruction: t.task_id for t in TASKS}
    for split in ("swapped", "swapped@compositional"):
        base = load_split("tabletop", split.partition("@")[2] or "seen", TASKS)
        swapped = load_split("tabletop", split, TASKS)
        for b, s in zip(base.entries, swapped.entries):
            assert (s.id, s.task_id, s.axis) == (b.id, b.task_id, "swapped")
            other = canonical[s.instruction]  # another task's canonical instruction...
            assert other != s.task_id
            assert by_id[other].train  # ...one the policy was trained to follow...
            assert by_id[other].attributes["skill"] == by_id[s.task_id].attributes["skill"]


def test_controls_are_deterministic_and_hashed_by_content():
    base = load_split("tabletop", "unseen", TASKS)
    for kind in ("blank", "shuffled", "swapped"):
        a, b = derive_control(base, kind, TASKS), derive_control(base, kind, TASKS)
        assert a == b and a.sha256 == b.sha256
    s0 = derive_control(base, "shuffled", TASKS)
    s1 = derive_control(base, "shuffled", TASKS, seed=1)
    assert s0.sha256 != s1.sha256 and s0.sha256 != derive_control(base, "swapped", TASKS).sha256


def test_control_of_unknown_kind_or_of_a_control_is_refused():
    with pytest.raises(BenchError, match="unknown control split 'reversed'"):
        load_split("tabletop", "reversed@seen", TASKS)
    with pytest.raises(BenchError, match="not from another control split"):
        load_split("tabletop", "blank@shuffled", TASKS)
    with pytest.raises(BenchError, match="no other task shares the scene"):
        one = [TASKS[0]]
        base = InstructionSet("tabletop", "x", 1, (InstructionEntry("e", TASKS[0].task_id, "hi", "a"),),
                              None, "0")
        derive_control(base, "swapped", one)
