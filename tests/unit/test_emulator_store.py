"""The ServiceNow emulator's store answers a query through an index exactly as a scan of the table would."""

from __future__ import annotations

import random

import pytest

from tools.emulators.servicenow.query import matches, parse, sort
from tools.emulators.servicenow.store import Store

FIELDS = {"u_colour": ["red", "green", "blue", ""], "u_size": ["1", "2", "3"], "correlation_id": []}


def scan(store: Store, table: str, text: str) -> list[str]:
    parsed = parse(text)
    return [r["sys_id"] for r in sort([r for r in store.all(table) if matches(r, parsed)], parsed)]


def build(seed: int) -> tuple[Store, random.Random]:
    rng = random.Random(seed)
    store = Store(clock=lambda: 1_700_000_000.0)
    for number in range(300):
        values = {name: rng.choice(choices) for name, choices in FIELDS.items() if choices and rng.random() < 0.8}
        values["correlation_id"] = f"c{number % 120}"
        store.insert("u_thing", values, "tester")
    return store, rng


def queries(rng: random.Random) -> list[str]:
    def condition() -> str:
        field = rng.choice(["u_colour", "u_size", "correlation_id"])
        value = rng.choice([*FIELDS[field], "c7", "c42", "c999"] if field == "correlation_id" else FIELDS[field])
        return rng.choice(
            [
                f"{field}={value}",
                f"{field}IN{value},{rng.choice(FIELDS['u_colour'] or ['x'])}",
                f"{field}!={value}",
                f"{field}ISEMPTY",
            ]
        )

    shapes = []
    for _ in range(60):
        terms = [condition() for _ in range(rng.randint(1, 3))]
        joiners = [rng.choice(["^", "^OR", "^NQ", "^"]) for _ in terms[1:]]
        text = terms[0] + "".join(j + t for j, t in zip(joiners, terms[1:], strict=True))
        shapes.append(text + rng.choice(["", "^ORDERBYu_size", "^ORDERBYDESCu_colour"]))
    return shapes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_indexed_queries_answer_as_a_scan_does_through_writes_and_moves(seed: int) -> None:
    store, rng = build(seed)
    sys_ids = [r["sys_id"] for r in store.all("u_thing")]
    for text in queries(rng):
        assert [r["sys_id"] for r in store.query("u_thing", parse(text))] == scan(store, "u_thing", text), text
    # Writes after the indexes exist: updates that change an indexed value, deletes, a record moved away and one
    # moved in (last in its new table's order).
    for sys_id in rng.sample(sys_ids, 60):
        store.update("u_thing", sys_id, {"u_colour": rng.choice(FIELDS["u_colour"]), "u_size": "9"}, "tester")
    for sys_id in rng.sample(sys_ids, 20):
        store.delete("u_thing", sys_id)
    moved = next(r["sys_id"] for r in store.all("u_thing"))
    store.move("u_thing", "u_other", moved, u_colour="red")
    later = store.insert("u_other", {"u_colour": "red"}, "tester")["sys_id"]
    for text in [*queries(rng), "u_size=9", "u_size=9^u_colourINred,blue", "u_colour="]:
        assert [r["sys_id"] for r in store.query("u_thing", parse(text))] == scan(store, "u_thing", text), text
    assert [r["sys_id"] for r in store.query("u_other", parse("u_colour=red"))] == [moved, later]


def test_journal_entries_are_found_by_their_record() -> None:
    store = Store(clock=lambda: 1_700_000_000.0)
    store.query("sys_journal_field", parse("element_id=none"))  # the index exists before the entries do
    incident = store.insert("incident", {"short_description": "x", "work_notes": "first"}, "tester")
    store.update("incident", incident["sys_id"], {"work_notes": "second"}, "tester")
    found = store.query("sys_journal_field", parse(f"element_id={incident['sys_id']}^element=work_notes"))
    assert [r["value"] for r in found] == ["first", "second"]
